"""Finetuning starts from T5X's own checkpoint, at its step, with its weights."""

import numpy as np
import pytest

from t0x import checkpoints
from t0x.models.t5 import network
from t0x.jobs import train as train_lib
from t0x.checkpoints.t5x import read_t5x_params
from t0x.testing import register_counting_task
from t0_tasks.testing import REFERENCE_DIR

T5X_CKPT = REFERENCE_DIR / "t5x_testdata" / "test_t5_tiny.checkpoint_0"


def test_train_from_t5x_checkpoint_keeps_absolute_steps_and_weights(tmp_path):
    if not T5X_CKPT.exists():
        pytest.skip(f"T5X's test checkpoint not found at {T5X_CKPT}")
    result = train_lib.train(
        model_dir=str(tmp_path / "run"),
        mixture_or_task_name=register_counting_task(),
        task_feature_lengths={"inputs": 20, "targets": 16},
        train_steps=2,  # absolute: the checkpoint is at step 0, so two steps are trained
        batch_size=8,
        model_config=network.CONFIGS["t5_1_1_tiny"].replace(dtype="float32"),
        initial_checkpoint_path=str(T5X_CKPT),
        learning_rate=0.0,  # weights must come out exactly as T5X wrote them
        log_period=1,
        log=lambda *a: None,
    )
    assert result.step == 2 and len(result.history) == 2
    saved = checkpoints.restore_params(tmp_path / "run" / "checkpoints")
    want = read_t5x_params(T5X_CKPT)
    flat_saved = dict(_flatten(saved))
    flat_want = dict(_flatten(want))
    assert flat_saved.keys() == flat_want.keys()
    for key, value in flat_want.items():
        np.testing.assert_array_equal(flat_saved[key], value, err_msg=key)


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", np.asarray(value)
