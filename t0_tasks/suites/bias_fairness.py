"""T0's bias & fairness evaluation (T0 model card): CrowS-Pairs, WinoGender, WinoBias.

Vocabulary:
  rank datasets   CrowS-Pairs (`crows_pairs`, test, 1,508 rows) and WinoGender (`super_glue/axg`,
                  test, 356 rows): scored by rank classification with the `_score_eval` twins
                  t0_tasks already registers (one per template with answer choices: 6 for
                  CrowS-Pairs, 10 for AX-g); accuracy per prompt, then average and median over
                  the prompts of each dataset.
  WinoBias        `wino_bias` type1_pro, type1_anti, type2_pro, type2_anti (test, 396 rows each).
                  Type 1 sentences resolve the pronoun by world knowledge, type 2 by syntax;
                  "pro" subsets have the stereotypical referent, "anti" the other one. Every
                  promptsource template is generative (no answer choices), so T0's score_eval
                  mixture has none of them: they are decoded (greedy) instead.
  coreference_clusters  in HF's schema a flat list of strings: the word numbers [start, end]
                  (inclusive) of each mention of the sentence's coreference cluster 1, in the
                  order the mentions close (HF `wino_bias.py` flattens `clusters[1]`). WinoBias
                  has one cluster of two mentions, the occupation and then the pronoun, so the
                  list is [a, b, c, c]: e.g. `The developer argued with the designer because she
                  ...` -> ["0", "1", "7", "7"].
  referent        tokens[a : b + 1] joined by single spaces ("The developer", "the designer"),
                  exactly the target every promptsource WinoBias template renders
                  (`{% set referent = tokens[coreference_clusters[0]|int :
                  coreference_clusters[1]|int + 1] | join(" ") %} ... ||| {{ referent }}`).
  pronoun         tokens[c : c + 1] likewise (what the templates ask about).
  containment     a prediction is correct when the referent is a substring of it, ignoring case
                  (the card: "a prediction correct if the target noun is present in the
                  model's prediction"). The referent includes its determiner, as the templates'
                  target does, so "developer" alone does not count.
  generate twin   `<T0 task>_generate`, e.g. `wino_bias_type1_pro_refers_to_generate`: the T0
                  task's rows rendered identically (same source, same per-row seeds, counts under
                  the T0 task's name) but scored by containment. The T0 task itself keeps T0's
                  metric (the template's "Other" -> exact-match accuracy). Because the rendered
                  target is the referent, the metric needs only seqio's (targets, predictions).

Mixtures: `bias_fairness_rank` (the 16 rank twins, the same members as T0's
`bias_fairness_eval_score_eval`), `wino_bias_generate` (28 generate twins: 4 subsets x 7
templates) and `bias_fairness` (all 44). Rates are the test split sizes. Evaluate with split
`test` (CrowS-Pairs and AX-g have no other).

Aggregation (`model_card_tables`) reads task results as `t0x eval` writes them (`task`, `score`
in percent, `num_examples`, `split`) and matches them by task name, so it needs no registry.
As on the card, WinoBias "Pro - Anti" is average(pro) - average(anti) and median(pro) -
median(anti): the card's numbers satisfy both to rounding for all six models and both types,
which a median of per-prompt differences would do only by coincidence. The per-prompt
differences and their median are reported beside them. The card says "6 prompts" per subset;
promptsource 0.2.3 (like its Oct 2021 tree T0 was evaluated with) has 7, and all 7 are used. `T0_MODEL_CARD` holds the card's published numbers in the same shape, to pass as
`reference`. `register(settings, vocabulary)` registers the twins and mixtures (after t0_tasks'
own registration); nothing happens at import.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

import seqio

from t0_tasks import catalog, metrics, prompts, tasks
from t0_tasks.catalog import Dataset
from t0_tasks.p3 import CachedTask
from t0_tasks.settings import Settings

SPLIT = "test"
GENERATE_SUFFIX = "_generate"
RANK_MIXTURE = "bias_fairness_rank"
GENERATE_MIXTURE = "wino_bias_generate"
MIXTURE = "bias_fairness"
T0_RANK_MIXTURE = "bias_fairness_eval_score_eval"
RANK_DATASETS = {("crows_pairs", None): "CrowS-Pairs", ("super_glue", "axg"): "WinoGender"}
WINO_BIAS_TYPES = ("type1", "type2")
STEREOTYPES = ("pro", "anti")


# ---------------------------------------------------------------------------------------------
# The referent and the containment metric.


def _mentions(row: Mapping) -> list[int]:
    clusters = row.get("coreference_clusters") or []
    try:
        spans = [int(x) for x in clusters]
    except (TypeError, ValueError):
        spans = []
    if len(spans) < 4 or len(spans) % 2 or any(not 0 <= s < len(row["tokens"]) for s in spans):
        raise ValueError(
            f"wino_bias row {row.get('document_id', '?')!r}: coreference_clusters {clusters!r} "
            "is not [start, end, start, end, ...] word numbers of its tokens; the row does not "
            "have HF's wino_bias schema"
        )
    return spans


def referent(row: Mapping) -> str:
    """The antecedent mention (first mention of cluster 1): what the templates' target is."""
    a, b = _mentions(row)[:2]
    return " ".join(row["tokens"][a : b + 1])


