"""Each device does its own share of the work: checks on the compiled programs.

Numbers (one device vs eight) agree whether or not the partitioning works, so these tests look
at the optimized per-device HLO instead: the gradient all-reduce is there, matrix products
see only this device's rows (or heads), and the lowered program carries the network's
logical sharding constraints. Meshes come from the 8 simulated CPU devices (conftest.py).
"""

from __future__ import annotations

import contextlib
import warnings

import jax
import numpy as np
import pytest

from t0x import partitioning, program_stats, trainer
from t0x.models.t5 import testing
from t0x import inference
from t0x.models.t5.model import EncoderDecoderModel

ROWS, INPUT_LEN, TARGET_LEN, MICROBATCHES, DATA = 16, 24, 12, 4, 4
FEATURES = (
    "encoder_input_tokens",
    "decoder_input_tokens",
    "decoder_target_tokens",
    "decoder_loss_weights",
)


def _config(**overrides):
    return testing.tiny_config(num_encoder_layers=1, num_decoder_layers=1, **overrides)


def _batch():
    rng = np.random.default_rng(0)
    return {
        k: rng.integers(
            1, 100, (ROWS, INPUT_LEN if k.startswith("encoder") else TARGET_LEN)
        ).astype(np.int32)
        for k in FEATURES
    }


def _lowered_train_step(mesh, context):
    tr = trainer.Trainer(
        EncoderDecoderModel(_config()), trainer.adafactor(1e-3), mesh, MICROBATCHES
    )
    state = tr.init_state(jax.random.key(0))
    step = tr.compile_step(list(FEATURES))
    batch = partitioning.to_global_batch(_batch(), mesh)
    with context(mesh):
        lowered = step.lower(state, batch, jax.random.key(1))
    return lowered, state


@pytest.fixture(scope="module")
def data_parallel_step():
    mesh = partitioning.create_mesh(1, devices=jax.devices()[:DATA])
    lowered, state = _lowered_train_step(mesh, partitioning.activate)
    return lowered, lowered.compile().as_text(), state


def test_train_step_all_reduces_the_gradients_once_per_step(data_parallel_step):
    _, hlo, state = data_parallel_step
    stats = program_stats.collectives(hlo)
    assert "all-reduce" in stats, f"no gradient all-reduce: {stats}"
    grad_bytes = 4 * trainer.count_params(state.params)
    assert stats["all-reduce"].bytes_per_step >= grad_bytes
    # the batch is never gathered: every microbatch is already spread over "data"
    assert "all-gather" not in stats and "all-to-all" not in stats, stats
    assert list(program_stats.loop_trip_counts(hlo).values()) == [MICROBATCHES]


def test_relative_position_bias_gradient_crosses_devices_as_a_table(data_parallel_step):
    """The relative-position-bias gradient is reduced into its [heads, buckets] table on each
    data shard before it crosses devices. Before, XLA all-reduced the [heads, q, k] bias
    gradient of every stack, once per microbatch on TPU (T5 small at 1,024 tokens: 156 MB per
    microbatch, two thirds of the step's collective bytes; BENCHMARKS.md)."""
    _, hlo, _ = data_parallel_step
    cfg = _config()
    reduced = {
        shape
        for inst in program_stats.instructions(hlo)
        if inst.opcode in ("all-reduce", "all-reduce-start")
        for _, shape in inst.shapes
    }
    assert (cfg.num_heads, cfg.relative_attention_num_buckets) in reduced, reduced
    for length in (INPUT_LEN, TARGET_LEN):
        assert (cfg.num_heads, length, length) not in reduced, reduced
        assert (1, cfg.num_heads, length, length) not in reduced, reduced


