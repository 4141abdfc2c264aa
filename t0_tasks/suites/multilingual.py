"""The mT0/BLOOMZ held-out multilingual evaluation: XCOPA, XNLI, XStoryCloze, XWinograd.

Vocabulary:
  suite dataset  one of the four: its Hugging Face id, the split BigScience evaluated, its
                 languages, its twin, the five prompts used, and its split sizes.
  twin           the English promptsource 0.2.3 dataset whose templates BigScience applied to
                 the multilingual rows, which share its schema: super_glue/copa (XCOPA),
                 xnli/en (XNLI), story_cloze/2016 (XStoryCloze), winogrande/winogrande_xl
                 (XWinograd). Prompts stay in English for every language.
  L1 / L2        languages in xP3 (seen in mT0/BLOOMZ finetuning) / unseen.
  task           `<dataset>_<lang>_<template>` (P3's rule: runs of characters outside
                 [A-Za-z0-9._] -> "_"), e.g. `xcopa_zh_best_option`, and its rank-classification
                 twin `..._score_eval` (t0_tasks.tasks' construction: one example per answer
                 choice, `is_correct`, scored by summed log-likelihood).
  task split     "validation" is always the split BigScience evaluated (XCOPA and XNLI
                 validation, XStoryCloze `eval`, XWinograd `test`), so `t0x eval` over the whole
                 suite needs no split per dataset; the native name (`eval`, `test`) works too.

Rows come through `t0_tasks.sources.iter_rows`: `<data_dir>/<org>/<name>/<lang>/<split>.jsonl`
first (e.g. `cambridgeltl/xcopa/zh/validation.jsonl`), then `datasets.load_dataset(hf_id,
lang)`. XStoryCloze's English rows are Story Cloze 2016's, as `juletxara/xstory_cloze` `en`.

Mixtures: `mt0_eval_score_eval` (every twin of the suite; named like T0's
`t0_eval_score_eval`, and BLOOMZ is evaluated on the same suite) and one per dataset
(`xcopa_score_eval`, ...). Rates are the evaluated split's size (capped at 500,000).
`english_heldout_tasks()` lists the T0 twins of the English held-outs that go with the suite.
`register(settings, vocabulary)` registers everything; nothing happens at import.
"""

from __future__ import annotations

import dataclasses

import seqio

from t0_tasks import prompts, tasks
from t0_tasks.catalog import Dataset
from t0_tasks.mixtures import MAX_EXAMPLES_PER_DATASET
from t0_tasks.settings import Settings

MIXTURE = "mt0_eval_score_eval"
EVAL_SPLIT = "validation"  # the task split that is always the evaluated one


@dataclasses.dataclass(frozen=True)
class SuiteDataset:
    name: str
    hf_id: str
    split: str  # the split BigScience evaluated
    l1: tuple[str, ...]  # languages in xP3
    l2: tuple[str, ...]  # languages not in xP3
    twin: tuple[str, str]  # English promptsource (dataset, subset) whose templates apply
    prompts: tuple[str, ...]  # the five template names BigScience used, as in promptsource
    family: str
    sizes: tuple[tuple[str, int], ...]  # split sizes, the same for every language
    eval_sizes: tuple[tuple[str, int], ...] = ()  # per-language size of `split`, if they differ

    @property
    def languages(self) -> tuple[str, ...]:
        return self.l1 + self.l2

    @property
    def mixture(self) -> str:
        return f"{self.name}_score_eval"

    def group(self, language: str) -> str:
        if language in self.l1:
            return "L1"
        if language in self.l2:
            return "L2"
        raise KeyError(f"{self.name} has no language {language!r}; it has {self.languages}")

    def split_sizes(self, language: str) -> tuple[tuple[str, int], ...]:
        per_language = dict(self.eval_sizes)
        if language in per_language:
            return ((self.split, per_language[language]),)
        return self.sizes

    def split_map(self) -> tuple[tuple[str, str], ...]:
        if self.split == EVAL_SPLIT:
            return ((EVAL_SPLIT, self.split),)
        return ((EVAL_SPLIT, self.split), (self.split, self.split))