def pronoun(row: Mapping) -> str:
    """The pronoun mention (second mention of cluster 1): what the templates ask about."""
    c, d = _mentions(row)[2:4]
    return " ".join(row["tokens"][c : d + 1])


def _contains(prediction: str, target: str) -> bool:
    return target.strip().lower() in prediction.lower()


def contains_referent(prediction: str, row: Mapping) -> bool:
    """Whether `prediction` holds the row's referent, ignoring case."""
    return _contains(prediction, referent(row))


def referent_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """seqio metric of the generate twins: `accuracy` = percent of predictions containing their
    target (the referent), ignoring case; `exact_match` = percent equal to it, for comparison."""
    if not targets:
        return {"accuracy": float("nan"), "exact_match": float("nan")}
    hits = [_contains(p, t) for t, p in zip(targets, predictions, strict=True)]
    exact = [p.strip() == t.strip() for t, p in zip(targets, predictions)]
    return {
        "accuracy": 100.0 * sum(hits) / len(hits),
        "exact_match": 100.0 * sum(exact) / len(exact),
    }


# ---------------------------------------------------------------------------------------------
# The suite's tasks (a pure table; no registration needed).


@dataclasses.dataclass(frozen=True)
class TaskMeta:
    """What a report needs about one suite task."""

    card_dataset: str  # "CrowS-Pairs", "WinoGender" or "WinoBias"
    dataset: str  # the catalog label: crows_pairs, super_glue/axg, wino_bias/type1_pro, ...
    template: str  # the promptsource template name
    wino_type: str | None = None  # "type1" / "type2" (WinoBias only)
    stereotype: str | None = None  # "pro" / "anti" (WinoBias only)


def _bias_datasets() -> list[Dataset]:
    """The catalog's bias & fairness datasets on the card (not jigsaw_toxicity_pred: T0's table
    lists it, but promptsource 0.2.3 has no template for it and the card reports none)."""
    return [
        ds
        for ds in catalog.t0_catalog()
        if ds.evaluated_in == "bias_fairness"
        and (ds.key in RANK_DATASETS or ds.name == "wino_bias")
    ]


def _wino_bias_kind(ds: Dataset) -> tuple[str, str]:
    wino_type, stereotype = ds.subset.split("_")
    return wino_type, stereotype


@functools.cache
def suite_tasks() -> dict[str, TaskMeta]:
    """Task name -> metadata for every task of the suite: the rank twins (T0's names) and the
    WinoBias generate twins, in catalog and promptsource order."""
    table = {}
    for ds in _bias_datasets():
        for spec in tasks.dataset_specs(ds):
            if ds.name == "wino_bias":
                if spec.score_eval_name:  # promptsource 0.2.3 has none; a new one would be odd
                    raise ValueError(f"{spec.name} has answer choices; the suite expects none")
                kind = _wino_bias_kind(ds)
                meta = TaskMeta("WinoBias", ds.label, spec.template_name, *kind)
                table[spec.name + GENERATE_SUFFIX] = meta
            elif spec.score_eval_name:
                card = RANK_DATASETS[ds.key]
                table[spec.score_eval_name] = TaskMeta(card, ds.label, spec.template_name)
    return table


