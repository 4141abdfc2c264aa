"""Data accounting: what happened to the rows of each task, counted while they stream.

Vocabulary (per (task, split), cumulative since `clear()`; a pass is one iteration of the
task's source, e.g. one epoch):
  rendered          rows a template turned into an (inputs, targets) example.
  dropped           rows T0's rendering rules drop: the template does not split into an input
                    and a target, or the input renders empty.
  empty_target      rows whose target rendered empty. In training splits they are dropped
                    (training on `<NO LABEL>` would teach the model to say it); in evaluation
                    splits they are kept as `<NO LABEL>`, as T0 did for unlabelled test sets.
  examples          tokenized examples that reached the run's feature lengths check.
  truncated_inputs  examples whose `inputs` tokens exceed the run's input length (seqio then
                    cuts them), likewise `truncated_targets` (EOS included).
  skipped_too_long  examples a decoder-only model skipped because inputs + targets did not
                    fit a row (counted by its feature converter under task "<packing>").
  passes            how many times the source was started.

Rendering counts come from the rendering itself; truncation counts from `count_truncation`,
a preprocessor that runs after the cache placeholder (so it also counts cached P3 data) and
does nothing unless `enable_truncation_counts()` was called (t0x's training does; other users
of the tasks get an unchanged tf.data graph). Counts are per process; a multi-host job sums
them. Everything here is thread-safe: tf.data renders tasks in parallel threads.
"""

from __future__ import annotations

import collections
import threading

FIELDS = (
    "rendered",
    "dropped",
    "empty_target",
    "examples",
    "truncated_inputs",
    "truncated_targets",
    "skipped_too_long",
    "passes",
)


class DataCounts:
    """Thread-safe counters per (task, split); see the module doc for the fields."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], dict[str, int]] = collections.defaultdict(
            lambda: dict.fromkeys(FIELDS, 0)
        )

    def add(self, task: str, split: str, **increments: int) -> None:
        unknown = set(increments) - set(FIELDS)
        if unknown:
            raise KeyError(f"unknown data count(s) {sorted(unknown)}; known: {FIELDS}")
        with self._lock:
            counts = self._counts[(task, split)]
            for field, n in increments.items():
                counts[field] += int(n)

    def get(self, task: str, split: str) -> dict[str, int]:
        with self._lock:
            return dict(self._counts.get((task, split), dict.fromkeys(FIELDS, 0)))

    def snapshot(self) -> dict[tuple[str, str], dict[str, int]]:
        with self._lock:
            return {key: dict(value) for key, value in self._counts.items()}

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


COUNTS = DataCounts()
_truncation = threading.Event()


def enable_truncation_counts(enabled: bool = True) -> None:
    """Makes datasets built from now on count truncation (see the module doc)."""
    if enabled:
        _truncation.set()
    else:
        _truncation.clear()


def count_truncation(dataset, sequence_length=None, *, task: str, split: str = "train"):
    """seqio preprocessor (after the cache placeholder): counts over-length examples."""
    if not _truncation.is_set() or not sequence_length:
        return dataset
    import numpy as np
    import tensorflow as tf

    input_len = sequence_length.get("inputs")
    target_len = sequence_length.get("targets")

    def record(inputs_len, targets_len):
        COUNTS.add(
            task,
            split,
            examples=1,
            truncated_inputs=int(input_len is not None and inputs_len > input_len),
            truncated_targets=int(target_len is not None and targets_len > target_len),
        )
        return np.int32(0)

    def count(ex):
        done = tf.numpy_function(
            record, [tf.size(ex["inputs"]), tf.size(ex["targets"])], tf.int32, stateful=True
        )
        with tf.control_dependencies([done]):
            return {k: tf.identity(v) for k, v in ex.items()}

    return dataset.map(count)


def totals(snapshot: dict | None = None) -> dict[str, int]:
    """Every field summed over all (task, split) pairs."""
    snapshot = COUNTS.snapshot() if snapshot is None else snapshot
    out = dict.fromkeys(FIELDS, 0)
    for counts in snapshot.values():
        for field in FIELDS:
            out[field] += counts.get(field, 0)
    return out


def summary_line(counts: dict[str, int]) -> str:
    """One line for logs: rows rendered/dropped/empty, examples truncated."""
    examples = max(counts.get("examples", 0), 1)
    return (
        f"{counts.get('rendered', 0)} rows rendered, {counts.get('dropped', 0)} dropped by "
        f"templates, {counts.get('empty_target', 0)} empty targets; "
        f"{counts.get('truncated_inputs', 0)} inputs "
        f"({100 * counts.get('truncated_inputs', 0) / examples:.1f}%) and "
        f"{counts.get('truncated_targets', 0)} targets truncated of "
        f"{counts.get('examples', 0)} examples"
    )
