"""The evaluation report: per-task results -> results.json, results.md, results.png, TensorBoard.

Vocabulary:
  task result   one `<output_dir>/tasks/<task>.json`, written by `t0x.evaluate` when a task
                finishes: `task`, `dataset` (the report's name for its dataset, e.g.
                `super_glue/rte`, `anli/r1`), `template`, `score` (the prompt's score in percent:
                rank-classification accuracy, or a generative task's primary metric), `metric`
                (the name of that metric), `metrics` (all of the task's metrics) and, optionally,
                `group` (a dataset name under which the task is also reported: `anli`) and
                `meta` (what a suite's report section needs: language, BIG-bench task, ...).
  prompt        one (dataset, template) pair; its score is the task result's `score`.
  dataset row   over the prompts of a dataset: median (as the T0 paper reports), mean, min,
                max and the number of prompts. A `group` row pools the prompts of its members,
                each keyed `<template> (<member suffix>)`, e.g. `GPT-3 style (r1)`: ANLI is
                reported per round (`anli/r1`, `anli/r2`, `anli/r3`) and together (`anli`).
  reference     an optional JSON file {dataset: median score in percent} (e.g. the T0 paper's
                numbers), shown beside ours in results.md and as points in results.png.

Files written to the output dir (each replaced atomically; task results are only read):
  results.json  {"datasets": {name: {"median", "mean", "min", "max", "num_prompts",
                "prompts": {template: score}}}, "score": the mean over datasets (group rows
                left out) of their median, "run": {checkpoint, mixture, split, time,
                t0x_version, ...}}
  results.md    the T0 paper's table: dataset x median / mean / min / max / #prompts
                [/ reference / difference].
  results.png   per dataset a dot per prompt, the median marked, reference points when given
                (like Figure 4 of the T0 paper).
  tensorboard/  scalars `eval/<dataset>/{median,mean,min,max}` and `eval/<dataset>/<template>`.

Several suites evaluated together get one combined report instead (`t0x.eval.suite_report`);
this module's tables, plots and file helpers are its building blocks.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import re
import statistics
from collections.abc import Iterable
from typing import Any

TASKS_DIR = "tasks"


def t0x_version() -> str:
    try:
        from importlib.metadata import version

        return version("t0x")
    except Exception:  # a source checkout that was never installed
        return "unknown"


def write_atomic(path: str, data: str | bytes) -> None:
    """Writes `path` (local or gs://) through a temporary file and a rename (never a half file)."""
    from tensorflow.io import gfile

    tmp = f"{path}.tmp-{os.getpid()}"
    with gfile.GFile(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    gfile.rename(tmp, path, overwrite=True)


def write_json_atomic(path: str, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def read_json(path: str) -> Any:
    from tensorflow.io import gfile

    with gfile.GFile(path, "r") as f:
        return json.load(f)


def load_task_results(output_dir: str, tasks: Iterable[str] | None = None) -> list[dict]:
    """The finished task results under `<output_dir>/tasks/` (only `tasks` when given),
    sorted by task name."""
    from tensorflow.io import gfile

    folder = os.path.join(output_dir, TASKS_DIR)
    if not gfile.isdir(folder):
        return []
    wanted = None if tasks is None else {f"{t}.json" for t in tasks}
    return [
        read_json(os.path.join(folder, name))
        for name in sorted(gfile.listdir(folder))
        if name.endswith(".json") and (wanted is None or name in wanted)
    ]


def _summary(prompts: dict[str, float]) -> dict:
    values = [v for v in prompts.values() if v is not None and not math.isnan(v)]
    stats = {"median": None, "mean": None, "min": None, "max": None}
    if values:
        stats = {
            "median": statistics.median(values),
            "mean": statistics.fmean(values),
            "min": min(values),
            "max": max(values),
        }
    return {**stats, "num_prompts": len(prompts), "prompts": dict(prompts)}


def aggregate(task_results: Iterable[dict]) -> dict[str, dict]:
    """Dataset name -> {median, mean, min, max, num_prompts, prompts: {template: score}}.

    Raises ValueError when two results claim the same (dataset, template).
    """
    prompts: dict[str, dict[str, float]] = {}
    owners: dict[tuple[str, str], str] = {}

    def add(dataset: str, template: str, score: float, task: str) -> None:
        if (dataset, template) in owners:
            raise ValueError(
                f"tasks {owners[(dataset, template)]!r} and {task!r} both report "
                f"dataset {dataset!r} template {template!r}; evaluate one of them"
            )
        owners[(dataset, template)] = task
        prompts.setdefault(dataset, {})[template] = score

    for r in task_results:
        add(r["dataset"], r["template"], r["score"], r["task"])
        if r.get("group"):
            suffix = r["dataset"].rsplit("/", 1)[-1]
            add(r["group"], f"{r['template']} ({suffix})", r["score"], r["task"])
    return {name: _summary(prompts[name]) for name in sorted(prompts)}


def read_reference(path: str | None) -> dict[str, float]:
    if not path:
        return {}
    ref = read_json(path)
    if not isinstance(ref, dict) or not all(isinstance(v, (int, float)) for v in ref.values()):
        raise ValueError(
            f"reference file {path}: expected a JSON object {{dataset: median score "
            f"in percent}}, e.g. {{\"super_glue/rte\": 64.55}}"
        )
    return {k: float(v) for k, v in ref.items()}


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def markdown_table(
    datasets: dict[str, dict], reference: dict[str, float] | None = None, run: dict | None = None
) -> str:
    reference = reference or {}
    head = ["Dataset", "Median", "Mean", "Min", "Max", "Prompts"]
    if reference:
        head += ["Reference median", "Δ median"]
    lines = []
    if run:
        what = (
            f"`{run['mixture']}`"
            if run.get("mixture")
            else f"{run.get('tasks', run.get('num_tasks', '?'))} tasks"
        )
        lines.append(
            f"Zero-shot evaluation of `{run.get('checkpoint', '?')}` on {what} "
            f"({run.get('split', '?')} split); scores in "
            "percent, median over prompts as in the T0 paper.\n"
        )
    lines += [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for name, d in datasets.items():
        cells = [
            name,
            _fmt(d["median"]),
            _fmt(d["mean"]),
            _fmt(d["min"]),
            _fmt(d["max"]),
            str(d["num_prompts"]),
        ]
        if reference:
            ref = reference.get(name)
            diff = None if ref is None or d["median"] is None else d["median"] - ref
            cells += [_fmt(ref), "–" if diff is None else f"{diff:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_prompts(ax, datasets: dict[str, dict], reference: dict[str, float] | None = None) -> None:
    """On `ax`, per dataset: a dot per prompt, a bar at the median, a star at the reference."""
    reference = reference or {}
    names = list(datasets)
    for x, name in enumerate(names):
        values = [v for v in datasets[name]["prompts"].values() if v is not None]
        n = len(values)
        offsets = [0.0] if n == 1 else [-0.18 + 0.36 * i / (n - 1) for i in range(n)]
        first = x == 0
        ax.scatter([x + o for o in offsets], values, s=18, color="tab:blue", alpha=0.7,
                   zorder=2, label="prompt" if first else None)  # fmt: skip
        if datasets[name]["median"] is not None:
            ax.hlines(datasets[name]["median"], x - 0.3, x + 0.3, color="black", linewidth=2,
                      zorder=3, label="median" if first else None)  # fmt: skip
        if name in reference:
            label = "reference" if not any(n in reference for n in names[:x]) else None
            ax.scatter([x], [reference[name]], marker="*", s=120, color="tab:red", zorder=4,
                       label=label)  # fmt: skip
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("score (%)")
    ax.grid(axis="y", alpha=0.3)
    if names:
        ax.legend(fontsize=8, loc="best")


def save_figure(fig, path: str) -> None:
    """Writes a matplotlib figure as PNG (atomically) and closes it."""
    from matplotlib import pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def plot(
    datasets: dict[str, dict],
    path: str,
    reference: dict[str, float] | None = None,
    title: str = "Zero-shot score per prompt",
) -> None:
    """Per dataset: a dot per prompt, a bar at the median, a star at the reference median."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(datasets) + 1.5), 4.5))
    plot_prompts(ax, datasets, reference)
    ax.set_title(title)
    save_figure(fig, path)


def mean_of_medians(datasets: dict[str, dict], groups: Iterable[str] = ()) -> float | None:
    """The mean over datasets (group rows left out) of their median over prompts."""
    skip = set(groups)
    values = [d["median"] for n, d in datasets.items() if n not in skip and d["median"] is not None]
    return statistics.fmean(values) if values else None


def _tag(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_./-]+", "_", text)


def write_tensorboard(
    datasets: dict[str, dict],
    log_dir: str,
    step: int = 0,
    prefix: str = "eval",
    scalars: dict[str, float | None] | None = None,
) -> None:
    """Scalars `<prefix>/<dataset>/{median,mean,min,max}`, `<prefix>/<dataset>/prompt/<t>`
    and `<prefix>/<name>` for each of `scalars` (e.g. a suite's score)."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        for name, value in (scalars or {}).items():
            if value is not None:
                tf.summary.scalar(f"{prefix}/{_tag(name)}", value, step=step)
        for name, d in datasets.items():
            for stat in ("median", "mean", "min", "max"):
                if d[stat] is not None:
                    tf.summary.scalar(f"{prefix}/{_tag(name)}/{stat}", d[stat], step=step)
            for template, score in d["prompts"].items():
                if score is not None:
                    tf.summary.scalar(
                        f"{prefix}/{_tag(name)}/prompt/{_tag(template)}", score, step=step
                    )
    writer.flush()
    writer.close()


def write_report(
    output_dir: str,
    run: dict | None = None,
    reference_file: str | None = None,
    tensorboard: bool = True,
    plot_png: bool = True,
    tasks: Iterable[str] | None = None,
) -> dict:
    """Aggregates `<output_dir>/tasks/*.json` (only `tasks` when given) and writes the report
    files; returns results.json's content."""
    task_results = load_task_results(output_dir, tasks)
    if not task_results:
        raise FileNotFoundError(
            f"no task results under {os.path.join(output_dir, TASKS_DIR)}; "
            "run the evaluation (t0x eval) into this output dir first"
        )
    reference = read_reference(reference_file)
    datasets = aggregate(task_results)
    run = dict(run or {})
    run.setdefault("time", datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    run.setdefault("t0x_version", t0x_version())
    run["num_tasks"] = len(task_results)
    groups = {r["group"] for r in task_results if r.get("group")}
    results = {"datasets": datasets, "score": mean_of_medians(datasets, groups), "run": run}
    if reference:
        results["reference"] = reference
    write_json_atomic(os.path.join(output_dir, "results.json"), results)
    write_atomic(os.path.join(output_dir, "results.md"), markdown_table(datasets, reference, run))
    if plot_png:
        plot(datasets, os.path.join(output_dir, "results.png"), reference)
    if tensorboard:
        write_tensorboard(
            datasets, os.path.join(output_dir, "tensorboard"), int(run.get("step") or 0)
        )
    return results
