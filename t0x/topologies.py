"""Cloud TPU slices as data: what `v4-64` is, for compiling ahead of time and for rooflines.

Vocabulary:
  slice name    what `gcloud ... --accelerator-type` takes: `<generation>-<size>`. For v3, v4 and
                v5p the size counts TensorCores (2 per chip: v4-64 = 32 chips); for v5e and v6e
                it counts chips (v5e-64 = 64 chips). `v5litepod-N` is accepted for `v5e-N`.
  device        what JAX sees as one device. v4 and v5p run both TensorCores of a chip as one
                device ("megacore"), so device = chip; v3 shows each TensorCore as a device
                (2 per chip); v5e and v6e have one TensorCore per chip.
  topology      libtpu's name for the chip grid, `<jax generation>:<AxB[xC]>` (`v4:2x4x4`),
                with the chip config ("megacore" or "default") and the chips each host holds.
                `describe(name)` turns it into compile-only JAX devices (libtpu, no TPU needed),
                as MaxText's train_compile.py does.
  figures       HBM per device: the capacity the TPU compiler itself reports for the generation
                (its out-of-memory message "exceeds available HBM (30.75G)", libtpu 0.0.42.1),
                a little under the chip's nominal HBM. bf16 peak FLOP/s per chip: Cloud TPU's
                system-architecture pages. ICI bandwidth: bidirectional bytes/s of one link, from
                "How to Scale Your Model" (jax-ml.github.io/scaling-book/tpus, "TPU specs").

Sources of the shapes: MaxText `MaxText/accelerator_to_spec_map.py` (v4, v5p, v5e, v6e names,
topologies, chip configs and host bounds); Cloud TPU v3 docs, "Configurations" (v3 slice shapes,
2D torus). Every shape here is accepted by libtpu's topology parser (tests/test_aot.py).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

from t0x.errors import ConfigError

GiB = 2**30
INSTALL_HINT = "pip install -e '.[tpu]'"


@dataclasses.dataclass(frozen=True)
class Generation:
    jax_name: str  # the prefix of libtpu's topology name
    chip_config: str  # "megacore": one device per chip; "default": one per TensorCore
    devices_per_chip: int
    size_counts: str  # what the number in a slice name counts: "cores" or "chips"
    hbm_per_device: int  # bytes, as the TPU compiler reports its capacity
    peak_flops_per_chip: float  # bf16
    ici_bandwidth: float  # bytes/s, one link, both directions
    host_bounds: tuple[int, int, int] = (2, 2, 1)


GENERATIONS = {
    # Cloud TPU v3 docs: 123 TFLOP/s bf16 per chip, 32 GiB HBM per chip (16 per TensorCore)
    "v3": Generation("v3", "default", 2, "cores", int(15.48 * GiB), 123e12, 2.0e11),
    # Cloud TPU v4 docs: 275 TFLOP/s bf16 per chip, 32 GiB HBM
    "v4": Generation("v4", "megacore", 1, "cores", int(30.75 * GiB), 275e12, 9.0e10),
    # Cloud TPU v5p docs: 459 TFLOP/s bf16 per chip, 95 GiB HBM
    "v5p": Generation("v5", "megacore", 1, "cores", int(95.74 * GiB), 459e12, 1.8e11),
    # Cloud TPU v5e docs: 197 TFLOP/s bf16 per chip, 16 GB HBM
    "v5e": Generation("v5e", "default", 1, "chips", int(15.75 * GiB), 197e12, 9.0e10),
    # Cloud TPU v6e docs: 918 TFLOP/s bf16 per chip, 32 GB HBM
    "v6e": Generation("v6e", "default", 1, "chips", int(31.25 * GiB), 918e12, 1.8e11),
}

# slice size (the number in the name) -> chip grid
SHAPES = {
    "v3": {
        8: "2x2", 32: "4x4", 64: "4x8", 128: "8x8", 256: "8x16", 512: "16x16",
        1024: "16x32", 2048: "32x32",
    },
    "v4": {
        8: "2x2x1", 16: "2x2x2", 32: "2x2x4", 64: "2x4x4", 128: "4x4x4", 256: "4x4x8",
        384: "4x4x12", 512: "4x8x8", 1024: "8x8x8", 1536: "8x8x12", 2048: "8x8x16",
        4096: "8x16x16",
    },
    "v5p": {
        8: "2x2x1", 16: "2x2x2", 32: "2x2x4", 64: "2x4x4", 128: "4x4x4", 256: "4x4x8",
        384: "4x4x12", 512: "4x8x8", 768: "4x8x12", 1024: "8x8x8", 1536: "8x8x12",
        2048: "8x8x16", 4096: "8x16x16", 6144: "8x16x24", 8192: "16x16x16",
        12288: "16x16x24",
    },
    "v5e": {
        1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
        256: "16x16",
    },
    "v6e": {
        1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
        256: "16x16",
    },
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SliceSpec:
    name: str
    generation: str
    topology: str  # libtpu's name, e.g. "v4:2x4x4"
    chip_config: str
    host_bounds: tuple[int, int, int]
    chips: int
    devices: int  # JAX devices
    hbm_per_device: int  # bytes
    peak_flops_per_chip: float  # bf16 FLOP/s
    ici_bandwidth: float  # bytes/s per link, bidirectional

    @property
    def devices_per_chip(self) -> int:
        return self.devices // self.chips

    @property
    def peak_flops_per_device(self) -> float:
        return self.peak_flops_per_chip / self.devices_per_chip


def known_slices() -> list[str]:
    return [f"{gen}-{size}" for gen, sizes in SHAPES.items() for size in sizes]


def spec(slice_name: str) -> SliceSpec:
    """The table's facts about one slice (no libtpu needed)."""
    name = slice_name.strip().lower().replace("v5litepod-", "v5e-")
    gen_name, _, size = name.partition("-")
    if gen_name not in SHAPES or not size.isdigit() or int(size) not in SHAPES[gen_name]:
        raise ConfigError(
            f"unknown TPU slice {slice_name!r}: use one of {', '.join(known_slices())}"
        )
    gen = GENERATIONS[gen_name]
    grid = SHAPES[gen_name][int(size)]
    chips = 1
    for d in grid.split("x"):
        chips *= int(d)
    bounds = gen.host_bounds if chips > 1 else (1, 1, 1)
    return SliceSpec(
        name=name,
        generation=gen_name,
        topology=f"{gen.jax_name}:{grid}",
        chip_config=gen.chip_config,
        host_bounds=bounds,
        chips=chips,
        devices=chips * gen.devices_per_chip,
        hbm_per_device=gen.hbm_per_device,
        peak_flops_per_chip=gen.peak_flops_per_chip,
        ici_bandwidth=gen.ici_bandwidth,
    )


