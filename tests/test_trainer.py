"""The partitioned train step: sharding and microbatching do not change the maths.

- one step on a data=2 x model=4 mesh of 8 simulated devices equals the same step on one
  device (same init, same batch, float32, no dropout): loss, metrics and updated params;
- num_microbatches=2 gives the update of num_microbatches=1 on the same batch;
- the parameters' logical and mesh PartitionSpecs match tests/golden/partition_specs.txt
  (regenerate with T0X_UPDATE_GOLDEN=1 after an intended change, and review the diff);
- packing isolation through the loss: changing one packed example leaves the per-token
  losses of the other examples in its row unchanged, and equal to those of the examples
  alone in unpacked rows.
"""

import functools
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

from t0x import partitioning, trainer  # noqa: E402
from t0x.models.losses import cross_entropy_with_z_loss  # noqa: E402
from t0x.models.t5.model import EncoderDecoderModel  # noqa: E402
from t0x.models.t5.testing import make_batch, random_batch, random_examples, tiny_config  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "partition_specs.txt"
INPUT_LEN, TARGET_LEN = 16, 8

needs_8 = pytest.mark.skipif(
    jax.device_count() < 8,
    reason="needs 8 devices: set XLA_FLAGS=--xla_force_host_platform_device_count=8 "
    "before jax is imported (the Makefile does)",
)


@functools.cache
def _model(layers=1):
    # one layer per stack keeps the compiles short; layers are alike, so nothing is lost
    return EncoderDecoderModel(
        tiny_config(num_encoder_layers=layers, num_decoder_layers=layers), z_loss=1e-4
    )


@functools.cache
def _params(layers=1):
    return jax.device_get(_model(layers).init_params(jax.random.key(0)))


def _batch(rows=8, seed=1):
    # unpacked: exactly `rows` rows, every one with real tokens
    return random_batch(
        rows, input_len=INPUT_LEN, target_len=TARGET_LEN, vocab_size=128, seed=seed, min_len=3
    )


_STEPS = {}


def _one_step(*, data, model_parallel, num_microbatches=1):
    """(updated params, metrics, state) of one step from `_params` on `_batch` (cached)."""
    key = (data, model_parallel, num_microbatches)
    if key not in _STEPS:
        model = _model()
        _STEPS[key] = _run_step(
            model,
            _params(),
            _batch(),
            data=data,
            model_parallel=model_parallel,
            num_microbatches=num_microbatches,
        )
    return _STEPS[key]


def _run_step(model, params, batch, *, data, model_parallel, num_microbatches):
    mesh = partitioning.create_mesh(model_parallel, devices=jax.devices()[: data * model_parallel])
    assert dict(mesh.shape) == {"data": data, "model": model_parallel}
    tr = trainer.Trainer(model, trainer.adafactor(1e-2), mesh, num_microbatches)
    state = tr.init_state(jax.random.key(0), params=params)
    state, metrics = tr.train_step(
        state, partitioning.to_global_batch(batch, mesh), jax.random.key(1)
    )
    return jax.device_get(state.params), jax.device_get(metrics), state


def _assert_trees_close(a, b, rtol, atol):
    paths_a = jax.tree_util.tree_flatten_with_path(a)[0]
    leaves_b = jax.tree.leaves(b)
    assert len(paths_a) == len(leaves_b)
    for (path, x), y in zip(paths_a, leaves_b):
        np.testing.assert_allclose(
            np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path)
        )


@needs_8
def test_sharded_step_equals_single_device_step():
    ref_params, ref_metrics, _ = _one_step(data=1, model_parallel=1)
    got_params, got_metrics, state = _one_step(data=2, model_parallel=4)

    # the step really ran partitioned: the embedding is split over "model" (vocab axis)
    emb = state.params["token_embedder"]["embedding"]
    assert emb.sharding.shard_shape(emb.shape) == (emb.shape[0] // 4, emb.shape[1])
    assert len(emb.addressable_shards) == 8
    assert int(jax.device_get(state.step)) == 1

    assert set(got_metrics) == set(ref_metrics)
    for k in ref_metrics:
        np.testing.assert_allclose(got_metrics[k], ref_metrics[k], rtol=1e-5, err_msg=k)
    _assert_trees_close(got_params, ref_params, rtol=1e-5, atol=1e-6)
    # and the step changed the params far more than the tolerance
    moved = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(jax.tree.leaves(ref_params), jax.tree.leaves(_params()))
    )
    assert moved > 1e-3


