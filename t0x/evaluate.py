"""The zero-shot evaluation job (`t0x eval`): the T0 paper's protocol over a seqio mixture.

Vocabulary:
  rank task        a task with score metrics (t0_tasks' `_score_eval` twins): scored by rank
                   classification (`t0x.rank_eval`): each input encoded once, its answer
                   choices scored against it, batched across rows and choices.
  generative task  a task with only prediction metrics: decoded (greedy or beam) and scored by
                   seqio's Evaluator with the task's metrics (ROUGE, BLEU, SQuAD, accuracy...).
  task result      `<output_dir>/tasks/<task>.json`, written atomically when the task
                   finishes (see `t0x.eval_report` for its fields). A restarted evaluation
                   reads finished results instead of recomputing them; a result written by a
                   different evaluation (other checkpoint, split, example cap or lengths) is an
                   error rather than being mixed in or overwritten.
  report name      of a task's dataset: t0_tasks' `name/subset` label; ANLI tasks are reported
                   per round (`anli/r1`, ...) and pooled under the group `anli`. Tasks t0_tasks
                   does not know are reported under their own name.

`evaluate(...)` is bound by gin (`gin/runs/eval.gin` documents the macros) and called by
`t0x eval`; `evaluate_tasks(...)` is the loop, with the scorer and predictor injected.
Progress (task i/N, rows/s, ETA) goes to `log`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from typing import Callable, Sequence

import gin
import numpy as np

from t0x import eval_report, rank_eval
from t0x.errors import DataError

DEFAULT_FEATURE_LENGTHS = {"inputs": 1024, "targets": 256}  # t-zero's run_eval.py limits
PROGRESS_PERIOD_S = 10.0


@dataclasses.dataclass
class TaskInfo:
    dataset: str
    template: str
    group: str | None


def task_info(task_name: str, split: str) -> TaskInfo:
    """The report name, template and group of a task (see the module docstring)."""
    import t0_tasks

    try:
        spec = t0_tasks.current().spec_of(task_name)
    except KeyError:
        return TaskInfo(task_name, task_name, None)
    dataset = spec.dataset.label
    if spec.dataset.name == "anli":
        source = spec.source_split(split) if split in spec.splits else split
        round_ = re.search(r"r\d+$", source) or re.search(
            r"r\d+$", task_name.removesuffix("_score_eval")
        )
        if round_:
            return TaskInfo(f"{dataset}/{round_.group(0)}", spec.template_name, dataset)
    return TaskInfo(dataset, spec.template_name, None)


def resolve_tasks(
    mixture_or_task_name: str | None, tasks: Sequence[str] | None, split: str
) -> list[str]:
    """Task names to evaluate: `tasks` if given, else the mixture's (or the task itself)."""
    import seqio

    from t0_tasks import report

    if tasks:
        names = [report.resolve(t, "task") for t in tasks]
    elif mixture_or_task_name:
        report.resolve(mixture_or_task_name)
        names = [
            t.name for t in seqio.get_subtasks(seqio.get_mixture_or_task(mixture_or_task_name))
        ]
    else:
        raise ValueError(
            "nothing to evaluate: set MIXTURE_OR_TASK_NAME (e.g. "
            "'t0_eval_score_eval') or a list of tasks"
        )
    missing = [n for n in names if split not in seqio.get_mixture_or_task(n).splits]
    if missing:
        raise ValueError(
            f"tasks without a {split!r} split: {missing}; choose another split or leave them out"
        )
    return names


def _task_file(output_dir: str, task_name: str) -> str:
    return os.path.join(output_dir, eval_report.TASKS_DIR, f"{task_name}.json")


def _read_finished(path: str, run_key: dict, recompute_damaged: bool = False) -> dict | None:
    from tensorflow.io import gfile

    if not gfile.exists(path):
        return None
    try:
        result = eval_report.read_json(path)
        if not isinstance(result, dict) or "score" not in result:
            raise ValueError("not a task result (no 'score')")
    except ValueError as e:  # JSONDecodeError included
        if recompute_damaged:
            gfile.rename(path, path + ".damaged", overwrite=True)
            return None
        raise DataError(
            f"task result {path} is damaged ({e}); delete it, or pass "
            "--gin.RECOMPUTE_DAMAGED_TASKS=True to set it aside (.damaged) and recompute it"
        ) from None
    if result.get("run_key") != run_key:
        raise FileExistsError(
            f"{path} holds a result of another evaluation ({result.get('run_key')}), not of "
            f"this one ({run_key}); use another output dir, or move that file away to recompute"
        )
    return result


def _decode(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value


class _Progress:
    """Rows/s and ETA over the whole evaluation, printed at most every PROGRESS_PERIOD_S."""

    def __init__(self, total_rows: int, log: Callable[[str], None]):
        self.total, self.done, self.log = total_rows, 0, log
        self.t0 = self.last = time.perf_counter()

    def advance(self, rows: int, label: str, force: bool = False) -> None:
        self.done += rows
        now = time.perf_counter()
        if not force and now - self.last < PROGRESS_PERIOD_S:
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9)
        eta = max(self.total - self.done, 0) / rate if rate else float("inf")
        self.log(f"{label}  {self.done}/{self.total} rows  {rate:.1f} rows/s  ETA {_duration(eta)}")


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _num_rows(task, split: str, max_examples: int | None) -> int:
    try:
        n = int(task.num_input_examples(split) or 0)
    except Exception:
        n = 0
    return min(n, max_examples) if max_examples else n