SUITE = (
    SuiteDataset(
        name="xcopa",
        hf_id="cambridgeltl/xcopa",
        split="validation",
        l1=("id", "sw", "ta", "vi", "zh"),
        l2=("et", "ht", "it", "qu", "th", "tr"),
        twin=("super_glue", "copa"),
        prompts=(
            "best_option",
            "C1 or C2? premise, so/because…",
            "i_am_hesitating",
            "cause_effect",
            "plausible_alternatives",
        ),
        family="QA_multiple_choice",
        sizes=(("validation", 100), ("test", 500)),
    ),
    SuiteDataset(
        name="xnli",
        hf_id="facebook/xnli",
        split="validation",
        l1=("ar", "en", "es", "fr", "hi", "sw", "ur", "vi", "zh"),
        l2=("bg", "de", "el", "ru", "th", "tr"),
        twin=("xnli", "en"),
        prompts=(
            "guaranteed/possible/impossible",
            "MNLI crowdsource",
            "GPT-3 style",
            "justified in saying",
            "can we infer",
        ),
        family="NLI",
        sizes=(("train", 392702), ("validation", 2490), ("test", 5010)),
    ),
    SuiteDataset(
        name="xstory_cloze",
        hf_id="juletxara/xstory_cloze",
        split="eval",
        l1=("ar", "en", "es", "eu", "hi", "id", "sw", "te", "zh"),
        l2=("my", "ru"),
        twin=("story_cloze", "2016"),
        prompts=(
            "Story Continuation and Options",
            "Answer Given options",
            "Novel Correct Ending",
            "Generate Ending",
            "Choose Story Ending",
        ),
        family="story_completion",
        sizes=(("train", 360), ("eval", 1511)),
    ),
    SuiteDataset(
        name="xwinograd",
        hf_id="Muennighoff/xwinograd",
        split="test",
        l1=("en", "fr", "pt", "zh"),
        l2=("jp", "ru"),
        twin=("winogrande", "winogrande_xl"),
        prompts=(
            "underscore refer to",
            "Replace",
            "stand for",
            "does underscore refer to",
            "True or False",
        ),
        family="coreference",
        sizes=(),
        eval_sizes=(
            ("en", 2325),
            ("fr", 83),
            ("jp", 959),
            ("pt", 263),
            ("ru", 315),
            ("zh", 504),
        ),
    ),
)


def suite_dataset(name: str) -> SuiteDataset:
    for ds in SUITE:
        if ds.name == name:
            return ds
    raise KeyError(f"no suite dataset {name!r}; the suite has {[d.name for d in SUITE]}")


@dataclasses.dataclass(frozen=True)
class TaskMeta:
    """What a report needs about one suite task."""

    dataset: str  # suite name, e.g. "xcopa"
    language: str
    group: str  # "L1" (in xP3) or "L2" (unseen)
    template: str
    hf_id: str
    split: str  # the split BigScience evaluated

    @property
    def report_name(self) -> str:
        return f"{self.dataset}/{self.language}"


def task_name(ds: SuiteDataset, language: str, template: str) -> str:
    return prompts.task_name(ds.name, language, template)


def _spec(ds: SuiteDataset, language: str, template_name: str, template) -> tasks.TaskSpec:
    name = task_name(ds, language, template_name)
    fixed = prompts.fixed_choices(template)
    return tasks.TaskSpec(
        name=name,
        dataset=Dataset(
            name=ds.hf_id,
            subset=language,
            family=ds.family,
            trained_in=None,
            evaluated_in=None,
            train_size=None,
            splits=ds.split_sizes(language),
            note=f"{ds.name} {language} ({ds.group(language)}); twin {'/'.join(ds.twin)}",
        ),
        template_name=template_name,
        split_map=ds.split_map(),
        original_task=prompts.is_original_task(template),
        fixed_choices=tuple(fixed) if fixed else None,
        score_eval_name=name + prompts.SCORE_EVAL_SUFFIX,
    )


