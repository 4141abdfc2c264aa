"""What a task is called in a report: its dataset's report name, template, group and metadata.

Vocabulary:
  report name  of a task's dataset: t0_tasks' `name/subset` label; ANLI tasks are reported per
               round (`anli/r1`, ...) and pooled under the group `anli`. Suite tasks carry their
               suite's names: BIG-bench `bigbench/<task>[:<subtask>]` (template
               BIGBENCH_TEMPLATE, subtasks grouped under their container), multilingual
               `<dataset>/<language>` (e.g. `xcopa/zh`), bias & fairness the catalog label
               (`crows_pairs`, `super_glue/axg`, `wino_bias/type1_pro`). Tasks t0_tasks does
               not know are reported under their own name.
  meta         what a suite's report section needs beyond the name (t0x.eval.sections):
               BIG-bench `bigbench_task`, `subtask`; multilingual `suite_dataset`, `language`,
               `language_group` (L1 / L2); bias & fairness `card_dataset` and, for WinoBias,
               `wino_type`, `stereotype`.
"""

from __future__ import annotations

import dataclasses
import re

BIGBENCH_TEMPLATE = "BIG-bench format"  # a BIG-bench task's one zero-shot format


@dataclasses.dataclass
class TaskInfo:
    dataset: str
    template: str
    group: str | None
    meta: dict = dataclasses.field(default_factory=dict)  # what a suite's report section needs


def _bigbench_info(task_name: str) -> TaskInfo | None:
    from t0_tasks.suites import bigbench

    reg = bigbench.current()
    leaf = reg.tasks.get(task_name)
    if leaf is None:
        return None
    meta = {"bigbench_task": leaf.task, "subtask": leaf.subtask}
    return TaskInfo(reg.label_of(task_name), BIGBENCH_TEMPLATE, reg.group_of(task_name), meta)


def _multilingual_info(task_name: str) -> TaskInfo | None:
    from t0_tasks.suites import multilingual

    try:
        m = multilingual.metadata(task_name)
    except KeyError:
        return None
    meta = {"suite_dataset": m.dataset, "language": m.language, "language_group": m.group}
    return TaskInfo(m.report_name, m.template, None, meta)


def _bias_fairness_info(task_name: str) -> TaskInfo | None:
    from t0_tasks.suites import bias_fairness

    try:
        m = bias_fairness.metadata(task_name)
    except KeyError:
        return None
    meta = {"card_dataset": m.card_dataset}
    if m.wino_type:
        meta.update(wino_type=m.wino_type, stereotype=m.stereotype)
    return TaskInfo(m.dataset, m.template, None, meta)


SUITE_INFO = (_bigbench_info, _multilingual_info, _bias_fairness_info)  # tried in this order


def task_info(task_name: str, split: str) -> TaskInfo:
    """The report name, template, group and suite metadata of a task (see the docstring)."""
    import t0_tasks

    registry = t0_tasks.current()  # registers the suites on first use
    for lookup in SUITE_INFO:
        info = lookup(task_name)
        if info is not None:
            return info
    try:
        spec = registry.spec_of(task_name)
    except KeyError:
        return TaskInfo(task_name, task_name, None)
    dataset = spec.dataset.label
    if spec.dataset.name == "anli":
        source = spec.source_split(split) if split in spec.splits else split
        round_ = re.search(r"r\d+$", source) or re.search(
            r"r\d+$", task_name.removesuffix("_score_eval")
        )
        if round_:
            return TaskInfo(f"{dataset}/{round_.group(0)}", spec.template_name, dataset)
    return TaskInfo(dataset, spec.template_name, None)
