"""Where dataset rows come from: local JSONL, the Story Cloze CSVs, or Hugging Face.

Order of precedence for a (dataset, subset, split):
  1. `<data_dir>/<dataset>/<subset or "default">/<split>.jsonl` when `data_dir` is set and
     the file exists (rows in the dataset's HF schema; see `t0_tasks.settings`);
  2. story_cloze: the two manually downloaded CSVs in `story_cloze_dir` (or
     `<data_dir>/story_cloze`);
  3. `datasets.load_dataset(dataset, subset, split=...)`: the hub, or only the local cache
     when `HF_DATASETS_OFFLINE=1`.
Rows are then adapted to the schema promptsource's templates expect (`schema_drift`: trec and
wiki_hop changed on the hub). Nothing here runs at import time; rows are read when a task's dataset is iterated.
Failures raise `DataNotFoundError`, naming the dataset, the split and the setting that fixes it.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path

from t0_tasks import schema_drift, story_cloze
from t0_tasks.errors import T0TasksError
from t0_tasks.settings import Settings

DEFAULT_SUBSET_DIR = "default"


class DataNotFoundError(T0TasksError, FileNotFoundError):
    """The rows of a dataset split could not be found; the message says how to provide them."""


def local_path(data_dir: str | os.PathLike, dataset: str, subset: str | None, split: str) -> Path:
    return Path(data_dir) / dataset / (subset or DEFAULT_SUBSET_DIR) / f"{split}.jsonl"


def _read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(
                        f"{path}:{line_no}: not a JSON object ({e.msg}); "
                        "each line must hold one dataset row"
                    ) from e


def _story_cloze_rows(settings: Settings, split: str) -> Iterator[dict]:
    folder = settings.story_cloze_dir or (
        os.path.join(settings.data_dir, "story_cloze") if settings.data_dir else None
    )
    if split not in story_cloze.STORY_CLOZE_FILES:
        raise DataNotFoundError(
            f"story_cloze has no split {split!r}; it has {sorted(story_cloze.STORY_CLOZE_FILES)}"
        )
    if folder is None:
        raise DataNotFoundError(
            "story_cloze/2016 is a manual download: put the two CSVs from "
            "https://cs.rochester.edu/nlp/rocstories/ in a folder and set T0_STORY_CLOZE_DIR "
            "(or t0_tasks.configure(story_cloze_dir=...))."
        )
    try:
        yield from story_cloze.read_story_cloze_csv(
            Path(folder) / story_cloze.STORY_CLOZE_FILES[split]
        )
    except FileNotFoundError as e:
        raise DataNotFoundError(f"story_cloze/2016 split {split!r}: {e}") from e


def _hf_rows(settings: Settings, dataset: str, subset: str | None, split: str) -> Iterator[dict]:
    import datasets  # heavy; only when the hub or its cache is really used

    try:
        data = datasets.load_dataset(dataset, subset, split=split, cache_dir=settings.hf_cache_dir)
    except Exception as e:  # the datasets library raises many types here
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1"
        where = "the local HF cache (HF_DATASETS_OFFLINE=1)" if offline else "the Hugging Face hub"
        raise DataNotFoundError(
            f"{dataset}/{subset or ''} split {split!r} could not be loaded from {where}: "
            f"{type(e).__name__}: {e}. Fix: set T0_DATA_DIR (t0_tasks.configure(data_dir=...)) "
            f"to a folder holding {local_path('<data_dir>', dataset, subset, split)}, or "
            "download it once with network access."
        ) from e
    yield from data


@functools.cache
def _count_lines(path: str, mtime: float) -> int:
    del mtime  # part of the cache key: a changed file is counted again
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def local_split_size(
    settings: Settings, dataset: str, subset: str | None, split: str
) -> int | None:
    """Rows in the local JSONL copy of a split (None when there is none)."""
    if not settings.data_dir:
        return None
    path = local_path(settings.data_dir, dataset, subset, split)
    if not path.exists():
        return None
    return _count_lines(str(path), path.stat().st_mtime)


def iter_rows(settings: Settings, dataset: str, subset: str | None, split: str) -> Iterator[dict]:
    """Rows of one split, from the first source that has them, in the templates' schema."""
    for row in _raw_rows(settings, dataset, subset, split):
        yield schema_drift.adapt(dataset, subset, row)


def _raw_rows(settings: Settings, dataset: str, subset: str | None, split: str) -> Iterator[dict]:
    if settings.data_dir:
        path = local_path(settings.data_dir, dataset, subset, split)
        if path.exists():
            yield from _read_jsonl(path)
            return
    if dataset == "story_cloze":
        yield from _story_cloze_rows(settings, split)
        return
    yield from _hf_rows(settings, dataset, subset, split)
