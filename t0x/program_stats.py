"""What a compiled XLA program does per device: its collectives and its matrix products.

Vocabulary:
  HLO text      `jax.stages.Compiled.as_text()`: the optimized, SPMD-partitioned program of
                ONE device (shapes are per-device shards), as computations
                `%name (params) -> result { instructions }`; the entry computation is marked
                `ENTRY`.
  collective    an instruction that moves data between devices: all-reduce, all-gather,
                reduce-scatter, all-to-all, collective-permute (and their async `-start`
                halves; the `-done` halves are not counted twice).
  bytes         of a collective: the size of its result on one device (for a tuple result,
                the sum of the elements).
  dot           a matrix product (`dot` or `convolution`); its result shape tells how much of a
                batch one device computes.
  loop body     a computation called as the `body=` of a `while` (e.g. the microbatch scan).
                `cost_analysis()` counts it once; `loop_trip_counts` reads the trip count XLA
                recorded (`known_trip_count`, CPU) or, where it records none (TPU), the bound
                of the loop condition (`i < N` against a constant, the form a scan takes), so
                that per-step totals can be formed.

These functions read text and never compile; tests and `t0x train --plan` use them to check
that each device does only its share of the work (see t0x.partitioning).
"""

from __future__ import annotations

import dataclasses
import re

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {
    "pred": 1,
    "s4": 1,
    "u4": 1,
    "s8": 1,
    "u8": 1,
    "f8e4m3fn": 1,
    "f8e5m2": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
}
_SHAPE = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")
_COMPUTATION = re.compile(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]+ = (.+?) ([a-z][\w\-]*)\((.*)$")
_NAME = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = ")
_COMMENT = re.compile(r"/\*.*?\*/")  # `/*index=5*/` in long tuple shapes
_WHILE_BODY = re.compile(r"body=%?([\w.\-]+)")
_WHILE_CONDITION = re.compile(r"condition=%?([\w.\-]+)")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CONSTANT = re.compile(r"constant\((-?\d+)\)")
_COMPARE = re.compile(r"compare\(%?([\w.\-]+), %?([\w.\-]+)\), direction=(LT|LE)\b")


@dataclasses.dataclass(frozen=True)
class Instruction:
    computation: str
    opcode: str
    shapes: tuple[tuple[str, tuple[int, ...]], ...]  # result (dtype, dims), one per tuple element
    text: str

    @property
    def bytes(self) -> int:
        total = 0
        for dtype, dims in self.shapes:
            n = 1
            for d in dims:
                n *= d
            total += n * _DTYPE_BYTES.get(dtype, 4)
        return total


def _shapes(result: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(
        (dtype, tuple(int(d) for d in dims.split(",") if d))
        for dtype, dims in _SHAPE.findall(result)
        if dtype in _DTYPE_BYTES
    )


def instructions(hlo_text: str) -> list[Instruction]:
    """Every instruction of every computation, with its computation's name."""
    out, computation = [], ""
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line)
        if m and "=" not in _COMMENT.sub("", line).split("{")[0]:
            computation = m.group(2)
            continue
        m = _INSTRUCTION.match(line)
        if m:
            out.append(Instruction(computation, m.group(2), _shapes(m.group(1)), line.strip()))
    return out


def loop_trip_counts(hlo_text: str) -> dict[str, int]:
    """Loop body computation -> its trip count: XLA's `known_trip_count`, else the constant
    bound of the loop condition, else 1."""
    insts = instructions(hlo_text)
    counts = {}
    for inst in insts:
        if inst.opcode == "while":
            body = _WHILE_BODY.search(inst.text)
            trips = _TRIP_COUNT.search(inst.text)
            if body:
                cond = _WHILE_CONDITION.search(inst.text)
                bound = _condition_bound(insts, cond.group(1)) if cond else None
                counts[body.group(1)] = int(trips.group(1)) if trips else (bound or 1)
    return counts


def _condition_bound(insts: list[Instruction], condition: str) -> int | None:
    """N of a loop condition `ROOT compare(i, constant(N)), direction=LT` (N + 1 for LE)."""
    mine = [inst for inst in insts if inst.computation == condition]
    constants = {}
    for inst in mine:
        name, value = _NAME.match(inst.text), _CONSTANT.search(inst.text)
        if inst.opcode == "constant" and name and value:
            constants[name.group(1)] = int(value.group(1))
    for inst in mine:
        m = _COMPARE.search(inst.text) if inst.text.startswith("ROOT ") else None
        if m and m.group(2) in constants:
            return constants[m.group(2)] + (m.group(3) == "LE")
    return None


@dataclasses.dataclass(frozen=True)
class CollectiveStats:
    count: int  # instructions in the program text
    bytes: int  # per device, each instruction counted once
    bytes_per_step: int  # per device, instructions in loop bodies times the trip count
    in_loops: int  # how many of the instructions sit in a loop body


def collectives(hlo_text: str) -> dict[str, CollectiveStats]:
    """Collective kind -> counts and bytes moved per device (see the module doc)."""
    trips = loop_trip_counts(hlo_text)
    acc = {kind: [0, 0, 0, 0] for kind in COLLECTIVES}
    for inst in instructions(hlo_text):
        kind = inst.opcode.removesuffix("-start")
        if kind not in acc or inst.opcode.endswith("-done"):
            continue
        # an async start returns (operand, result[, context]); count the result only
        size = collective_bytes(inst)
        trip = trips.get(inst.computation, 1)
        a = acc[kind]
        a[0] += 1
        a[1] += size
        a[2] += size * trip
        a[3] += inst.computation in trips
    return {kind: CollectiveStats(*a) for kind, a in acc.items() if a[0]}


def collective_bytes(inst: Instruction) -> int:
    """Bytes one collective instruction moves per device (an async start: its result)."""
    return _start_bytes(inst) if inst.opcode.endswith("-start") else inst.bytes


def _start_bytes(inst: Instruction) -> int:
    shapes = inst.shapes
    if len(shapes) >= 2:  # ((operands...), (results...)): the second half are the results
        shapes = shapes[len(shapes) // 2 :]
    return Instruction(inst.computation, inst.opcode, shapes, inst.text).bytes


def dot_shapes(hlo_text: str) -> list[tuple[int, ...]]:
    """Result shapes (per device) of every matrix product in the program."""
    return [
        inst.shapes[0][1]
        for inst in instructions(hlo_text)
        if inst.opcode in ("dot", "convolution") and inst.shapes
    ]


def sharding_constraints(lowered_text: str) -> int:
    """How many sharding constraints a lowered (StableHLO) program carries."""
    return lowered_text.count("sdy.sharding_constraint") + lowered_text.count("@Sharding")
