"""Hugging Face interop for BLOOM: BloomConfig <-> config.json, params <-> BloomForCausalLM.

Vocabulary:
  HF config     the dict of a transformers `BloomConfig` (`config.json`). BigScience's hub
                configs use legacy keys (`n_embed`, `num_attention_heads`, `n_layer`);
                transformers writes `hidden_size`, `n_layer`, `n_head`. Both are read.
  state dict    flat {name: numpy array} in transformers' naming. `BloomForCausalLM` names
                start with `transformer.`; BigScience's hub checkpoints were saved from
                `BloomModel` and have no prefix and no `lm_head.weight`. Both are read.
                torch Linear weights are [out, in]: kernels are their transposes.
  fused QKV     `self_attention.query_key_value.weight` [3H, H] is head-interleaved (head h's
                q, k, v are rows h*3d .. h*3d+3d), so t0x's kernel [H, heads, 3d] is its
                transpose reshaped, and its bias [3H] reshaped to [heads, 3d].

Invariants:
  - BLOOM ties the LM head to `word_embeddings`: an `lm_head.weight` that differs from the
    embedding is an error, never silently dropped. Export writes no `lm_head.weight`
    (transformers ties it) and `tie_word_embeddings: true`.
  - Nothing existing is overwritten unless `overwrite=True`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from t0x.checkpoints.hf_files import CONFIG_NAME, SAFE_WEIGHTS
from t0x.checkpoints.hf_files import load_state_dict as load_hf_state_dict
from t0x.models.bloom.config import BloomConfig
from t0x.models.bloom.network import abstract_params_with_axes

PREFIX = "transformer."
_ALIASES = {  # t0x field: HF keys, current first
    "hidden_size": ("hidden_size", "n_embed"),
    "num_layers": ("n_layer", "num_hidden_layers"),
    "num_heads": ("n_head", "num_attention_heads"),
}


# ---------------------------------------------------------------------------- config
def config_to_hf(config: BloomConfig) -> dict:
    """transformers BloomConfig dict (config.json) for a t0x BloomConfig."""
    return {
        "architectures": ["BloomForCausalLM"],
        "model_type": "bloom",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "hidden_dropout": config.dropout_rate,
        "attention_dropout": config.attention_dropout_rate,
        "apply_residual_connection_post_layernorm": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "slow_but_exact": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "unk_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": 3,
        "torch_dtype": "float32",
    }


def _lookup(hf_config: Mapping[str, Any], field: str):
    for key in _ALIASES[field]:
        if hf_config.get(key) is not None:
            return int(hf_config[key])
    raise ValueError(
        f"config.json has none of {_ALIASES[field]}: is it a BLOOM config? "
        "Add the missing size to config.json."
    )


def config_from_hf(hf_config: Mapping[str, Any], **overrides) -> BloomConfig:
    """t0x BloomConfig for a transformers BLOOM config dict (dtype etc. via overrides)."""
    model_type = hf_config.get("model_type", "bloom")
    if model_type != "bloom":
        raise ValueError(
            f"config.json has model_type={model_type!r}; this reader takes BLOOM checkpoints "
            "(model_type 'bloom') only."
        )
    if hf_config.get("apply_residual_connection_post_layernorm"):
        raise ValueError(
            "config.json sets apply_residual_connection_post_layernorm=true, a BLOOM variant "
            "t0x does not implement (BigScience's BLOOM models have false)."
        )
    fields = {name: _lookup(hf_config, name) for name in _ALIASES}
    inner = hf_config.get("n_inner")
    if inner is not None and inner != 4 * fields["hidden_size"]:
        raise ValueError(
            f"config.json has n_inner={inner}; BLOOM's feed-forward width is 4 * hidden_size "
            f"= {4 * fields['hidden_size']} (transformers ignores n_inner): fix config.json."
        )
    fields.update(
        vocab_size=int(hf_config.get("vocab_size", 250880)),
        layer_norm_epsilon=float(hf_config.get("layer_norm_epsilon", 1e-5)),
        dropout_rate=float(hf_config.get("hidden_dropout", 0.0)),
        attention_dropout_rate=float(hf_config.get("attention_dropout", 0.0)),
        eos_token_id=int(hf_config.get("eos_token_id", 2)),
    )
    fields.update(overrides)
    return BloomConfig(**fields)


# ---------------------------------------------------------------------- state dict
def name_map(config: BloomConfig) -> dict[str, tuple[str, ...]]:
    """HF tensor name (without `transformer.`) -> t0x param path, for every tensor."""
    out: dict[str, tuple[str, ...]] = {"word_embeddings.weight": ("word_embeddings", "embedding")}

    def norm(hf: str, path: tuple[str, ...]):
        out[f"{hf}.weight"] = path + ("scale",)
        out[f"{hf}.bias"] = path + ("bias",)

    def linear(hf: str, path: tuple[str, ...]):
        out[f"{hf}.weight"] = path + ("kernel",)
        out[f"{hf}.bias"] = path + ("bias",)

    norm("word_embeddings_layernorm", ("word_embeddings_layernorm",))
    for i in range(config.num_layers):
        hf, t0 = f"h.{i}", (f"h_{i}",)
        norm(f"{hf}.input_layernorm", t0 + ("input_layernorm",))
        linear(f"{hf}.self_attention.query_key_value", t0 + ("self_attention", "query_key_value"))
        linear(f"{hf}.self_attention.dense", t0 + ("self_attention", "dense"))
        norm(f"{hf}.post_attention_layernorm", t0 + ("post_attention_layernorm",))
        linear(f"{hf}.mlp.dense_h_to_4h", t0 + ("mlp", "dense_h_to_4h"))
        linear(f"{hf}.mlp.dense_4h_to_h", t0 + ("mlp", "dense_4h_to_h"))
    norm("ln_f", ("ln_f",))
    return out


def _to_t0x(name: str, x: np.ndarray, config: BloomConfig) -> np.ndarray:
    if name.endswith("query_key_value.weight"):  # [3H, H] -> [H, heads, 3d]
        return np.ascontiguousarray(x.T).reshape(x.shape[1], config.num_heads, -1)
    if name.endswith("query_key_value.bias"):  # [3H] -> [heads, 3d]
        return x.reshape(config.num_heads, -1)
    if name.endswith(".weight") and x.ndim == 2 and name != "word_embeddings.weight":
        return np.ascontiguousarray(x.T)
    return x


def _to_hf(name: str, x: np.ndarray) -> np.ndarray:
    if name.endswith("query_key_value.weight"):  # [H, heads, 3d] -> [3H, H]
        x = x.reshape(x.shape[0], -1)
    elif name.endswith("query_key_value.bias"):
        x = x.reshape(-1)
    if name.endswith(".weight") and x.ndim == 2 and name != "word_embeddings.weight":
        x = x.T
    return np.ascontiguousarray(x)


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def params_to_hf_state_dict(params, config: BloomConfig) -> dict[str, np.ndarray]:
    """t0x params -> `BloomForCausalLM` state dict (float32 numpy, `transformer.` names,
    no `lm_head.weight`: transformers ties it to the embedding)."""
    return {
        PREFIX + name: _to_hf(name, np.asarray(_get(params, path), dtype=np.float32))
        for name, path in name_map(config).items()
    }


def params_from_hf_state_dict(state_dict: Mapping[str, Any], config: BloomConfig) -> dict:
    """transformers BLOOM state dict (with or without `transformer.`) -> t0x params (float32)."""
    sd = {k[len(PREFIX) :] if k.startswith(PREFIX) else k: v for k, v in state_dict.items()}
    head = sd.pop("lm_head.weight", None)
    names = name_map(config)
    missing = [k for k in names if k not in sd]
    unexpected = sorted(k for k in sd if k not in names)
    if missing or unexpected:
        raise ValueError(
            f"The checkpoint does not match its BLOOM config: {len(missing)} tensors missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
            "check config.json's n_layer / hidden sizes."
        )
    params: dict = {}
    for name, path in names.items():
        _set(params, path, _to_t0x(name, np.asarray(sd[name], dtype=np.float32), config))
    if head is not None and not np.array_equal(
        np.asarray(head, dtype=np.float32), params["word_embeddings"]["embedding"]
    ):
        raise ValueError(
            "The checkpoint's lm_head.weight differs from word_embeddings.weight; BLOOM ties "
            "them by design and t0x has no separate head: use a tied checkpoint."
        )
    _check_shapes(params, config)
    return params


def _check_shapes(params, config: BloomConfig):
    shapes, _ = abstract_params_with_axes(config)
    want = {
        jax.tree_util.keystr(p): s.shape for p, s in jax.tree_util.tree_leaves_with_path(shapes)
    }
    got = {
        jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(params)
    }
    bad = sorted(k for k in want if got.get(k) != want[k])
    if bad:
        raise ValueError(
            f"Checkpoint tensors do not match the config: {bad[0]} has shape "
            f"{got.get(bad[0])}, expected {want[bad[0]]} ({len(bad)} mismatches); "
            "check config.json."
        )


# ------------------------------------------------------------------------------ files
def save_hf(path: str, params, config: BloomConfig, *, overwrite: bool = False) -> str:
    """Writes config.json + model.safetensors loadable by
    `transformers.BloomForCausalLM.from_pretrained(path)` (no missing/unexpected keys)."""
    from safetensors.numpy import save_file

    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is a file: choose a directory path.")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise FileExistsError(
            f"{path} exists and is not empty: choose a new directory or pass overwrite=True."
        )
    os.makedirs(path, exist_ok=True)
    tmp = os.path.join(path, SAFE_WEIGHTS + ".tmp")
    save_file(params_to_hf_state_dict(params, config), tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(path, SAFE_WEIGHTS))
    tmp = os.path.join(path, CONFIG_NAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump(config_to_hf(config), f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(path, CONFIG_NAME))
    return path


def load_hf(path: str, **config_overrides) -> tuple[dict, BloomConfig]:
    """(params, config) from a Hugging Face BLOOM folder: config.json plus model.safetensors,
    sharded safetensors (model.safetensors.index.json) or pytorch_model.bin."""
    config_file = os.path.join(path, CONFIG_NAME)
    if not os.path.exists(config_file):
        raise FileNotFoundError(
            f"{config_file} not found: is {path} a Hugging Face model directory?"
        )
    with open(config_file) as f:
        config = config_from_hf(json.load(f), **config_overrides)
    return params_from_hf_state_dict(load_hf_state_dict(path), config), config
