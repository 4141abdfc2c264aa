"""The multilingual section (mT0 / BLOOMZ held-outs): per dataset x language, over its prompts.

Vocabulary (see t0_tasks.suites.multilingual):
  row          one (dataset, language), e.g. `xcopa/zh`: the median and max (as BigScience
               reports) and mean / min over its prompts, and whether the language is L1 (in
               xP3, seen in finetuning) or L2 (unseen).
  dataset row  per suite dataset the mean of its rows' medians over L1 languages, over L2
               languages, and over all.
  English      the English held-outs evaluated with the suite (ANLI R1-R3, CB, RTE,
               Winogrande, COPA, Story Cloze), summarised per dataset like the T0 table.

Task results are recognised by their `meta` (`language`, `language_group`, `suite_dataset`,
written by the eval job); the others are the English held-outs.

Suite score: the mean of the rows' medians (the English held-outs are reported, not scored).
Reference: numbers, {row or English dataset name: median in percent}.
"""

from __future__ import annotations

import statistics

from t0x.eval import report

REFERENCE = "numbers"
SCORE_NAME = "mean over dataset x language of the median over prompts"
GROUPS = ("L1", "L2")
COLORS = {"L1": "tab:blue", "L2": "tab:orange", "en": "tab:gray"}


def _order() -> list[tuple[str, str]]:
    from t0_tasks.suites import multilingual as ml

    return [(ds.name, lang) for ds in ml.SUITE for lang in ds.languages]


def _rows(task_results: list[dict], reference: dict) -> dict[str, dict]:
    prompts: dict[tuple[str, str], dict] = {}
    groups: dict[tuple[str, str], str] = {}
    for r in task_results:
        meta = r.get("meta") or {}
        if "language" not in meta:
            continue
        key = (meta["suite_dataset"], meta["language"])
        prompts.setdefault(key, {})[r["template"]] = r["score"]
        groups[key] = meta["language_group"]
    known = _order()
    order = [k for k in known if k in prompts] + sorted(set(prompts) - set(known))
    rows = {}
    for dataset, language in order:
        name = f"{dataset}/{language}"
        stats = report.aggregate(
            {"task": t, "dataset": name, "template": t, "score": s}
            for t, s in prompts[(dataset, language)].items()
        )[name]
        rows[name] = {
            "dataset": dataset,
            "language": language,
            "group": groups[(dataset, language)],
            **stats,
            "reference": reference.get(name),
        }
    return rows


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _per_dataset(rows: dict[str, dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for row in rows.values():
        out.setdefault(row["dataset"], {"L1": [], "L2": []})[row["group"]].append(row["median"])
    return {
        name: {
            "L1": _mean(d["L1"]),
            "L2": _mean(d["L2"]),
            "all": _mean(d["L1"] + d["L2"]),
            "languages": len(d["L1"]) + len(d["L2"]),
        }
        for name, d in out.items()
    }


def build(task_results: list[dict], reference: dict | None = None, model: str = "") -> dict:
    del model
    reference = dict(reference or {})
    rows = _rows(task_results, reference)
    english = [r for r in task_results if "language" not in (r.get("meta") or {})]
    return {
        "score": _mean(r["median"] for r in rows.values()),
        "score_name": SCORE_NAME,
        "datasets": report.aggregate(task_results),
        "rows": rows,
        "per_dataset": _per_dataset(rows),
        "english": report.aggregate(english),
        "english_groups": sorted({r["group"] for r in english if r.get("group")}),
        "reference": reference,
    }


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _table(head: list[str], rows: list[list[str]], text_columns: int = 2) -> list[str]:
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * text_columns + ["---:"] * (len(head) - text_columns)) + "|",
    ]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def _with_reference(cells: list[str], median, ref, on: bool) -> list[str]:
    if not on:
        return cells
    diff = None if median is None or ref is None else median - ref
    return cells + [_fmt(ref), _fmt(diff, signed=True)]


def markdown(section: dict) -> str:
    reference = section.get("reference") or {}
    on = bool(reference)
    extra = ["Reference median", "Δ median"] if on else []
    rows = [
        _with_reference(
            [
                r["dataset"],
                r["language"],
                r["group"],
                _fmt(r["median"]),
                _fmt(r["max"]),
                str(r["num_prompts"]),
            ],
            r["median"],
            r["reference"],
            on,
        )
        for r in section["rows"].values()
    ]
    head = ["Dataset", "Language", "L1/L2", "Median", "Max", "Prompts", *extra]
    lines = _table(head, rows, text_columns=3)
    per = [
        [n, str(d["languages"]), _fmt(d["L1"]), _fmt(d["L2"]), _fmt(d["all"])]
        for n, d in section["per_dataset"].items()
    ]
    lines += ["", "Mean of the medians per dataset (L1: languages in xP3; L2: unseen):", ""]
    lines += _table(["Dataset", "Languages", "L1", "L2", "All"], per)
    if section["english"]:
        eng = [
            _with_reference(
                [n, "en", _fmt(d["median"]), _fmt(d["max"]), str(d["num_prompts"])],
                d["median"],
                reference.get(n),
                on,
            )
            for n, d in section["english"].items()
        ]
        lines += ["", "English held-out datasets:", ""]
        lines += _table(["Dataset", "Language", "Median", "Max", "Prompts", *extra], eng)
    return "\n".join(lines) + "\n"


def plot(ax, section: dict) -> None:
    """A bar per language (its median; L1 and L2 coloured apart), a tick at its max, a star at
    the reference; datasets side by side, the English held-outs last."""
    bars = [
        (n, r["group"], r["median"], r["max"], r["reference"]) for n, r in section["rows"].items()
    ]
    reference = section.get("reference") or {}
    skip = set(section.get("english_groups") or ())
    bars += [
        (n, "en", d["median"], d["max"], reference.get(n))
        for n, d in section["english"].items()
        if n not in skip
    ]
    seen = set()
    for x, (name, group, median, top, ref) in enumerate(bars):
        label = {"L1": "L1 (in xP3)", "L2": "L2 (unseen)", "en": "English"}[group]
        ax.bar(x, median or 0.0, color=COLORS[group], label=None if group in seen else label)
        seen.add(group)
        if top is not None:
            ax.hlines(
                top,
                x - 0.4,
                x + 0.4,
                color="black",
                linewidth=1,
                label=None if "max" in seen else "max",
            )
            seen.add("max")
        if ref is not None:
            ax.scatter(
                [x],
                [ref],
                marker="*",
                s=80,
                color="tab:red",
                zorder=4,
                label=None if "ref" in seen else "reference",
            )
            seen.add("ref")
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([b[0] for b in bars], rotation=90, fontsize=6)
    ax.set_ylabel("median accuracy over prompts (%)")
    ax.grid(axis="y", alpha=0.3)
    if bars:
        ax.legend(fontsize=8, loc="best")
