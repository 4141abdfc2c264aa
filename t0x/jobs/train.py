"""The training job: gin-configured, partitioned, checkpointed, resumable.

`train(...)` is bound by gin (`runs/finetune.gin` documents the macros) and called by
`t0x train`. One process per host runs the same call; all hosts agree on every decision
(when to stop, when to save). Invariants:
  * every setting that can be checked without devices is checked first, and MODEL_DIR is
    not touched until those checks pass (`t0x.preflight`);
  * `train_steps` counts absolute steps: a run initialised from a step-1,100,000 T5X
    checkpoint with train_steps=1,112,200 trains 12,200 steps (T0);
  * a restart in the same `model_dir` resumes from the latest checkpoint, including the
    position in the input stream, and reproduces the uninterrupted run bit-exactly; a
    checkpoint without a valid position is refused unless `restart_input_stream`;
  * a restored checkpoint is verified against the checksums written at save; a damaged
    one is an error naming it, or with `fallback_on_damaged_checkpoint` is set aside
    (renamed, never deleted) and the previous step is used, with a warning;
  * nothing non-finite is ever saved: a NaN/Inf loss, gradient or updated state raises
    `NonFiniteLossError` naming the last good step;
  * SIGTERM (preemption) saves a checkpoint and returns `preempted=True`;
  * `plan=True` builds nothing but abstract shapes and returns what would run;
  * `config.gin` (all bindings), `operative_config.gin` (those used), `metrics.jsonl` and
    `data_report.json` (t0x.data) go to `model_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np

from typing import Any

from t0x import checkpoints, data, models, partitioning, preflight, progress, trainer
from t0x.errors import (
    CheckpointDamagedError,
    CheckpointMismatchError,
    ConfigError,
    NonFiniteLossError,
)

log = logging.getLogger(__name__)

__all__ = ["train", "TrainResult", "NonFiniteLossError", "plan_summary"]


@dataclasses.dataclass
class TrainResult:
    step: int
    history: list  # [{"step", "loss", ...}] one entry per logging period
    model_dir: str
    stopped_early: bool = False
    preempted: bool = False  # stopped by SIGTERM (after saving); rerun to resume


def _state_dict(state: trainer.TrainState) -> dict:
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state}


def _from_state_dict(d: dict) -> trainer.TrainState:
    return trainer.TrainState(step=d["step"], params=d["params"], opt_state=d["opt_state"])


def _initial_params(path: str, config: Any, family):
    from t0x.checkpoints import load as loading  # formats: only needed when finetuning

    ckpt = loading.load(path, config=config)
    if ckpt.family.name != family.name:
        raise ConfigError(
            f"INITIAL_CHECKPOINT_PATH={path} holds a {ckpt.family.name} model but MODEL_CONFIG "
            f"is a {family.name} config: start from a {family.name} checkpoint"
        )
    return ckpt.params, ckpt.step


def plan_summary(
    model_config: Any,
    mixture_or_task_name: str,
    task_feature_lengths: dict,
    train_steps: int,
    batch_size: int,
    num_partitions: int,
    num_microbatches: int,
    **settings,
) -> dict:
    """What a run would do, without devices or data: parameter count, mesh, and the
    training settings (`settings`: optimizer, learning rate, packing, ...) as gin resolved them."""
    family = models.of_config(model_config)
    abstract, _ = family.make_model(model_config).abstract_params_with_axes()
    devices = jax.device_count()
    return {
        "family": family.name,
        "params": trainer.count_params(abstract),
        "mixture": mixture_or_task_name,
        "train_steps": train_steps,
        "batch_size": batch_size,
        "feature_lengths": dict(task_feature_lengths),
        "num_microbatches": num_microbatches,
        "mesh": {
            "model": num_partitions,
            "data": max(devices // num_partitions, 1),
            "devices_here": devices,
        },
        "settings": settings,
        "model_config": dataclasses.asdict(model_config),
    }


def _write_config(model_dir: str, config: str, resumed_step: int | None) -> None:
    """`config.gin` for a new run; a resume with a different config keeps the old one and
    writes `config.resumed_at_<step>.gin` beside it."""
    import tensorflow as tf  # gfile: MODEL_DIR may be gs://

    tf.io.gfile.makedirs(model_dir)
    path = os.path.join(model_dir, "config.gin")
    if tf.io.gfile.exists(path):
        if tf.io.gfile.GFile(path).read() == config:
            return
        path = os.path.join(model_dir, f"config.resumed_at_{resumed_step or 0}.gin")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(config)


def _write_text(path: str, text: str) -> None:
    import tensorflow as tf  # gfile: MODEL_DIR may be gs://

    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def _append_line(path: str, line: str) -> None:
    """Appends a line to a local or gs:// file (gfile has no append for GCS: rewrite)."""
    import tensorflow as tf

    old = tf.io.gfile.GFile(path).read() if tf.io.gfile.exists(path) else ""
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(old + line + "\n")


