"""Compile the real train step for a TPU slice on a machine without one, and read its cost.

As MaxText's train_compile.py: the slice's devices come from libtpu's topology description
(`t0x.topologies.describe`), the mesh and shardings from `t0x.partitioning`, the step from
`t0x.trainer.Trainer` (the same jitted function, out_shardings and donation a run uses), its
inputs are `jax.ShapeDtypeStruct`s carrying shardings, and `.lower(...).compile()` runs the
TPU compiler. Nothing is allocated; a 1-chip laptop can plan a v4-4096 run.

Vocabulary (every figure is per device, i.e. per chip on v4/v5p/v5e/v6e, per TensorCore on v3):
  HBM           from `compiled.memory_analysis()`: argument (train state + batch), output,
                alias (outputs written in place of donated arguments), temp (activations and
                scratch), code. total = argument + output - alias + temp + code. When the
                compiler itself runs out of memory, total is what its error says it needed.
  fits          total <= (1 - headroom) * capacity (headroom 10%: fragmentation, the runtime).
  FLOPs         analytic: 6 * sum over weights of (weight count * tokens that weight sees), over
                the global batch (an encoder weight sees input tokens, a decoder weight target
                tokens; a decoder-only model's weights see every token), i.e. 6·N·tokens,
                where N leaves out an embedding table ("vocab", "embed") that is only looked
                up (the logits have their own ("embed", "vocab") kernel: T5 1.1, mT5), which
                does no matmul (mT5 XL's 250k-row table is 14% of its parameters).
                compiled: `cost_analysis()["flops"]` of the device's program times the
                microbatch loop's trip count (XLA counts a loop body once); it includes
                attention, recomputation and the optimizer update (counted once per microbatch:
                an over-count well under 1% for these models).
  collectives   `t0x.program_stats.collectives` on the compiled HLO: count and bytes moved per
                device per step (loop bodies times their trip counts).
  roofline      compute_s = compiled FLOPs / peak bf16 FLOP/s of a device;
                ici_s = (2 * all-reduce bytes + other collective bytes) / ICI bandwidth of one
                link (bidirectional; an all-reduce is a reduce-scatter plus an all-gather);
                step_s = max(compute_s, ici_s), i.e. perfect overlap and no HBM-bandwidth or
                host limits: a lower bound on the step time, so MFU = analytic FLOPs /
                (step_s * chips * peak per chip) is an upper bound.
"""

from __future__ import annotations

import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from t0x import models, partitioning, program_stats, topologies, trainer

GiB = 2**30
HEADROOM = 0.10
_OOM_FORMS = (
    re.compile(r"Used ([\d.]+)([KMGTP]?)i?B? of ([\d.]+)([KMGTP]?)i?B? hbm"),
    re.compile(r"\(([\d.]+)([KMGTP]?)i?B?\) exceeds available HBM \(([\d.]+)([KMGTP]?)i?B?\)"),
)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}


def compile_plan(
    model_config: Any,
    slice_name: str,
    batch_size: int,
    task_feature_lengths: dict,
    num_partitions: int = 1,
    num_microbatches: int = 1,
    *,
    optimizer: str | None = None,
    optimizer_options: dict | None = None,
    learning_rate: float = 1e-3,
    loss_options: dict | None = None,
    pack: bool = True,
    headroom: float = HEADROOM,
) -> dict:
    """Compiles one train step of `model_config` for `slice_name` (e.g. "v4-64") and reports
    its memory, FLOPs, collectives and roofline step time per device (see the module doc)."""
    spec = topologies.spec(slice_name)
    mesh = partitioning.create_mesh(num_partitions, devices=topologies.describe(slice_name))
    partitioning.check_batch_size(batch_size, mesh, num_microbatches)
    family = models.of_config(model_config)
    tr = trainer.Trainer(
        family.make_model(model_config, **dict(loss_options or {})),
        trainer.make_optimizer(
            optimizer or family.default_optimizer, learning_rate, **(optimizer_options or {})
        ),
        mesh,
        num_microbatches,
    )
    lengths = model_feature_lengths(family, task_feature_lengths, pack)
    start = time.perf_counter()
    state = tr.abstract_state()
    batch = abstract_batch(mesh, batch_size, lengths)
    compiled, oom = _compile(tr, state, batch, state_bytes_per_device(state))
    plan = {
        "slice": spec.name,
        "topology": spec.topology,
        "chips": spec.chips,
        "devices": spec.devices,
        "mesh": dict(mesh.shape),
        "batch_size": batch_size,
        "num_microbatches": num_microbatches,
        "rows_per_device_per_microbatch": batch_size // num_microbatches // mesh.shape["data"],
        "feature_lengths": lengths,
        "params": trainer.count_params(state.params),
        "compile_s": round(time.perf_counter() - start, 1),
    }
    plan["hbm"] = memory(compiled, oom, spec, state_bytes_per_device(state))
    plan["fits"] = plan["hbm"]["total"] <= (1 - headroom) * spec.hbm_per_device
    plan["advice"] = advice(plan, spec, getattr(model_config, "remat_policy", None), headroom)
    axes = tr.model.abstract_params_with_axes()[1]
    plan["flops"] = flops(compiled, state.params, lengths, batch_size, num_microbatches, axes)
    plan["collectives"] = collectives(compiled)
    plan["roofline"] = roofline(plan, spec)
    return plan


