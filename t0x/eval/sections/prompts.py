"""The T0 paper's section: per dataset the median (and mean, min, max) over prompts.

Suite score: the mean over datasets of their median (group rows such as `anli`, which pool
their members' prompts, left out so that no prompt counts twice). Reference: numbers,
{dataset: median}.
"""

from __future__ import annotations

from t0x.eval import report

REFERENCE = "numbers"
SCORE_NAME = "mean over datasets of the median over prompts"


def build(task_results: list[dict], reference: dict | None = None, model: str = "") -> dict:
    del model
    datasets = report.aggregate(task_results)
    groups = sorted({r["group"] for r in task_results if r.get("group")})
    return {
        "score": report.mean_of_medians(datasets, groups),
        "score_name": SCORE_NAME,
        "datasets": datasets,
        "groups": groups,
        "reference": dict(reference or {}),
    }


def markdown(section: dict) -> str:
    return report.markdown_table(section["datasets"], section.get("reference"))


def plot(ax, section: dict) -> None:
    report.plot_prompts(ax, section["datasets"], section.get("reference"))
