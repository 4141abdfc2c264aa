"""The evaluation suites `t0x eval --suite NAME` runs: one row of `SUITES` per suite.

Vocabulary:
  suite          a named set of tasks evaluated under one protocol: the seqio mixture(s) (and
                 any further task list) it is made of, the split every one of its tasks is read
                 on, the primary metric of its task results, a cap on input length, and the kind
                 of report section that summarises it (`t0x.eval.sections`).
  primary metric the metric a task result's `score` holds. None: the engine's default
                 (rank tasks: accuracy, or BIG-bench's `multiple_choice_grade` when the task
                 computes it; generative tasks: `accuracy` if computed, else the first metric).
  input cap      inputs are truncated to at most this many tokens (the job's own limit applies
                 when lower): BigScience truncated the multilingual suite's inputs at 512.
  choice prefix  what rendered targets and answer choices start with, by model family: "" for
                 T5 / mT5 (t-zero and mT0 scored choices without a leading space), " " for
                 BLOOM (BLOOMZ's rank evaluation prepends a space). The evaluation sets it as
                 t0_tasks' `target_prefix` unless the user set one (task_settings or
                 T0_TARGET_PREFIX).
  task filter    patterns (`fnmatch`, e.g. `xcopa_*`) that keep only the matching tasks of the
                 chosen suites; every pattern must match some task.

Suites:
  t0_heldout     `t0_eval_score_eval` on validation (T0 paper: median over prompts).
  bigbench_t0    `bigbench_t0`, the 14 BIG-bench tasks of the T0 model card, split `all`, graded
                 by `multiple_choice_grade` (needs the task files: T0_BIGBENCH_DIR).
  bias_fairness  `bias_fairness` on test: CrowS-Pairs and WinoGender ranked, WinoBias decoded.
  multilingual   `mt0_eval_score_eval` (XCOPA, XNLI, XStoryCloze, XWinograd; "validation" maps
                 to each dataset's evaluated split) and the English held-outs that go with it
                 (`t0_tasks.suites.multilingual.english_heldout_tasks`), inputs cut at 512.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Callable, Iterable, Sequence

from t0x.errors import ConfigError, DataError

CHOICE_PREFIX = {"t5": "", "bloom": " "}  # model family -> t0_tasks target_prefix
RANK_METRICS = ("multiple_choice_grade", "accuracy")  # a rank task's default: first computed
GENERATE_METRICS = ("accuracy",)  # a generative task's default: first computed, else its first


def _english_heldouts() -> list[str]:
    from t0_tasks.suites import multilingual

    return [t for names in multilingual.english_heldout_tasks().values() for t in names]


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    title: str
    mixtures: tuple[str, ...]
    split: str
    metric: str | None
    section: str  # a kind of t0x.eval.sections
    extra_tasks: Callable[[], Iterable[str]] | None = None
    max_input_length: int | None = None

    def feature_lengths(self, lengths: dict) -> dict:
        """The job's feature lengths with this suite's input cap applied."""
        out = dict(lengths)
        if self.max_input_length:
            out["inputs"] = min(out["inputs"], self.max_input_length)
        return out


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite(
            "t0_heldout",
            "T0 held-out datasets",
            ("t0_eval_score_eval",),
            "validation",
            None,
            "prompts",
        ),
        Suite(
            "bigbench_t0",
            "BIG-bench (the T0 model card's 14 tasks)",
            ("bigbench_t0",),
            "all",
            "multiple_choice_grade",
            "bigbench",
        ),
        Suite(
            "bias_fairness",
            "Bias and fairness (T0 model card)",
            ("bias_fairness",),
            "test",
            "accuracy",
            "bias_fairness",
        ),
        Suite(
            "multilingual",
            "Multilingual held-out datasets (mT0 / BLOOMZ)",
            ("mt0_eval_score_eval",),
            "validation",
            None,
            "multilingual",
            extra_tasks=_english_heldouts,
            max_input_length=512,
        ),
    )
}


def get(name: str) -> Suite:
    if name not in SUITES:
        raise ConfigError(f"unknown evaluation suite {name!r}: use one of {sorted(SUITES)}")
    return SUITES[name]


def parse(names: str | Sequence[str] | None) -> list[Suite]:
    """Suites from names (a list, or one comma-separated string; repeats dropped)."""
    if not names:
        return []
    if isinstance(names, str):
        names = [names]
    flat = [n.strip() for item in names for n in str(item).split(",") if n.strip()]
    return [get(n) for n in dict.fromkeys(flat)]


def _mixture_tasks(mixture: str) -> list[str]:
    import seqio

    from t0_tasks import report
    from t0_tasks.suites import bigbench

    why = bigbench.unavailable_message(mixture)
    if why:
        raise DataError(why)
    report.resolve(mixture, "mixture")
    return [t.name for t in seqio.get_subtasks(seqio.get_mixture_or_task(mixture))]


def suite_tasks(suite: Suite) -> list[str]:
    """The suite's task names, in mixture order, each once."""
    names = [t for m in suite.mixtures for t in _mixture_tasks(m)]
    if suite.extra_tasks:
        names += list(suite.extra_tasks())
    return list(dict.fromkeys(names))


def select(
    plan: Sequence[tuple[Suite, list[str]]], patterns: Sequence[str] | None
) -> list[tuple[Suite, list[str]]]:
    """The (suite, tasks) pairs with only the tasks matching a pattern; suites left with none
    are dropped. Raises DataError naming a pattern that matches no task."""
    if not patterns:
        return list(plan)
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    unmatched = [
        p for p in patterns if not any(fnmatch.fnmatchcase(t, p) for _, ts in plan for t in ts)
    ]
    if unmatched:
        raise DataError(
            f"tasks {unmatched} match no task of the suites {[s.name for s, _ in plan]}; "
            "`t0x tasks list --mixture <mixture>` lists them"
        )
    out = []
    for suite, names in plan:
        kept = [t for t in names if any(fnmatch.fnmatchcase(t, p) for p in patterns)]
        if kept:
            out.append((suite, kept))
    return out


def check_splits(suite: Suite, names: Sequence[str]) -> None:
    import seqio

    missing = [n for n in names if suite.split not in seqio.get_mixture_or_task(n).splits]
    if missing:
        raise DataError(
            f"suite {suite.name}: tasks without its {suite.split!r} split: {missing[:5]}"
        )


def plan(
    suites: Sequence[Suite], patterns: Sequence[str] | None = None
) -> list[tuple[Suite, list[str]]]:
    """(suite, task names) to evaluate, checked before any model is loaded."""
    chosen = select([(s, suite_tasks(s)) for s in suites], patterns)
    for suite, names in chosen:
        check_splits(suite, names)
    return chosen


def choice_prefix_change(family: str, task_settings: dict | None, current: str) -> str | None:
    """The target_prefix to set for `family`, or None to leave t0_tasks' setting alone (the
    user set one, the family has no rule, or it is already right)."""
    if "target_prefix" in (task_settings or {}) or os.environ.get("T0_TARGET_PREFIX"):
        return None
    wanted = CHOICE_PREFIX.get(family)
    return None if wanted is None or wanted == current else wanted


def primary_metric(task_name: str, metrics: dict, wanted: str | None, preferred) -> str:
    """`wanted` (it must be computed), else the first of `preferred` computed, else the first."""
    if wanted:
        if wanted not in metrics:
            raise DataError(
                f"task {task_name} computes no {wanted!r} metric (it computes "
                f"{sorted(metrics)}); evaluate it outside this suite or pick its metric"
            )
        return wanted
    return next((m for m in preferred if m in metrics), next(iter(metrics)))
