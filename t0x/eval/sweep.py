"""The checkpoint sweep: every saved step of a t0x run evaluated, summarised, the best one named.

Vocabulary:
  run dir     a t0x training run's model dir, whose checkpoint store is `<run dir>/checkpoints/`
              (a store dir itself is accepted too).
  step        one saved training step, `<store>/<step>/`; its evaluation is the eval job's usual
              output under `<output_dir>/step_<step>/` (task files, results.json, ...).
  sweep key   what makes two evaluations of a step the same (suites or mixture, task filter,
              example cap, lengths, ...): opaque JSON given by the caller. A step is finished
              when `step_<step>/sweep_step.json` records the key; finished steps are read back,
              not evaluated again, and a step stopped mid-way resumes from its task files.
  scores      per step, one number per suite (results.json `scores`), or, for an evaluation of
              one mixture or task list, its `score` under the name `mixture`.
  best step   the step with the highest score of the `select_by` suite (default: the first
              suite); ties go to the earliest step.

Files written to the output dir (each replaced atomically):
  sweep.json  {"run_dir", "store", "select_by", "best": {"step", "score", "checkpoint",
              "output_dir"}, "steps": [{"step", "checkpoint", "output_dir", "scores"}], "key"}
  sweep.md    a table of the scores per step, the best step marked
  sweep.png   each suite's score per step, the best step marked
"""

from __future__ import annotations

import os
from collections.abc import Callable

from t0x.errors import CheckpointNotFoundError, ConfigError
from t0x.eval import report

STEP_MARKER = "sweep_step.json"
MIXTURE_SCORE = "mixture"


def store_dir(run_dir: str) -> str:
    """The checkpoint store of a run dir (its `checkpoints/`), or `run_dir` if it is one."""
    from etils import epath

    from t0x.checkpoints import store

    for candidate in (os.path.join(run_dir, "checkpoints"), run_dir):
        path = epath.Path(candidate)
        if path.is_dir() and any(c.name.isdigit() and store.is_step_dir(c) for c in path.iterdir()):
            return candidate
    raise CheckpointNotFoundError(
        f"no saved t0x steps in {run_dir} or {os.path.join(run_dir, 'checkpoints')}: a sweep "
        "(--checkpoint_dir / --all_steps) needs a t0x run dir or checkpoint store"
    )


def saved_steps(store_path: str) -> list[int]:
    from t0x.checkpoints import CheckpointStore

    with CheckpointStore(store_path, read_only=True) as store:
        return store.all_steps()


def step_output_dir(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, f"step_{step}")


def scores_of(results: dict) -> dict[str, float | None]:
    """The scores of one step's results.json (see the module docstring)."""
    if "scores" in results:
        return dict(results["scores"])
    return {MIXTURE_SCORE: results.get("score")}


def _finished(out: str, key: dict) -> dict | None:
    from tensorflow.io import gfile

    path = os.path.join(out, STEP_MARKER)
    if not gfile.exists(path):
        return None
    try:
        marker = report.read_json(path)
    except ValueError:
        return None  # a damaged marker: evaluate the step again (its task files resume)
    return marker if isinstance(marker, dict) and marker.get("key") == key else None


