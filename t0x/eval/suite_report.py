"""One report for the evaluation suites of a run: results.json, results.md, results.png.

Vocabulary:
  suite dir    `<output_dir>/<suite>/`: the suite's task results, `tasks/<task>.json`, as the
               eval job writes them (see t0x.eval.report); each suite has its own, since suites
               evaluate a task under their own split, metric and lengths.
  section      what a suite's report kind builds from its task results (t0x.eval.sections),
               with the suite's `title`, `split`, `metric` and `num_tasks` added.
  references   the reference file, read once for every suite: a JSON object keyed by suite
               names ({"multilingual": {"xcopa/zh": 55.1}, "bias_fairness": {"T0": {...}}})
               gives each suite its own; a flat {name: score} object goes to every section that
               takes numbers. The bias & fairness section defaults to the T0 model card.

Files written to the output dir (each replaced atomically):
  results.json  {"suites": {suite: section}, "scores": {suite: suite score}, "run": {...}}
  results.md    per suite a heading, its section's tables and its score
  results.png   one panel per suite, stacked
  tensorboard/  `eval/<suite>/score` and `eval/<suite>/<dataset>/{median,mean,min,max}`
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence

from t0x.errors import DataError
from t0x.eval import report, sections


def read_references(path: str | None, suite_names: Sequence[str]) -> dict[str, dict | None]:
    """Suite name -> the reference its section gets (None: the section's default)."""
    from t0x.eval import suites

    if not path:
        return dict.fromkeys(suite_names)
    ref = report.read_json(path)
    if not isinstance(ref, dict):
        raise DataError(f"reference file {path}: expected a JSON object, got {type(ref).__name__}")
    if set(ref) & set(suites.SUITES):
        return {name: ref.get(name) for name in suite_names}
    if not all(isinstance(v, (int, float)) for v in ref.values()):
        raise DataError(
            f"reference file {path}: expected {{suite name: reference}} or a flat {{name: score "
            f"in percent}} object; suites: {sorted(suites.SUITES)}"
        )
    return {name: {k: float(v) for k, v in ref.items()} for name in suite_names}


def _model_name(run: dict) -> str:
    checkpoint = str(run.get("checkpoint") or "this checkpoint").rstrip("/")
    return os.path.basename(checkpoint) or checkpoint


def build(plan: Sequence[tuple], task_results: dict[str, list[dict]], references: dict, run: dict):
    """results.json's `suites` from (suite, task names) pairs and each suite's task results."""
    out = {}
    for suite, names in plan:
        kind = sections.get(suite.section)
        reference = references.get(suite.name)
        flat = reference is not None and not all(isinstance(v, dict) for v in reference.values())
        if kind.REFERENCE == "models" and flat:
            reference = None  # a flat {name: number} file is not for this section
        section = kind.build(task_results[suite.name], reference, _model_name(run))
        out[suite.name] = {
            "title": suite.title,
            "section": suite.section,
            "split": suite.split,
            "metric": suite.metric or "accuracy",
            "num_tasks": len(names),
            **section,
        }
    return out


def markdown(suites_out: dict[str, dict], run: dict) -> str:
    lines = [
        f"Zero-shot evaluation of `{run.get('checkpoint', '?')}` on the suites "
        + ", ".join(f"`{n}`" for n in suites_out)
        + "; scores in percent.",
        "",
    ]
    for name, section in suites_out.items():
        score = "–" if section["score"] is None else f"{section['score']:.2f}"
        lines += [
            f"## {section['title']} (`{name}`)",
            "",
            (
                f"Split `{section['split']}`, metric `{section['metric']}`, "
                f"{section['num_tasks']} tasks. Suite score ({section['score_name']}): {score}."
            ),
            "",
            sections.get(section["section"]).markdown(section).rstrip("\n"),
            "",
        ]
    return "\n".join(lines)


def plot(suites_out: dict[str, dict], path: str) -> None:
    plt = report.pyplot()
    n = len(suites_out)
    widths = [max(len(s.get("rows") or s["datasets"]), 4) for s in suites_out.values()]
    fig, axes = plt.subplots(n, 1, figsize=(min(max(6.0, 0.35 * max(widths) + 2), 30), 4.8 * n))
    for ax, (name, section) in zip([axes] if n == 1 else axes, suites_out.items()):
        sections.get(section["section"]).plot(ax, section)
        ax.set_title(f"{section['title']} ({name})", fontsize=10)
    report.save_figure(fig, path)


def write_tensorboard(suites_out: dict[str, dict], log_dir: str, step: int) -> None:
    for name, section in suites_out.items():
        report.write_tensorboard(
            section["datasets"],
            log_dir,
            step,
            prefix=f"eval/{name}",
            scalars={"score": section["score"]},
        )


def write(
    output_dir: str,
    plan: Sequence[tuple],
    run: dict | None = None,
    reference_file: str | None = None,
    tensorboard: bool = True,
    plot_png: bool = True,
) -> dict:
    """Reads each suite dir's task results (only the planned tasks) and writes the combined
    report; returns results.json's content."""
    task_results = {
        suite.name: report.load_task_results(os.path.join(output_dir, suite.name), names)
        for suite, names in plan
    }
    empty = [name for name, results in task_results.items() if not results]
    if empty:
        raise FileNotFoundError(
            f"no task results for suites {empty} under {output_dir}; run the evaluation "
            "(t0x eval --suite ...) into this output dir first"
        )
    run = dict(run or {})
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    run.setdefault("time", now)
    run.setdefault("t0x_version", report.t0x_version())
    run["num_tasks"] = sum(len(r) for r in task_results.values())
    references = read_references(reference_file, [s.name for s, _ in plan])
    suites_out = build(plan, task_results, references, run)
    results = {
        "suites": suites_out,
        "scores": {name: s["score"] for name, s in suites_out.items()},
        "run": run,
    }
    report.write_json_atomic(os.path.join(output_dir, "results.json"), results)
    report.write_atomic(os.path.join(output_dir, "results.md"), markdown(suites_out, run))
    if plot_png:
        plot(suites_out, os.path.join(output_dir, "results.png"))
    if tensorboard:
        log_dir = os.path.join(output_dir, "tensorboard")
        write_tensorboard(suites_out, log_dir, int(run.get("step") or 0))
    return results
