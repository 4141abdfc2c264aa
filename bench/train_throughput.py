"""Training throughput of t0x vs Hugging Face transformers (PyTorch) on the same config.

  python bench/train_throughput.py --config t5_1_1_small --batch 8 --inputs 512 \
      --targets 128 --steps 10 [--hf] [--dtype float32|bfloat16]

Random weights and random full-length batches (no padding, no packing: every token
counts). Times `--steps` optimizer steps after 2 warm-up steps (compilation excluded).
MFU uses the exact matmul FLOPs of a forward+backward pass (3x forward; attention
scores included) against the machine's measured float32 matmul peak
(t0x.progress.measured_matmul_peak). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


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


def run_t0x(cfg, args) -> float:
    import jax
    import numpy as np
    from t0x import partitioning, trainer
    from t0x.models.t5.model import EncoderDecoderModel

    model = EncoderDecoderModel(cfg)
    tr = trainer.Trainer(model, trainer.adafactor(1e-3), partitioning.create_mesh(1))
    state = tr.init_state(jax.random.key(0))
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
    for _ in range(2):
        state, m = tr.train_step(state, batch, key)
    jax.block_until_ready(m["loss"])
    t = time.perf_counter()
    for _ in range(args.steps):
        state, m = tr.train_step(state, batch, key)
    jax.block_until_ready(m["loss"])
    return (time.perf_counter() - t) / args.steps


def run_hf(cfg, args) -> float:
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

    def step():
        loss = model(input_ids=enc, labels=tgt).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    return (time.perf_counter() - t) / args.steps


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="t5_1_1_small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs", type=int, default=512)
    p.add_argument("--targets", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--hf", action="store_true", help="also time transformers (PyTorch)")
    args = p.parse_args()
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
    step = run_t0x(cfg, args)
    out.update(step_time_s=step, tokens_per_s=tokens / step, mfu=flops / step / peak)
    if args.hf:
        hf_step = run_hf(cfg, args)
        out.update(
            hf_step_time_s=hf_step,
            hf_tokens_per_s=tokens / hf_step,
            hf_mfu=flops / hf_step / peak,
            speedup=hf_step / step,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
