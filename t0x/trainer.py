"""Train state, Adafactor, and the jitted, partitioned train step.

Vocabulary:
  TrainState   `step` (int32), `params` (float32 weights, T5X's tree), `opt_state` (optax
               Adafactor's factored second moments). One pytree, sharded over the mesh,
               donated to every step so it is updated in place.
  microbatches the global batch split along rows into `num_microbatches` pieces whose
               gradients are summed (lax.scan) before one update: the same update as the
               full batch (losses are sums over tokens, see t0x.model), in less memory.
               Strided: microbatch i holds rows i, i+n, ... so every data-parallel device
               computes its own share of each (`partitioning.split_microbatches`).
  shardings    parameters follow their logical axes (t0x.partitioning); optimizer state is
               laid out by XLA from the parameters' shardings when first initialised, and
               that layout is then fixed for restore and for the step's outputs.

Initialisation is sharded from the start: shapes come from `jax.eval_shape`, and the
initialiser is jitted with `out_shardings`, so no host ever holds the whole model.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh

from t0x import partitioning


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def adafactor(
    learning_rate: float | Callable = 1e-3,
    *,
    decay_rate: float = 0.8,
    clipping_threshold: float | None = 1.0,
    multiply_by_parameter_scale: bool = True,
    min_dim_size_to_factor: int = 128,
) -> optax.GradientTransformation:
    """optax Adafactor with T5X's finetuning defaults (factored, no momentum, decay 0.8)."""
    return optax.adafactor(
        learning_rate=learning_rate,
        min_dim_size_to_factor=min_dim_size_to_factor,
        decay_rate=decay_rate,
        decay_offset=0,
        multiply_by_parameter_scale=multiply_by_parameter_scale,
        clipping_threshold=clipping_threshold,
        momentum=None,
        eps=1e-30,
        factored=True,
    )


