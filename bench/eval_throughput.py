"""Rank-classification throughput: t0x vs Hugging Face transformers (PyTorch), same pairs.

  python bench/eval_throughput.py [--config t5_1_1_small] [--batch 32] [--inputs 256] \
      [--targets 8] [--choices 2] [--steps 5] [--dtype float32|bfloat16] [--skip-hf]

One "example" is one input with all its answer choices scored (what a T0 evaluation row
costs). Both sides score the same random weights (T5 1.1 small by default) on the same
random full-length batch of `--batch` inputs x `--choices` choices:
  * t0x: `EncoderDecoderModel.score_choices` under jit (`t0x.rank_eval.make_score_fn`):
    each input is encoded once and its choices are decoded against the shared encoding;
  * HF:  t-zero's `run_eval.py` way: every input repeated once per choice, one
    `T5ForConditionalGeneration` forward with labels, masked log-softmax gathered and summed.
Times `--steps` batches after one warm-up batch (compilation excluded), checks that the two
sides' scores agree, and prints a last line of JSON:
{"t0x_examples_per_s", "hf_examples_per_s", "speedup", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def make_pairs(cfg, args):
    import numpy as np

    rng = np.random.default_rng(0)
    enc = rng.integers(2, cfg.vocab_size, (args.batch, args.inputs), dtype=np.int32)
    tgt = rng.integers(2, cfg.vocab_size, (args.batch, args.choices, args.targets), dtype=np.int32)
    tgt[..., -1] = 1  # EOS
    dec_in = np.concatenate([np.zeros_like(tgt[..., :1]), tgt[..., :-1]], axis=-1)
    return enc, dec_in, tgt, np.ones(tgt.shape, np.float32)


def time_steps(fn, steps: int) -> tuple[float, object]:
    out = fn()  # warm-up (compilation)
    t = time.perf_counter()
    for _ in range(steps):
        out = fn()
    return (time.perf_counter() - t) / steps, out


def run_t0x(cfg, params, arrays, steps):
    from t0x.eval import rank as rank_eval
    from t0x.jobs.infer import LoadedModel
    from t0x.models.t5.model import EncoderDecoderModel

    score = rank_eval.make_score_fn(LoadedModel(EncoderDecoderModel(cfg), params, cfg))
    return time_steps(lambda: score(*arrays), steps)


def run_hf(hf_model, arrays, steps):
    import numpy as np
    import torch

    enc, _, tgt, _ = arrays
    b, c, t = tgt.shape
    input_ids = torch.tensor(np.repeat(enc, c, axis=0), dtype=torch.long)
    attention = torch.ones_like(input_ids)
    labels = torch.tensor(tgt.reshape(b * c, t), dtype=torch.long)
    labels_mask = torch.ones_like(labels)

    def step():
        with torch.no_grad():
            logits = hf_model(input_ids=input_ids, attention_mask=attention, labels=labels).logits
            masked = labels_mask.unsqueeze(-1) * torch.log_softmax(logits, dim=-1)
            seq = torch.gather(masked, -1, labels.unsqueeze(-1)).squeeze(-1).sum(-1)
        return seq.view(b, c).numpy()

    return time_steps(step, steps)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="t5_1_1_small")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--inputs", type=int, default=256)
    p.add_argument("--targets", type=int, default=8)
    p.add_argument("--choices", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--skip-hf", action="store_true")
    args = p.parse_args(argv)

    import jax
    import numpy as np
    import torch
    import transformers
    from t0x.models.t5 import hf
    from t0x.models.t5.network import CONFIGS

    cfg = CONFIGS[args.config].replace(dtype=args.dtype, dropout_rate=0.0)
    torch.manual_seed(0)
    hf_model = transformers.T5ForConditionalGeneration(
        transformers.T5Config(**hf.config_to_hf(cfg))
    ).eval()
    params = hf.params_from_hf_state_dict(
        {k: v.numpy() for k, v in hf_model.state_dict().items()}, cfg
    )
    arrays = make_pairs(cfg, args)

    t0x_s, t0x_scores = run_t0x(cfg, params, arrays, args.steps)
    result = {
        "config": args.config,
        "batch": args.batch,
        "inputs": args.inputs,
        "targets": args.targets,
        "choices": args.choices,
        "steps": args.steps,
        "dtype": args.dtype,
        "device": jax.devices()[0].device_kind,
        "torch_threads": torch.get_num_threads(),
        "t0x_examples_per_s": args.batch / t0x_s,
    }
    if not args.skip_hf:
        hf_s, hf_scores = run_hf(hf_model, arrays, args.steps)
        result["hf_examples_per_s"] = args.batch / hf_s
        result["speedup"] = hf_s / t0x_s
        diff = float(np.max(np.abs(np.asarray(t0x_scores) - hf_scores)))
        result["max_abs_score_diff"] = diff
        if args.dtype == "float32" and diff > 1e-2 * max(1.0, float(np.max(np.abs(hf_scores)))):
            raise SystemExit(
                f"t0x and HF scores disagree (max abs diff {diff}); not a fair benchmark"
            )
    for k, v in result.items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
