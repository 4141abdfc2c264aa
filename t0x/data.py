"""seqio mixture -> packed, per-host-sharded batches, with a resumable position.

Vocabulary:
  feature lengths  `{"inputs": 1024, "targets": 256}` (T0): task feature lengths before
                   conversion; the model family's feature converter (t0x.models) turns tasks'
                   `inputs`/`targets` into the batch it trains on (T5: seqio's
                   EncDecFeatureConverter, `encoder_input_tokens`, `decoder_target_tokens`, ...;
                   BLOOM: one decoder-only sequence per example).
  packing          several short examples share one row; segment ids keep them apart in
                   attention and positions restart per example (see t0x.network).
  host shard       process i of n reads shard i of every task (seqio ShardInfo), so hosts
                   see disjoint examples and each builds `global_batch / n` rows.
  position         `batches_consumed`: how many host batches this stream has yielded. The
                   pipeline is deterministic for a given seed (prompts render with per-row
                   seeds, see t0_tasks.prompts), so restoring a checkpoint skips exactly that
                   many batches and the run continues bit-exactly, rendered or cached.
  data report      per task: rows rendered, dropped by templates, empty targets (dropped in
                   training), examples whose inputs/targets exceed the feature lengths
                   (t0_tasks.accounting), summed over hosts; counts cover what this invocation
                   read, including the batches a resume skips.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import seqio
import tensorflow as tf
from t0_tasks import accounting

from t0x import models


@dataclasses.dataclass(frozen=True)
class DataConfig:
    mixture_or_task_name: str
    task_feature_lengths: dict
    batch_size: int  # global, in rows (sequences)
    split: str = "train"
    shuffle: bool = True
    seed: int = 0
    use_cached: bool = False
    pack: bool = True
    num_epochs: int | None = None  # None: repeat forever (training)
    family: str = "t5"  # the model family whose feature converter builds the batches


def host_dataset(
    cfg: DataConfig, process_index: int | None = None, process_count: int | None = None
) -> tf.data.Dataset:
    """This host's stream of batches (dicts of int32 arrays, `batch_size / hosts` rows)."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if cfg.batch_size % count:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by {count} hosts")
    accounting.enable_truncation_counts(True)  # for the datasets built by this call only
    try:
        ds = _get_dataset(cfg, index, count)
    finally:
        accounting.enable_truncation_counts(False)
    return ds.batch(cfg.batch_size // count, drop_remainder=True)


def _get_dataset(cfg: DataConfig, index: int, count: int) -> tf.data.Dataset:
    return seqio.get_dataset(
        cfg.mixture_or_task_name,
        task_feature_lengths=dict(cfg.task_feature_lengths),
        dataset_split=cfg.split,
        shuffle=cfg.shuffle,
        num_epochs=cfg.num_epochs,
        feature_converter=models.get(cfg.family).feature_converter(cfg.pack),
        shard_info=seqio.ShardInfo(index=index, num_shards=count) if count > 1 else None,
        use_cached=cfg.use_cached,
        seed=cfg.seed,
    )


class BatchStream:
    """Iterates host batches as numpy and counts them; `skip_to` restores a position."""

    def __init__(self, cfg: DataConfig, batches_consumed: int = 0, **host_kwargs):
        self.cfg = cfg
        ds = host_dataset(cfg, **host_kwargs)
        if batches_consumed:
            ds = ds.skip(batches_consumed)
        self.batches_consumed = batches_consumed
        self._it = ds.prefetch(2).as_numpy_iterator()

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._it)
        self.batches_consumed += 1
        return batch

    def state(self) -> dict:
        return {"batches_consumed": self.batches_consumed}

    def close(self) -> None:
        """Stops the input pipeline's threads (an iterator left to interpreter shutdown can
        hang it while a generator-backed source is mid-read)."""
        self._it = None


def data_report(task_names: list[str], split: str = "train") -> dict:
    """Accounting of `task_names` summed over all hosts (a collective: every host calls it)."""
    fields = accounting.FIELDS
    local = np.asarray(
        [[accounting.COUNTS.get(t, split)[f] for f in fields] for t in task_names], np.int64
    ).reshape(len(task_names), len(fields))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        local = np.asarray(multihost_utils.process_allgather(local)).sum(axis=0)
    tasks = {t: dict(zip(fields, map(int, row))) for t, row in zip(task_names, local)}
    return {
        "split": split,
        "hosts": jax.process_count(),
        "totals": accounting.totals({(t, split): c for t, c in tasks.items()}),
        "tasks": tasks,
    }


def write_json(path: str, value: dict) -> None:
    """Writes JSON atomically (a temporary file renamed over `path`; local or gs://)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(value, indent=1, sort_keys=True))
    tf.io.gfile.rename(tmp, path, overwrite=True)
