"""Report sections: how the task results of one evaluation suite become tables and a plot.

Vocabulary:
  kind        a module here, named by a suite's `section` (t0x.eval.suites): `prompts` (the T0
              paper's table), `bigbench` (BIG-bench grades per task), `bias_fairness` (the T0
              model card's tables), `multilingual` (dataset x language, L1 / L2).
  section     the JSON a kind builds from task results: always `score` (the suite score, in
              percent, higher is better, or None), `score_name` (what it averages) and
              `datasets` (the generic per-dataset summary of t0x.eval.report.aggregate), plus
              the kind's own tables.
  reference   numbers shown beside ours. `REFERENCE` of a kind says their shape: "numbers"
              ({row name: score in percent}) or "models" ({model name: numbers in the
              section's own shape}, e.g. the T0 model card's bias numbers).

Each kind module defines `REFERENCE`, `build(task_results, reference, model) -> section`,
`markdown(section) -> str` and `plot(ax, section)` (on one matplotlib axes).
"""

from __future__ import annotations

import importlib
from types import ModuleType

KINDS = ("prompts", "bigbench", "bias_fairness", "multilingual")


def get(kind: str) -> ModuleType:
    if kind not in KINDS:
        raise ValueError(f"unknown report section {kind!r}: use one of {KINDS}")
    return importlib.import_module(f"{__name__}.{kind}")