def libtpu_available() -> bool:
    """Whether the TPU compiler can be loaded: the `libtpu` package, or TPU_LIBRARY_PATH."""
    if importlib.util.find_spec("libtpu") is not None:
        return True
    return os.path.isfile(os.environ.get("TPU_LIBRARY_PATH", ""))


def describe(slice_name: str, num_slices: int = 1) -> list:
    """Compile-only JAX devices of a TPU slice (for `jax.jit(...).lower(...).compile()` on a
    machine without TPUs). Needs libtpu: `pip install -e '.[tpu]'`."""
    s = spec(slice_name)
    if not libtpu_available():
        raise ConfigError(
            f"compiling for {s.name} needs libtpu (the TPU compiler); install it with "
            f"{INSTALL_HINT}"
        )
    # compile-only: no chip is opened, so several processes may load libtpu at once
    # (otherwise the first one holds /tmp/libtpu_lockfile and every other one fails)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    devices = topologies.get_topology_desc(
        platform="tpu",
        topology_name=s.topology,
        chip_config_name=s.chip_config,
        chips_per_host_bounds=s.host_bounds,
        num_slices=num_slices,
    ).devices
    if len(devices) != s.devices * num_slices:
        raise ConfigError(
            f"libtpu describes {s.topology} with {len(devices)} devices, the table says "
            f"{s.devices * num_slices}: fix t0x/topologies.py"
        )
    return list(devices)