def adamw(
    learning_rate: float | Callable = 2e-5,
    *,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    clip_grad_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """optax AdamW with BigScience's BLOOMZ finetuning defaults (Megatron-DeepSpeed tr13):
    betas (0.9, 0.95), eps 1e-8, weight decay 1e-4 on weights but not on biases or norm
    scales, gradients clipped to global norm 1.0 first."""

    def decay_mask(params):
        def keep(path, _):
            name = str(getattr(path[-1], "key", getattr(path[-1], "name", path[-1])))
            return name not in ("bias", "scale")

        return jax.tree_util.tree_map_with_path(keep, params)

    parts = [optax.clip_by_global_norm(clip_grad_norm)] if clip_grad_norm else []
    parts.append(
        optax.adamw(
            learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask
        )
    )
    return optax.chain(*parts)


OPTIMIZERS = {"adafactor": adafactor, "adamw": adamw}


def make_optimizer(name: str, learning_rate, **options) -> optax.GradientTransformation:
    """An optimizer by name ("adafactor": T5X's finetuning Adafactor; "adamw": BLOOMZ's)."""
    if name not in OPTIMIZERS:
        from t0x.errors import ConfigError

        raise ConfigError(f"OPTIMIZER={name!r}: use one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](learning_rate, **dict(options or {}))


@dataclasses.dataclass
class Trainer:
    """Owns the optimizer, the mesh and the compiled step for one model."""

    model: Any  # a model family's model (t0x.models.family: Model protocol)
    optimizer: optax.GradientTransformation
    mesh: Mesh
    num_microbatches: int = 1

    def __post_init__(self):
        self._state_shardings = None
        self._step_fn = None

    # -- shapes and shardings -------------------------------------------------------------
    def abstract_params(self):
        return self.model.abstract_params_with_axes()[0]

    def param_shardings(self):
        return partitioning.shardings_for(self.model.abstract_params_with_axes()[1], self.mesh)

    def _make_state(self, params, step=0):
        return TrainState(
            step=jnp.asarray(step, jnp.int32), params=params, opt_state=self.optimizer.init(params)
        )

    def state_shardings(self):
        """Shardings of every TrainState leaf (found once by compiling the initialiser)."""
        if self._state_shardings is None:
            with partitioning.activate(self.mesh):
                compiled = (
                    jax.jit(self._make_state, in_shardings=(self.param_shardings(),))
                    .lower(self.abstract_params())
                    .compile()
                )
            self._state_shardings = compiled.output_shardings
        return self._state_shardings

    def abstract_state(self):
        """ShapeDtypeStructs (with shardings) of the TrainState: what a restore targets."""
        shapes = jax.eval_shape(self._make_state, self.abstract_params())
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            shapes,
            self.state_shardings(),
        )

    # -- initialisation ---------------------------------------------------------------------
    def init_state(self, rng, params=None, step: int = 0) -> TrainState:
        """A fresh, sharded TrainState; `params` (host or device arrays) replace the random init."""
        shardings = self.state_shardings()
        if params is None:

            def fresh(r):
                return self._make_state(nn.unbox(self.model.init_boxed(r)), step)

            with partitioning.activate(self.mesh):
                return jax.jit(fresh, out_shardings=shardings)(rng)
        params = jax.device_put(params, shardings.params)
        with partitioning.activate(self.mesh):
            return jax.jit(functools.partial(self._make_state, step=step), out_shardings=shardings)(
                params
            )

    # -- the step -------------------------------------------------------------------------
    def _grads(self, params, batch, rng):
        def loss(p, b, r):
            value, metrics = self.model.loss_fn(p, b, r)
            return value, metrics

        grad_fn = jax.value_and_grad(loss, has_aux=True)
        if self.num_microbatches == 1:
            (value, metrics), grads = grad_fn(params, batch, rng)
            return value, metrics, grads
        micro = partitioning.split_microbatches(batch, self.num_microbatches)

        def body(carry, xs):
            acc_grads, acc_value, acc_metrics = carry
            b, i = xs
            (value, metrics), grads = grad_fn(params, b, jax.random.fold_in(rng, i))
            acc_grads = jax.tree.map(jnp.add, acc_grads, grads)
            acc_metrics = jax.tree.map(jnp.add, acc_metrics, metrics)
            return (acc_grads, acc_value + value, acc_metrics), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        _, metric_shapes = jax.eval_shape(loss, params, jax.tree.map(lambda x: x[0], micro), rng)
        zero_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
        (grads, value, metrics), _ = jax.lax.scan(
            body,
            (zeros, jnp.zeros((), jnp.float32), zero_metrics),
            (micro, jnp.arange(self.num_microbatches)),
        )
        return value, metrics, grads

    def _train_step(self, state: TrainState, batch: dict, rng):
        rng = jax.random.fold_in(rng, state.step)
        value, metrics, grads = self._grads(state.params, batch, rng)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # grad_norm: non-finite when any gradient is (a finite loss can still come with NaN
        # gradients); state_finite: whether the UPDATED state is finite, which is what a save
        # writes (finite gradients times an absurd learning rate can still overflow it).
        metrics = dict(
            metrics,
            loss=value,
            grad_norm=optax.global_norm(grads),
            state_finite=all_finite((params, opt_state)),
        )
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def compile_step(self, feature_names):
        shardings = self.state_shardings()
        batch_sh = {k: partitioning.batch_sharding(self.mesh) for k in feature_names}
        self._step_fn = jax.jit(
            self._train_step,
            in_shardings=(shardings, batch_sh, partitioning.replicated(self.mesh)),
            out_shardings=(shardings, partitioning.replicated(self.mesh)),
            donate_argnums=(0,),
        )
        return self._step_fn

    def train_step(self, state: TrainState, batch: dict, rng) -> tuple[TrainState, dict]:
        """One optimizer step on a global batch (device arrays sharded along "data")."""
        if self._step_fn is None:
            self.compile_step(list(batch))
        with partitioning.activate(self.mesh):
            return self._step_fn(state, batch, rng)


def all_finite(tree) -> jax.Array:
    """Scalar bool: no NaN/Inf in any floating-point leaf of `tree`."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def count_params(abstract_params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract_params)))
