"""Checks that run before any device starts and before MODEL_DIR is touched.

A training job fails here, in seconds and with one line naming both values and the setting
to change, rather than after mesh and model initialisation (or after a step):
  * MODEL_DIR is set and is not a file; the learning rate is a finite number in [0, 1];
  * the mixture or task exists (close matches are suggested);
  * with USE_CACHED_TASKS every task has a complete cache (`COMPLETED`);
  * the tasks' vocabulary fits the model's embedding (vocab ids <= model vocab_size);
  * when resuming: the latest checkpoint was saved for this model config (the fields that
    shape parameters) and this vocabulary (path and SHA-256 of the SentencePiece model), and
    it records its input position (else RESTART_INPUT_STREAM must be set explicitly);
  * the initial checkpoint exists and its format is recognised.
Nothing here writes anywhere.

Vocabulary:
  vocabulary record  `{"path", "extra_ids", "size", "sha256"}` of a SentencePiece vocabulary,
                     stored in every checkpoint's meta and compared on resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from typing import Any

from t0x.errors import CheckpointMismatchError, ConfigError, DataError

MAX_LEARNING_RATE = 1.0
# fields of a model config that do not change the parameter shapes (free to differ on resume)
_FREE_FIELDS = (
    "dropout_rate",
    "dtype",
    "remat_policy",
    "float32_attention_logits",
    "hf_model_type",
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainPlan:
    """What the checks found: the vocabulary record and, when resuming, the latest step."""

    vocabulary: dict
    resume_step: int | None = None
    resume_meta: dict | None = None


def check_model_dir(model_dir: str | None) -> str:
    import tensorflow as tf

    if not model_dir:
        raise ConfigError(
            "MODEL_DIR is not set: pass --gin.MODEL_DIR=<dir> (a local path or gs://bucket/run;"
            " checkpoints, logs and config.gin go there)"
        )
    if tf.io.gfile.exists(model_dir) and not tf.io.gfile.isdir(model_dir):
        raise ConfigError(
            f"MODEL_DIR={model_dir} is a file, not a directory: point --gin.MODEL_DIR at a "
            "directory (a new one is created)"
        )
    return model_dir


def check_learning_rate(learning_rate: float) -> None:
    ok = isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate)
    if not ok or not 0.0 <= learning_rate <= MAX_LEARNING_RATE:
        raise ConfigError(
            f"LEARNING_RATE={learning_rate!r} is outside [0, {MAX_LEARNING_RATE}]: training "
            "would diverge at once (T0 used 1e-3 with Adafactor, BLOOMZ 2e-5 with Adam); set "
            "--gin.LEARNING_RATE to a sane value"
        )


def check_tasks(name: str, use_cached: bool) -> list:
    """The mixture's (or task's) seqio tasks; their caches when `use_cached`."""
    import seqio

    from t0_tasks import report

    report.resolve(name)
    tasks = seqio.get_subtasks(seqio.get_mixture_or_task(name))
    if use_cached:
        missing = [t.name for t in tasks if not t.cache_dir]  # partial caches raise here
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(
                f"USE_CACHED_TASKS=True but task {missing[0]}{more} has no cache in "
                f"{seqio.utils.get_global_cache_dirs() or 'any cache directory'}: cache it "
                "(scripts/tpu/cache_tasks.sh; or set T0_P3_DIR to a P3 copy), or pass "
                "--gin.USE_CACHED_TASKS=False to render the prompts while training"
            )
    return tasks


def vocabulary_record(vocab) -> dict:
    """Path, extra ids, size and SHA-256 of a seqio SentencePiece vocabulary."""
    path = getattr(vocab, "sentencepiece_model_file", None) or getattr(
        vocab, "tokenizer_file", None
    )
    try:
        size = int(vocab.vocab_size)
        model = getattr(vocab, "sp_model", None)
        digest = hashlib.sha256(model).hexdigest() if isinstance(model, bytes) else None
    except Exception as e:  # noqa: BLE001 - unreadable file, no network, bad proto
        raise DataError(
            f"cannot read the tasks' vocabulary {path}: {type(e).__name__}: {e}. Point the "
            "run at a readable one: T0_VOCAB (a SentencePiece model), or the recipe's "
            "TASK_SETTINGS vocab_path (BLOOM: --gin.BLOOM_TOKENIZER=<folder>/tokenizer.json)"
        ) from None
    return {
        "path": str(path),
        "extra_ids": int(getattr(vocab, "extra_ids", 0) or 0),
        "size": size,
        "sha256": digest,
    }


def check_vocabulary(tasks: list, model_vocab_size: int) -> dict:
    vocab = tasks[0].output_features["targets"].vocabulary
    record = vocabulary_record(vocab)
    if record["size"] > model_vocab_size:
        raise ConfigError(
            f"the tasks' vocabulary ({record['path']}) has {record['size']} ids but the "
            f"model's embedding has vocab_size={model_vocab_size} rows: ids past the table "
            "would train garbage. Use a model with vocab_size >= "
            f"{record['size']} (--gin.VOCAB_SIZE), or the model's own vocabulary (T0_VOCAB)"
        )
    return record


def _latest_meta(model_dir: str) -> tuple[int | None, dict | None]:
    import tensorflow as tf

    from t0x import checkpoints

    directory = os.path.join(model_dir, "checkpoints")
    if not tf.io.gfile.isdir(directory):
        return None, None
    steps = sorted(
        int(name.rstrip("/"))
        for name in tf.io.gfile.listdir(directory)
        if name.rstrip("/").isdigit()
        and checkpoints.is_step_dir(os.path.join(directory, name.rstrip("/")))
    )
    if not steps:
        return None, None
    step_dir = os.path.join(directory, str(steps[-1]))
    return steps[-1], checkpoints.read_meta(step_dir)


def config_differences(saved: dict, config: Any) -> dict[str, tuple]:
    """{field: (saved, run)} of the shape-relevant fields that differ."""
    run = dataclasses.asdict(config)
    out = {}
    for field, value in run.items():
        if field in _FREE_FIELDS or field not in saved:
            continue
        old = saved[field]
        if isinstance(value, tuple):
            old = tuple(old)
        if old != value:
            out[field] = (old, value)
    return out


def check_resume(model_dir: str, model_config, vocabulary: dict, restart_input_stream: bool):
    """(latest step, its meta) after checking they fit this run; (None, None) for a new run."""
    step, meta = _latest_meta(model_dir)
    if step is None:
        return None, None
    where = os.path.join(model_dir, "checkpoints", str(step))
    from t0x import models

    saved_family, family = meta.get("family", "t5"), models.of_config(model_config).name
    if saved_family != family:
        raise CheckpointMismatchError(
            f"checkpoint {where} holds a {saved_family} model, this run configures a {family} "
            "model: train into another MODEL_DIR"
        )
    diffs = config_differences(meta.get("config") or {}, model_config)
    if diffs:
        listed = ", ".join(f"{k}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in diffs.items())
        raise CheckpointMismatchError(
            f"checkpoint {where} was saved for another model ({listed}): set the model config "
            "back (MODEL_CONFIG / --gin.<field>) or train into another MODEL_DIR"
        )
    saved_vocab = meta.get("vocabulary")
    if saved_vocab and _vocab_differs(saved_vocab, vocabulary):
        raise CheckpointMismatchError(
            f"checkpoint {where} was trained with vocabulary {saved_vocab.get('path')} "
            f"(sha256 {str(saved_vocab.get('sha256'))[:12]}), this run uses "
            f"{vocabulary['path']} (sha256 {str(vocabulary['sha256'])[:12]}): point T0_VOCAB "
            "at the checkpoint's vocabulary, or train into another MODEL_DIR"
        )
    position = meta.get("batches_consumed")
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        if not restart_input_stream:
            raise CheckpointMismatchError(
                f"checkpoint {where} records no valid input position (batches_consumed="
                f"{json.dumps(position)}): resuming would replay the data from its start. Pass "
                "--gin.RESTART_INPUT_STREAM=True to restart the input stream on purpose"
            )
    return step, meta


def _vocab_differs(saved: dict, run: dict) -> bool:
    if saved.get("sha256") and run.get("sha256"):
        return saved["sha256"] != run["sha256"] or saved.get("extra_ids") != run.get("extra_ids")
    return saved.get("path") != run.get("path") or saved.get("extra_ids") != run.get("extra_ids")


def check_initial_checkpoint(path: str | None) -> str | None:
    """The initial checkpoint's format ("t5x" | "hf" | "t0x"), or None without one."""
    if not path:
        return None
    from t0x.checkpoints import convert

    try:
        return convert.detect_format(path)
    except FileNotFoundError as e:
        raise ConfigError(
            f"INITIAL_CHECKPOINT_PATH={path} does not exist ({e}); fix the path or set "
            "--gin.INITIAL_CHECKPOINT_PATH=None to start from random weights"
        ) from None


def check_train(
    *,
    model_dir: str | None,
    mixture_or_task_name: str,
    model_config,
    learning_rate: float,
    use_cached: bool,
    initial_checkpoint_path: str | None,
    restart_input_stream: bool,
) -> TrainPlan:
    """Every check of the module doc, in order; returns what later stages reuse."""
    check_model_dir(model_dir)
    check_learning_rate(learning_rate)
    tasks = check_tasks(mixture_or_task_name, use_cached)
    resuming = _latest_meta(model_dir)[0] is not None if model_dir else False
    if not resuming:  # a missing starting point says more than the vocabulary beside it
        check_initial_checkpoint(initial_checkpoint_path)
    vocabulary = check_vocabulary(tasks, model_config.vocab_size)
    step, meta = check_resume(model_dir, model_config, vocabulary, restart_input_stream)
    return TrainPlan(vocabulary=vocabulary, resume_step=step, resume_meta=meta)
