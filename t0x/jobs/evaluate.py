"""The zero-shot evaluation job (`t0x eval`): the T0 paper's protocol over a mixture or suites.

Vocabulary:
  rank task        a task with score metrics (t0_tasks' `_score_eval` twins, BIG-bench tasks):
                   scored by rank classification (`t0x.eval.rank`): each input encoded once,
                   its answer choices scored against it, batched across rows and choices.
  generative task  a task with only prediction metrics: decoded (greedy or beam) and scored by
                   seqio's Evaluator with the task's metrics (`t0x.eval.generate`).
  task result      `<output_dir>/tasks/<task>.json`, written atomically when the task
                   finishes (see `t0x.eval.report` for its fields). A restarted evaluation
                   reads finished results instead of recomputing them; a result written by a
                   different evaluation (other checkpoint, split, example cap, lengths, primary
                   metric or choice prefix) is an error rather than being mixed in or overwritten.
  report name      of a task's dataset, with its template, group and suite metadata
                   (`t0x.eval.task_info`).
  suite            a named protocol (`t0x.eval.suites`): with `suites`, each suite's tasks are
                   evaluated on its own split, metric and lengths into `<output_dir>/<suite>/`
                   and one combined report is written (`t0x.eval.suite_report`).
  job              the settings of one evaluation (`Job`), applied to one checkpoint, or to
                   every saved step of a t0x run (`all_steps`: `t0x.eval.sweep`).
  unit             one `evaluate_tasks` call of a job: a suite's tasks, or the mixture's.

`evaluate(...)` is bound by gin (`gin/runs/eval.gin` documents the macros) and called by
`t0x eval`; `evaluate_checkpoint(...)` evaluates one checkpoint under a `Job`;
`evaluate_tasks(...)` is the loop, with the scorer and predictor injected. Progress (task i/N,
rows/s, ETA) goes to `log`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Sequence

import gin
from t0x.errors import ConfigError, DataError
from t0x.eval import rank as rank_eval
from t0x.eval import report as eval_report
from t0x.eval.generate import MIN_DECODE_LENGTH, generate_task  # noqa: F401 (re-exported)
from t0x.eval.suites import RANK_METRICS, primary_metric
from t0x.eval.task_info import TaskInfo, task_info  # noqa: F401 (re-exported)

DEFAULT_FEATURE_LENGTHS = {"inputs": 1024, "targets": 256}  # t-zero's run_eval.py limits
PROGRESS_PERIOD_S = 10.0


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
    metric: str | None = None,
) -> dict:
    """Rank-classification result of one `_score_eval` task (fields for the task file).

    `metric`: the primary metric (the result's `score`); None: the first of RANK_METRICS the
    task computes (BIG-bench's multiple_choice_grade for BIG-bench tasks, else accuracy)."""
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
    metrics = {**res.metrics, "accuracy": res.accuracy}
    primary = primary_metric(task.name, metrics, metric, RANK_METRICS)
    return {
        "kind": "rank",
        "metric": primary,
        "score": metrics[primary],
        "metrics": metrics,
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


def _compute(task, score_fn, predict, settings: tuple, advance: Callable[[int], None]) -> dict:
    """A task's result fields: ranked with `score_fn` or decoded with `predict`. `settings`:
    (split, batch_size, max_examples, feature_lengths, use_cached, metric)."""
    split, batch_size, max_examples, feature_lengths, use_cached, metric = settings
    if task.score_metric_fns:
        if score_fn is None:
            raise ValueError(f"{task.name} is a rank-classification task but no scorer was given")
        args = (task, split, score_fn, batch_size, max_examples, feature_lengths, use_cached)
        return rank_task(*args, on_batch=advance, metric=metric)
    if predict is None:
        raise ValueError(f"{task.name} is a generative task but no predictor was given")
    out = generate_task(
        task, split, predict, batch_size, max_examples, feature_lengths, use_cached, metric
    )
    advance(out["num_examples"])
    return out


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
    metric: str | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Evaluates each task (or reads its finished result); returns the task results.

    `metric` names every task's primary metric (its `score`; None: see `rank_task`). `write`
    False (every process but the first of a multi-host job) computes without writing. A
    finished result that cannot be read is an error naming it, unless `recompute_damaged`
    (then it is renamed `<task>.json.damaged` and computed again).
    """
    import seqio

    feature_lengths = {**DEFAULT_FEATURE_LENGTHS, **(feature_lengths or {})}
    run_key = {
        **(run_key or {}),
        "split": split,
        "max_examples": max_examples,
        "feature_lengths": feature_lengths,
        **({"metric": metric} if metric else {}),
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
        settings = (split, batch_size, max_examples, feature_lengths, use_cached, metric)
        out = _compute(
            task, score_fn, predict, settings, lambda n, at=label: progress.advance(n, at)
        )
        result = {
            "task": task.name,
            "dataset": info.dataset,
            "template": info.template,
            "group": info.group,
            **({"meta": info.meta} if info.meta else {}),
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


@dataclasses.dataclass(frozen=True)
class Job:
    """An evaluation's settings, the same for every checkpoint it evaluates (a sweep's steps)."""

    mixture_or_task_name: str | None
    tasks: tuple[str, ...] | None
    suites: tuple  # t0x.eval.suites.Suite
    split: str
    batch_size: int
    max_examples: int | None
    feature_lengths: dict
    reference_file: str | None
    task_settings: dict
    use_cached: bool
    num_partitions: int
    dtype: str | None
    model_config: object
    decode_method: str
    num_beams: int
    recompute_damaged: bool

    def key(self) -> dict:
        """What makes two evaluations of a checkpoint the same (a sweep's step key)."""
        return {
            "suites": [s.name for s in self.suites],
            "mixture": None if self.suites or self.tasks else self.mixture_or_task_name,
            "tasks": list(self.tasks) if self.tasks else None,
            "split": None if self.suites else self.split,
            "max_examples": self.max_examples,
            "feature_lengths": self.feature_lengths,
            "dtype": self.dtype,
            "decode": [self.decode_method, self.num_beams],
        }


@dataclasses.dataclass
class Unit:
    """One `evaluate_tasks` call: a suite's tasks (or the mixture's) under its settings."""

    suite: object  # t0x.eval.suites.Suite, or None for a mixture / task list
    names: list[str]
    split: str
    metric: str | None
    feature_lengths: dict
    subdir: str  # under the output dir: the suite's name, "" for a mixture


def plan_units(job: Job) -> list[Unit]:
    """What to evaluate, resolved (and checked) before any model is loaded."""
    from t0x.eval import suites as eval_suites

    if not job.suites:
        names = resolve_tasks(job.mixture_or_task_name, job.tasks, job.split)
        return [Unit(None, names, job.split, None, job.feature_lengths, "")]
    return [
        Unit(
            suite,
            names,
            suite.split,
            suite.metric,
            suite.feature_lengths(job.feature_lengths),
            suite.name,
        )
        for suite, names in eval_suites.plan(job.suites, job.tasks)
    ]


def _set_choice_prefix(family: str, task_settings: dict, log: Callable[[str], None]) -> str:
    """Sets t0_tasks' target_prefix for the model family (t0x.eval.suites); returns it."""
    import t0_tasks
    from t0x.eval import suites as eval_suites

    current = t0_tasks.current().settings.target_prefix
    change = eval_suites.choice_prefix_change(family, task_settings, current)
    if change is None:
        return current
    log(f"answer choices rendered with target_prefix {change!r} for the {family} family")
    t0_tasks.configure(target_prefix=change)
    return change


def _run_info(checkpoint_path: str, loaded, job: Job, units: list[Unit], prefix: str) -> dict:
    run = {
        "checkpoint": checkpoint_path,
        "format": loaded.format,
        "step": loaded.step,
        "mixture": job.mixture_or_task_name if not job.tasks else None,
        "tasks": sum(len(u.names) for u in units),
        "split": job.split,
        "batch_size": job.batch_size,
        "family": loaded.family.name,
        "dtype": loaded.config.dtype,
    }
    if job.suites:
        run.update(suites=[u.suite.name for u in units], mixture=None, split=None)
        run.update(max_examples=job.max_examples, target_prefix=prefix)
    return run


def evaluate_checkpoint(
    checkpoint_path: str, output_dir: str, job: Job, log: Callable[[str], None] = print
) -> dict:
    """Evaluates one checkpoint under `job` into `output_dir`; returns results.json's content
    ({} on every process but the first)."""
    import jax

    from t0x import partitioning
    from t0x.inference import load_model
    from t0x.jobs.infer import make_predict_fn

    units = plan_units(job)
    loaded = load_model(
        checkpoint_path,
        dtype=job.dtype,
        model_config=job.model_config,
        num_partitions=job.num_partitions,
    )
    partitioning.check_batch_size(job.batch_size, loaded.mesh)
    prefix = _set_choice_prefix(loaded.family.name, job.task_settings, log)
    run = _run_info(checkpoint_path, loaded, job, units, prefix)
    log(f"evaluating {checkpoint_path} ({loaded.format}) -> {output_dir}")
    writer = jax.process_index() == 0
    score_fn = rank_eval.make_score_fn(loaded)
    predict = make_predict_fn(loaded, job.decode_method, job.num_beams)
    run_key = {"checkpoint": checkpoint_path, **({"target_prefix": prefix} if prefix else {})}
    for unit in units:
        evaluate_tasks(
            unit.names,
            os.path.join(output_dir, unit.subdir) if unit.subdir else output_dir,
            score_fn,
            predict,
            split=unit.split,
            batch_size=job.batch_size,
            max_examples=job.max_examples,
            feature_lengths=unit.feature_lengths,
            use_cached=job.use_cached,
            run_key=run_key,
            write=writer,
            recompute_damaged=job.recompute_damaged,
            metric=unit.metric,
            log=log,
        )
    if not writer:
        return {}
    return _write_report(output_dir, units, run, job.reference_file, log)


def _write_report(output_dir: str, units: list[Unit], run: dict, reference_file, log) -> dict:
    from t0x.eval import suite_report

    if units[0].suite is None:
        results = eval_report.write_report(
            output_dir, run=run, reference_file=reference_file, tasks=units[0].names
        )
    else:
        plan = [(u.suite, u.names) for u in units]
        results = suite_report.write(output_dir, plan, run=run, reference_file=reference_file)
    log(f"wrote {output_dir}/results.json, results.md, results.png")
    return results


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
    suites: Sequence[str] | str | None = None,
    all_steps: bool = False,
    select_by: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Evaluates a checkpoint (t0x, T5X or Hugging Face) on a mixture or suites; writes the
    report. Returns results.json's content (a sweep: sweep.json's).

    `output_dir` None: `runs/eval/<checkpoint name>`. `max_examples` caps rows per task.
    `suites` (names, t0x.eval.suites) replace the mixture: each suite's tasks are evaluated on
    its own split into `<output_dir>/<suite>/`, `tasks` then filters them (patterns), and one
    combined report is written. `all_steps`: `checkpoint_path` is a t0x run dir and every
    saved step is evaluated into `<output_dir>/step_<step>/` (t0x.eval.sweep); `select_by`
    names the suite whose score picks the best step. `vocab_path` / `task_settings` (t0_tasks
    settings such as data_dir, p3_dir, bigbench_dir) re-register t0_tasks before the tasks are
    read. Generative tasks decode with `decode_method`.
    """
    from t0x import partitioning
    from t0x.eval import suites as eval_suites

    _configure_tasks(vocab_path, task_settings)
    partitioning.initialize_distributed()
    job = Job(
        mixture_or_task_name=mixture_or_task_name,
        tasks=tuple([tasks] if isinstance(tasks, str) else tasks) if tasks else None,
        suites=tuple(eval_suites.parse(suites)),
        split=split,
        batch_size=batch_size,
        max_examples=max_examples,
        feature_lengths={**DEFAULT_FEATURE_LENGTHS, **(feature_lengths or {})},
        reference_file=reference_file,
        task_settings=dict(task_settings or {}),
        use_cached=use_cached,
        num_partitions=num_partitions,
        dtype=dtype,
        model_config=model_config,
        decode_method=decode_method,
        num_beams=num_beams,
        recompute_damaged=recompute_damaged,
    )
    output_dir = output_dir or default_output_dir(checkpoint_path)
    if not all_steps:
        return evaluate_checkpoint(checkpoint_path, output_dir, job, log)
    import jax

    from t0x.eval import sweep

    names = [s.name for s in job.suites] or [sweep.MIXTURE_SCORE]
    if select_by is not None and select_by not in names:
        raise ConfigError(f"select_by={select_by!r}: the sweep scores {names}; pick one of them")

    def evaluate_step(checkpoint: str, step_dir: str) -> dict:
        return evaluate_checkpoint(checkpoint, step_dir, job, log)

    writer = jax.process_index() == 0
    return sweep.sweep(
        checkpoint_path, output_dir, evaluate_step, job.key(), select_by, writer, log
    )


def _configure_tasks(vocab_path: str | None, task_settings: dict | None) -> None:
    import t0_tasks

    changes = dict(task_settings or {})
    if vocab_path:
        changes["vocab_path"] = vocab_path
    if changes:
        t0_tasks.configure(**changes)
