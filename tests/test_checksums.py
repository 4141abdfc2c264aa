"""Checkpoint checksums: the same digits on host and on device, sharded or not; any changed
element changes them."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from t0x import partitioning
from t0x.checkpoints import checksums


def _tree():
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((8, 16)).astype(np.float32),
        "bf16": rng.standard_normal((16,)).astype(jnp.bfloat16),
        "i32": np.arange(24, dtype=np.int32).reshape(2, 3, 4),
        "flag": np.array([True, False, True]),
        "scalar": np.float32(3.5),
    }


def test_host_device_and_sharded_digests_agree():
    tree = _tree()
    host = checksums.tree_digest(tree)
    device = checksums.tree_digest(jax.tree.map(jnp.asarray, tree))
    mesh = partitioning.create_mesh(4, devices=jax.devices()[:8])
    sharded = dict(tree)
    sharded["f32"] = jax.device_put(tree["f32"], NamedSharding(mesh, P("data", "model")))
    sharded["bf16"] = jax.device_put(tree["bf16"], NamedSharding(mesh, P("model")))
    assert host == device == checksums.tree_digest(sharded)
    assert sorted(host) == ["bf16", "f32", "flag", "i32", "scalar"]


def test_any_changed_element_or_swap_changes_the_digest():
    tree = _tree()
    base = checksums.tree_digest(tree)
    for i in range(tree["f32"].size):
        changed = tree["f32"].copy()
        changed.flat[i] = np.nextafter(changed.flat[i], np.inf)  # one ulp, one element
        assert checksums.tree_digest({**tree, "f32": changed})["f32"] != base["f32"], i
    swapped = tree["i32"].copy()
    swapped.flat[0], swapped.flat[5] = swapped.flat[5], swapped.flat[0]
    assert checksums.tree_digest({**tree, "i32": swapped})["i32"] != base["i32"]
    assert checksums.mismatches(checksums.tree_digest({**tree, "i32": swapped}), base) == ["i32"]
