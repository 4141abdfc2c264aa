"""What a recipe's train step costs on a TPU slice, compiled ahead of time on this machine.

  python bench/tpu_plan.py --gin_file=gin/t0_small.gin --slice v4-64 [--slice v3-256 ...]
      [--gin.NUM_MICROBATCHES=8 ...]
  python bench/tpu_plan.py --preset t5_1_1_small --batch 1024 --inputs 1024 --targets 256 \
      --partitions 1 --microbatches 4 --slice v4-64
  python bench/tpu_plan.py --tiny --slice v4-8          # a seconds-long smoke run

A recipe is read the way `t0x train --plan` reads it (gin, then `t0x.train(plan=True)`): its
model config, batch, feature lengths, partitions, microbatches, optimizer and loss settings.
For each slice `t0x.aot.compile_plan` compiles the real train step with libtpu (the `tpu`
extra: `pip install -e '.[tpu]'`; no TPU needed) and a table row is appended to BENCHMARKS.md
(`--no-write`: print only). Figures are per device; see t0x/aot.py for the roofline. A large
model takes minutes and several GB of host memory to compile (T5 small on v4-64: ~7 min,
~8 GB). The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
SECTION = "## TPU step plans (ahead-of-time compile) — `bench/tpu_plan.py`"
INTRO = """
Each row compiles the real train step (t0x.trainer) for a TPU slice on a CPU-only machine with
libtpu (`t0x.aot.compile_plan`). HBM: the compiler's per-device figures (argument + output -
alias + temp + code) against its capacity; fits = at least 10% free. FLOPs: the compiled
program's per device per step. Step time: roofline max(FLOPs / bf16 peak, collective bytes /
one ICI link's bandwidth), a lower bound (perfect overlap); MFU = 6·N·tokens / (step time x
chips x peak), an upper bound. Nothing here ran on a TPU.
"""
HEADER = (
    "| run | slice | mesh data×model | batch / microbatches | HBM GiB / device (state, temp) "
    "| fits | TFLOP / device / step | collective MB / device / step | roofline step s (bound) "
    "| MFU ≤ | compile s |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def from_recipe(files, bindings, paths) -> dict:
    """The run a recipe describes, as `t0x train --plan` resolves it."""
    from t0x import aot, gin_config
    from t0x.jobs import train

    gin_config.parse(files, bindings, paths)
    return {"name": Path(files[-1]).stem, **aot.plan_args(train.train(plan=True))}


def from_args(args) -> dict:
    from t0x import models

    if args.tiny:
        from t0x.models.t5.testing import tiny_config

        config, name = tiny_config(), "tiny T5"
    else:
        config, name = models.preset(args.preset), args.preset
    return {
        "name": name,
        "model_config": config,
        "batch_size": args.batch,
        "task_feature_lengths": {"inputs": args.inputs, "targets": args.targets},
        "num_partitions": args.partitions,
        "num_microbatches": args.microbatches,
    }


def row(run: dict, plan: dict) -> str:
    hbm, mesh, roof = plan["hbm"], plan["mesh"], plan["roofline"]
    gib = 2**30
    memory = f"{hbm['total'] / gib:.2f} / {hbm['capacity'] / gib:.2f} ({hbm['state'] / gib:.2f}"
    memory += f", {hbm['temp'] / gib:.2f})" if "temp" in hbm else ", compiler OOM)"
    fits = "yes" if plan["fits"] else f"**no**: {plan['advice']}"
    if roof is None:
        cost = ["—"] * 4
    else:
        moved = sum(c["bytes_per_step"] for c in plan["collectives"].values())
        cost = [
            f"{plan['flops']['compiled_per_device_per_step'] / 1e12:.3g}",
            f"{moved / 1e6:.4g}",
            f"{roof['step_s']:.3g} ({roof['bound']})",
            f"{roof['mfu']:.0%}",
        ]
    cells = [
        run["name"],
        plan["slice"],
        f"{mesh['data']}×{mesh['model']}",
        f"{plan['batch_size']} / {plan['num_microbatches']}",
        memory,
        fits,
        *cost,
        f"{plan['compile_s']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def append(rows: list[str], command: str, path: Path) -> None:
    text = path.read_text() if path.exists() else ""
    block = "" if SECTION in text else f"\n{SECTION}\n{INTRO}"
    block += f"\n`{command}` ({datetime.date.today().isoformat()}):\n\n{HEADER}\n"
    path.write_text(text.rstrip("\n") + "\n" + block + "\n".join(rows) + "\n")


def main(argv=None) -> int:
    from t0x import aot, gin_config

    argv = list(sys.argv[1:] if argv is None else argv)
    files, bindings, paths, rest = gin_config.split_gin_flags(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slice", action="append", required=True, help="v4-64, v3-256, ...")
    p.add_argument("--preset", default="t5_1_1_small")
    p.add_argument("--tiny", action="store_true", help="t0x.models.t5.testing.tiny_config()")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--inputs", type=int, default=1024)
    p.add_argument("--targets", type=int, default=256)
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--microbatches", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(rest)
    run = from_recipe(files, bindings, paths) if files else from_args(args)
    name, plans, rows = run.pop("name"), [], []
    for slice_name in args.slice:
        plan = aot.compile_plan(slice_name=slice_name, **run)
        plans.append(plan)
        rows.append(row({"name": name}, plan))
        print(rows[-1], flush=True)
    if not args.no_write:
        append(rows, "python bench/tpu_plan.py " + " ".join(argv), args.out)
    print(json.dumps(plans, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