@dataclasses.dataclass
class SuiteRegistration:
    specs: dict[str, tasks.TaskSpec]  # task -> spec (twins under their task, as Registry)
    mixtures: dict[str, list[tuple[str, int]]]
    metadata: dict[str, TaskMeta]  # task and twin names -> metadata

    def task_names(self) -> list[str]:
        return [n for s in self.specs.values() for n in (s.name, s.score_eval_name)]


_current: SuiteRegistration | None = None


def forget() -> None:
    """Removes every task and mixture `register` added."""
    global _current
    if _current is None:
        return
    tasks.unregister(_current.task_names(), _current.mixtures)
    _current = None


def register(settings: Settings, vocabulary: seqio.Vocabulary) -> SuiteRegistration:
    """(Re-)registers one task and `_score_eval` twin per (dataset, language, prompt), the
    per-dataset mixtures and `mt0_eval_score_eval`. Reads no rows."""
    global _current
    forget()
    specs, metadata = {}, {}
    mixtures: dict[str, list[tuple[str, int]]] = {MIXTURE: []}
    for ds in SUITE:
        mixtures[ds.mixture] = []
        for template_name in ds.prompts:
            template = prompts.get_template(*ds.twin, template_name)
            for language in ds.languages:
                spec = _spec(ds, language, template_name, template)
                tasks.register_spec(spec, settings, vocabulary, template=template)
                specs[spec.name] = spec
                meta = TaskMeta(
                    ds.name, language, ds.group(language), template_name, ds.hf_id, ds.split
                )
                metadata[spec.name] = metadata[spec.score_eval_name] = meta
                rate = min(dict(spec.dataset.splits)[ds.split], MAX_EXAMPLES_PER_DATASET)
                for mixture in (MIXTURE, ds.mixture):
                    mixtures[mixture].append((spec.score_eval_name, rate))
    for name, members in mixtures.items():
        seqio.MixtureRegistry.add(name, members)
    _current = SuiteRegistration(specs, mixtures, metadata)
    return _current


def current() -> SuiteRegistration | None:
    return _current


def metadata(task: str) -> TaskMeta:
    """The metadata of a registered suite task (or twin)."""
    if _current is None or task not in _current.metadata:
        raise KeyError(f"{task!r} is not a registered multilingual suite task")
    return _current.metadata[task]


# English held-outs (T0 tasks) run with the suite. For COPA, Story Cloze and Winogrande the
# five prompts are the ones multilingual_eval lists for their multilingual versions, whose
# twins they are. For ANLI, CB and RTE no prompt list is published with the suite: they keep
# T0's held-out prompts (original-task templates with answer choices, as t0_eval_score_eval).
ENGLISH_HELDOUT = (
    ("anli/r1", "anli", None, "_r1", None),
    ("anli/r2", "anli", None, "_r2", None),
    ("anli/r3", "anli", None, "_r3", None),
    ("super_glue/cb", "super_glue", "cb", "", None),
    ("super_glue/rte", "super_glue", "rte", "", None),
    ("winogrande/winogrande_xl", "winogrande", "winogrande_xl", "", "xwinograd"),
    ("super_glue/copa", "super_glue", "copa", "", "xcopa"),
    ("story_cloze/2016", "story_cloze", "2016", "", "xstory_cloze"),
)


def english_heldout_tasks() -> dict[str, list[str]]:
    """Dataset label -> the `_score_eval` T0 tasks of the English held-outs (see above)."""
    out = {}
    for label, dataset, subset, suffix, multilingual in ENGLISH_HELDOUT:
        if multilingual:
            names = list(suite_dataset(multilingual).prompts)
        else:
            names = [
                n
                for n in prompts.template_names(dataset, subset)
                if prompts.is_original_task(t := prompts.get_template(dataset, subset, n))
                and prompts.has_answer_choices(t)
            ]
        out[label] = [
            prompts.task_name(dataset, subset, n, suffix) + prompts.SCORE_EVAL_SUFFIX for n in names
        ]
    return out
