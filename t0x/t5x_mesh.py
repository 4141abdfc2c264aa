"""T5X's default device mesh, written down as data, and the per-slice flags our recipes advise.

T5X (`t5x.partitioning.default_mesh`) turns `num_partitions` into a model-parallel submesh
`(x, y, z, core)` of the TPU's physical bounds only for the cases in `_DEFAULT_SUBMESH`
below; anything else stops with "No default mesh for this configuration" and needs an
explicit `model_parallel_submesh`. t0x builds its mesh from the degree alone
(t0x.partitioning.create_mesh), so one set of flags serves both engines as long as it is
valid under T5X's rules: `slice_flags` gives it and `t5x_submesh` checks it.

Vocabulary:
  bounds      a slice's physical device grid (x, y, z, cores per device): v3 exposes both
              TensorCores of a chip (cores 2), v4 runs megacore (cores 1).
  submesh     T5X's model-parallel tile of the bounds; its size is the model-parallel degree.
"""

from __future__ import annotations

import math

# device kind family -> {num_partitions: submesh, or [(condition on bounds, submesh), ...]}
# (T5X partitioning.default_mesh, April 2026; v4 assumes megacore, bounds[3] == 1).
_DEFAULT_SUBMESH = {
    "v3": {1: (1, 1, 1, 1), 2: (1, 1, 1, 2), 4: (2, 1, 1, 2), 8: (2, 2, 1, 2), 16: (4, 2, 1, 2)},
    "v4": {
        1: (1, 1, 1, 1),
        2: (1, 2, 1, 1),
        4: [(lambda b: b[0] >= 4, (4, 1, 1, 1)), (lambda b: True, (2, 2, 1, 1))],
        8: [(lambda b: b[2] >= 8, (1, 1, 8, 1)), (lambda b: True, (4, 2, 1, 1))],
        16: [
            (lambda b: b[2] >= 16, (1, 1, 16, 1)),
            (lambda b: b[0] >= 8, (8, 2, 1, 1)),
            (lambda b: b[0] >= 4, (4, 4, 1, 1)),
            (lambda b: True, (2, 2, 4, 1)),
        ],
    },
}
_DEFAULT_SUBMESH["v2"] = _DEFAULT_SUBMESH["v3"]

# slice name -> (device kind family, bounds)
SLICES = {
    "v3-256": ("v3", (8, 16, 1, 2)),
    "v4-64": ("v4", (2, 4, 4, 1)),
    "v4-128": ("v4", (4, 4, 4, 1)),
}

# model size -> slice -> (num_partitions, num_microbatches, explicit submesh or None). v4-64
# layouts of xl and xxl come from ahead-of-time compiles (docs/tpu.md, "Compiled plans"); the
# others from the arithmetic in gin/README.md ("Sizing").
T0_LAYOUTS = {
    "small": {"v4-64": (1, 4, None), "v3-256": (1, 1, None)},
    "base": {"v4-64": (1, 8, None), "v3-256": (1, 2, None)},
    "large": {"v4-64": (1, 32, None), "v3-256": (2, 8, None)},
    "xl": {"v4-64": (4, 64, None), "v3-256": (8, 16, None)},
    "xxl": {"v4-64": (8, 256, (2, 2, 2, 1)), "v3-256": (32, 64, (4, 4, 1, 2))},
}

# mT0: batch 512 of unpacked 1024 + 1024 token pairs, and a 250,112-row vocabulary whose
# logits dominate activation memory at the small sizes. The v4-64 layouts of xl and xxl are
# backed by compiles too (docs/tpu.md: xxl stays at 16-way, 8-way does not fit).
MT0_LAYOUTS = {
    "small": {"v4-64": (1, 8, None), "v3-256": (1, 2, None)},
    "base": {"v4-64": (1, 16, None), "v3-256": (1, 4, None)},
    "large": {"v4-64": (2, 32, None), "v3-256": (2, 8, None)},
    "xl": {"v4-64": (4, 64, None), "v3-256": (8, 16, None)},
    "xxl": {"v4-64": (16, 256, None), "v3-256": (32, 64, (4, 4, 1, 2))},
}
LAYOUTS = {"t0": T0_LAYOUTS, "mt0": MT0_LAYOUTS}


def default_submesh(family: str, num_partitions: int, bounds: tuple) -> tuple | None:
    """The submesh T5X's default_mesh picks, or None where T5X has no default."""
    rule = _DEFAULT_SUBMESH.get(family, {}).get(num_partitions)
    if rule is None or isinstance(rule, tuple):
        return rule
    return next(mesh for condition, mesh in rule if condition(bounds))


def t5x_submesh(slice_name: str, num_partitions: int, submesh: tuple | None = None) -> tuple:
    """The submesh T5X would use on `slice_name`; raises ValueError where T5X would fail."""
    family, bounds = SLICES[slice_name]
    mesh = submesh or default_submesh(family, num_partitions, bounds)
    if mesh is None:
        raise ValueError(
            f"T5X has no default mesh for num_partitions={num_partitions} on {slice_name}; "
            "give partitioning.PjitPartitioner.model_parallel_submesh"
        )
    if math.prod(mesh) != num_partitions:
        raise ValueError(f"submesh {mesh} has {math.prod(mesh)} devices, not {num_partitions}")
    if any(b % m for b, m in zip(bounds, mesh)):
        raise ValueError(f"submesh {mesh} does not tile {slice_name}'s bounds {bounds}")
    return mesh


def slice_flags(size: str, slice_name: str, recipe: str = "t0") -> str:
    """Command-line flags (valid for T5X and t0x) that lay a T0 / mT0 `size` out on a slice."""
    partitions, microbatches, submesh = LAYOUTS[recipe][size][slice_name]
    prefix = "--gin.partitioning.PjitPartitioner."
    if submesh is None:
        flags = [f"{prefix}num_partitions={partitions}"]
    else:
        shape = "(" + ",".join(str(s) for s in submesh) + ")"
        flags = [f"{prefix}num_partitions=None", f'{prefix}model_parallel_submesh="{shape}"']
    return " ".join(flags + [f"--gin.trainer.Trainer.num_microbatches={microbatches}"])
