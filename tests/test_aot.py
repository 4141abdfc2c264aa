"""Ahead-of-time compilation for TPU slices on a CPU machine (t0x.topologies, t0x.aot).

The slice table, the error messages, the out-of-memory parsing and the reading of TPU HLO need
nothing installed. The compile itself needs libtpu (`pip install -e '.[tpu]'`, the `tpu`
extra) and is skipped without it; with it, a tiny T5 is compiled for a v4-8 (data 2 x model 2,
2 microbatches; ~30 s) and its reported memory is checked against the train state's size
computed here from the parameter shapes and their logical axes.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from t0x import aot, program_stats, topologies, trainer
from t0x.errors import ConfigError
from t0x.models.t5.model import EncoderDecoderModel
from t0x.models.t5.testing import tiny_config

needs_libtpu = pytest.mark.skipif(
    not topologies.libtpu_available(),
    reason="libtpu (the TPU compiler) is not installed: pip install -e '.[tpu]'",
)

PARTITIONS, MICROBATCHES, BATCH = 2, 2, 8
LENGTHS = {"inputs": 32, "targets": 16}
MODEL_AXES = {"vocab", "mlp", "heads", "joined_kv"}  # t0x.partitioning's rules -> "model"


def _config():
    # dims that stay multiples of 128 after a 2-way split: TPU tiles pad little
    return tiny_config(vocab_size=1024, emb_dim=256, num_heads=4, head_dim=64, mlp_dim=512)


def test_slice_table():
    v4 = topologies.spec("v4-64")
    assert (v4.topology, v4.chip_config, v4.chips, v4.devices) == ("v4:2x4x4", "megacore", 32, 32)
    v3 = topologies.spec("v3-256")
    assert (v3.topology, v3.chips, v3.devices, v3.devices_per_chip) == ("v3:8x16", 128, 256, 2)
    assert v3.peak_flops_per_device == v3.peak_flops_per_chip / 2
    assert topologies.spec("v5litepod-16") == topologies.spec("v5e-16")
    assert topologies.spec("v5p-128").hbm_per_device > topologies.spec("v4-128").hbm_per_device
    assert topologies.spec("v6e-256").chips == 256


def test_unknown_slice_lists_the_known_ones():
    with pytest.raises(ConfigError) as e:
        topologies.spec("v4-7")
    assert "v4-7" in str(e.value) and "v4-64" in str(e.value) and "v3-2048" in str(e.value)


def test_missing_libtpu_says_how_to_install(monkeypatch):
    monkeypatch.setattr(topologies, "libtpu_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        topologies.describe("v4-8")
    assert "pip install -e '.[tpu]'" in str(e.value)


TPU_HLO = """\
%cond.7 (wide.param.1: (s32[], f32[4], /*index=2*/f32[4], f32[4], f32[4], /*index=5*/f32[4])) -> pred[] {
  %constant.3 = s32[]{:T(128)} constant(4)
  %wide.param.1 = (s32[]{:T(128)}, f32[4]{0}) parameter(0)
  %gte.1 = s32[]{:T(128)} get-tuple-element(%wide.param.1), index=0
  ROOT %lt.1 = pred[]{:T(512)} compare(%gte.1, %constant.3), direction=LT
}

%body.8 (wide.param.2: (s32[], f32[4], /*index=2*/f32[4], f32[4], f32[4], /*index=5*/f32[4])) -> (s32[], f32[4]) {
  %all-reduce.1 = f32[1024]{0:T(1024)} all-reduce(%p), replica_groups={{0,1}}, to_apply=%add
}

ENTRY %main.9 (p0: f32[4], p1: f32[4], p2: f32[4], p3: f32[4], p4: f32[4], /*index=5*/p5: f32[4]) -> f32[4] {
  %while.1 = (s32[], f32[4]) while(%tuple.1), condition=%cond.7, body=%body.8
  %all-gather.2 = bf16[8,256]{1,0} all-gather(%x), dimensions={0}
}
"""


def test_program_stats_reads_tpu_hlo():
    """TPU HLO: headers with more than five parameters carry `/*index=5*/` comments, and
    loops record no known_trip_count (the bound is the condition's constant)."""
    assert program_stats.loop_trip_counts(TPU_HLO) == {"body.8": 4}
    stats = program_stats.collectives(TPU_HLO)
    assert stats["all-reduce"].bytes_per_step == 4 * 1024 * 4
    assert stats["all-reduce"].in_loops == 1
    assert stats["all-gather"].bytes_per_step == 8 * 256 * 2


def test_out_of_memory_messages_and_advice():
    assert (
        aot.oom_bytes(
            "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
            "temporaries (40.00G) exceeds available HBM (30.75G)."
        )
        == 40 * 2**30
    )
    assert aot.oom_bytes(
        "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory "
        "space hbm. Used 47.50G of 30.75G hbm. Exceeded hbm capacity by 16.75G."
    ) == int(47.5 * 2**30)
    assert aot.oom_bytes("INTERNAL: something else") is None
    spec = topologies.spec("v4-64")
    plan = {
        "fits": False,
        "mesh": {"data": 32, "model": 1},
        "num_microbatches": 4,
        "batch_size": 1024,
        "hbm": {"total": 40 * 2**30, "state": 2 * 2**30},
    }
    line = aot.advice(plan, spec, "none")
    assert "num_microbatches (4 -> 8)" in line and "remat_policy='full'" in line
    assert "\n" not in line
    plan["hbm"]["state"] = 20 * 2**30
    assert "num_partitions (1 -> 2)" in aot.advice(plan, spec, "none")
    assert aot.advice(dict(plan, fits=True), spec, "none") is None


@needs_libtpu
def test_every_slice_in_the_table_is_a_libtpu_topology():
    for name in topologies.known_slices():
        devices = topologies.describe(name)
        assert len(devices) == topologies.spec(name).devices, name
        assert devices[0].platform == "tpu"


@pytest.fixture(scope="module")
def plan():
    if not topologies.libtpu_available():
        pytest.skip("libtpu (the TPU compiler) is not installed: pip install -e '.[tpu]'")
    return aot.compile_plan(
        _config(), "v4-8", BATCH, LENGTHS, num_partitions=PARTITIONS,
        num_microbatches=MICROBATCHES,
    )  # fmt: skip


def _expected_state_bytes() -> tuple[int, int]:
    """(weights per device, optimizer state in full): weights whose logical axes map to
    "model" are split PARTITIONS ways, the rest replicated."""
    abstract, axes = EncoderDecoderModel(_config()).abstract_params_with_axes()
    specs = jax.tree.leaves(axes, is_leaf=lambda s: isinstance(s, PartitionSpec))
    weights = 0
    for leaf, spec in zip(jax.tree.leaves(abstract), specs, strict=True):
        size = int(np.prod(leaf.shape)) * 4
        weights += size // PARTITIONS if MODEL_AXES & {a for a in spec if a} else size
    opt = jax.eval_shape(trainer.adafactor(1e-3).init, abstract)
    opt_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(opt))
    return weights, opt_bytes


