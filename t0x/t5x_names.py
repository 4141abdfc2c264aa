"""T5X's gin names, so that one recipe file configures either engine.

A recipe (`gin/t0_xxl.gin`) includes T5X's layer files by T5X's own paths
(`t5x/examples/t5/t5_1_1/xxl.gin`, `t5x/configs/runs/finetune.gin`) and, where T5X has no
macro for a setting, binds T5X's configurables by name (`partitioning.PjitPartitioner.
num_partitions = 16`). Upstream T5X resolves the includes to its own files. `t0x` puts
`gin/t0x_layers/` first on its search path, so the same includes resolve to t0x's
equivalents there, and this module registers configurables under T5X's names that hold
those settings. The t0x layer files then hand them to `t0x.train` / `t0x.evaluate` through
the getters at the bottom (`NUM_PARTITIONS = @t0x.t5x.num_partitions()`).

Vocabulary:
  T5X name      a gin selector T5X's files use (`utils.SaveCheckpointConfig.period`); here it
                names a value holder with T5X's parameter names and defaults.
  getter        `t0x.t5x.<setting>()`: reads the holders (in gin's current scope) and returns
                the one value `t0x.train` / `t0x.evaluate` takes.
Invariants: a setting T5X would honour and t0x cannot is refused with one line naming it
(a learning-rate schedule other than constant); an explicit `model_parallel_submesh` gives
t0x its size as the model-parallel degree;
settings that only steer T5X's own machinery (hardware RNG, evaluator classes, checkpoint
dtypes) are accepted and have no effect in t0x.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gin

from t0x.errors import ConfigError

_UTILS = "t0x.t5x_names.utils"


@gin.configurable(module="t0x.t5x_names.partitioning")
@dataclasses.dataclass(frozen=True)
class PjitPartitioner:
    num_partitions: int | None = 1
    model_parallel_submesh: tuple | None = None
    logical_axis_rules: Any = None
    use_cpu_pjit: bool = False
    params_on_devices: bool = True
    backend: str | None = None


@gin.configurable(module="t0x.t5x_names.trainer")
@dataclasses.dataclass(frozen=True)
class Trainer:
    num_microbatches: int | None = None
    learning_rate_fn: Any = None
    weight_metrics_computer: Any = None


@gin.configurable(module=_UTILS)
def create_learning_rate_scheduler(
    factors: str = "constant * linear_warmup * rsqrt_decay",
    base_learning_rate: float = 0.5,
    warmup_steps: int = 1000,
    decay_factor: float = 0.5,
    steps_per_decay: int = 20000,
    steps_per_cycle: int = 100000,
    step_offset: int = 0,
    min_learning_rate: float = 1e-8,
) -> float:
    """T5X's schedule factory; t0x trains at a constant rate, T0's and mT0's schedule."""
    if factors.replace(" ", "") != "constant":
        raise ConfigError(
            f"utils.create_learning_rate_scheduler.factors = {factors!r}: t0x trains with a "
            "constant learning rate (T0, mT0, BLOOMZ); set factors = 'constant'"
        )
    return float(base_learning_rate)


@gin.configurable(module=_UTILS)
@dataclasses.dataclass(frozen=True)
class SaveCheckpointConfig:
    period: int | None = None
    dtype: str = "float32"
    keep: int | None = None
    save_dataset: bool = False
    checkpointer_cls: Any = None
    keep_dataset_checkpoints: int | None = None


@gin.configurable(module=_UTILS)
@dataclasses.dataclass(frozen=True)
class RestoreCheckpointConfig:
    path: Any = None
    mode: str = "latest"
    dtype: str = "float32"
    fallback_to_scratch: bool = False


@gin.configurable(module=_UTILS)
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    save: SaveCheckpointConfig | None = None
    restore: RestoreCheckpointConfig | None = None


@gin.configurable(module=_UTILS)
@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    mixture_or_task_name: Any = None
    task_feature_lengths: Any = None
    split: str = "train"
    batch_size: int = 128
    shuffle: bool = True
    seed: int | None = None
    use_cached: bool = False
    pack: bool = False
    use_custom_packing_ops: bool = False
    module: str | None = None
    use_memory_cache: bool = True
    trim_output_features: bool = True


def _script(**kwargs) -> dict:
    return kwargs


# T5X's entry points `train` / `evaluate` are registered from its scripts' `__main__` (its
# run files alias that module as `train_script` / `eval_script`, a name a legacy-mode recipe
# cannot use): a recipe binds `__main__.train.infer_eval_dataset_cfg = None`, which both
# engines resolve. t0x never calls these; the settings t0x uses are read by the getters.
gin.external_configurable(_script, name="train", module="t0x.t5x_names.__main__")
gin.external_configurable(_script, name="evaluate", module="t0x.t5x_names.__main__")


# ----------------------------------------------------------------- getters for t0x's jobs


@gin.configurable(module="t0x.t5x")
def num_partitions() -> int:
    """T5X's model-parallel degree: `num_partitions`, or the size of an explicit
    `model_parallel_submesh` (T5X's form on TPU v3, e.g. (4, 4, 1, 2) = 32); one of them."""
    p = PjitPartitioner()
    if p.model_parallel_submesh is None:
        return int(p.num_partitions or 1)
    if p.num_partitions is not None:
        raise ConfigError(
            "partitioning.PjitPartitioner: both num_partitions and model_parallel_submesh "
            "are set; set num_partitions = None when giving a submesh (as T5X requires)"
        )
    return int(math.prod(p.model_parallel_submesh))


@gin.configurable(module="t0x.t5x")
def num_microbatches() -> int:
    return int(Trainer().num_microbatches or 1)


@gin.configurable(module="t0x.t5x")
def learning_rate() -> float:
    return float(create_learning_rate_scheduler())


@gin.configurable(module="t0x.t5x")
def save_period() -> int:
    period = SaveCheckpointConfig().period
    return int(period) if period else 1000


@gin.configurable(module="t0x.t5x")
def keep_checkpoints() -> int | None:
    return SaveCheckpointConfig().keep


@gin.configurable(module="t0x.t5x")
def pack() -> bool:
    """`train/utils.DatasetConfig.pack` (call as `@train/t0x.t5x.pack()`)."""
    return bool(DatasetConfig().pack)


@gin.configurable(module="t0x.t5x")
def eval_batch_size() -> int:
    return int(DatasetConfig().batch_size)


@gin.configurable(module="t0x.t5x")
def eval_split() -> str:
    return str(DatasetConfig().split)
