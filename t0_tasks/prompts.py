"""promptsource templates -> (inputs, targets, answer choices), and P3's task names.

Vocabulary:
  template     a promptsource `Template` (Jinja with `|||` between input and target).
  rendering    what T0 made of one dataset row with one template: `inputs` (the prompt),
               `targets` (the answer) and, when the template has them, `answer_choices`.
  task name    `<dataset>_<subset>_<template>` (`<dataset>_<template>` without subset),
               every run of characters outside `[A-Za-z0-9._]` replaced by `_`; ANLI's
               per-round tasks append `_r1`/`_r2`/`_r3`; rank-classification twins append
               `_score_eval`. These are P3's names.

Invariants (T0's rendering, kept exactly):
  * the row's keys have hyphens replaced by underscores before rendering (promptsource);
  * a row is dropped when the template does not split into exactly an input and a target,
    or when the input renders empty;
  * an empty target with a non-empty input becomes `<NO LABEL>` (unlabelled test splits);
    training drops such rows instead (see t0_tasks.tasks).

Determinism: some templates draw at random (promptsource's `choice` filter, jinja's `random`
filter), from Python's unseeded global `random`. `render(..., seed=s)` makes those draws come
from `random.Random(s)`, thread-locally, so a rendering is a pure function of (template,
row, seed) even when tf.data renders several tasks in parallel threads; `row_seed(seed,
task, split, index)` gives each row its own seed. Without a seed, the filters behave as in
promptsource (global `random`), so promptsource's own `apply` is unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import random
import re
import threading
import warnings

from t0_tasks.errors import T0TasksError

NO_LABEL = "<NO LABEL>"
SCORE_EVAL_SUFFIX = "_score_eval"
_NAME_RE = re.compile(r"[^A-Za-z0-9._]+")


def task_name(dataset: str, subset: str | None, template_name: str, suffix: str = "") -> str:
    """P3's task name for a (dataset, subset, template); `suffix` e.g. `_r1`."""
    raw = dataset + (f"_{subset}_" if subset else "_") + template_name
    return _NAME_RE.sub("_", raw) + suffix


class TemplateRenderError(T0TasksError, ValueError):
    """A template raised on a row (a row that does not match the dataset's schema)."""


@dataclasses.dataclass(frozen=True)
class Rendering:
    inputs: str
    targets: str  # `<NO LABEL>` when the template rendered an empty target
    answer_choices: tuple[str, ...] | None
    empty_target: bool = False


_RANDOM = threading.local()


def _rng():
    """This thread's seeded generator inside `seeded(...)`; else Python's global random."""
    return getattr(_RANDOM, "rng", None) or random


@contextlib.contextmanager
def seeded(seed: int):
    """Random template filters draw from `random.Random(seed)` in this thread meanwhile."""
    previous = getattr(_RANDOM, "rng", None)
    _RANDOM.rng = random.Random(seed)
    try:
        yield
    finally:
        _RANDOM.rng = previous


def row_seed(seed: int, task: str, split: str, index: int) -> int:
    """The rendering seed of row `index` of `task`'s `split` under run seed `seed`."""
    digest = hashlib.sha256(f"{seed}\x00{task}\x00{split}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@functools.cache
def _install_seedable_filters() -> None:
    """Points promptsource's `choice` and jinja's `random` filters at `_rng()`."""
    import jinja2
    from promptsource import templates

    def choice(choices):
        return _rng().choice(choices)

    @jinja2.pass_context
    def random_filter(context, seq):
        try:
            return _rng().choice(seq)
        except IndexError:
            return context.environment.undefined("No random item, sequence was empty.")

    templates.env.filters["choice"] = choice
    templates.env.filters["random"] = random_filter


@functools.cache
def dataset_templates(dataset: str, subset: str | None):
    """promptsource's templates of a dataset (read from the installed package; no network)."""
    with warnings.catch_warnings():  # promptsource imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        from promptsource.templates import DatasetTemplates  # heavy; imported on first use
    _install_seedable_filters()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # promptsource warns on the root logger when there are none
    try:
        return DatasetTemplates(dataset, subset)
    finally:
        root.setLevel(level)


def template_names(dataset: str, subset: str | None) -> list[str]:
    """Template names in promptsource's (sorted) order; empty when there are none."""
    return list(dataset_templates(dataset, subset).all_template_names)


def get_template(dataset: str, subset: str | None, name: str):
    templates = dataset_templates(dataset, subset)
    if name not in templates.all_template_names:
        raise KeyError(
            f"{dataset}/{subset} has no promptsource template {name!r}; "
            f"it has {templates.all_template_names}"
        )
    return templates[name]


def render(template, row: dict, seed: int | None = None) -> Rendering | None:
    """T0's rendering of `row` with `template`; None when T0 dropped the row.

    With `seed`, the template's random draws are seeded (see the module doc)."""
    from promptsource.utils import removeHyphen

    _install_seedable_filters()
    row = removeHyphen(dict(row))
    with seeded(seed) if seed is not None else contextlib.nullcontext():
        parts = template.apply(dict(row))
        if len(parts) != 2:
            return None
        inputs, targets = parts
        if not inputs:
            return None
        choices = template.get_answer_choices_list(dict(row))
    return Rendering(
        inputs=inputs,
        targets=targets or NO_LABEL,
        answer_choices=tuple(choices) if choices else None,
        empty_target=not targets,
    )


def has_answer_choices(template) -> bool:
    return bool(template.answer_choices)


def fixed_choices(template) -> list[str] | None:
    """The template's fixed answer choices (same for every row), or None."""
    choices = template.get_fixed_answer_choices_list()
    return list(choices) if choices else None


def is_original_task(template) -> bool:
    return bool(template.metadata.original_task)


def metric_names(template) -> list[str]:
    return list(template.metadata.metrics or [])