def rank_task(
    task,
    split: str,
    score_fn,
    batch_size: int,
    max_examples: int | None,
    feature_lengths: dict,
    use_cached: bool,
    on_batch=None,
) -> dict:
    """Rank-classification result of one `_score_eval` task (fields for the task file)."""
    ds = task.get_dataset(None, split=split, shuffle=False, num_epochs=1, use_cached=use_cached)
    items = rank_eval.group_examples(
        ds.as_numpy_iterator(),
        feature_lengths["inputs"],
        feature_lengths["targets"],
        max_rows=max_examples,
    )
    if not items:
        raise ValueError(
            f"task {task.name} has no examples in split {split!r}; check its data "
            "(t0x tasks show) or leave it out"
        )
    res = rank_eval.evaluate_items(items, score_fn, batch_size, task=task, on_batch=on_batch)
    return {
        "kind": "rank",
        "metric": "accuracy",
        "score": res.accuracy,
        "metrics": {**res.metrics, "accuracy": res.accuracy},
        "num_examples": len(items),
        "seconds": res.seconds,
        "choices": [
            [_decode(e.get("targets_pretokenized", b"")) for e in it.examples] for it in items
        ],
        "rows": res.rows,
        "predictions": res.predictions,
        "labels": res.labels,
        "scores": res.scores,
    }


def generate_task(
    task,
    split: str,
    predict: Callable,
    batch_size: int,
    max_examples: int | None,
    feature_lengths: dict,
    use_cached: bool,
) -> dict:
    """Decodes a generative task and scores it with its seqio metrics (seqio's Evaluator)."""
    import seqio

    start = time.perf_counter()
    evaluator = seqio.Evaluator(
        mixture_or_task_name=task.name,
        feature_converter=seqio.EncDecFeatureConverter(pack=False),
        eval_split=split,
        use_cached=use_cached,
        num_examples=max_examples,
        async_compute_metrics=False,
    )
    shapes = evaluator.model_feature_shapes
    decode_length = min(shapes["decoder_target_tokens"][0], feature_lengths["targets"])
    max_input = feature_lengths["inputs"]

    def predict_fn(ds, model_feature_shapes=None):
        del model_feature_shapes
        out = []
        for indices, batch in ds.batch(batch_size).as_numpy_iterator():
            enc = batch["encoder_input_tokens"][:, :max_input]
            if len(indices) < batch_size:  # fixed shapes: pad rows repeat the first one
                enc = np.concatenate([enc, np.repeat(enc[:1], batch_size - len(indices), 0)])
            tokens = predict(enc, decode_length)
            out.extend((int(i), [int(t) for t in tokens[r]]) for r, i in enumerate(indices))
        return out

    metrics_future, outputs = evaluator.evaluate(compute_metrics=True, predict_fn=predict_fn)
    metrics = {
        k: _as_float(v) for k, v in (metrics_future.result() or {}).get(task.name, {}).items()
    }
    evaluator.close()
    if not metrics:
        raise ValueError(f"task {task.name}: seqio computed no metrics; does it define metric_fns?")
    primary = "accuracy" if "accuracy" in metrics else next(iter(metrics))
    vocab = task.output_features["targets"].vocabulary
    tokens = next(iter(outputs.get(task.name, {}).values()), [])
    return {
        "kind": "generate",
        "metric": primary,
        "score": metrics[primary],
        "metrics": metrics,
        "num_examples": len(tokens),
        "seconds": time.perf_counter() - start,
        "predictions": [vocab.decode(list(t)) for t in tokens],
    }


