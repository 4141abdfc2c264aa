"""T5 1.1 / mT5 hyperparameters: `T5Config` and the published sizes.

Vocabulary:
  emb_dim          width of the residual stream ("embed" axis).
  heads, head_dim  attention heads and their width; "joined_kv" is heads*head_dim.
  mlp_dim          width of the gated feed-forward hidden layer ("mlp" axis).
  presets          `t5_1_1_<size>` (T5 1.1 LM-adapted: vocabulary 32,128; T0), `mt5_<size>`
                   (mT5: vocabulary 250,112; mT0), `t5_1_1_tiny` = T5X's own tiny test model.
  hf_model_type    "t5" or "mt5": which transformers model a Hugging Face export names
                   (`T5ForConditionalGeneration` / `MT5ForConditionalGeneration`). It changes
                   no computation. Left unset (None) it is decided from the vocabulary:
                   "mt5" for mT5's 250,112 (`MT5_VOCAB_SIZE`), else "t5". A T5X checkpoint
                   (which names no model type) is therefore an mT5 exactly when its
                   embedding has 250,112 rows; a Hugging Face import keeps its `model_type`.
                   Decided once, at construction: `replace(vocab_size=...)` keeps it.

mT5 is the T5 1.1 architecture with a larger vocabulary: one config class serves both.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array

_DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32, "float16": jnp.float16}
_REMAT_POLICIES = ("none", "full")
_HF_MODEL_TYPES = ("t5", "mt5")
T5_VOCAB_SIZE = 32128  # cc_all.32000.100extra, padded to a multiple of 128
MT5_VOCAB_SIZE = 250112  # mc4.250000.100extra, padded to a multiple of 128


def activation_fn(name: str) -> Callable[[Array], Array]:
    if name == "linear":
        return lambda x: x
    if name == "gelu":  # tanh approximation: T5 1.1, HF "gelu_new"
        return functools.partial(nn.gelu, approximate=True)
    fn = getattr(nn, name, None)
    if not callable(fn):
        raise ValueError(
            f"Unknown MLP activation {name!r}: use 'gelu', 'relu', 'silu', "
            "'linear' or another flax.linen activation name."
        )
    return fn


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyperparameters of a T5 1.1 model (defaults: T5 1.1 small)."""

    vocab_size: int = T5_VOCAB_SIZE
    emb_dim: int = 512
    num_heads: int = 6
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    head_dim: int = 64
    mlp_dim: int = 1024
    mlp_activations: tuple[str, ...] = ("gelu", "linear")
    dropout_rate: float = 0.0
    dtype: str = "bfloat16"  # activations; parameters are always float32
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    logits_via_embedding: bool = False
    float32_attention_logits: bool = True
    remat_policy: str = "none"  # "none" | "full" (nn.remat around each layer)
    layer_norm_epsilon: float = 1e-6
    hf_model_type: str | None = None  # "t5" | "mt5"; None: from vocab_size (module doc)

    def __post_init__(self):
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
        if self.hf_model_type is None:
            mt5 = self.vocab_size == MT5_VOCAB_SIZE
            object.__setattr__(self, "hf_model_type", "mt5" if mt5 else "t5")
        if self.hf_model_type not in _HF_MODEL_TYPES:
            raise ValueError(
                f"T5Config.hf_model_type={self.hf_model_type!r}: use one of {_HF_MODEL_TYPES}."
            )
        if self.dtype not in _DTYPES:
            raise ValueError(f"T5Config.dtype={self.dtype!r}: use one of {sorted(_DTYPES)}.")
        if self.remat_policy not in _REMAT_POLICIES:
            raise ValueError(
                f"T5Config.remat_policy={self.remat_policy!r}: use one of {_REMAT_POLICIES}."
            )
        if not self.mlp_activations:
            raise ValueError("T5Config.mlp_activations is empty: use e.g. ('gelu', 'linear').")
        for act in self.mlp_activations:
            activation_fn(act)  # raises on an unknown name
        for name in (
            "vocab_size",
            "emb_dim",
            "num_heads",
            "head_dim",
            "mlp_dim",
            "relative_attention_num_buckets",
            "relative_attention_max_distance",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"T5Config.{name}={getattr(self, name)} must be positive.")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"T5Config.dropout_rate={self.dropout_rate} must be in [0, 1).")

    @property
    def activation_dtype(self):
        return _DTYPES[self.dtype]

    def replace(self, **changes) -> "T5Config":
        return dataclasses.replace(self, **changes)


def _preset(emb, heads, mlp, layers, head_dim=64, vocab_size=T5_VOCAB_SIZE) -> T5Config:
    return T5Config(
        vocab_size=vocab_size,
        emb_dim=emb,
        num_heads=heads,
        head_dim=head_dim,
        mlp_dim=mlp,
        num_encoder_layers=layers,
        num_decoder_layers=layers,
    )


CONFIGS: dict[str, T5Config] = {
    # T5X's own tiny T5 1.1 (t5x/examples/t5/t5_1_1/tiny.gin; its test checkpoints).
    "t5_1_1_tiny": _preset(8, 4, 16, 2, head_dim=3),
    "t5_1_1_small": _preset(512, 6, 1024, 8),
    "t5_1_1_base": _preset(768, 12, 2048, 12),
    "t5_1_1_large": _preset(1024, 16, 2816, 24),
    "t5_1_1_xl": _preset(2048, 32, 5120, 24),
    "t5_1_1_xxl": _preset(4096, 64, 10240, 24),
    # mT5 (T5X's t5x/examples/t5/mt5/*.gin): T5 1.1 with mT5's vocabulary.
    "mt5_small": _preset(512, 6, 1024, 8, vocab_size=MT5_VOCAB_SIZE),
    "mt5_base": _preset(768, 12, 2048, 12, vocab_size=MT5_VOCAB_SIZE),
    "mt5_large": _preset(1024, 16, 2816, 24, vocab_size=MT5_VOCAB_SIZE),
    "mt5_xl": _preset(2048, 32, 5120, 24, vocab_size=MT5_VOCAB_SIZE),
    "mt5_xxl": _preset(4096, 64, 10240, 24, vocab_size=MT5_VOCAB_SIZE),
}