def evaluate_steps(
    store_path: str,
    output_dir: str,
    evaluate_step: Callable[[str, str], dict],
    key: dict,
    write: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Per saved step (ascending) its entry {step, checkpoint, output_dir, scores}, evaluating
    only the steps not finished under `key`."""
    steps = saved_steps(store_path)
    if not steps:
        raise CheckpointNotFoundError(f"no saved steps in the checkpoint store {store_path}")
    entries = []
    for i, step in enumerate(steps, start=1):
        out, checkpoint = step_output_dir(output_dir, step), os.path.join(store_path, str(step))
        marker = _finished(out, key)
        if marker is not None:
            log(f"step {step} ({i}/{len(steps)}): already evaluated in {out}")
            entries.append({k: marker[k] for k in ("step", "checkpoint", "output_dir", "scores")})
            continue
        log(f"step {step} ({i}/{len(steps)}): evaluating {checkpoint} -> {out}")
        results = evaluate_step(checkpoint, out)
        entry = {"step": step, "checkpoint": checkpoint, "output_dir": out}
        entry["scores"] = scores_of(results)
        if write:
            report.write_json_atomic(os.path.join(out, STEP_MARKER), {**entry, "key": key})
        entries.append(entry)
    return entries


def best_step(entries: list[dict], select_by: str | None = None) -> tuple[str, dict | None]:
    """(the suite selected by, the best entry or None when no step has a score for it)."""
    names = list(dict.fromkeys(n for e in entries for n in e["scores"]))
    if select_by is None:
        select_by = names[0] if names else MIXTURE_SCORE
    elif select_by not in names:
        raise ConfigError(f"select_by={select_by!r}: the sweep's scores are {names}")
    scored = [e for e in entries if e["scores"].get(select_by) is not None]
    if not scored:
        return select_by, None
    return select_by, max(scored, key=lambda e: (e["scores"][select_by], -e["step"]))


def markdown(summary: dict) -> str:
    names = list(dict.fromkeys(n for e in summary["steps"] for n in e["scores"]))
    best = summary["best"]
    lines = [f"Checkpoint sweep of `{summary['run_dir']}` ({len(summary['steps'])} steps).", ""]
    if best:
        what = f"{summary['select_by']} score {best['score']:.2f}"
        lines += [f"Best step: **{best['step']}** ({what}; checkpoint `{best['checkpoint']}`).", ""]
    lines += ["| Step | " + " | ".join(names) + " | |", "|---:|" + "---:|" * len(names) + "---|"]
    for e in summary["steps"]:
        cells = ["–" if e["scores"].get(n) is None else f"{e['scores'][n]:.2f}" for n in names]
        mark = "best" if best and e["step"] == best["step"] else ""
        lines.append(f"| {e['step']} | " + " | ".join(cells) + f" | {mark} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: str) -> None:
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    names = list(dict.fromkeys(n for e in summary["steps"] for n in e["scores"]))
    for name in names:
        points = [(e["step"], e["scores"].get(name)) for e in summary["steps"]]
        points = [(s, v) for s, v in points if v is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=name)
    best = summary["best"]
    if best:
        label = f"best: step {best['step']} ({summary['select_by']} {best['score']:.2f})"
        ax.axvline(best["step"], color="tab:red", linestyle="--", label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("suite score (%)")
    ax.set_title("Suite score per saved step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    report.save_figure(fig, path)


def sweep(
    run_dir: str,
    output_dir: str,
    evaluate_step: Callable[[str, str], dict],
    key: dict,
    select_by: str | None = None,
    write: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Evaluates every saved step of `run_dir` with `evaluate_step(checkpoint, step_output_dir)
    -> results.json content`, skipping finished steps; writes and returns the summary ({} when
    not `write`: the other processes of a multi-host job)."""
    store_path = store_dir(run_dir)
    entries = evaluate_steps(store_path, output_dir, evaluate_step, key, write, log)
    if not write:  # every process but the first of a multi-host job: no results to rank
        return {}
    select_by, best = best_step(entries, select_by)
    summary = {
        "run_dir": run_dir,
        "store": store_path,
        "select_by": select_by,
        "best": None if best is None else {**best, "score": best["scores"][select_by]},
        "steps": entries,
        "key": key,
    }
    from tensorflow.io import gfile

    gfile.makedirs(output_dir)
    report.write_json_atomic(os.path.join(output_dir, "sweep.json"), summary)
    report.write_atomic(os.path.join(output_dir, "sweep.md"), markdown(summary))
    plot(summary, os.path.join(output_dir, "sweep.png"))
    if best:
        log(f"best step: {best['step']} ({select_by} {best['scores'][select_by]:.2f})")
    return summary
