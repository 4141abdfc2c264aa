"""A model ready to run: loaded from any checkpoint path, placed on a mesh, and jitted
functions on it (used by evaluation, inference and scoring).

Vocabulary:
  loaded model  `load_model(path)`: the family, config and params of any checkpoint
                (`t0x.checkpoints.load`), dropout off, activations in `dtype`, params sharded
                over a ("data", "model") mesh of all devices by the family's logical axes.
  mesh function `jit_on_mesh(loaded, fn, num_batch_args)`: `fn(params, *batch, *rest)` jitted
                with the batch split along "data" and the rest replicated; called with host
                arrays (identical on every host), returns host numpy. Tracing happens inside
                `partitioning.activate(mesh)`, so the network's sharding constraints apply.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np


@dataclasses.dataclass
class LoadedModel:
    model: Any  # the family's model (t0x.models.family: Model protocol)
    params: Any  # host numpy tree, or device arrays placed on `mesh`
    config: Any  # the family's config
    mesh: Any = None  # jax.sharding.Mesh or None (default device, plain jit)
    family: Any = None  # t0x.models.family.ModelFamily
    step: int | None = None
    format: str | None = None


def load_model(
    checkpoint_path: str,
    dtype: str | None = "float32",
    model_config=None,
    num_partitions: int = 1,
    use_mesh: bool = True,
) -> LoadedModel:
    """Loads a t0x, T5X or Hugging Face checkpoint for inference (dropout off).

    `dtype` sets the activation dtype (None: the checkpoint's own); float32 by default, as
    t-zero recommends for T0 (bf16 is fine on TPU). With `use_mesh`, params are placed on a
    ("data", "model") mesh of all devices with `num_partitions` along "model".
    """
    import jax

    from t0x import partitioning
    from t0x.checkpoints import load as loading

    ckpt = loading.load(checkpoint_path, config=model_config)
    changes = {"dropout_rate": 0.0}
    if dtype:
        changes["dtype"] = dtype
    config = ckpt.config.replace(**changes)
    model = ckpt.family.make_model(config)
    params, mesh = ckpt.params, None
    if use_mesh:
        mesh = partitioning.create_mesh(num_partitions)
        specs = model.abstract_params_with_axes()[1]
        params = jax.device_put(params, partitioning.shardings_for(specs, mesh))
    return LoadedModel(model, params, config, mesh, ckpt.family, ckpt.step, ckpt.format)


def global_batch(arrays: Sequence[np.ndarray], mesh) -> list:
    """Host arrays (identical on every host) as global arrays split along "data"."""
    import jax

    from t0x import partitioning

    sharding = partitioning.batch_sharding(mesh)
    return [
        jax.make_array_from_callback(a.shape, sharding, lambda idx, a=a: a[idx]) for a in arrays
    ]


class MeshFunction:
    """`fn(params, *batch_arrays, *replicated_arrays)` jitted for a LoadedModel's mesh.

    Called with host arrays, returns host numpy. On a mesh, params keep their shardings,
    batch arrays are split along "data", the rest is replicated, and tracing and running
    happen inside `partitioning.activate(mesh)` (so the network's logical constraints apply).
    Without a mesh: plain jit on the default device. `lower(*arrays)` gives the lowered
    program (for inspection, e.g. `t0x.program_stats`).
    """

    def __init__(
        self, loaded: LoadedModel, fn: Callable, num_batch_args: int, num_replicated_args: int = 0
    ):
        import jax

        from t0x import partitioning

        self.loaded, self.num_batch_args = loaded, num_batch_args
        mesh = loaded.mesh
        if mesh is None:
            self.jitted = jax.jit(fn)
            return
        param_sh = jax.tree.map(lambda x: x.sharding, loaded.params)
        self.jitted = jax.jit(
            fn,
            in_shardings=(param_sh,)
            + (partitioning.batch_sharding(mesh),) * num_batch_args
            + (partitioning.replicated(mesh),) * num_replicated_args,
            out_shardings=partitioning.replicated(mesh),
        )

    def _args(self, arrays):
        if self.loaded.mesh is None:
            return (self.loaded.params, *arrays)
        batch = global_batch(arrays[: self.num_batch_args], self.loaded.mesh)
        return (self.loaded.params, *batch, *arrays[self.num_batch_args :])

    def _context(self):
        import contextlib

        from t0x import partitioning

        mesh = self.loaded.mesh
        return contextlib.nullcontext() if mesh is None else partitioning.activate(mesh)

    def __call__(self, *arrays):
        import jax

        with self._context():
            out = self.jitted(*self._args(arrays))
        return jax.tree.map(np.asarray, out)

    def lower(self, *arrays):
        with self._context():
            return self.jitted.lower(*self._args(arrays))


def jit_on_mesh(
    loaded: LoadedModel, fn: Callable, num_batch_args: int, num_replicated_args: int = 0
) -> MeshFunction:
    """`fn(params, *batch_arrays, *replicated_arrays)` jitted on the model's mesh (see
    `MeshFunction`); call it with host arrays, get host numpy back."""
    return MeshFunction(loaded, fn, num_batch_args, num_replicated_args)
