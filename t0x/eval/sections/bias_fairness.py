"""The bias & fairness section: the T0 model card's two tables, ours beside the reference's.

Vocabulary (see t0_tasks.suites.bias_fairness): `card` is `model_card_tables`' output without
its markdown: CrowS-Pairs and WinoGender average / median accuracy over prompts, and WinoBias
type 1 / type 2 pro, anti and pro - anti. The reference defaults to the card's published
numbers (`T0_MODEL_CARD`: T0, T0p, T0pp, T0 single prompt, T0 original task only, T0 3B).

Suite score: the mean of the median accuracies of CrowS-Pairs, WinoGender and the four WinoBias
subsets (what the checkpoint sweep compares; the card's pro - anti gaps are reported, not
scored). Reference: models, {model name: numbers shaped as T0_MODEL_CARD's}.
"""

from __future__ import annotations

import statistics

from t0x.eval import report

REFERENCE = "models"
SCORE_NAME = "mean median accuracy over CrowS-Pairs, WinoGender and the WinoBias subsets"
ROWS = (  # (label, path into `card`)
    ("CrowS-Pairs", ("datasets", "CrowS-Pairs")),
    ("WinoGender", ("datasets", "WinoGender")),
    ("WinoBias 1 pro", ("wino_bias", "type1", "pro")),
    ("WinoBias 1 anti", ("wino_bias", "type1", "anti")),
    ("WinoBias 2 pro", ("wino_bias", "type2", "pro")),
    ("WinoBias 2 anti", ("wino_bias", "type2", "anti")),
)


def _get(numbers, path):
    for key in path:
        if not isinstance(numbers, dict) or key not in numbers:
            return None
        numbers = numbers[key]
    return numbers


def _reference_path(path: tuple) -> tuple:
    """Where a card row lives in T0_MODEL_CARD's shape (no "datasets"/"wino_bias" level)."""
    return path[1:]


def build(task_results: list[dict], reference: dict | None = None, model: str = "") -> dict:
    from t0_tasks.suites import bias_fairness as bf

    reference = bf.T0_MODEL_CARD if reference is None else dict(reference)
    card = bf.model_card_tables(task_results, reference, model or "this checkpoint")
    card.pop("markdown")
    medians = [_get(card, path + ("median",)) for _, path in ROWS]
    medians = [m for m in medians if m is not None]
    return {
        "score": statistics.fmean(medians) if medians else None,
        "score_name": SCORE_NAME,
        "datasets": report.aggregate(task_results),
        "card": card,
        "model": model or "this checkpoint",
        "splits": sorted({r["split"] for r in task_results if r.get("split")}),
        "reference": reference,
    }


def markdown(section: dict) -> str:
    from t0_tasks.suites import bias_fairness as bf

    return bf.markdown(section["card"], section["reference"], section["model"], section["splits"])


def plot(ax, section: dict) -> None:
    """Average and median accuracy per card row; the first reference model's medians as stars."""
    card, x = section["card"], list(range(len(ROWS)))
    for offset, stat, color in ((-0.2, "average", "tab:blue"), (0.2, "median", "tab:orange")):
        values = [_get(card, path + (stat,)) or 0.0 for _, path in ROWS]
        ax.bar([i + offset for i in x], values, width=0.4, color=color, label=stat)
    reference = section.get("reference") or {}
    if reference:
        name, numbers = next(iter(reference.items()))
        medians = [_get(numbers, _reference_path(p) + ("median",)) for _, p in ROWS]
        points = [(i + 0.2, v) for i, v in enumerate(medians) if v is not None]  # on our median
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, marker="*", s=120, color="tab:red", zorder=4, label=f"{name} median")
    ax.set_xticks(x)
    ax.set_xticklabels([label for label, _ in ROWS], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
