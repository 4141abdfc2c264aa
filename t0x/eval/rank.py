"""Rank classification of a `_score_eval` task: group, batch, score, argmax, metrics.

Vocabulary:
  example    one (input, answer choice) pair as a `_score_eval` twin yields it: `inputs`,
             `targets` (token ids; targets end with EOS), `idx` = [row, choice],
             `is_correct`, `weight` (see `t0_tasks.tasks`).
  item       one row: its input (encoded once) and its C answer choices, gathered from the
             examples with the same `idx[0]`, choices in `idx[1]` order.
  score      of a choice: the sum of its target tokens' log-likelihoods (EOS included).
  prediction of an item: the argmax of its choices' scores (first on ties, as numpy/torch).
  batch      `batch_size` items, padded to one of a few fixed shapes: input length and
             target length rounded up to a power of two (at least `MIN_INPUT_LENGTH` /
             `MIN_TARGET_LENGTH`), choices to the batch's largest count, missing rows filled
             with copies of a real row; pads get zero loss weight and are dropped. Items are
             sorted by shape first, so a task compiles the scorer a handful of times.
  scorer     `score_fn(inputs [B,L], targets [B,C,T], weights [B,C,T]) -> [B,C]`: the model
             family's `score` (t0x.models.family) under jit (see `make_score_fn`); each
             family builds its own decoder inputs (T5: targets shifted right; BLOOM: the
             choices continue the input in one packed row).

Invariants: weights are 1 exactly on the real target tokens; truncation (inputs to `max_input_length`, targets to
`max_target_length` keeping EOS last, as Hugging Face tokenizers truncate in t-zero's
`run_eval.py`) happens before bucketing, so results never depend on the batch an item lands in.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

MIN_INPUT_LENGTH = 16
MIN_TARGET_LENGTH = 4

ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], Any]


@dataclasses.dataclass
class Item:
    row: int
    inputs: np.ndarray  # int32 [Li]
    choices: list[np.ndarray]  # int32 [Tc] per choice, EOS last
    is_correct: list[bool]
    weight: float
    examples: list[dict]  # the task's examples, in choice order (for metrics)

    @property
    def num_choices(self) -> int:
        return len(self.choices)


def _truncate_target(tokens: np.ndarray, max_length: int) -> np.ndarray:
    if len(tokens) <= max_length:
        return tokens
    return np.concatenate([tokens[: max_length - 1], tokens[-1:]]).astype(np.int32)  # keep EOS


def group_examples(
    examples: Iterable[dict],
    max_input_length: int = 1024,
    max_target_length: int = 256,
    max_rows: int | None = None,
) -> list[Item]:
    """Items (one per `idx[0]`, in order of first appearance) from score_eval examples.

    `max_rows` keeps the first that many rows and stops reading there. Raises ValueError when the examples of a row
    disagree on their input or repeat a choice index.
    """
    by_row: dict[int, list[dict]] = {}
    for ex in examples:
        row = int(ex["idx"][0])
        if row not in by_row and max_rows is not None and len(by_row) >= max_rows:
            break  # a twin yields each row's choices together, so the first rows are complete
        by_row.setdefault(row, []).append(ex)
    items = []
    for row, exs in by_row.items():
        exs = sorted(exs, key=lambda e: int(e["idx"][1]))
        choice_ids = [int(e["idx"][1]) for e in exs]
        if len(set(choice_ids)) != len(choice_ids):
            raise ValueError(
                f"row {row}: choice indices {choice_ids} repeat; is the task's dataset "
                "repeated (num_epochs > 1) or not a `_score_eval` task?"
            )
        inputs = np.asarray(exs[0]["inputs"], np.int32)
        for e in exs[1:]:
            if not np.array_equal(np.asarray(e["inputs"], np.int32), inputs):
                raise ValueError(
                    f"row {row}: its choices have different inputs; a score_eval row "
                    "must repeat one input per answer choice"
                )
        items.append(
            Item(
                row=row,
                inputs=inputs[:max_input_length],
                choices=[
                    _truncate_target(np.asarray(e["targets"], np.int32), max_target_length)
                    for e in exs
                ],
                is_correct=[bool(e["is_correct"]) for e in exs],
                weight=float(exs[0].get("weight", 1.0)),
                examples=exs,
            )
        )
    return items


def bucket(n: int, minimum: int = MIN_INPUT_LENGTH) -> int:
    """The smallest power of two >= max(n, minimum)."""
    size = max(1, minimum)
    while size < n:
        size *= 2
    return size


def _shape_key(item: Item) -> tuple[int, int, int]:
    return (
        bucket(len(item.inputs), MIN_INPUT_LENGTH),
        item.num_choices,
        bucket(max(len(c) for c in item.choices), MIN_TARGET_LENGTH),
    )


@dataclasses.dataclass
class Batch:
    item_ids: list[int]  # positions in the item list; len <= batch size
    inputs: np.ndarray  # [B, L], 0-padded on the right
    targets: np.ndarray  # [B, C, T], 0-padded on the right
    weights: np.ndarray  # [B, C, T]
    choice_mask: np.ndarray  # bool [B, C]: a real choice of a real item


def make_batches(items: Sequence[Item], batch_size: int) -> list[Batch]:
    """Batches of `batch_size` items with bucketed shapes (see the module docstring).

    Items sharing an (input, target) length bucket are batched together, sorted by choice
    count, so a batch is padded to at most the next choice count present.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, item in enumerate(items):
        length, _, target_length = _shape_key(item)
        groups.setdefault((length, target_length), []).append(i)
    batches = []
    for key in sorted(groups):
        ids = sorted(groups[key], key=lambda i: (items[i].num_choices, i))
        for start in range(0, len(ids), batch_size):
            batches.append(_collate(items, ids[start : start + batch_size], batch_size))
    return batches