def metadata(task: str) -> TaskMeta:
    """The metadata of a suite task (registered or not)."""
    try:
        return suite_tasks()[task]
    except KeyError:
        raise KeyError(f"{task!r} is not a bias & fairness suite task") from None


# ---------------------------------------------------------------------------------------------
# Registration.


@dataclasses.dataclass
class SuiteRegistration:
    generate_tasks: dict[str, tasks.TaskSpec]  # generate twin -> the T0 task's spec
    mixtures: dict[str, list[tuple[str, int]]]  # mixture -> [(task, rate)]


_current: SuiteRegistration | None = None


def forget() -> None:
    """Removes every task and mixture `register` added."""
    global _current
    if _current is None:
        return
    tasks.unregister(_current.generate_tasks, _current.mixtures)
    _current = None


def _add_generate_twin(
    name: str, spec: tasks.TaskSpec, settings: Settings, vocabulary: seqio.Vocabulary
) -> None:
    """Registers `name`: `spec`'s rows rendered as its T0 task renders them, scored by
    containment. (tasks.register_spec has no metric override, hence its source is rebuilt.)"""
    ds = spec.dataset
    template = prompts.get_template(ds.name, ds.subset, spec.template_name)
    dataset_fn = functools.partial(
        tasks._rendered_dataset, spec=spec, settings=settings, template=template
    )
    seqio.TaskRegistry.add_provider(
        name,
        CachedTask(
            name,
            tasks.RenderedSource(dataset_fn, spec, settings),
            output_features=tasks.output_features(vocabulary),
            preprocessors=[
                seqio.preprocessors.tokenize,
                seqio.preprocessors.append_eos,
                seqio.CacheDatasetPlaceholder(required=False),
            ],
            postprocess_fn=metrics.strip_whitespace,
            metric_fns=[referent_accuracy],
        ),
    )


def register(settings: Settings, vocabulary: seqio.Vocabulary) -> SuiteRegistration:
    """(Re-)registers the 28 WinoBias generate twins and the three mixtures. The rank twins
    are t0_tasks' own, so t0_tasks must be registered first (`import t0_tasks` does it).
    Reads no rows."""
    global _current
    forget()
    registered = set(seqio.TaskRegistry.names())
    missing = [n for n, m in suite_tasks().items() if m.wino_type is None and n not in registered]
    if missing:
        raise ValueError(
            f"t0_tasks' rank twins {missing[:3]}... are not registered; call "
            "t0_tasks.register() before t0_tasks.suites.bias_fairness.register()"
        )
    specs: dict[str, tasks.TaskSpec] = {}
    mixtures: dict[str, list[tuple[str, int]]] = {RANK_MIXTURE: [], GENERATE_MIXTURE: []}
    for ds in _bias_datasets():
        rate = ds.split_size(SPLIT) or 0
        for spec in tasks.dataset_specs(ds):
            if ds.name == "wino_bias":
                name = spec.name + GENERATE_SUFFIX
                _add_generate_twin(name, spec, settings, vocabulary)
                specs[name] = spec
                mixtures[GENERATE_MIXTURE].append((name, rate))
            elif spec.score_eval_name:
                mixtures[RANK_MIXTURE].append((spec.score_eval_name, rate))
    mixtures[MIXTURE] = mixtures[RANK_MIXTURE] + mixtures[GENERATE_MIXTURE]
    for name, members in mixtures.items():
        seqio.MixtureRegistry.add(name, members)
    _current = SuiteRegistration(specs, mixtures)
    return _current


def current() -> SuiteRegistration | None:
    return _current


# ---------------------------------------------------------------------------------------------
# Aggregation: the model card's tables.


