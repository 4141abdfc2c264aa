"""The training job (`t0x.train.train`): resume reproduces the uninterrupted run; NaN stops it.

- resume: 6 steps straight in dir A vs. 3 steps (`stop_after_steps`, like a preemption)
  then a rerun of the same call in dir B give bit-identical per-step losses in
  metrics.jsonl and identical final params. The task has more examples than a batch,
  shuffling and packing are on, so a wrong input position after resume would show;
(Non-finite steps, absurd learning rates and damaged checkpoints: tests/test_reliability.py.)
"""

import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

from t0x import checkpoints, data  # noqa: E402
from t0x.jobs import train as train_lib  # noqa: E402
from t0x.testing import register_counting_task  # noqa: E402
from t0x.models.t5.testing import tiny_config

LENGTHS = {"inputs": 20, "targets": 16}
BATCH = 8


def _job(model_dir, **overrides):
    kwargs = dict(
        model_dir=str(model_dir),
        mixture_or_task_name=register_counting_task(),
        task_feature_lengths=LENGTHS,
        train_steps=6,
        batch_size=BATCH,
        model_config=tiny_config(num_encoder_layers=1, num_decoder_layers=1),
        num_partitions=2 if jax.device_count() % 2 == 0 else 1,
        seed=3,
        learning_rate=1e-2,
        log_period=1,
        save_period=2,
        log=lambda *a: None,
    )
    kwargs.update(overrides)
    return train_lib.train(**kwargs)


def _losses(model_dir) -> dict[int, float]:
    path = Path(model_dir) / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {r["step"]: r["loss"] for r in rows}


def _steps(model_dir) -> list[int]:
    directory = Path(model_dir) / "checkpoints"
    if not directory.exists():
        return []
    with checkpoints.CheckpointStore(directory, read_only=True) as store:
        return store.all_steps()


def test_input_stream_position_matters_and_is_restorable():
    cfg = data.DataConfig(register_counting_task(), LENGTHS, BATCH, seed=3)
    stream = data.BatchStream(cfg)
    fresh = [next(stream) for _ in range(5)]
    tokens = [b["encoder_input_tokens"] for b in fresh]
    assert all(not np.array_equal(tokens[0], t) for t in tokens[1:])
    assert (fresh[0]["encoder_segment_ids"].max(axis=1) > 1).any()  # packed
    resumed = data.BatchStream(cfg, batches_consumed=3)
    for expected in fresh[3:]:
        got = next(resumed)
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
    assert resumed.state() == {"batches_consumed": 5}


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    full = _job(a)
    assert full.step == 6 and not full.stopped_early

    first = _job(b, stop_after_steps=3)
    assert first.step == 3 and first.stopped_early
    assert sorted(_losses(b)) == [1, 2, 3]
    assert _steps(b) == [2, 3]
    assert checkpoints.read_meta(b / "checkpoints")["batches_consumed"] == 3
    second = _job(b)
    assert second.step == 6 and not second.stopped_early

    want, got = _losses(a), _losses(b)
    assert sorted(want) == [1, 2, 3, 4, 5, 6]
    assert got == want  # exactly, including the steps after the resume
    assert len(set(want.values())) == 6
    assert _steps(a) == [2, 4, 6] and _steps(b) == [2, 3, 4, 6]
    pa = checkpoints.restore_params(a / "checkpoints")
    pb = checkpoints.restore_params(b / "checkpoints")
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_array_equal(x, y)