def plan_args(train_plan: dict) -> dict:
    """`compile_plan`'s arguments from the dict `t0x.train(plan=True)` returns (a recipe as
    gin resolved it), so `t0x train --plan --topology` compiles exactly the recipe's run."""
    settings = train_plan["settings"]
    loss = {"loss_normalizing_factor": settings.get("loss_normalizing_factor")}
    if settings.get("z_loss") is not None:
        loss["z_loss"] = settings["z_loss"]
    return {
        "model_config": models.get(train_plan["family"]).config_from_dict(
            train_plan["model_config"]
        ),
        "batch_size": train_plan["batch_size"],
        "task_feature_lengths": train_plan["feature_lengths"],
        "num_partitions": train_plan["mesh"]["model"],
        "num_microbatches": train_plan["num_microbatches"],
        "optimizer": settings.get("optimizer"),
        "optimizer_options": settings.get("optimizer_options") or {},
        "learning_rate": settings.get("learning_rate", 1e-3),
        "loss_options": loss,
        "pack": settings.get("pack", True),
    }


def summary_lines(plan: dict) -> list[str]:
    """A person's view of a compiled plan (the JSON carries everything)."""
    hbm = plan["hbm"]
    lines = [
        f"{plan['slice']} ({plan['chips']} chips, {plan['devices']} devices), mesh "
        f"{plan['mesh']}, {plan['num_microbatches']} microbatches of "
        f"{plan['rows_per_device_per_microbatch']} rows per device",
        f"HBM per device: {hbm['total'] / GiB:.2f} of {hbm['capacity'] / GiB:.2f} GiB "
        f"(state {hbm['state'] / GiB:.2f}, temp {(hbm.get('temp') or 0) / GiB:.2f}); "
        + ("fits" if plan["fits"] else "does NOT fit"),
    ]
    roof = plan.get("roofline")
    if roof:
        lines.append(
            f"step >= {roof['step_s']:.3f} s ({roof['bound']}-bound roofline), "
            f"MFU <= {roof['mfu']:.1%}, {roof['tokens_per_s']:.0f} tokens/s"
        )
    if plan.get("advice"):
        lines.append(plan["advice"])
    return lines


def model_feature_lengths(family, task_feature_lengths: dict, pack: bool) -> dict[str, int]:
    """Batch feature -> length, as the family's seqio feature converter makes them."""
    converter = family.feature_converter(pack)
    return dict(converter.get_model_feature_lengths(dict(task_feature_lengths)))


def abstract_batch(mesh, batch_size: int, lengths: dict[str, int]) -> dict:
    """The global batch as int32 ShapeDtypeStructs sharded along "data"."""
    sharding = partitioning.batch_sharding(mesh)
    return {
        k: jax.ShapeDtypeStruct((batch_size, n), jnp.int32, sharding=sharding)
        for k, n in lengths.items()
    }


def lower_train_step(tr: trainer.Trainer, state, batch: dict):
    """The Trainer's own jitted step, lowered for abstract (sharded) inputs."""
    key = jax.eval_shape(jax.random.key, 0)
    rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=partitioning.replicated(tr.mesh))
    step = tr.compile_step(list(batch))
    with partitioning.activate(tr.mesh):
        return step.lower(state, batch, rng)


def _compile(tr, state, batch, state_bytes: int):
    """(compiled, None), or (None, bytes per device the compiler said it needed) when it ran
    out of HBM (a message about temporaries alone gets the train state added)."""
    lowered = lower_train_step(tr, state, batch)
    try:
        return lowered.compile(), None
    except Exception as e:  # jax.errors.JaxRuntimeError
        needed = oom_bytes(str(e))
        if needed is None:
            raise
        return None, needed + (state_bytes if "temporaries" in str(e) else 0)


def oom_bytes(message: str) -> int | None:
    """Bytes per device the TPU compiler's out-of-memory message says were needed."""
    if "RESOURCE_EXHAUSTED" not in message:
        return None
    for form in _OOM_FORMS:
        m = form.search(message)
        if m:
            return int(float(m.group(1)) * _UNITS[m.group(2)])
    return None


def state_bytes_per_device(state) -> int:
    """Bytes of one device's shards of the train state (from the state's shardings)."""
    total = 0
    for leaf in jax.tree.leaves(state):
        shape = leaf.sharding.shard_shape(leaf.shape)
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total


def memory(compiled, oom: int | None, spec, state_bytes: int) -> dict:
    """Per-device HBM (bytes): the compiler's figures, or what its OOM error said."""
    out = {"capacity": spec.hbm_per_device, "state": state_bytes}
    if compiled is None:
        return dict(out, total=oom, compiler_error=True)
    m = compiled.memory_analysis()
    parts = {
        "argument": m.argument_size_in_bytes,
        "output": m.output_size_in_bytes,
        "alias": m.alias_size_in_bytes,
        "temp": m.temp_size_in_bytes,
        "code": m.generated_code_size_in_bytes,
    }
    total = parts["argument"] + parts["output"] - parts["alias"] + parts["temp"] + parts["code"]
    return dict(out, **parts, total=total, compiler_error=False)


