"""The t0x checkpoint store: bit-exact round trips (bf16, sharded), pruning, atomicity."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from t0x import checkpoints  # noqa: E402
from t0x.checkpoints import CheckpointNotFoundError, CheckpointStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@flax.struct.dataclass
class State:
    step: jax.Array
    params: dict
    opt_state: object


def _params(seed=0):
    rng = np.random.default_rng(seed)
    special = np.array([np.nan, -0.0, np.inf, 1e-40, -np.inf, 3.0, 0.0, -1.0], np.float32)
    return {
        "encoder": {
            "kernel": jnp.asarray(rng.standard_normal((8, 16)), jnp.float32),
            "scale": jnp.asarray(special),
        },
        "emb": jnp.asarray(rng.standard_normal((16, 8)), jnp.bfloat16),
    }


def _state(seed=0, step=5):
    params = _params(seed)
    opt = optax.adafactor(1e-3)
    opt_state = opt.init(params)
    opt_state = jax.tree.map(
        lambda x: x + 0.25 if jnp.issubdtype(x.dtype, jnp.floating) else x, opt_state
    )
    return State(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state)


def _abstract(tree, sharding_for=None):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=sharding_for(x) if sharding_for else x.sharding
        ),
        tree,
    )


def _bits_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _assert_bit_exact(got, want):
    gl, gt = jax.tree.flatten(got)
    wl, wt = jax.tree.flatten(want)
    assert gt == wt
    for g, w in zip(gl, wl):
        assert _bits_equal(g, w), (g, w)


def _digest_paths(tree):
    from t0x.checkpoints import checksums

    return checksums.tree_digest(tree).keys()


def test_round_trip_bit_exact_with_meta(tmp_path):
    state = _state()
    meta = {"data": {"batches_consumed": 40}, "config": {"emb_dim": 8, "mlp_activations": ["gelu"]}}
    with CheckpointStore(tmp_path, keep=3) as store:
        assert store.save(5, state, meta)
        store.wait()
        restored, got_meta = store.restore(abstract_state=_abstract(state))
    assert isinstance(restored, State)
    _assert_bit_exact(restored, state)
    assert restored.params["emb"].dtype == jnp.bfloat16
    checksums = got_meta.pop("checksums")
    assert got_meta == {"format": "t0x", "format_version": 1, "step": 5, **meta}
    assert set(checksums) == {path for path in _digest_paths(state)}
    # A fresh, read-only store (another process) restores the same, as host numpy arrays.
    reader = CheckpointStore(tmp_path, read_only=True)
    host, _ = reader.restore(5)
    assert isinstance(host["params"]["emb"], np.ndarray)
    _assert_bit_exact(host["params"], state.params)
    assert int(host["step"]) == 5
    _assert_bit_exact(checkpoints.restore_params(tmp_path), state.params)
    _assert_bit_exact(checkpoints.restore_params(tmp_path / "5"), state.params)
    assert checkpoints.read_meta(tmp_path)["data"] == {"batches_consumed": 40}


def _sharded_round_trip(directory):
    assert len(jax.devices()) >= 8
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    specs = {
        "encoder": {"kernel": P("data", "model"), "scale": P("data")},
        "emb": P("model", "data"),
    }
    params = jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), _params(1), specs)
    state = State(
        step=jnp.asarray(9, jnp.int32),
        params=params,
        opt_state={
            "m": jax.device_put(
                jnp.ones((8, 16), jnp.bfloat16) / 3, NamedSharding(mesh, P(None, "model"))
            )
        },
    )
    with CheckpointStore(directory, async_save=True) as store:
        store.save(9, state, {"data": {"batches_consumed": 9}})
        store.wait()
        same, _ = store.restore(9, abstract_state=_abstract(state))
        _assert_bit_exact(same, state)
        assert jax.tree.map(lambda x: x.sharding, same) == jax.tree.map(lambda x: x.sharding, state)
        # Onto another mesh layout: resharded on read, same bits.
        other = jax.make_mesh((8,), ("x",))
        onto = _abstract(
            state,
            lambda x: NamedSharding(other, P(*(["x"] + [None] * (x.ndim - 1)) if x.ndim else P())),
        )
        moved, _ = store.restore(9, abstract_state=onto)
        _assert_bit_exact(moved, state)
        assert moved.params["encoder"]["kernel"].sharding.spec == P("x", None)
        only = checkpoints.restore_params(directory, abstract_params=_abstract(params))
        _assert_bit_exact(only, params)
        assert only["emb"].sharding.spec == P("model", "data")


def test_sharded_state_round_trip_on_8_devices(tmp_path):
    if len(jax.devices()) >= 8:
        _sharded_round_trip(tmp_path)
        return
    if os.environ.get("T0X_TEST_SUBPROCESS"):
        pytest.fail("subprocess still sees fewer than 8 devices")
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        T0X_TEST_SUBPROCESS="1",
        JAX_PLATFORMS="cpu",
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_sharded_state_round_trip_on_8_devices",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_keep_n_prunes_oldest(tmp_path):
    with CheckpointStore(tmp_path, keep=2, async_save=True) as store:
        for step in (1, 2, 3, 4):
            assert store.save(step, _state(step=step), {"data": {"batches_consumed": step}})
        store.wait()
        assert store.all_steps() == [3, 4] and store.latest_step() == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "4"]
    reader = CheckpointStore(tmp_path, read_only=True)
    assert reader.all_steps() == [3, 4]
    assert reader.restore()[1]["step"] == 4


def test_never_overwrites_a_saved_step(tmp_path):
    with CheckpointStore(tmp_path, async_save=False) as store:
        assert store.save(3, _state(seed=0, step=3), {"v": 1})
        assert not store.save(3, _state(seed=1, step=3), {"v": 2})
        assert not store.save(3, _state(seed=1, step=3), {"v": 2}, force=True)
        state, meta = store.restore(3)
    assert meta["v"] == 1
    _assert_bit_exact(state["params"], _params(0))


def test_half_written_checkpoint_is_ignored(tmp_path):
    """A crash mid-save leaves `<step>.orbax-checkpoint-tmp-<ts>/`: never seen as a step."""
    with CheckpointStore(tmp_path, async_save=False) as store:
        store.save(1, _state(seed=0, step=1), {"data": {"batches_consumed": 1}})
    tmp = tmp_path / "2.orbax-checkpoint-tmp-1767225600000000"
    shutil.copytree(tmp_path / "1", tmp)  # a plausible partial copy of step 2 ...
    for f in sorted((tmp / "state").rglob("*"))[::2]:
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # ... half written
    (tmp / "meta" / "metadata").write_text('{"format": "t0x", "step": 2, "data": {"batc')

    reader = CheckpointStore(tmp_path, read_only=True)
    assert reader.all_steps() == [1] and reader.latest_step() == 1
    state, meta = reader.restore()
    assert meta["step"] == 1
    _assert_bit_exact(state["params"], _params(0))
    with pytest.raises(CheckpointNotFoundError, match=r"step 2 .* steps \[1\]"):
        reader.restore(2)
    _assert_bit_exact(checkpoints.restore_params(tmp_path), _params(0))
    assert tmp.exists()  # a read-only store never touches the directory

    with CheckpointStore(tmp_path, async_save=False) as writer:  # a restarted trainer
        assert writer.latest_step() == 1
        assert writer.save(2, _state(seed=2, step=2), {"data": {"batches_consumed": 2}})
        assert not tmp.exists()  # leftovers are cleared (in the background, before a save)
        _assert_bit_exact(writer.restore(2)[0]["params"], _params(2))


def test_restore_params_needs_params_and_names_the_problem(tmp_path):
    with CheckpointStore(tmp_path, async_save=False) as store:
        store.save(1, {"weights": jnp.ones(3)}, {})
    with pytest.raises(KeyError, match="has no 'params'"):
        checkpoints.restore_params(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="no complete t0x checkpoint"):
        CheckpointStore(tmp_path / "empty").restore()
    with pytest.raises(CheckpointNotFoundError, match="no t0x checkpoint store"):
        CheckpointStore(tmp_path / "missing", read_only=True)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        CheckpointStore(tmp_path / "j").save(1, {"params": jnp.ones(2)}, {"x": object()})
    with pytest.raises(PermissionError, match="read_only"):
        CheckpointStore(tmp_path, read_only=True).save(5, {"params": jnp.ones(2)}, {})


def test_preemption_signals():
    assert checkpoints.reached_preemption(0) is False  # no jax.distributed: never preempted
    flag = checkpoints.install_sigterm_handler()
    try:
        assert flag() is False
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag() is True
    finally:
        flag.uninstall()
    assert signal.getsignal(signal.SIGTERM) is not flag._handle