def _any_host(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def _valid_position(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _restore_latest(tr, store, restart_input_stream, fallback, log):
    """(state, input position) of the latest good checkpoint, or None when there is none."""
    while (latest := store.latest_step()) is not None:
        try:
            restored, meta = store.restore(latest, _state_dict(tr.abstract_state()))
        except CheckpointDamagedError as e:
            if not fallback:
                raise
            moved = _set_aside(store, latest)
            log(f"warning: {e} Set it aside as {moved}; trying the previous step.")
            continue
        position = meta.get("batches_consumed")
        if not _valid_position(position):
            if not restart_input_stream:
                raise CheckpointMismatchError(
                    f"checkpoint {store.directory}/{latest} records no valid input position "
                    f"(batches_consumed={json.dumps(position)}): pass "
                    "--gin.RESTART_INPUT_STREAM=True to restart the input stream on purpose"
                )
            log(
                f"warning: checkpoint {store.directory}/{latest} has no valid input position; "
                "RESTART_INPUT_STREAM=True: the input stream restarts from its beginning"
            )
            position = 0
        log(f"resumed from {store.directory}/{latest} (input position {position})")
        return _from_state_dict(restored), position
    return None


def _set_aside(store, step: int) -> str:
    moved = store.set_aside(step) if jax.process_index() == 0 else ""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"t0x set aside step {step}")
        store._manager.reload()  # pylint: disable=protected-access
    return moved or f"{store.directory}/{step}.damaged-*"


@gin.configurable("train", module="t0x")
def train(
    *,
    model_dir: str | None,
    mixture_or_task_name: str,
    task_feature_lengths: dict,
    train_steps: int,
    batch_size: int,
    model_config: Any = gin.REQUIRED,
    use_cached: bool = False,
    pack: bool = True,
    seed: int = 0,
    learning_rate: float = 1e-3,
    optimizer: str | None = None,
    optimizer_options: dict | None = None,
    z_loss: float | None = None,
    loss_normalizing_factor=None,
    num_microbatches: int = 1,
    num_partitions: int = 1,
    initial_checkpoint_path: str | None = None,
    save_period: int = 1000,
    keep_checkpoints: int | None = None,
    log_period: int = 100,
    plan: bool = False,
    stop_after_steps: int | None = None,
    restart_input_stream: bool = False,
    fallback_on_damaged_checkpoint: bool = False,
    task_settings: dict | None = None,
    log=print,
):
    """Trains `model_config` (any model family's config) on a seqio mixture; see the module
    doc for the invariants.

    `optimizer` None: the family's default ("adafactor" for T5, "adamw" for BLOOM), with
    `optimizer_options` passed on (t0x.trainer.make_optimizer). `stop_after_steps` ends this
    invocation after that many steps (and saves), like a preemption; a later call resumes.
    `task_settings`: t0_tasks settings for this run (e.g. BLOOM's `vocab_path` and
    `target_prefix`), applied with `t0_tasks.configure` before anything reads a task.
    Returns a TrainResult (or the plan dict).
    """
    if plan:
        return plan_summary(
            model_config,
            mixture_or_task_name,
            task_feature_lengths,
            train_steps,
            batch_size,
            num_partitions,
            num_microbatches,
            optimizer=optimizer or models.of_config(model_config).default_optimizer,
            learning_rate=learning_rate,
            optimizer_options=optimizer_options or {},
            loss_normalizing_factor=loss_normalizing_factor,
            z_loss=z_loss,
            pack=pack,
            use_cached=use_cached,
            initial_checkpoint_path=initial_checkpoint_path,
            task_settings=dict(task_settings or {}),
        )
    changes = dict(task_settings or {})
    if changes:
        import t0_tasks

        t0_tasks.configure(**changes)
    import t0_tasks  # noqa: F401  (registers the tasks and mixtures named by gin)

    checked = preflight.check_train(
        model_dir=model_dir,
        mixture_or_task_name=mixture_or_task_name,
        model_config=model_config,
        learning_rate=learning_rate,
        use_cached=use_cached,
        initial_checkpoint_path=initial_checkpoint_path,
        restart_input_stream=restart_input_stream,
    )
    family = models.of_config(model_config)
    opt = trainer.make_optimizer(
        optimizer or family.default_optimizer, learning_rate, **(optimizer_options or {})
    )
    partitioning.initialize_distributed()
    mesh = partitioning.create_mesh(num_partitions)
    partitioning.check_batch_size(batch_size, mesh, num_microbatches)
    loss_options = {"loss_normalizing_factor": loss_normalizing_factor}
    if z_loss is not None:  # None: the family's own (T5 1e-4, BLOOM 0)
        loss_options["z_loss"] = z_loss
    model = family.make_model(model_config, **loss_options)
    tr = trainer.Trainer(model, opt, mesh, num_microbatches)
    store = checkpoints.CheckpointStore(
        os.path.join(model_dir, "checkpoints"), keep=keep_checkpoints
    )
    if jax.process_index() == 0:
        _write_config(model_dir, gin.config_str(), checked.resume_step)

    resumed = _restore_latest(tr, store, restart_input_stream, fallback_on_damaged_checkpoint, log)
    batches_consumed = 0
    if resumed is not None:
        state, batches_consumed = resumed
    elif initial_checkpoint_path:
        params, step0 = _initial_params(initial_checkpoint_path, model_config, family)
        state = tr.init_state(jax.random.key(seed), params=params, step=step0)
        log(f"initialised from {initial_checkpoint_path} at step {step0}")
    else:
        state = tr.init_state(jax.random.key(seed))

    step = int(jax.device_get(state.step))
    if step >= train_steps:
        log(f"already at step {step} >= train_steps={train_steps}: nothing to train")
        store.close()
        return TrainResult(step=step, history=[], model_dir=model_dir)
    data_cfg = data.DataConfig(
        mixture_or_task_name,
        dict(task_feature_lengths),
        batch_size,
        seed=seed,
        use_cached=use_cached,
        pack=pack,
        family=family.name,
    )
    loop = _Loop(tr, store, model_dir, data_cfg, learning_rate, log)
    loop.meta = {
        "family": family.name,
        "config": dataclasses.asdict(model_config),
        "vocabulary": checked.vocabulary,
    }
    return loop.run(state, batches_consumed, train_steps, save_period, log_period, stop_after_steps)


class _Loop:
    """The step loop of `train`: data, steps, progress, checks, saves."""

    def __init__(self, tr, store, model_dir, data_cfg, learning_rate, log):
        self.tr, self.store, self.model_dir, self.data_cfg = tr, store, model_dir, data_cfg
        self.learning_rate, self.log, self.meta = learning_rate, log, {}
        self.family = models.get(data_cfg.family)
        self.bad = jnp.zeros((), bool)
        import seqio

        self.task_names = [
            t.name
            for t in seqio.get_subtasks(seqio.get_mixture_or_task(data_cfg.mixture_or_task_name))
        ]

    def _check_finite(self, step: int) -> None:
        if bool(jax.device_get(self.bad)):
            self.store.wait()
            good = self.store.latest_step()
            last = f"step {good} in {self.store.directory}" if good is not None else "none yet"
            raise NonFiniteLossError(
                f"loss, gradients or the updated weights became NaN/Inf by step {step}; nothing "
                f"from that point was saved (last good checkpoint: {last}). Lower "
                "--gin.LEARNING_RATE or check the data, then rerun to resume"
            )

    def _save(self, step, state, stream, force=False) -> None:
        self._check_finite(step)
        meta = {**self.meta, "batches_consumed": stream.batches_consumed}
        self.store.save(step, _state_dict(state), meta, force=force)

    def _report_data(self, step: int, writer, final: bool = False) -> None:
        report = data.data_report(self.task_names)
        if jax.process_index() != 0:
            return
        report.update(step=step, mixture=self.data_cfg.mixture_or_task_name)
        report["feature_lengths"] = dict(self.data_cfg.task_feature_lengths)
        data.write_json(os.path.join(self.model_dir, "data_report.json"), report)
        totals = report["totals"]
        examples = max(totals["examples"], 1)
        writer.write_scalars(
            step,
            {
                "data/rows_dropped": totals["dropped"],
                "data/empty_targets": totals["empty_target"],
                "data/truncated_inputs_fraction": totals["truncated_inputs"] / examples,
                "data/truncated_targets_fraction": totals["truncated_targets"] / examples,
            },
        )
        if final or step == self.first_report_step:
            from t0_tasks import accounting

            self.log(f"data: {accounting.summary_line(totals)} (data_report.json)")

    def run(self, state, batches_consumed, train_steps, save_period, log_period, stop_after):
        tr, store, log = self.tr, self.store, self.log
        step = first_step = int(jax.device_get(state.step))
        self.first_report_step = min(first_step + log_period - first_step % log_period, train_steps)
        stream = data.BatchStream(self.data_cfg, batches_consumed)
        rng = jax.random.key(self.data_cfg.seed + 1)
        writer = progress.metric_writer(os.path.join(self.model_dir, "train"))
        prog = progress.Progress(
            train_steps, step, log_period, trainer.count_params(state.params), writer, log
        )
        sigterm = checkpoints.install_sigterm_handler()
        history, stopped, preempted = [], False, False
        metrics_path = os.path.join(self.model_dir, "metrics.jsonl")
        try:
            while step < train_steps:
                host = next(stream)
                tokens, slots = self.family.count_tokens(host)
                batch = partitioning.to_global_batch(host, tr.mesh)
                state, metrics = tr.train_step(state, batch, rng)
                step += 1
                if step == first_step + 1 and jax.process_index() == 0:
                    # what gin actually bound, known once every configurable has been called
                    _write_text(
                        os.path.join(self.model_dir, "operative_config.gin"),
                        gin.operative_config_str(),
                    )
                finite = metrics.pop("state_finite")
                self.bad = (
                    self.bad
                    | ~jnp.isfinite(metrics["loss"])
                    | ~jnp.isfinite(metrics["grad_norm"])
                    | ~finite
                )
                prog.add(metrics, tokens * jax.process_count(), slots * jax.process_count())
                if step % log_period == 0 or step == train_steps:
                    self._check_finite(step)
                    scalars = prog.maybe_report(step, self.learning_rate, force=True)
                    self._report_data(step, writer, final=step == train_steps)
                    if scalars and jax.process_index() == 0:
                        history.append({"step": step, **scalars})
                        _append_line(metrics_path, json.dumps({"step": step, **scalars}))
                preempted = _any_host(sigterm()) or store.reached_preemption(step)
                stop_here = stop_after is not None and step - first_step >= stop_after
                if preempted or stop_here:
                    self._save(step, state, stream, force=True)
                    stopped = True
                    why = "preempted: SIGTERM" if preempted else "stop_after_steps"
                    log(f"stopping at step {step} ({why}); rerun the same command to resume")
                    break
                if step % save_period == 0:
                    self._save(step, state, stream)
            else:
                self._save(step, state, stream, force=True)
        finally:
            stream.close()
            store.wait()
            sigterm.uninstall()
            writer.close()
        if not stopped:
            log(f"done: step {step}; checkpoints in {store.directory}")
        return TrainResult(
            step=step,
            history=history,
            model_dir=self.model_dir,
            stopped_early=stopped,
            preempted=preempted,
        )
