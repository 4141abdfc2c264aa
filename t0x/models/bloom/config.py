"""BLOOM hyperparameters and the published model sizes.

Vocabulary:
  hidden_size   width of the residual stream ("embed" axis), H.
  num_heads     attention heads; head_dim = H / num_heads; "joined_kv" is heads * head_dim = H.
  mlp_dim       width of the feed-forward hidden layer: always 4H in BLOOM.
  dropout_rate  hidden dropout (after the attention output and after the MLP, before the
                residual add); attention_dropout_rate drops attention probabilities.

Invariants:
  - Parameters are always float32; `dtype` is the activation dtype.
  - `PRESETS` are the BigScience BLOOM / BLOOMZ sizes (vocabulary 250,880, FFN = 4H).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

_DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}
_REMAT_POLICIES = ("none", "full")


@dataclasses.dataclass(frozen=True)
class BloomConfig:
    """Hyperparameters of a BLOOM model (defaults: bloom-560m)."""

    vocab_size: int = 250880
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    layer_norm_epsilon: float = 1e-5
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: str = "bfloat16"  # activations; parameters are always float32
    remat_policy: str = "none"  # "none" | "full" (nn.remat around each block)
    eos_token_id: int = 2  # BLOOM's </s>: ends generation; not scored in rank evaluation

    def __post_init__(self):
        if self.dtype not in _DTYPES:
            raise ValueError(f"BloomConfig.dtype={self.dtype!r}: use one of {sorted(_DTYPES)}.")
        if self.remat_policy not in _REMAT_POLICIES:
            raise ValueError(
                f"BloomConfig.remat_policy={self.remat_policy!r}: use one of {_REMAT_POLICIES}."
            )
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"BloomConfig.{name}={value!r} must be a positive integer.")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"BloomConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_heads={self.num_heads}: choose sizes with hidden_size = heads * head_dim."
            )
        for name in ("dropout_rate", "attention_dropout_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BloomConfig.{name}={getattr(self, name)} must be in [0, 1).")
        if not self.layer_norm_epsilon > 0.0:
            raise ValueError(
                f"BloomConfig.layer_norm_epsilon={self.layer_norm_epsilon} must be positive."
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_dim(self) -> int:
        return 4 * self.hidden_size

    @property
    def activation_dtype(self):
        return _DTYPES[self.dtype]

    def replace(self, **changes) -> "BloomConfig":
        return dataclasses.replace(self, **changes)


def _preset(hidden: int, layers: int, heads: int) -> BloomConfig:
    return BloomConfig(hidden_size=hidden, num_layers=layers, num_heads=heads)


PRESETS: dict[str, BloomConfig] = {
    "bloom_560m": _preset(1024, 24, 16),
    "bloom_1b1": _preset(1536, 24, 16),
    "bloom_1b7": _preset(2048, 24, 16),
    "bloom_3b": _preset(2560, 30, 32),
    "bloom_7b1": _preset(4096, 30, 32),
    "bloom_176b": _preset(14336, 70, 112),
}
