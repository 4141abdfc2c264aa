"""The device mesh, the logical -> mesh axis rules, and multi-host start-up.

Vocabulary:
  mesh          a 2-D `jax.sharding.Mesh` with axes ("data", "model"). `data` splits the batch
                (data parallelism); `model` splits weights and activations along their
                "heads"/"mlp"/"vocab"/"joined_kv" dimensions (model parallelism, as T5X's 1-D
                parameter partitioning). data * model = number of devices.
  logical axes  names the network gives every parameter and major activation dimension
                ("batch", "length", "embed", "heads", "kv", "joined_kv", "mlp", "vocab",
                "relpos_buckets"). `logical_axis_rules()` is the one place that maps them to
                mesh axes; everything else asks for shardings through this module.
  host batch    each process (host) loads `global_batch / process_count` rows and the global
                batch is assembled from the hosts' pieces, sharded along "data".
  active mesh   `activate(mesh)`: the one way every site that traces model code enters the mesh.
                It sets JAX's mesh (`jax.set_mesh`), which is what flax's logical constraints
                look for (`flax.core.meta.global_mesh_defined()` reads the abstract mesh), plus
                the logical axis rules. Entering a bare `Mesh` as a context (`with mesh:`) no
                longer sets the abstract mesh under jax >= 0.7: every
                `nn.with_logical_constraint` would then silently be a no-op.
  microbatches  `split_microbatches(batch, n)` is strided: microbatch i holds rows i, i+n,
                i+2n, ... of the global batch, so each microbatch is spread over the "data" axis
                exactly as the batch is, with no data movement (a contiguous split would put a
                microbatch on a fraction of the data-parallel devices). The layout fixes which
                rows share a microbatch; the summed gradient is the same up to float rounding,
                and a run is bit-exact with itself (resume included).
"""

from __future__ import annotations

import contextlib
import logging
import os

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA, MODEL = "data", "model"


def logical_axis_rules() -> tuple[tuple[str, str | None], ...]:
    """Logical axis -> mesh axis (None: replicated along that dimension)."""
    return (
        ("batch", DATA),
        ("vocab", MODEL),
        ("mlp", MODEL),
        ("heads", MODEL),
        ("joined_kv", MODEL),
        ("kv", None),
        ("embed", None),
        ("length", None),
        ("relpos_buckets", None),
        ("layers", None),
    )


def create_mesh(num_partitions: int = 1, devices=None) -> Mesh:
    """A ("data", "model") mesh with `num_partitions` devices along "model"."""
    devices = list(devices if devices is not None else jax.devices())
    if num_partitions < 1 or len(devices) % num_partitions:
        raise ValueError(
            f"num_partitions={num_partitions} must divide the {len(devices)} "
            "devices; choose a divisor (1 = pure data parallelism)"
        )
    shape = (len(devices) // num_partitions, num_partitions)
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):  # non-TPU topologies
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, (DATA, MODEL))


@contextlib.contextmanager
def activate(mesh: Mesh):
    """Enter `mesh` and the logical axis rules for tracing, compiling and running model code.

    Every jitted call that runs the network (train step, state init, eval, score, infer) is
    traced inside this context, so `nn.with_logical_constraint` takes effect (see the module
    doc). Use it around the first call of a jitted function (tracing) and around later calls.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(logical_axis_rules()):
        yield mesh


def split_microbatches(batch: dict, n: int) -> dict:
    """[B, ...] -> [n, B/n, ...], microbatch i = rows i, i+n, ... (see the module doc).

    Inside `activate(mesh)` each microbatch is constrained to the batch's own layout (rows
    along "data"), so splitting moves no data between devices.
    """

    def split(x):
        rows = x.shape[0] // n
        y = x.reshape((rows, n) + x.shape[1:])
        y = jax.numpy.swapaxes(y, 0, 1)
        if jax.sharding.get_abstract_mesh().empty:
            return y
        return jax.lax.with_sharding_constraint(y, P(None, DATA))

    return {k: split(v) for k, v in batch.items()}


def shardings_for(logical_specs, mesh: Mesh):
    """NamedShardings for a pytree of logical PartitionSpecs (e.g. from nn.get_partition_spec)."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, logical_axis_rules())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows of a global batch split along "data"; other dimensions replicated."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh, num_microbatches: int = 1) -> None:
    data = mesh.shape[DATA]
    hosts = jax.process_count()
    if global_batch % (data * num_microbatches) or global_batch % hosts:
        raise ValueError(
            f"batch_size={global_batch} must be divisible by the data-parallel size "
            f"({data}) times num_microbatches ({num_microbatches}) and by the "
            f"number of hosts ({hosts})"
        )


def host_batch_size(global_batch: int) -> int:
    return global_batch // jax.process_count()


def to_global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles the hosts' pieces into global arrays sharded along "data"."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in host_batch.items()
    }


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Starts `jax.distributed` when this is one process of several; a no-op otherwise.

    On a Cloud TPU pod slice every worker runs the same command and JAX discovers its peers
    (TPU_WORKER_HOSTNAMES / the metadata server), so no arguments are needed there. Elsewhere
    pass them, or set T0X_COORDINATOR, T0X_NUM_PROCESSES and T0X_PROCESS_ID.
    """
    coordinator_address = coordinator_address or os.environ.get("T0X_COORDINATOR")
    if num_processes is None and os.environ.get("T0X_NUM_PROCESSES"):
        num_processes = int(os.environ["T0X_NUM_PROCESSES"])
    if process_id is None and os.environ.get("T0X_PROCESS_ID"):
        process_id = int(os.environ["T0X_PROCESS_ID"])
    on_tpu_pod = bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))
    if not coordinator_address and not on_tpu_pod:
        return
    if jax.distributed.is_initialized():
        return
    logging.info(
        "jax.distributed: coordinator=%s processes=%s id=%s",
        coordinator_address,
        num_processes,
        process_id,
    )
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