def _as_float(value):
    value = getattr(value, "value", value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def evaluate_tasks(
    task_names: Sequence[str],
    output_dir: str,
    score_fn=None,
    predict=None,
    *,
    split: str = "validation",
    batch_size: int = 32,
    max_examples: int | None = None,
    feature_lengths: dict | None = None,
    use_cached: bool = False,
    run_key: dict | None = None,
    write: bool = True,
    recompute_damaged: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Evaluates each task (or reads its finished result); returns the task results.

    `write` False (every process but the first of a multi-host job) computes without writing.
    A finished result that cannot be read is an error naming it, unless `recompute_damaged`
    (then it is renamed `<task>.json.damaged` and computed again).
    """
    import seqio

    feature_lengths = {**DEFAULT_FEATURE_LENGTHS, **(feature_lengths or {})}
    run_key = {
        **(run_key or {}),
        "split": split,
        "max_examples": max_examples,
        "feature_lengths": feature_lengths,
    }
    if write:
        from tensorflow.io import gfile  # output_dir may be gs://

        gfile.makedirs(os.path.join(output_dir, eval_report.TASKS_DIR))
    tasks = [seqio.get_mixture_or_task(n) for n in task_names]
    finished = {
        t.name: _read_finished(_task_file(output_dir, t.name), run_key, recompute_damaged and write)
        for t in tasks
    }
    todo = [t for t in tasks if finished[t.name] is None]
    log(
        f"evaluating {len(tasks)} tasks on {split!r}: {len(tasks) - len(todo)} already done "
        f"in {output_dir}"
    )
    progress = _Progress(sum(_num_rows(t, split, max_examples) for t in todo), log)
    results = []
    for i, task in enumerate(tasks, start=1):
        path = _task_file(output_dir, task.name)
        if finished[task.name] is not None:
            results.append(finished[task.name])
            continue
        label = f"[{i}/{len(tasks)}] {task.name}"
        info = task_info(task.name, split)
        if task.score_metric_fns:
            if score_fn is None:
                raise ValueError(
                    f"{task.name} is a rank-classification task but no scorer was given"
                )
            out = rank_task(
                task,
                split,
                score_fn,
                batch_size,
                max_examples,
                feature_lengths,
                use_cached,
                on_batch=lambda n: progress.advance(n, label),
            )
        else:
            if predict is None:
                raise ValueError(f"{task.name} is a generative task but no predictor was given")
            out = generate_task(
                task, split, predict, batch_size, max_examples, feature_lengths, use_cached
            )
            progress.advance(out["num_examples"], label)
        result = {
            "task": task.name,
            "dataset": info.dataset,
            "template": info.template,
            "group": info.group,
            "split": split,
            "run_key": run_key,
            **out,
        }
        if write:
            eval_report.write_json_atomic(path, result)
        log(
            f"{label}: {result['metric']} {result['score']:.2f} over {result['num_examples']} rows "
            f"({result['seconds']:.1f}s)"
        )
        results.append(result)
    return results


def default_output_dir(checkpoint_path: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", checkpoint_path.rstrip("/").split("/")[-1]) or "model"
    return os.path.join("runs", "eval", name)


@gin.configurable("evaluate", module="t0x")
def evaluate(
    checkpoint_path: str = gin.REQUIRED,
    output_dir: str | None = None,
    mixture_or_task_name: str | None = "t0_eval_score_eval",
    tasks: Sequence[str] | None = None,
    split: str = "validation",
    batch_size: int = 32,
    max_examples: int | None = None,
    feature_lengths: dict | None = None,
    reference_file: str | None = None,
    vocab_path: str | None = None,
    task_settings: dict | None = None,
    use_cached: bool = False,
    num_partitions: int = 1,
    dtype: str | None = "float32",
    model_config=None,
    decode_method: str = "greedy",
    num_beams: int = 4,
    recompute_damaged: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Evaluates a checkpoint (t0x, T5X or Hugging Face) on a mixture; writes the report.

    `output_dir` None: `runs/eval/<checkpoint name>`. `max_examples` caps rows per task.
    `vocab_path` / `task_settings` (t0_tasks settings such as data_dir, p3_dir) re-register
    t0_tasks before the tasks are read. Generative tasks decode with `decode_method`.
    Returns results.json's content.
    """
    import t0_tasks

    changes = dict(task_settings or {})
    if vocab_path:
        changes["vocab_path"] = vocab_path
    if changes:
        t0_tasks.configure(**changes)
    from t0x import convert, partitioning
    from t0x.infer import load_model, make_predict_fn

    partitioning.initialize_distributed()
    output_dir = output_dir or default_output_dir(checkpoint_path)
    names = resolve_tasks(mixture_or_task_name, tasks, split)
    loaded = load_model(
        checkpoint_path, dtype=dtype, model_config=model_config, num_partitions=num_partitions
    )
    partitioning.check_batch_size(batch_size, loaded.mesh)
    fmt = convert.detect_format(checkpoint_path)
    try:
        step = convert.source_step(checkpoint_path, fmt)
    except Exception:  # the step is metadata for the report; never a reason to stop
        step = None
    run = {
        "checkpoint": checkpoint_path,
        "format": fmt,
        "step": step,
        "mixture": mixture_or_task_name if not tasks else None,
        "tasks": len(names),
        "split": split,
        "batch_size": batch_size,
        "dtype": loaded.config.dtype,
    }
    log(f"evaluating {checkpoint_path} ({fmt}) -> {output_dir}")
    import jax

    writer = jax.process_index() == 0
    evaluate_tasks(
        names,
        output_dir,
        rank_eval.make_score_fn(loaded),
        make_predict_fn(loaded, decode_method, num_beams),
        split=split,
        batch_size=batch_size,
        max_examples=max_examples,
        feature_lengths=feature_lengths,
        use_cached=use_cached,
        run_key={"checkpoint": checkpoint_path},
        write=writer,
        recompute_damaged=recompute_damaged,
        log=log,
    )
    if not writer:
        return {}
    results = eval_report.write_report(
        output_dir, run=run, reference_file=reference_file, tasks=names
    )
    log(f"wrote {output_dir}/results.json, results.md, results.png")
    return results
