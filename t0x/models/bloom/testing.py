"""Test helpers for the BLOOM family (library code so every test suite can reuse them).

Vocabulary:
  tiny config   float32, dropout-free, 2 layers, hidden 32, 4 heads, vocab 200 unless
                overridden (e.g. num_heads=6: a head count that is not a power of two).
  random HF     a transformers `BloomForCausalLM` whose every tensor is random, layer-norm
                scales and all biases included, so a wrong mapping cannot hide behind ones
                and zeros.

torch and transformers are imported lazily: only `random_hf_bloom` needs them.
"""

from __future__ import annotations

import numpy as np

from t0x.models.bloom.config import BloomConfig


def tiny_config(**overrides) -> BloomConfig:
    """A tiny float32 BLOOM for fast CPU tests."""
    fields = dict(vocab_size=200, hidden_size=32, num_layers=2, num_heads=4, dtype="float32")
    fields.update(overrides)
    return BloomConfig(**fields)


def random_hf_bloom(config: BloomConfig, seed: int = 0):
    """A randomly initialised transformers BloomForCausalLM in eval mode (float32)."""
    import torch
    import transformers

    from t0x.models.bloom.hf import config_to_hf

    hf_config = transformers.BloomConfig(**config_to_hf(config))
    torch.manual_seed(seed)
    model = transformers.BloomForCausalLM(hf_config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or name.startswith("transformer.ln_f"):
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.5 * (torch.rand(p.shape, generator=gen) - 0.5))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "word_embeddings" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:  # far above the 0.02 init: sharp attention, greedy outputs that vary
                p.copy_(0.6 * torch.randn(p.shape, generator=gen))
    return model.eval()


def hf_state_dict(model) -> dict[str, np.ndarray]:
    """A transformers model's state dict as float32 numpy arrays."""
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def random_tokens(
    batch: int, length: int, vocab_size: int, seed: int = 0, low: int = 0
) -> np.ndarray:
    """[batch, length] int32 tokens drawn uniformly from [low, vocab_size)."""
    return np.random.default_rng(seed).integers(low, vocab_size, (batch, length)).astype(np.int32)
