"""`import t0_tasks` registers every T0 task and mixture with seqio.

One seqio Task per promptsource template of every dataset T0 was trained or evaluated on
(P3's names, e.g. `super_glue_rte_GPT_3_style`), a `_score_eval` rank-classification twin
per template with answer choices, and T0's eight mixtures (`t0_train`, `t0+_train`,
`t0++_train`, `t0_eval_score_eval`, `t0_train_score_eval`, `t0_train_one_og_prompt`,
`t0_train_all_og_prompts`, `bias_fairness_eval_score_eval`). Nothing touches the network at
import; rows are read when a dataset is iterated (see `t0_tasks.sources`), or from a P3 copy
with `use_cached=True` (see `t0_tasks.p3`).

Settings come from the environment (`T0_DATA_DIR`, `T0_P3_DIR`, `T0_VOCAB`, ...) or
`t0_tasks.configure(...)`; `import t0_tasks.mt5` switches to mT5's vocabulary (mT0 recipes).
Your own data: `t0_tasks.custom.register_dataset(...)`.
This package never imports `t0x`.
"""

from t0_tasks.registry import configure, current, register, task_vocabulary
from t0_tasks.settings import Settings

__all__ = ["configure", "current", "register", "Settings", "task_vocabulary"]

register()

try:  # gin is there whenever a recipe imports us (T5X or t0x); plain seqio users need not
    import gin
except ImportError:  # pragma: no cover
    gin = None
if gin is not None:
    gin.external_configurable(task_vocabulary, module="t0_tasks")
