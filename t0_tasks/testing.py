"""Test helpers for code that reads T0 datasets (in the spirit of seqio's test_utils).

Vocabulary:
  fixture   a few hand-written rows of one catalog dataset split, in that dataset's
            exact Hugging Face schema, stored as JSONL at
            ``tests/fixtures/hf/<hf_name>/<subset or "default">/<split>.jsonl``.
            Story Cloze 2016 is the exception: like the real data it comes as the
            two official CSV files under ``tests/fixtures/story_cloze/`` and is read
            with ``t0_tasks.story_cloze``.
  reference ``../shared/reference/`` next to the repository: facts we did not write
            (T0's dataset table, the HF schemas and split sizes, T5X checkpoints).
            Tests that need it skip with a reason when it is absent.

The fixture paths are computed relative to this file, so they exist in a source
checkout (``t0_tasks/../tests/fixtures``), not in an installed wheel.
"""

from __future__ import annotations

import json
from pathlib import Path

from t0_tasks import story_cloze
from t0_tasks.sources import DataNotFoundError

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures" / "hf"
STORY_CLOZE_FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures" / "story_cloze"
REFERENCE_DIR = (REPO_ROOT / ".." / "shared" / "reference").resolve()

_STORY_CLOZE = ("story_cloze", "2016")


def _key(hf_name: str, subset: str | None) -> tuple[str, str]:
    return hf_name, subset or ""


def fixture_dir(hf_name: str, subset: str | None) -> Path:
    """The folder holding the JSONL fixtures of one (HF dataset, subset) pair."""
    return FIXTURES_DIR / hf_name / (subset or "default")


def fixture_splits(hf_name: str, subset: str | None) -> list[str]:
    """Names of the splits that have a fixture for this pair, sorted."""
    if _key(hf_name, subset) == _STORY_CLOZE:
        return sorted(
            split
            for split, name in story_cloze.STORY_CLOZE_FILES.items()
            if (STORY_CLOZE_FIXTURES_DIR / name).is_file()
        )
    return sorted(p.stem for p in fixture_dir(hf_name, subset).glob("*.jsonl"))


def load_fixture_rows(hf_name: str, subset: str | None, split: str) -> list[dict]:
    """Rows of one fixture split, as plain dicts in the dataset's HF schema.

    ``subset`` may be ``None`` or ``""`` for datasets without one. Raises
    FileNotFoundError naming the missing file.
    """
    if _key(hf_name, subset) == _STORY_CLOZE:
        return story_cloze.read_story_cloze_split(STORY_CLOZE_FIXTURES_DIR, split)
    path = fixture_dir(hf_name, subset) / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"No fixture for {hf_name}/{subset or '-'} split {split!r}: {path} is missing "
            f"(have: {fixture_splits(hf_name, subset) or 'none'}). Write it in the "
            "dataset's HF schema (see tests/test_fixtures_and_templates.py)."
        )
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def reference_or_skip() -> Path:
    """``REFERENCE_DIR`` if it exists, else skips the calling test with a reason."""
    if REFERENCE_DIR.is_dir():
        return REFERENCE_DIR
    import pytest  # Imported lazily: library code must not need pytest.

    pytest.skip(
        f"reference data folder {REFERENCE_DIR} is absent; it holds facts from public "
        "sources (T0 dataset table, HF schemas, T5X checkpoints) that this test checks against"
    )


def write_seqio_cache(task_name: str, split: str, cache_root, completed: bool = True):
    """Caches one split of a registered task as `seqio_cache_tasks` does, without Beam.

    The same steps as seqio's Beam pipeline (seqio/beam_utils.py): the task's source, its
    pre-cache preprocessors (`Task.preprocess_precache`), seqio's own `dict_to_tfexample`
    serialisation into `<split>.tfrecord-00000-of-00001`, `info.<split>.json` in the layout
    of its GetInfo, `stats.<split>.json`, then `COMPLETED`. Returns the task's cache folder.
    """
    import numpy as np
    import seqio
    import tensorflow as tf

    task = seqio.get_mixture_or_task(task_name)
    folder = Path(cache_root) / task_name
    folder.mkdir(parents=True, exist_ok=True)
    ds = task.preprocess_precache(task.source.get_dataset(split=split, shuffle=False), seed=0)
    examples = list(ds.as_numpy_iterator())
    if not examples:  # seqio cannot read a cache whose info holds no features
        raise DataNotFoundError(
            f"{task_name} has no {split!r} rows to cache (its source or filters leave none); "
            "add rows to the fixture data or leave the task out of the mixture"
        )
    with tf.io.TFRecordWriter(str(folder / f"{split}.tfrecord-00000-of-00001")) as writer:
        for ex in examples:
            # protobuf 7 rejects Python bools in Int64List (seqio's writer hands it
            # `is_correct` as bool); a tf.train.Example stores bools as int64 anyway.
            ex_ints = {
                k: v.astype(np.int64) if getattr(v, "dtype", None) == bool else v
                for k, v in ex.items()
            }
            writer.write(seqio.dict_to_tfexample(ex_ints).SerializeToString())
    features = {}
    for key, value in examples[0].items():
        t = tf.constant(value)
        shape = t.shape.as_list()
        features[key] = {"shape": [None] + shape[1:] if shape else [], "dtype": t.dtype.name}
    info = {"num_shards": 1, "features": features, "seqio_version": seqio.__version__}
    (folder / f"info.{split}.json").write_text(json.dumps(info))
    (folder / f"stats.{split}.json").write_text(json.dumps({"examples": len(examples)}))
    if completed:
        (folder / "COMPLETED").write_text("")
    return folder
