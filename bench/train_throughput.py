"""Training throughput of t0x vs Hugging Face transformers (PyTorch) on the same config.

  python bench/train_throughput.py --config t5_1_1_small --batch 8 --inputs 512 \
      --targets 128 --steps 10 [--hf] [--dtype float32|bfloat16]

Random weights and random full-length batches (no padding, no packing: every token
counts). After 2 warm-up rounds (compilation excluded), `--steps` rounds each run one t0x
step then one transformers step; step times are medians, the speedup is the median of
the per-round ratios (drift in the machine's speed hits both engines alike).
MFU uses the exact matmul FLOPs of a forward+backward pass (3x forward; attention
scores included) against the machine's measured float32 matmul peak
(t0x.progress.measured_matmul_peak). `--dtype bfloat16`: t0x's activations in bf16
(float32 parameters, float32 accumulation: t0x/models/matmul.py) against transformers'
float32 model under `torch.autocast("cpu", dtype=torch.bfloat16)`. Like the `t0x` command,
the benchmark first keeps freed host memory for reuse (t0x/host_memory.py); that setting is
the process's, so transformers runs with it too; `--no-keep-host-memory` leaves glibc's
defaults for both. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # a CPU benchmark, also where libtpu is installed


def forward_flops(cfg, batch, inputs, targets) -> float:
    """Matmul FLOPs of one forward pass of T5 1.1 (2 * multiply-adds)."""
    d, h, kv, f, v = cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
    attn_proj = 4 * d * h * kv
    mlp = 3 * d * f
    enc = cfg.num_encoder_layers * (inputs * (attn_proj + mlp) + 2 * inputs * inputs * h * kv)
    dec = cfg.num_decoder_layers * (
        targets * (2 * attn_proj + mlp)
        + 2 * targets * targets * h * kv
        + 2 * d * h * kv * inputs  # cross-attn K,V of the encoder
        + 2 * targets * inputs * h * kv
    )
    return 2 * batch * (enc + dec + targets * d * v)


def t0x_step(cfg, args):
    """A function running one t0x optimizer step (jitted, warmed up) to completion."""
    import jax
    import numpy as np
    from t0x import partitioning, trainer
    from t0x.models.t5.model import EncoderDecoderModel

    model = EncoderDecoderModel(cfg)
    tr = trainer.Trainer(model, trainer.adafactor(1e-3), partitioning.create_mesh(1))
    box = {"state": tr.init_state(jax.random.key(0))}
    rng = np.random.default_rng(0)
    enc = rng.integers(2, cfg.vocab_size, (args.batch, args.inputs), dtype=np.int32)
    tgt = rng.integers(2, cfg.vocab_size, (args.batch, args.targets), dtype=np.int32)
    dec_in = np.concatenate([np.zeros((args.batch, 1), np.int32), tgt[:, :-1]], axis=1)
    batch = partitioning.to_global_batch(
        {
            "encoder_input_tokens": enc,
            "decoder_target_tokens": tgt,
            "decoder_input_tokens": dec_in,
            "decoder_loss_weights": np.ones_like(tgt),
        },
        tr.mesh,
    )
    key = jax.random.key(1)

    def step():
        box["state"], metrics = tr.train_step(box["state"], batch, key)
        jax.block_until_ready(metrics["loss"])

    return step


def hf_step(cfg, args):
    """The same for transformers' PyTorch T5 (bf16: the float32 model under autocast)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration
    from transformers.optimization import Adafactor
    from t0x.models.t5 import hf

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(**hf.config_to_hf(cfg)))
    model.train()
    opt = Adafactor(
        model.parameters(),
        lr=1e-3,
        relative_step=False,
        scale_parameter=True,
        warmup_init=False,
        decay_rate=-0.8,
        clip_threshold=1.0,
    )
    enc = torch.randint(2, cfg.vocab_size, (args.batch, args.inputs))
    tgt = torch.randint(2, cfg.vocab_size, (args.batch, args.targets))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def step():
        with autocast:
            loss = model(input_ids=enc, labels=tgt).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def measure(steps: dict, n: int) -> dict:
    """Seconds per step of each engine: 2 warm-up rounds, then `n` timed rounds, each running
    one step of every engine in turn (A B A B ...), so drift in the machine's speed hits both
    and each engine's heap has reached its high-water mark beside the other's."""
    for _ in range(2):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for _ in range(n):
        for name, step in steps.items():
            times[name].append(timed(step))
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="t5_1_1_small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs", type=int, default=512)
    p.add_argument("--targets", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--hf", action="store_true", help="also time transformers (PyTorch)")
    p.add_argument(
        "--no-keep-host-memory",
        dest="keep_host_memory",
        action="store_false",
        help="leave glibc's malloc defaults (t0x/host_memory.py); the `t0x` command keeps memory",
    )
    args = p.parse_args()
    load_at_start = os.getloadavg()[0]
    from t0x import host_memory  # first: before anything can start JAX's backend

    kept = args.keep_host_memory and host_memory.keep_freed_memory()  # as `t0x` does
    from t0x import progress
    from t0x.models.t5 import network

    cfg = network.CONFIGS[args.config].replace(dtype=args.dtype, dropout_rate=0.0)
    tokens = args.batch * (args.inputs + args.targets)
    flops = 3 * forward_flops(cfg, args.batch, args.inputs, args.targets)
    peak = progress.measured_matmul_peak()
    out = {
        "config": args.config,
        "batch": args.batch,
        "inputs": args.inputs,
        "targets": args.targets,
        "dtype": args.dtype,
        "peak_flops": peak,
    }
    engines = {"t0x": t0x_step(cfg, args)}
    if args.hf:
        engines["hf"] = hf_step(cfg, args)
    times = measure(engines, args.steps)
    step = statistics.median(times["t0x"])
    out.update(step_time_s=step, tokens_per_s=tokens / step, mfu=flops / step / peak)
    if args.hf:
        hf_step_s = statistics.median(times["hf"])
        ratios = [h / t for h, t in zip(times["hf"], times["t0x"])]  # the same round's
        out.update(
            hf_step_time_s=hf_step_s,
            hf_tokens_per_s=tokens / hf_step_s,
            hf_mfu=flops / hf_step_s / peak,
            speedup=statistics.median(ratios),
            speedup_range=[min(ratios), max(ratios)],
        )
    out["step_times_s"] = {name: [round(t, 3) for t in ts] for name, ts in times.items()}
    out["load_1min"] = [load_at_start, os.getloadavg()[0]]
    out["kept_host_memory"] = kept
    print(json.dumps(out))


if __name__ == "__main__":
    main()