def _collate(items: Sequence[Item], ids: list[int], batch_size: int) -> Batch:
    chosen = [items[i] for i in ids]
    length = max(bucket(len(it.inputs), MIN_INPUT_LENGTH) for it in chosen)
    choices = max(it.num_choices for it in chosen)
    target_length = max(bucket(max(len(c) for c in it.choices), MIN_TARGET_LENGTH) for it in chosen)
    enc = np.zeros((batch_size, length), np.int32)
    dec_tgt = np.zeros((batch_size, choices, target_length), np.int32)
    weights = np.zeros((batch_size, choices, target_length), np.float32)
    mask = np.zeros((batch_size, choices), bool)
    for b in range(batch_size):
        it = chosen[b] if b < len(chosen) else chosen[0]  # pad rows copy a real row
        enc[b, : len(it.inputs)] = it.inputs
        for c, tokens in enumerate(it.choices):
            dec_tgt[b, c, : len(tokens)] = tokens
            if b < len(chosen):
                weights[b, c, : len(tokens)] = 1.0
                mask[b, c] = True
    return Batch(ids, enc, dec_tgt, weights, mask)


def score_items(
    items: Sequence[Item],
    score_fn: ScoreFn,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """Per item, the float32 scores of its choices, in item order.

    `on_batch(num_items)` is called after each batch (progress reporting).
    """
    scores: list[np.ndarray | None] = [None] * len(items)
    for batch in make_batches(items, batch_size):
        out = np.asarray(
            score_fn(batch.inputs, batch.targets, batch.weights),
            np.float32,
        )
        if out.shape != batch.choice_mask.shape:
            raise ValueError(
                f"score_fn returned shape {out.shape}; expected [batch, choices] = "
                f"{batch.choice_mask.shape}"
            )
        for b, i in enumerate(batch.item_ids):
            scores[i] = out[b, : items[i].num_choices].copy()
        if on_batch:
            on_batch(len(batch.item_ids))
    return scores  # type: ignore[return-value]


def predictions(scores: Sequence[np.ndarray]) -> list[int]:
    return [int(np.argmax(s)) for s in scores]


def accuracy(items: Sequence[Item], preds: Sequence[int]) -> float:
    """Weighted percentage of items whose predicted choice is a correct one."""
    total = sum(it.weight for it in items)
    if not total:
        return float("nan")
    right = sum(it.weight for it, p in zip(items, preds) if it.is_correct[p])
    return 100.0 * right / total


def task_metrics(task, items: Sequence[Item], scores: Sequence[np.ndarray]) -> dict[str, float]:
    """The task's own seqio score metrics (t5's rank_classification: accuracy, F1, AUC...).

    Targets and scores go through the task's postprocessor exactly as seqio's Evaluator passes
    them, one entry per example in item and choice order.
    """
    targets, flat_scores = [], []
    for it, s in zip(items, scores):
        for ex, score in zip(it.examples, s):
            pretokenized = ex.get("targets_pretokenized", b"")
            if isinstance(pretokenized, bytes):
                pretokenized = pretokenized.decode("utf-8")
            targets.append(task.postprocess_fn(pretokenized, example=ex, is_target=True))
            flat_scores.append(task.postprocess_fn(float(score), example=ex, is_target=False))
    out: dict[str, float] = {}
    if not targets:
        return out
    for fn in task.score_metric_fns:
        for name, value in fn(targets, flat_scores).items():
            out[name] = float(value)
    return out


@dataclasses.dataclass
class RankResult:
    rows: list[int]
    scores: list[list[float]]
    predictions: list[int]
    labels: list[list[int]]  # per row, the indices of its correct choices
    accuracy: float
    metrics: dict[str, float]
    seconds: float

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def evaluate_items(
    items: Sequence[Item],
    score_fn: ScoreFn,
    batch_size: int = 32,
    task=None,
    on_batch: Callable[[int], None] | None = None,
) -> RankResult:
    """Scores, predictions, accuracy and (given the seqio `task`) its own metrics."""
    start = time.perf_counter()
    scores = score_items(items, score_fn, batch_size, on_batch)
    preds = predictions(scores)
    metrics = task_metrics(task, items, scores) if task is not None else {}
    return RankResult(
        rows=[it.row for it in items],
        scores=[[float(x) for x in s] for s in scores],
        predictions=preds,
        labels=[[c for c, ok in enumerate(it.is_correct) if ok] for it in items],
        accuracy=accuracy(items, preds),
        metrics=metrics,
        seconds=time.perf_counter() - start,
    )


def make_score_fn(loaded) -> ScoreFn:
    """A scorer from a `t0x.inference.LoadedModel`: its model's `score`, jitted once per
    batch shape, the batch split along the mesh's "data" axis when it has a mesh."""
    from t0x.inference import jit_on_mesh

    return jit_on_mesh(loaded, loaded.model.score, 3)