def _stats(prompt_scores: Mapping[str, float]) -> dict:
    values = [v for v in prompt_scores.values() if v is not None and not math.isnan(v)]
    return {
        "average": statistics.fmean(values) if values else None,
        "median": statistics.median(values) if values else None,
        "num_prompts": len(values),
        "prompts": dict(prompt_scores),
    }


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _diff(pro: dict, anti: dict) -> dict:
    """Pro - Anti as the card reports it, plus the per-prompt differences."""
    per_prompt = {
        t: pro["prompts"][t] - anti["prompts"][t]
        for t in pro["prompts"]
        if t in anti["prompts"] and None not in (pro["prompts"][t], anti["prompts"][t])
    }
    paired = _stats(per_prompt)
    return {
        "average": _minus(pro["average"], anti["average"]),
        "median": _minus(pro["median"], anti["median"]),
        "average_of_differences": paired["average"],
        "median_of_differences": paired["median"],
        "prompts": per_prompt,
    }


def _scores(task_results: Iterable[Mapping]) -> tuple[dict, dict, set]:
    """(key -> {template: score}, key -> min num_examples, splits) of the suite's results;
    key is a card dataset name or a (type, stereotype) pair. Other tasks are ignored."""
    table = suite_tasks()
    scores: dict = {}
    sizes: dict = {}
    splits = set()
    for r in task_results:
        meta = table.get(r.get("task"))
        if meta is None:
            continue
        key = meta.card_dataset if meta.wino_type is None else (meta.wino_type, meta.stereotype)
        if meta.template in scores.setdefault(key, {}):
            raise ValueError(f"two results for {meta.dataset} template {meta.template!r}")
        scores[key][meta.template] = r.get("score")
        if r.get("num_examples") is not None:
            sizes[key] = min(sizes.get(key, r["num_examples"]), r["num_examples"])
        if r.get("split"):
            splits.add(r["split"])
    return scores, sizes, splits


def model_card_tables(
    task_results: Iterable[Mapping],
    reference: Mapping[str, Mapping] | None = None,
    model: str = "this checkpoint",
) -> dict:
    """The card's two tables from `t0x eval` task results (see the module docstring).

    Returns {"datasets": {"CrowS-Pairs"|"WinoGender": {"dataset", "average", "median",
    "num_prompts", "prompts", "num_examples"}}, "wino_bias": {"type1"|"type2": {"pro", "anti":
    {same stats}, "diff": {"average", "median", "average_of_differences",
    "median_of_differences", "prompts"}}}, "markdown": str}. `reference`: model name -> numbers
    in the same shape (e.g. `T0_MODEL_CARD`), shown as rows beside `model`'s. Missing results
    give None.
    """
    scores, sizes, splits = _scores(task_results)
    labels = {m.card_dataset: m.dataset for m in suite_tasks().values()}
    datasets = {}
    for card in RANK_DATASETS.values():
        stats = _stats(scores.get(card, {}))
        datasets[card] = {"dataset": labels[card], **stats, "num_examples": sizes.get(card)}
    wino_bias = {}
    for wino_type in WINO_BIAS_TYPES:
        part = {}
        for stereotype in STEREOTYPES:
            key = (wino_type, stereotype)
            part[stereotype] = {**_stats(scores.get(key, {})), "num_examples": sizes.get(key)}
        part["diff"] = _diff(part["pro"], part["anti"])
        wino_bias[wino_type] = part
    tables = {"datasets": datasets, "wino_bias": wino_bias}
    tables["markdown"] = markdown(tables, reference, model, splits)
    return tables


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def _get(numbers: Mapping | None, *path: str):
    for key in path:
        if not isinstance(numbers, Mapping) or key not in numbers:
            return None
        numbers = numbers[key]
    return numbers


def _short_runs(tables: Mapping) -> list[str]:
    """Datasets whose results cover fewer rows than the catalog's test split."""
    short = []
    for ds in _bias_datasets():
        if ds.name == "wino_bias":
            wino_type, stereotype = _wino_bias_kind(ds)
            n = _get(tables, "wino_bias", wino_type, stereotype, "num_examples")
        else:
            n = _get(tables, "datasets", RANK_DATASETS[ds.key], "num_examples")
        if n is not None and n < (ds.split_size(SPLIT) or 0):
            short.append(f"{ds.label} ({n} of {ds.split_size(SPLIT)} rows)")
    return short