@needs_8
def test_microbatches_give_the_same_update():
    one_params, one_metrics, _ = _one_step(data=2, model_parallel=4)
    two_params, two_metrics, _ = _one_step(data=2, model_parallel=4, num_microbatches=2)
    for k in (
        "loss",
        "z_loss",
        "cross_ent_loss",
        "correct_tokens",
        "num_target_tokens",
        "num_examples",
    ):
        np.testing.assert_allclose(two_metrics[k], one_metrics[k], rtol=1e-5, err_msg=k)
    assert float(two_metrics["num_examples"]) == 8
    _assert_trees_close(two_params, one_params, rtol=1e-5, atol=1e-6)


def _partition_spec_lines() -> list[str]:
    model = _model(layers=tiny_config().num_encoder_layers)
    abstract, logical = model.abstract_params_with_axes()
    mesh = partitioning.create_mesh(4, devices=jax.devices()[:8])
    shardings = partitioning.shardings_for(logical, mesh)
    lines = [
        "# t0x.testing.tiny_config() parameters on a data=2 x model=4 mesh; "
        "path shape logical mesh",
    ]
    flat = jax.tree_util.tree_flatten_with_path(abstract)[0]
    logical_leaves = jax.tree.leaves(
        logical, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
    )
    sharding_leaves = jax.tree.leaves(shardings)
    assert len(flat) == len(logical_leaves) == len(sharding_leaves)
    for (path, leaf), spec, sh in zip(flat, logical_leaves, sharding_leaves):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        lines.append(f"{name} {tuple(leaf.shape)} logical={tuple(spec)} mesh={tuple(sh.spec)}")
    return lines


@needs_8
def test_partition_specs_golden():
    lines = _partition_spec_lines()
    if os.environ.get("T0X_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text("\n".join(lines) + "\n")
    assert GOLDEN.exists(), f"{GOLDEN} is missing; create it with T0X_UPDATE_GOLDEN=1"
    expected = GOLDEN.read_text().splitlines()
    assert lines == expected, (
        "parameter partition specs changed; if intended, rerun with T0X_UPDATE_GOLDEN=1 and "
        "review the diff of " + str(GOLDEN)
    )
    # T5X's 1-D parameter partitioning: every large matrix is split along "model" once
    assert any("attention/query/kernel" in l and "mesh=(None, 'model')" in l for l in lines)
    assert any("mlp/wo/kernel" in l and "mesh=('model', None)" in l for l in lines)


def _token_losses(model, params, batch):
    logits = jax.jit(model.compute_logits)(params, batch)
    losses, _ = cross_entropy_with_z_loss(logits, batch["decoder_target_tokens"], model.z_loss)
    return np.asarray(losses)


def test_packed_examples_do_not_see_each_other():
    model = _model()
    params = _params()
    examples = random_examples(3, input_len=5, target_len=4, vocab_size=128, seed=3, min_len=2)
    packed = make_batch(examples, input_len=INPUT_LEN, target_len=12, pack=True)
    assert packed["decoder_segment_ids"].shape[0] == 1
    assert set(packed["decoder_segment_ids"][0]) == {0, 1, 2, 3}

    rng = np.random.default_rng(7)
    changed = list(examples)
    inputs, targets = changed[1]
    new_targets = rng.integers(2, 128, size=len(targets)).astype(np.int32)
    new_targets[-1] = 1
    changed[1] = (rng.integers(2, 128, size=len(inputs)).astype(np.int32), new_targets)
    perturbed = make_batch(changed, input_len=INPUT_LEN, target_len=12, pack=True)
    assert (perturbed["decoder_segment_ids"] == packed["decoder_segment_ids"]).all()

    base, other = _token_losses(model, params, packed), _token_losses(model, params, perturbed)
    seg = packed["decoder_segment_ids"][0]
    others = (seg == 1) | (seg == 3)
    np.testing.assert_allclose(other[0, others], base[0, others], rtol=1e-6, atol=1e-6)
    assert not np.allclose(other[0, seg == 2], base[0, seg == 2])  # the change is visible

    # and each packed example's losses are those of the example alone in its own row
    alone = _token_losses(model, params, make_batch(examples, input_len=INPUT_LEN, target_len=12))
    for i, (_, t) in enumerate(examples):
        np.testing.assert_allclose(base[0, seg == i + 1], alone[i, : len(t)], rtol=1e-5, atol=1e-5)
