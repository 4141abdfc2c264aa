"""P3 — the released, pre-rendered T0 data — read as seqio caches.

P3 is seqio's cache format, one folder per task:
  `<p3_dir>/<task>/<split>.tfrecord-NNNNN-of-NNNNN`, `info.<split>.json`,
  `stats.<split>.json`, and `COMPLETED` once the folder is whole.
Features: `inputs`, `inputs_pretokenized`, `targets`, `targets_pretokenized`,
`answer_choices`; `_score_eval` tasks add `idx`, `is_correct`, `weight`.

Pointing t0_tasks at a P3 copy (`T0_P3_DIR` / `configure(p3_dir=...)`) adds it to seqio's
global cache directories, so `task.get_dataset(..., use_cached=True)` reads it and renders
nothing. seqio silently ignores a folder without `COMPLETED`; we refuse it loudly instead
(`IncompleteCacheError`), since a half-copied P3 folder is a mistake the user must see.
"""

from __future__ import annotations

import os

import seqio
import tensorflow as tf

from t0_tasks.errors import T0TasksError

COMPLETED = "COMPLETED"


class IncompleteCacheError(T0TasksError, RuntimeError):
    """A task's cache folder exists but has no COMPLETED marker."""


def check_cache_folder(task_name: str, cache_root: str) -> str | None:
    """The task's cache folder under `cache_root`; None when absent.

    Raises IncompleteCacheError when the folder is there without COMPLETED.
    """
    folder = os.path.join(cache_root, seqio.utils.get_task_dir_from_name(task_name))
    if not tf.io.gfile.isdir(folder):
        return None
    if not tf.io.gfile.exists(os.path.join(folder, COMPLETED)):
        raise IncompleteCacheError(
            f"the cache of task {task_name!r} at {folder} has no {COMPLETED} file, so it is "
            "partial (an interrupted copy or seqio_cache_tasks run). Fix: copy the folder again "
            f"(or rerun seqio_cache_tasks for {task_name}) until {COMPLETED} is written."
        )
    return folder


class CachedTask(seqio.Task):
    """A seqio Task that refuses incomplete cache folders in the global cache dirs."""

    @property
    def cache_dir(self):
        if not self._cache_dir:
            for root in seqio.utils.get_global_cache_dirs():
                if check_cache_folder(self.name, root):
                    break
        return super().cache_dir