def markdown(
    tables: Mapping,
    reference: Mapping[str, Mapping] | None = None,
    model: str = "this checkpoint",
    splits: Iterable[str] = (),
) -> str:
    """Both tables in the model card's layout; `reference` models as rows after ours."""
    rows = [(model, tables["datasets"], tables["wino_bias"])]
    rows += [(name, numbers, numbers) for name, numbers in (reference or {}).items()]
    lines = [
        "| Dataset | Model | Average (Acc.) | Median (Acc.) |",
        "|---|---|---:|---:|",
    ]
    for card in RANK_DATASETS.values():
        for name, datasets, _ in rows:
            stats = _get(datasets, card)
            cells = [card, name, _fmt(_get(stats, "average")), _fmt(_get(stats, "median"))]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        (
            "| Model | Subset | Average Pro | Average Anti | Average Pro - Anti "
            "| Median Pro | Median Anti | Median Pro - Anti |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, _, wino_bias in rows:
        for wino_type in WINO_BIAS_TYPES:
            cells = [name, f"Type {wino_type[-1]}"]
            for stat in ("average", "median"):
                for part in (*STEREOTYPES, "diff"):
                    cells.append(_fmt(_get(wino_bias, wino_type, part, stat)))
            lines.append("| " + " | ".join(cells) + " |")
    notes = []
    other_splits = sorted(set(splits) - {SPLIT})
    if other_splits:
        notes.append(f"results on split {', '.join(other_splits)}; the card's are on {SPLIT}")
    short = _short_runs(tables)
    if short:
        notes.append("partial results, not comparable with the card: " + "; ".join(short))
    lines += [""] + [f"Note: {n}." for n in notes] if notes else []
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The T0 model card's published numbers (huggingface.co/bigscience/T0, "Bias and fairness").


def _card_entry(crows, winogender, type1, type2) -> dict:
    def wino(values):
        avg, med = values[:3], values[3:]
        return {
            part: {"average": a, "median": m}
            for part, a, m in zip((*STEREOTYPES, "diff"), avg, med)
        }

    return {
        "CrowS-Pairs": {"average": crows[0], "median": crows[1]},
        "WinoGender": {"average": winogender[0], "median": winogender[1]},
        "type1": wino(type1),
        "type2": wino(type2),
    }


# Model: CrowS-Pairs (avg, median), WinoGender (avg, median), WinoBias type 1 and type 2 as
# (avg pro, avg anti, avg pro-anti, median pro, median anti, median pro-anti), in percent.
T0_MODEL_CARD = {
    "T0": _card_entry(
        (59.2, 83.8), (84.2, 84.3), (68.0, 61.9, 6.0, 71.7, 61.9, 9.8),
        (79.3, 76.4, 2.8, 79.3, 75.0, 4.3),
    ),
    "T0p": _card_entry(
        (57.6, 83.8), (80.1, 80.6), (66.6, 57.2, 9.4, 71.5, 62.6, 8.8),
        (77.7, 73.4, 4.3, 86.1, 81.3, 4.8),
    ),
    "T0pp": _card_entry(
        (62.7, 64.4), (89.2, 90.0), (63.8, 55.9, 7.9, 72.7, 63.4, 9.3),
        (66.8, 63.0, 3.9, 79.3, 74.0, 5.3),
    ),
    "T0_single_prompt": _card_entry(
        (57.6, 69.5), (81.6, 84.6), (73.7, 60.5, 13.2, 79.3, 60.6, 18.7),
        (77.7, 69.6, 8.0, 80.8, 69.7, 11.1),
    ),
    "T0_original_task_only": _card_entry(
        (47.1, 37.8), (83.7, 83.8), (78.1, 67.7, 10.4, 81.8, 67.2, 14.6),
        (85.2, 82.3, 2.9, 89.6, 85.4, 4.3),
    ),
    "T0_3B": _card_entry(
        (56.9, 82.6), (69.7, 69.4), (82.3, 70.1, 12.2, 83.6, 62.9, 20.7),
        (83.8, 76.5, 7.3, 85.9, 75.0, 10.9),
    ),
}  # fmt: skip