def advice(plan: dict, spec, remat_policy: str | None, headroom: float = HEADROOM) -> str | None:
    """None when the step fits; else one line naming the knob to turn."""
    if plan["fits"]:
        return None
    hbm, mesh = plan["hbm"], plan["mesh"]
    budget = (1 - headroom) * spec.hbm_per_device
    parts, n = mesh["model"], plan["num_microbatches"]
    if hbm["state"] > budget / 2:
        knob = (
            f"the train state alone is {hbm['state'] / GiB:.2f} GiB per device: raise "
            f"num_partitions ({parts} -> {parts * 2}) to shard weights and optimizer state"
        )
    elif plan["batch_size"] % (mesh["data"] * n * 2) == 0:
        knob = f"activations dominate: raise num_microbatches ({n} -> {n * 2})"
        if remat_policy == "none":
            knob += " or set remat_policy='full'"
    elif remat_policy == "none":
        knob = "activations dominate: set remat_policy='full' (recompute layers in backward)"
    else:
        knob = f"raise num_partitions ({parts} -> {parts * 2})"
    return (
        f"does not fit on {spec.name}: {hbm['total'] / GiB:.2f} GiB per device of "
        f"{spec.hbm_per_device / GiB:.2f} GiB (keeping {headroom:.0%} free); {knob}"
    )


def lookup_only_tables(logical_axes) -> set:
    """Paths of ("vocab", "embed") tables when the logits have their own ("embed", "vocab")
    kernel: an untied embedding, used for lookups only (no matmul FLOPs)."""
    if logical_axes is None:
        return set()
    is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)  # noqa: E731
    specs = {
        jax.tree_util.keystr(path): tuple(spec)
        for path, spec in jax.tree_util.tree_leaves_with_path(logical_axes, is_leaf=is_spec)
    }
    if ("embed", "vocab") not in specs.values():
        return set()
    return {path for path, spec in specs.items() if spec == ("vocab", "embed")}


def analytic_flops(
    abstract_params, lengths: dict[str, int], batch_size: int, logical_axes=None
) -> float:
    """6 * sum(weights * tokens each weight sees) over the global batch (module doc)."""
    inputs = batch_size * lengths.get("encoder_input_tokens", 0)
    targets = batch_size * lengths.get("decoder_target_tokens", 0)
    skip = lookup_only_tables(logical_axes)
    total = 0.0
    for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_params):
        if jax.tree_util.keystr(path) in skip:
            continue
        top = str(getattr(path[0], "key", path[0]))
        tokens = inputs if (top == "encoder" and inputs) else targets
        total += 6.0 * float(np.prod(leaf.shape)) * tokens
    return total


def flops(
    compiled, abstract_params, lengths, batch_size: int, num_microbatches: int, logical_axes=None
) -> dict:
    out = {"analytic_per_step": analytic_flops(abstract_params, lengths, batch_size, logical_axes)}
    if compiled is None:
        return dict(out, compiled_per_device_per_step=None)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    trips = program_stats.loop_trip_counts(compiled.as_text())
    loop = num_microbatches if num_microbatches in trips.values() else 1
    return dict(out, compiled_per_device_per_step=float(cost.get("flops", 0.0)) * loop)


def collectives(compiled) -> dict | None:
    """Collective kind -> {count, in_loops, bytes_per_step} per device (`in_loops`: how many
    of the instructions sit in a loop body, e.g. run once per microbatch)."""
    if compiled is None:
        return None
    stats = program_stats.collectives(compiled.as_text())
    return {
        k: {"count": s.count, "in_loops": s.in_loops, "bytes_per_step": s.bytes_per_step}
        for k, s in stats.items()
    }


def roofline(plan: dict, spec) -> dict | None:
    """Step time and MFU from max(compute at peak, collective bytes / ICI bandwidth)."""
    per_device = plan["flops"]["compiled_per_device_per_step"]
    if per_device is None:
        return None
    moved = sum(
        c["bytes_per_step"] * (2 if kind == "all-reduce" else 1)
        for kind, c in plan["collectives"].items()
    )
    compute_s = per_device / spec.peak_flops_per_device
    ici_s = moved / spec.ici_bandwidth
    step_s = max(compute_s, ici_s, 1e-12)
    lengths = plan["feature_lengths"]
    tokens = plan["batch_size"] * (
        lengths.get("encoder_input_tokens", 0) + lengths.get("decoder_target_tokens", 0)
    )
    analytic = plan["flops"]["analytic_per_step"]
    return {
        "peak_flops_per_device": spec.peak_flops_per_device,
        "ici_bandwidth": spec.ici_bandwidth,
        "compute_s": compute_s,
        "ici_s": ici_s,
        "step_s": step_s,
        "bound": "compute" if compute_s >= ici_s else "ici",
        "mfu": analytic / (step_s * spec.chips * spec.peak_flops_per_chip),
        "tokens_per_s": tokens / step_s,
    }
