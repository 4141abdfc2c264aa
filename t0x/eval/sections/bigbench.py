"""The BIG-bench section: BIG-bench's `multiple_choice_grade` per task of the T0 model card.

Vocabulary (see t0_tasks.suites.bigbench):
  task row   one BIG-bench task (a task folder), named as on the T0 model card when it is one
             of its 14: its grade is its leaf's, or for a container the unweighted mean of its
             subtasks' grades (BIG-bench's aggregate); `subtasks` lists those, `examples` sums
             the rows scored.
  partial    a container with fewer subtasks evaluated than the suite has: its grade is the
             mean of those present (marked in the table).

Suite score: the mean of the task rows' grades. Reference: numbers, {task: grade in percent},
the task named by its card name, folder name or `bigbench/<folder>`.
"""

from __future__ import annotations

import statistics

from t0x.eval import report

REFERENCE = "numbers"
SCORE_NAME = "mean over BIG-bench tasks of multiple_choice_grade"


def _suite_leaves() -> dict[str, list]:
    from t0_tasks.suites import bigbench as bb

    out: dict[str, list] = {}
    for leaf in bb.t0_suite_table():
        out.setdefault(leaf.task, []).append(leaf)
    return out


def _reference_for(reference: dict, task: str, card_name: str | None):
    for key in (card_name, task, f"bigbench/{task}"):
        if key is not None and key in reference:
            return reference[key]
    return None


def build(task_results: list[dict], reference: dict | None = None, model: str = "") -> dict:
    del model
    reference = dict(reference or {})
    table = _suite_leaves()
    found: dict[str, dict] = {}
    for r in task_results:
        meta = r.get("meta") or {}
        if "bigbench_task" not in meta:
            continue
        row = found.setdefault(meta["bigbench_task"], {"leaves": {}, "examples": 0})
        row["leaves"][meta.get("subtask") or ""] = r["score"]
        row["examples"] += int(r.get("num_examples") or 0)
    order = [t for t in table if t in found] + sorted(set(found) - set(table))
    tasks = {}
    for task in order:
        leaves = found[task]["leaves"]
        subtasks = {k: v for k, v in leaves.items() if k}
        scores = [v for v in leaves.values() if v is not None]
        card = table[task][0].card_name if task in table else None
        expected = len(table[task]) if task in table and table[task][0].subtask else None
        tasks[task] = {
            "card_name": card,
            "grade": statistics.fmean(scores) if scores else None,
            "subtasks": subtasks,
            "num_subtasks_expected": expected,
            "partial": bool(expected and len(subtasks) < expected),
            "examples": found[task]["examples"],
            "reference": _reference_for(reference, task, card),
        }
    grades = [t["grade"] for t in tasks.values() if t["grade"] is not None]
    return {
        "score": statistics.fmean(grades) if grades else None,
        "score_name": SCORE_NAME,
        "datasets": report.aggregate(task_results),
        "tasks": tasks,
        "reference": reference,
    }


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def markdown(section: dict) -> str:
    tasks = section["tasks"]
    with_ref = any(t["reference"] is not None for t in tasks.values())
    head = ["Task (T0 model card)", "BIG-bench task", "Grade", "Examples", "Subtasks"]
    head += ["Reference", "Δ"] if with_ref else []
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for name, t in tasks.items():
        subtasks = str(len(t["subtasks"])) if t["subtasks"] else "–"
        if t["num_subtasks_expected"]:
            subtasks += f" of {t['num_subtasks_expected']}" + (" (partial)" if t["partial"] else "")
        cells = [t["card_name"] or name, name, _fmt(t["grade"]), str(t["examples"]), subtasks]
        if with_ref:
            diff = None if None in (t["grade"], t["reference"]) else t["grade"] - t["reference"]
            cells += [_fmt(t["reference"]), _fmt(diff, signed=True)]
        lines.append("| " + " | ".join(cells) + " |")
    subs = [(n, s, v) for n, t in tasks.items() for s, v in t["subtasks"].items()]
    if subs:
        lines += ["", "| BIG-bench task | Subtask | Grade |", "|---|---|---:|"]
        lines += [f"| {n} | {s} | {_fmt(v)} |" for n, s, v in subs]
    return "\n".join(lines) + "\n"


def plot(ax, section: dict) -> None:
    tasks = section["tasks"]
    names = list(tasks)
    grades = [tasks[n]["grade"] or 0.0 for n in names]
    ax.bar(range(len(names)), grades, color="tab:blue", alpha=0.8, label="grade")
    refs = [(x, tasks[n]["reference"]) for x, n in enumerate(names)]
    refs = [(x, v) for x, v in refs if v is not None]
    if refs:
        ax.scatter(*zip(*refs), marker="*", s=120, color="tab:red", zorder=4, label="reference")
    ax.set_xticks(range(len(names)))
    labels = [tasks[n]["card_name"] or n for n in names]
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("multiple_choice_grade (%)")
    ax.grid(axis="y", alpha=0.3)
    if names:
        ax.legend(fontsize=8, loc="best")