def test_train_step_matmuls_see_only_this_devices_rows(data_parallel_step):
    _, hlo, _ = data_parallel_step
    rows_per_device = ROWS // MICROBATCHES // DATA  # 1
    mine = {rows_per_device * INPUT_LEN, rows_per_device * TARGET_LEN}
    whole_microbatch = {ROWS // MICROBATCHES * INPUT_LEN, ROWS // MICROBATCHES * TARGET_LEN}
    dims = {d for shape in program_stats.dot_shapes(hlo) for d in shape}
    assert mine <= dims, dims
    assert not dims & whole_microbatch, f"a device computes a whole microbatch: {dims}"


def test_lowered_train_step_carries_the_logical_constraints(data_parallel_step):
    lowered, _, _ = data_parallel_step
    assert program_stats.sharding_constraints(lowered.as_text()) > 10


def test_a_bare_mesh_context_would_drop_them():
    """Why `partitioning.activate` exists: `with mesh:` no longer reaches flax's constraints."""
    mesh = partitioning.create_mesh(1, devices=jax.devices()[:DATA])

    @contextlib.contextmanager
    def legacy(m):
        from flax import linen as nn

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with m, nn.logical_axis_rules(partitioning.logical_axis_rules()):
                yield

    lowered, _ = _lowered_train_step(mesh, legacy)
    assert program_stats.sharding_constraints(lowered.as_text()) == 0


def test_strided_microbatches_keep_each_device_rows():
    batch = {"x": np.arange(16)}
    micro = partitioning.split_microbatches(batch, 4)["x"]
    assert micro.tolist() == [[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15]]


def _loaded(num_partitions, devices, **overrides):
    config = _config(**overrides)
    model = EncoderDecoderModel(config)
    mesh = partitioning.create_mesh(num_partitions, devices=devices)
    specs = model.abstract_params_with_axes()[1]
    params = jax.device_put(
        model.init_params(jax.random.key(0)), partitioning.shardings_for(specs, mesh)
    )
    return inference.LoadedModel(model, params, config, mesh)


def _score_step_hlo(loaded, rows, choices):
    rng = np.random.default_rng(1)
    enc = rng.integers(1, 100, (rows, INPUT_LEN)).astype(np.int32)
    dec = rng.integers(1, 100, (rows, choices, TARGET_LEN)).astype(np.int32)
    fn = inference.jit_on_mesh(loaded, loaded.model.score, 3)
    lowered = fn.lower(enc, dec, np.ones_like(dec, np.float32))
    return lowered, lowered.compile().as_text()


def test_score_step_is_data_parallel():
    loaded = _loaded(1, jax.devices()[:DATA])
    rows, choices = 8, 3
    lowered, hlo = _score_step_hlo(loaded, rows, choices)
    per_device = rows // DATA
    dims = {d for shape in program_stats.dot_shapes(hlo) for d in shape}
    assert per_device * INPUT_LEN in dims and per_device * choices * TARGET_LEN in dims, dims
    assert rows * INPUT_LEN not in dims and rows * choices * TARGET_LEN not in dims, dims
    assert program_stats.sharding_constraints(lowered.as_text()) > 0
    # the only gather is of the [rows, choices] float32 scores, replicated for the host
    gathers = program_stats.collectives(hlo).get("all-gather")
    assert gathers is None or gathers.bytes <= rows * choices * 4, gathers


def test_score_step_splits_heads_and_mlp_over_model_axis():
    loaded = _loaded(4, jax.devices()[:8], num_heads=8)  # data 2 x model 4: 2 heads each
    _, hlo = _score_step_hlo(loaded, 2, 2)  # one row per data-parallel group
    cfg = loaded.config
    shapes = program_stats.dot_shapes(hlo)
    dims = {d for shape in shapes for d in shape}
    assert cfg.mlp_dim // 4 in dims and cfg.mlp_dim not in dims, dims
    # attention scores [rows * heads, q, k]: one row, this device's heads only
    heads = {s[0] for s in shapes if len(s) == 3}
    assert heads == {cfg.num_heads // 4}, shapes


@pytest.mark.parametrize("data", [1, DATA])
def test_batch_bias_gradient_equals_the_plain_gather(data):
    from flax import linen as nn
    from jax.sharding import NamedSharding, PartitionSpec

    from t0x.models.t5.network import RelativePositionBiases

    module = RelativePositionBiases(num_buckets=8, max_distance=20, num_heads=4)
    pos = np.arange(6)[None]
    params = nn.unbox(module.init(jax.random.key(0), pos, pos, True))
    weights = np.random.default_rng(1).normal(size=(8, 4, 6, 6)).astype(np.float32)

    def new(p, w):
        return (module.apply(p, pos, pos, True, batch=w.shape[0]) * w).sum()

    def plain(p, w):
        return (module.apply(p, pos, pos, True) * w).sum()

    mesh = partitioning.create_mesh(1, devices=jax.devices()[:data])
    w = jax.device_put(weights, NamedSharding(mesh, PartitionSpec("data")))
    with partitioning.activate(mesh):
        got = jax.jit(jax.grad(new))(params, w)
        want = jax.jit(jax.grad(plain))(params, w)
    np.testing.assert_allclose(
        got["params"]["rel_embedding"], want["params"]["rel_embedding"], rtol=1e-5, atol=1e-5
    )
    assert np.abs(np.asarray(want["params"]["rel_embedding"])).sum() > 0
