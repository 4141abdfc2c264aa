"""Hugging Face interop: T5Config <-> config.json, params <-> T5/MT5ForConditionalGeneration.

Vocabulary:
  HF config      the dict of a transformers `T5Config` (`config.json`).
  state dict     flat {name: numpy array} in transformers' T5ForConditionalGeneration
                 naming (`encoder.block.0.layer.0.SelfAttention.q.weight`, ...);
                 torch Linear weights are [out, in], so every kernel is transposed.
  tied / scaled  T5 1.0-style checkpoints share `shared.weight` with the LM head and
                 multiply the decoder output by d_model ** -0.5 first; T5 1.1 (and
                 T0) checkpoints have a distinct `lm_head.weight` and no scaling.

Choices:
  - Export always writes an untied checkpoint ("tie_word_embeddings": false plus an
    explicit `lm_head.weight`), because transformers 5.x ties the head to the input
    embedding unless the checkpoint holds a distinct `lm_head.weight`. (A config with
    `logits_via_embedding=True` is written tied, as T5X computes it.)
  - Import accepts tied checkpoints: their head is copied from `shared.weight` into
    `decoder/logits_dense/kernel` with the d_model ** -0.5 scale folded in, so every
    imported model has T5 1.1's untied parameter tree and identical outputs.
  - Feed-forward kinds: gated-gelu (T5 1.1, mT5, T0), gated-relu, gated-silu, relu
    (T5 1.0), silu. Others are rejected with a clear error.
  - Nothing existing is overwritten unless `overwrite=True`.
  - T5 or mT5: the two transformers models compute the same function from the same tensor
    names; only config.json differs. Export writes `model_type` "mt5" with
    `MT5ForConditionalGeneration` (and `tokenizer_class` "T5Tokenizer", as google/mt5-* and
    bigscience/mt0-* do) exactly when `T5Config.hf_model_type` is "mt5", else T5 as
    before. That field is the folder's `model_type` on import; when unset (presets, T5X
    checkpoints) it is "mt5" for mT5's vocabulary of 250,112 and "t5" otherwise (see
    t0x.models.t5.config). An mT5 export is always untied: transformers' MT5 never
    rescales the decoder output, so a tied (`logits_via_embedding`) config is refused.
  - Decoder-output scaling on import: transformers' T5 scales when `scale_decoder_outputs`
    (or, in files without it, `tie_word_embeddings` not false); transformers' MT5 (5.x)
    never scales, though its saved config.json says `tie_word_embeddings: true`.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from t0x.checkpoints import hf_files
from t0x.models.t5.config import T5Config


_FF_TO_ACTIVATIONS = {
    "gated-gelu": ("gelu", "linear"),
    "gated-relu": ("relu", "linear"),
    "gated-silu": ("silu", "linear"),
    "relu": ("relu",),
    "silu": ("silu",),
}
_ACTIVATIONS_TO_FF = {v: k for k, v in _FF_TO_ACTIVATIONS.items()}


_HF_CLASSES = {  # model_type -> (transformers config class, model class)
    "t5": ("T5Config", "T5ForConditionalGeneration"),
    "mt5": ("MT5Config", "MT5ForConditionalGeneration"),
}


def hf_classes(model_type: str):
    """(config class, model class) of transformers for `model_type` "t5" or "mt5"."""
    import transformers

    config_name, model_name = _HF_CLASSES[model_type]
    return getattr(transformers, config_name), getattr(transformers, model_name)


# ---------------------------------------------------------------------------- config
def config_to_hf(config: T5Config) -> dict:
    """transformers T5Config / MT5Config dict (config.json) for a t0x T5Config."""
    ff = _ACTIVATIONS_TO_FF.get(tuple(config.mlp_activations))
    if ff is None:
        raise ValueError(
            f"mlp_activations={config.mlp_activations} has no transformers "
            f"T5 equivalent: use one of {sorted(_ACTIVATIONS_TO_FF)}."
        )
    tied = bool(config.logits_via_embedding)
    if config.hf_model_type == "mt5":
        if tied:
            raise ValueError(
                "an mT5 export is untied (transformers' MT5 never rescales the decoder "
                "output): a logits_via_embedding config exports with hf_model_type='t5'."
            )
        return {**_common_hf_fields(config, ff, False), **_MT5_FIELDS}
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        **_common_hf_fields(config, ff, tied),
        "scale_decoder_outputs": tied,
    }


_MT5_FIELDS = {
    "architectures": ["MT5ForConditionalGeneration"],
    "model_type": "mt5",
    "tokenizer_class": "T5Tokenizer",
}


def _common_hf_fields(config: T5Config, ff: str, tied: bool) -> dict:
    return {
        "vocab_size": config.vocab_size,
        "d_model": config.emb_dim,
        "d_kv": config.head_dim,
        "d_ff": config.mlp_dim,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "num_heads": config.num_heads,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "feed_forward_proj": ff,
        "is_encoder_decoder": True,
        "tie_word_embeddings": tied,
        "use_cache": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "torch_dtype": "float32",
    }


def hf_scales_decoder_output(hf_config: Mapping[str, Any]) -> bool:
    """Whether transformers multiplies the decoder output by d_model ** -0.5."""
    if hf_config.get("model_type") == "mt5":  # MT5ForConditionalGeneration never does
        return False
    if "scale_decoder_outputs" in hf_config:  # written by transformers >= 5
        return bool(hf_config["scale_decoder_outputs"])
    return hf_config.get("tie_word_embeddings", True) is not False  # T5Config default


# transformers' T5Config / MT5Config defaults where they differ (for keys a config.json omits)
_HF_DEFAULTS = {
    "t5": {
        "vocab_size": 32128,
        "d_ff": 2048,
        "num_heads": 8,
        "num_layers": 6,
        "feed_forward_proj": "relu",
    },
    "mt5": {
        "vocab_size": 250112,
        "d_ff": 1024,
        "num_heads": 6,
        "num_layers": 8,
        "feed_forward_proj": "gated-gelu",
    },
}


def config_from_hf(hf_config: Mapping[str, Any], **overrides) -> T5Config:
    """t0x T5Config for a transformers T5/MT5 config dict (dtype etc. via overrides).

    Always untied (`logits_via_embedding=False`): see the module docstring.
    """
    model_type = hf_config.get("model_type", "t5")
    if model_type not in ("t5", "mt5"):
        raise ValueError(
            f"config.json has model_type={model_type!r}; t0x reads T5/mT5 "
            "encoder-decoder checkpoints only."
        )
    get = {**_HF_DEFAULTS[model_type], **hf_config}.get  # keys config.json may omit
    ff = get("feed_forward_proj")
    if ff not in _FF_TO_ACTIVATIONS:
        raise ValueError(
            f"feed_forward_proj={ff!r} is not supported (transformers' 'gelu' "
            f"is exact GELU, unlike T5's); supported: {sorted(_FF_TO_ACTIVATIONS)}."
        )
    num_layers = get("num_layers")
    fields = dict(
        vocab_size=get("vocab_size"),
        emb_dim=get("d_model", 512),
        head_dim=get("d_kv", 64),
        mlp_dim=get("d_ff"),
        num_heads=get("num_heads"),
        num_encoder_layers=num_layers,
        num_decoder_layers=get("num_decoder_layers") or num_layers,
        relative_attention_num_buckets=get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=get("relative_attention_max_distance", 128),
        dropout_rate=float(get("dropout_rate", 0.1)),
        layer_norm_epsilon=float(get("layer_norm_epsilon", 1e-6)),
        mlp_activations=_FF_TO_ACTIVATIONS[ff],
        logits_via_embedding=False,
        hf_model_type=model_type,
    )
    fields.update(overrides)
    return T5Config(**fields)


# ---------------------------------------------------------------------- state dict
def _layer_map(config: T5Config, stack: str, i: int) -> dict[str, tuple[str, ...]]:
    """HF name -> t0x param path for one layer (kernels are transposed)."""
    hf, t0 = f"{stack}.block.{i}.layer", (stack, f"layers_{i}")
    out: dict[str, tuple[str, ...]] = {}

    def attn(hf_prefix, t0_name):
        for p, n in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")):
            out[f"{hf_prefix}.{p}.weight"] = t0 + (t0_name, n, "kernel")

    def mlp(hf_prefix):
        acts = config.mlp_activations
        names = ["wi"] if len(acts) == 1 else [f"wi_{j}" for j in range(len(acts))]
        for n in names + ["wo"]:
            out[f"{hf_prefix}.{n}.weight"] = t0 + ("mlp", n, "kernel")

    if stack == "encoder":
        attn(f"{hf}.0.SelfAttention", "attention")
        out[f"{hf}.0.layer_norm.weight"] = t0 + ("pre_attention_layer_norm", "scale")
        mlp(f"{hf}.1.DenseReluDense")
        out[f"{hf}.1.layer_norm.weight"] = t0 + ("pre_mlp_layer_norm", "scale")
    else:
        attn(f"{hf}.0.SelfAttention", "self_attention")
        out[f"{hf}.0.layer_norm.weight"] = t0 + ("pre_self_attention_layer_norm", "scale")
        attn(f"{hf}.1.EncDecAttention", "encoder_decoder_attention")
        out[f"{hf}.1.layer_norm.weight"] = t0 + ("pre_cross_attention_layer_norm", "scale")
        mlp(f"{hf}.2.DenseReluDense")
        out[f"{hf}.2.layer_norm.weight"] = t0 + ("pre_mlp_layer_norm", "scale")
    return out


def name_map(config: T5Config) -> dict[str, tuple[str, ...]]:
    """Every HF tensor name except the embeddings/LM head -> t0x param path."""
    out: dict[str, tuple[str, ...]] = {}
    for stack, n, norm in (
        ("encoder", config.num_encoder_layers, "encoder_norm"),
        ("decoder", config.num_decoder_layers, "decoder_norm"),
    ):
        for i in range(n):
            out.update(_layer_map(config, stack, i))
        out[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
            stack,
            "relpos_bias",
            "rel_embedding",
        )
        out[f"{stack}.final_layer_norm.weight"] = (stack, norm, "scale")
    return out


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def params_to_hf_state_dict(params, config: T5Config) -> dict[str, np.ndarray]:
    """t0x params -> transformers state dict (float32, contiguous numpy arrays)."""

    def arr(path):
        return np.asarray(_get(params, path), dtype=np.float32)

    sd = {}
    for hf_name, path in name_map(config).items():
        x = arr(path)
        sd[hf_name] = np.ascontiguousarray(x if x.ndim == 1 else x.T)
    shared = np.ascontiguousarray(arr(("token_embedder", "embedding")))
    for name in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        sd[name] = shared
    if config.logits_via_embedding:
        sd["lm_head.weight"] = shared
    else:
        sd["lm_head.weight"] = np.ascontiguousarray(arr(("decoder", "logits_dense", "kernel")).T)
    return sd


def params_from_hf_state_dict(
    state_dict: Mapping[str, Any], config: T5Config, *, scale_decoder_output: bool = False
) -> dict:
    """transformers state dict -> t0x params (float32 numpy arrays).

    `scale_decoder_output`: the checkpoint's config makes transformers multiply the
    decoder output by d_model ** -0.5 (`hf_scales_decoder_output`); the factor is
    folded into the logits kernel. A missing `lm_head.weight` means tied to `shared`.
    """
    if config.logits_via_embedding:
        raise ValueError(
            "params_from_hf_state_dict builds untied params: pass a config "
            "with logits_via_embedding=False (config_from_hf gives one)."
        )
    sd = {k: v for k, v in state_dict.items()}
    missing = [k for k in name_map(config) if k not in sd]
    shared_key = next(
        (
            k
            for k in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
            if k in sd
        ),
        None,
    )
    if shared_key is None:
        missing.append("shared.weight")
    if missing:
        raise ValueError(
            f"The checkpoint lacks {len(missing)} tensors the config needs, e.g. "
            f"{missing[:3]}: its config.json does not match its weights."
        )

    def f32(x):
        return np.asarray(x, dtype=np.float32)

    params: dict = {}
    for hf_name, path in name_map(config).items():
        x = f32(sd[hf_name])
        _set(params, path, x if x.ndim == 1 else np.ascontiguousarray(x.T))
    shared = f32(sd[shared_key])
    _set(params, ("token_embedder", "embedding"), shared)
    head = f32(sd["lm_head.weight"]) if "lm_head.weight" in sd else shared
    if scale_decoder_output:
        head = head * np.float32(config.emb_dim**-0.5)
    _set(params, ("decoder", "logits_dense", "kernel"), np.ascontiguousarray(head.T))
    _check_shapes(params, config)
    return params


def _check_shapes(params, config: T5Config):
    from t0x.models.t5.model import EncoderDecoderModel  # local: keep import light

    shapes, _ = EncoderDecoderModel(config).abstract_params_with_axes(1, 1)
    want = {
        jax.tree_util.keystr(p): s.shape for p, s in jax.tree_util.tree_flatten_with_path(shapes)[0]
    }
    got = {
        jax.tree_util.keystr(p): np.shape(x)
        for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    bad = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    if bad or set(got) != set(want):
        k = next(iter(bad), None)
        raise ValueError(
            f"Checkpoint tensors do not match the config: {k} has shape "
            f"{bad.get(k, (None, None))[0]}, expected {bad.get(k, (None, None))[1]}"
            f" ({len(bad)} mismatches); check config.json."
        )


# ------------------------------------------------------------------------------ files
def save_hf(path: str, params, config: T5Config, *, overwrite: bool = False) -> str:
    """Writes config.json + model.safetensors loadable by
    `transformers.T5ForConditionalGeneration.from_pretrained(path)`, or by
    `MT5ForConditionalGeneration` for an mT5 (`config.hf_model_type == "mt5"`; module doc)."""
    hf_files.prepare_folder(path, overwrite)
    sd = params_to_hf_state_dict(params, config)
    if config.logits_via_embedding:
        sd.pop("lm_head.weight")
    for name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        sd.pop(name)  # tied to shared.weight in transformers; stored once
    hf_files.write_folder(path, sd, config_to_hf(config))
    return path


def load_hf(path: str, **config_overrides) -> tuple[dict, T5Config]:
    """(params, config) from a Hugging Face T5 or mT5 directory (config.json + weights)."""
    hf_config = hf_files.read_config(path)
    config = config_from_hf(hf_config, **config_overrides)
    params = params_from_hf_state_dict(
        hf_files.load_state_dict(path),
        config,
        scale_decoder_output=hf_scales_decoder_output(hf_config),
    )
    return params, config
