"""`t0x eval-report`: T5X's evaluation output as t0x's report (results.json/.md/.png).

Upstream `t5x/eval.py` run with `gin/eval_t0.gin` writes, under its `EVAL_OUTPUT_DIR`:

  inference_eval/<task>-metrics.jsonl   one JSON line per evaluated checkpoint step,
                                        `{"step": 1112200, "accuracy": 61.4, ...}` (percent)
  eval.<mixture>.ckpt                   the checkpoint path it evaluated

and nothing per dataset: T5X reports each prompt (task) alone. This module turns those lines
into t0x's per-task result files (`<output_dir>/tasks/<task>.json`, the form `t0x eval`
writes) and then into the same report: per dataset the median and mean over prompts (ANLI
rounds apart and together), the plot, TensorBoard scalars. The T5X files are only read.
"""

from __future__ import annotations

import json
import os

from t0x.errors import DataError, OutputExistsError
from t0x.eval import report
from t0x.eval.task_info import task_info

METRICS_DIR = "inference_eval"
METRICS_SUFFIX = "-metrics.jsonl"


def _lines(path: str) -> list[dict]:
    from tensorflow.io import gfile

    rows = []
    with gfile.GFile(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{number}: not a JSON line ({e.msg})") from None
    return rows


def read_t5x_metrics(eval_dir: str, step: int | None = None) -> tuple[dict[str, dict], int]:
    """task -> its metrics at `step` (None: the latest step every task has), and that step."""
    from tensorflow.io import gfile

    folder = os.path.join(eval_dir, METRICS_DIR)
    names = (
        sorted(n for n in gfile.listdir(folder) if n.endswith(METRICS_SUFFIX))
        if (gfile.isdir(folder))
        else []
    )
    if not names:
        raise DataError(
            f"no T5X metrics under {folder} (<task>{METRICS_SUFFIX}); pass the "
            "EVAL_OUTPUT_DIR that t5x/eval.py wrote"
        )
    by_task = {n.removesuffix(METRICS_SUFFIX): _lines(os.path.join(folder, n)) for n in names}
    if step is None:
        step = min(max(r["step"] for r in rows) for rows in by_task.values() if rows)
    chosen = {}
    for task, rows in by_task.items():
        at_step = [r for r in rows if r.get("step") == step]
        if not at_step:
            raise DataError(
                f"{os.path.join(folder, task + METRICS_SUFFIX)} has no line for step {step}; "
                f"its steps: {sorted({r.get('step') for r in rows})}"
            )
        chosen[task] = at_step[-1]
    return chosen, int(step)


def _checkpoint(eval_dir: str) -> str | None:
    from tensorflow.io import gfile

    for name in sorted(gfile.listdir(eval_dir)):
        if name.startswith("eval.") and name.endswith(".ckpt"):
            with gfile.GFile(os.path.join(eval_dir, name)) as f:
                return f.read().strip() or None
    return None


def task_result(task: str, metrics: dict, split: str, step: int) -> dict:
    """A t0x per-task result (the fields report.aggregate reads) from a T5X metrics line."""
    if "accuracy" not in metrics:
        raise DataError(f"T5X metrics of {task} at step {step} have no accuracy: {metrics}")
    info = task_info(task, split)
    values = {k: v for k, v in metrics.items() if k != "step"}
    return {
        "task": task,
        "dataset": info.dataset,
        "template": info.template,
        "group": info.group,
        "split": split,
        "kind": "rank",
        "metric": "accuracy",
        "score": float(values["accuracy"]),
        "metrics": values,
        "source": "t5x",
    }


def write_t5x_report(
    eval_dir: str,
    output_dir: str | None = None,
    step: int | None = None,
    split: str = "validation",
    reference_file: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Writes t0x's report of a T5X eval dir into `output_dir` (default `<eval_dir>/t0x_report`);
    an existing report is kept unless `overwrite`. Returns results.json's content."""
    from tensorflow.io import gfile

    output_dir = output_dir or os.path.join(eval_dir, "t0x_report")
    if gfile.exists(os.path.join(output_dir, "results.json")) and not overwrite:
        raise OutputExistsError(
            f"{output_dir} already holds a report; pass --overwrite to rebuild it"
        )
    metrics, step = read_t5x_metrics(eval_dir, step)
    tasks_dir = os.path.join(output_dir, report.TASKS_DIR)
    gfile.makedirs(tasks_dir)
    for task, line in metrics.items():
        result = task_result(task, line, split, step)
        report.write_json_atomic(os.path.join(tasks_dir, f"{task}.json"), result)
    run = {"engine": "t5x", "step": step, "checkpoint": _checkpoint(eval_dir), "split": split}
    return report.write_report(
        output_dir, run=run, reference_file=reference_file, tasks=list(metrics)
    )