def test_plan_memory_matches_the_sharded_train_state(plan):
    weights, opt_bytes = _expected_state_bytes()
    hbm = plan["hbm"]
    assert plan["mesh"] == {"data": 2, "model": PARTITIONS}
    assert weights + opt_bytes // PARTITIONS <= hbm["state"] <= weights + opt_bytes + 4
    # the arguments are the state plus this device's rows of the batch, padded to TPU tiles
    rows = BATCH // plan["mesh"]["data"]
    batch_bytes = rows * 4 * sum(plan["feature_lengths"].values())
    assert hbm["state"] < hbm["argument"] <= 1.01 * (hbm["state"] + batch_bytes)
    assert hbm["capacity"] == int(30.75 * 2**30) and plan["fits"] and plan["advice"] is None
    assert hbm["total"] >= hbm["argument"] + hbm["temp"]


def test_plan_has_the_expected_collectives(plan):
    weights, _ = _expected_state_bytes()
    stats = plan["collectives"]
    # gradients are summed over "data"; model-parallel layers all-reduce partial products
    assert stats["all-reduce"]["bytes_per_step"] >= weights
    assert set(stats) <= {"all-reduce", "all-gather", "reduce-scatter", "all-to-all",
                          "collective-permute"}  # fmt: skip


def test_plan_flops_and_roofline(plan):
    flops = plan["flops"]
    per_device = flops["analytic_per_step"] / 4  # v4-8: 4 devices
    # the compiled program adds attention and the optimizer to the weights' 6·N·tokens
    assert per_device <= flops["compiled_per_device_per_step"] <= 1.5 * per_device
    roof = plan["roofline"]
    assert roof["step_s"] == max(roof["compute_s"], roof["ici_s"])
    assert 0 < roof["mfu"] <= 1 and roof["bound"] in ("compute", "ici")
    assert plan["params"] == trainer.count_params(
        EncoderDecoderModel(_config()).abstract_params_with_axes()[0]
    )


@needs_libtpu
def test_a_plan_that_does_not_fit_names_the_knob():
    """The TPU compiler refuses the program (RESOURCE_EXHAUSTED); the plan says so, with the
    bytes it wanted, instead of raising."""
    plan = aot.compile_plan(tiny_config(), "v5e-1", 256, {"inputs": 2048, "targets": 512})
    assert plan["fits"] is False and plan["hbm"]["compiler_error"]
    assert plan["hbm"]["total"] > plan["hbm"]["capacity"]
    assert "raise num_microbatches (1 -> 2)" in plan["advice"]
    assert plan["roofline"] is None and plan["collectives"] is None


def test_cli_topology_checks_the_slice_before_compiling(capsys, monkeypatch):
    from t0x import cli, gin_config

    monkeypatch.chdir(gin_config.GIN_DIR.parent)
    code = cli.main(["train", "--gin_file=gin/t0_small.gin", "--plan", "--topology", "v9-8"])
    err = capsys.readouterr().err
    assert code == 2 and "v9-8" in err and "v4-64" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(topologies, "libtpu_available", lambda: False)
    code = cli.main(["train", "--gin_file=gin/t0_small.gin", "--plan", "--topology", "v4-8"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install -e '.[tpu]'" in err


@needs_libtpu
def test_cli_topology_prints_the_compiled_plan(capsys, monkeypatch):
    from t0x import cli, gin_config

    monkeypatch.chdir(gin_config.GIN_DIR.parent)
    shrink = [
        "--gin.network.T5Config.emb_dim=128",
        "--gin.network.T5Config.num_heads=2",
        "--gin.network.T5Config.num_encoder_layers=1",
        "--gin.network.T5Config.num_decoder_layers=1",
        "--gin.network.T5Config.mlp_dim=256",
        "--gin.network.T5Config.vocab_size=1024",
        "--gin.BATCH_SIZE=8",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 16}",
        "--gin.partitioning.PjitPartitioner.num_partitions=2",
        "--gin.trainer.Trainer.num_microbatches=2",
    ]
    argv = ["train", "--gin_file=gin/t0_small.gin", "--plan", "--topology", "v4-8", *shrink]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("HBM per device:") and "fits" in line for line in out)
    plan = json.loads(out[-1])
    assert plan["compiled"]["slice"] == "v4-8" and plan["compiled"]["mesh"] == {
        "data": 2,
        "model": 2,
    }
    assert (
        plan["compiled"]["num_microbatches"] == 2 and plan["params"] == plan["compiled"]["params"]
    )
