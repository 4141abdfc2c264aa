"""BLOOM decoder-only Transformer with ALiBi in Flax linen.

Vocabulary:
  H, heads, d    hidden size ("embed"), attention heads ("heads"), head_dim = H / heads ("kv").
  row            one sequence of the batch, [L] tokens; `segment_ids` (1, 2, ... per packed
                 example, 0 = padding) say which tokens belong together. Without segment ids
                 every token is real: BLOOM's token 0 is `<unk>`, not padding, so padding is
                 only ever said by segment id 0.
  positions      position of each token inside its own example; ALiBi adds
                 slope_h * (key position - query position) to the attention logits (the same
                 softmax as transformers' slope_h * key position). Defaults to row offsets,
                 which give the same biases as restarting positions for contiguous segments.
  branch ids     optional [B, L] ints for scoring several continuations of one prefix in one
                 row: 0 = trunk (seen by every later token of its segment), k > 0 = branch k
                 (seen only by later tokens of branch k). `pack_choices` builds such rows.
  decode mode    `decode=True`: the tokens (1 per call while generating, or a whole prompt
                 at once: prefill) are appended to the 'cache' collection at `cache_index`;
                 they attend to every valid cached token before them. The cache keeps each
                 stored token's position and validity (`cached_positions`, `cached_valid`),
                 so right- or left-padded prompts decode correctly: new tokens continue from
                 their row's last valid position (override with `positions`).

Parameter tree (transformers' BloomModel names; every Linear has a bias; float32):
  word_embeddings/embedding                          [V, H]          (vocab, embed)
  word_embeddings_layernorm/{scale,bias}             [H]             (embed)
  h_N/input_layernorm/{scale,bias}                   [H]             (embed)
  h_N/self_attention/query_key_value/kernel          [H, heads, 3d]  (embed, heads, kv)
  h_N/self_attention/query_key_value/bias            [heads, 3d]     (heads, kv)
  h_N/self_attention/dense/{kernel [H, H], bias [H]}                 (joined_kv, embed)
  h_N/post_attention_layernorm/{scale,bias}          [H]             (embed)
  h_N/mlp/dense_h_to_4h/{kernel [H, 4H], bias [4H]}                  (embed, mlp)
  h_N/mlp/dense_4h_to_h/{kernel [4H, H], bias [H]}                   (mlp, embed)
  ln_f/{scale,bias}                                  [H]             (embed)

Why the fused QKV kernel is 3-D: transformers' `query_key_value.weight` [3H, H] is
head-interleaved (rows h*3d .. h*3d+3d are head h's q, k, v), so its transpose [H, 3H]
reshapes to [H, heads, 3d] without moving data, and the "heads" axis is the one sharded on
the "model" mesh axis: every device holds the q, k and v of whole heads by construction (a
2-D [H, 3H] "joined_kv" kernel would only do so when 3H / model is a multiple of 3d).

Invariants:
  - Logits are tied to `word_embeddings` and float32; attention logits are accumulated in
    float32, scaled by 1/sqrt(d), softmax in float32; LayerNorm statistics in float32.
  - Parameters carry logical axis names (`nn.with_logical_partitioning`), activations logical
    constraints ("batch", "length", "embed", "heads", "kv", "mlp", "vocab"): t0x.partitioning's
    rules shard them; without rules they are no-ops.
  - Dropout as transformers: hidden dropout on the attention and MLP outputs before each
    residual add, attention dropout on the probabilities; none on the embeddings.
  - Packed examples never see each other (equal segment ids required), attention is causal
    in row order, padding is masked as key; a fully masked query gets finite garbage.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from t0x.models.bloom.config import BloomConfig
from t0x.models.matmul import project

Array = jax.Array
NEG_INF = -1.0e10  # additive attention bias of a masked position
_normal = nn.initializers.normal(stddev=0.02)  # transformers' BLOOM initializer_range


def _init(fn, axes):
    return nn.with_logical_partitioning(fn, axes)


def _constrain(x, axes):
    return nn.with_logical_constraint(x, axes)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """ALiBi slope of every head, float32 [num_heads] (BLOOM's formula for any head count)."""
    if num_heads <= 0:
        raise ValueError(f"alibi_slopes(num_heads={num_heads}): need at least one head.")
    cp = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = (2.0 ** (-8.0 / cp)) ** np.arange(1, cp + 1, dtype=np.float64)
    if cp != num_heads:
        extra = (2.0 ** (-8.0 / (2 * cp))) ** np.arange(1, 2 * (num_heads - cp), 2)
        slopes = np.concatenate([slopes, extra])
    return slopes.astype(np.float32)


# ----------------------------------------------------------------------------
# Building blocks.
# ----------------------------------------------------------------------------
class LayerNorm(nn.Module):
    """LayerNorm with scale and bias; statistics in float32."""

    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = (x.shape[-1],)
        scale = self.param("scale", _init(nn.initializers.ones, ("embed",)), features, jnp.float32)
        bias = self.param("bias", _init(nn.initializers.zeros, ("embed",)), features, jnp.float32)
        x = x.astype(jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
        return y.astype(self.dtype)


class Dense(nn.Module):
    """x [..., in] -> [..., *features]: float32 kernel [in, *features] and bias [*features]."""

    features: tuple[int, ...]
    kernel_axes: tuple[str, ...]
    dtype: Any = jnp.float32
    kernel_init: Callable = _normal

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (x.shape[-1],) + tuple(self.features)
        kernel = self.param("kernel", _init(self.kernel_init, self.kernel_axes), shape, jnp.float32)
        bias = self.param(
            "bias", _init(nn.initializers.zeros, self.kernel_axes[1:]), shape[1:], jnp.float32
        )
        return project(x, kernel, self.dtype) + bias.astype(self.dtype)


class Embed(nn.Module):
    """Token embedding [vocab, embed]; `attend` gives the tied float32 logits."""

    num_embeddings: int
    features: int
    dtype: Any = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding",
            _init(_normal, ("vocab", "embed")),
            (self.num_embeddings, self.features),
            jnp.float32,
        )

    def __call__(self, tokens: Array) -> Array:
        x = jnp.take(self.embedding, tokens.astype(jnp.int32), axis=0)
        return _constrain(x.astype(self.dtype), ("batch", "length", "embed"))

    def attend(self, x: Array) -> Array:
        table = self.embedding.astype(self.dtype)
        logits = jnp.dot(x.astype(self.dtype), table.T, preferred_element_type=jnp.float32)
        return _constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class SelfAttention(nn.Module):
    """Causal multi-head attention with ALiBi and the fused, head-interleaved QKV projection.

    `mask` (bool [B or 1, 1, Q, K]) selects visible keys; `rel` (int [B or 1, 1, Q, K]) is key
    position - query position. With `cache=(index, length)` this call's keys and values are
    written to the cache at `index` and the queries attend over all `length` cached slots.
    """

    config: BloomConfig

    @nn.compact
    def __call__(self, x, mask, rel, deterministic: bool, cache=None):
        cfg = self.config
        dtype, heads, d = cfg.activation_dtype, cfg.num_heads, cfg.head_dim
        qkv = Dense((heads, 3 * d), ("embed", "heads", "kv"), dtype, name="query_key_value")(x)
        qkv = _constrain(qkv, ("batch", "length", "heads", "kv"))
        query, key, value = jnp.split(qkv, 3, axis=-1)
        if cache is not None:
            key, value = self._update_cache(key, value, *cache)
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
        slopes = jnp.asarray(alibi_slopes(heads))[None, :, None, None]
        logits = logits * np.float32(1.0 / math.sqrt(d)) + slopes * rel.astype(jnp.float32)
        logits = jnp.where(mask, logits, jnp.float32(NEG_INF))
        weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
        weights = nn.Dropout(cfg.attention_dropout_rate)(weights, deterministic=deterministic)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, value.astype(dtype))
        out = _constrain(out, ("batch", "length", "heads", "kv"))
        out = out.reshape(out.shape[:2] + (heads * d,))
        return Dense((cfg.hidden_size,), ("joined_kv", "embed"), dtype, name="dense")(out)

    def _update_cache(self, key, value, index, length):
        batch, _, heads, d = key.shape
        shape, dtype = (batch, length, heads, d), self.config.activation_dtype
        cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, dtype)
        start = (0, index, 0, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key.astype(dtype), start)
        cached_value.value = jax.lax.dynamic_update_slice(
            cached_value.value, value.astype(dtype), start
        )
        return cached_key.value, cached_value.value


class Mlp(nn.Module):
    config: BloomConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        dtype = cfg.activation_dtype
        h = Dense((cfg.mlp_dim,), ("embed", "mlp"), dtype, name="dense_h_to_4h")(x)
        h = _constrain(nn.gelu(h, approximate=True), ("batch", "length", "mlp"))
        return Dense((cfg.hidden_size,), ("mlp", "embed"), dtype, name="dense_4h_to_h")(h)


class Block(nn.Module):
    """Pre-LN block: x + attn(ln(x)), then x + mlp(ln(x)) (hidden dropout before each add)."""

    config: BloomConfig

    @nn.compact
    def __call__(self, x, mask, rel, deterministic: bool, cache=None):
        cfg = self.config
        norm = functools.partial(LayerNorm, cfg.layer_norm_epsilon, cfg.activation_dtype)
        dropout = nn.Dropout(cfg.dropout_rate)
        h = norm(name="input_layernorm")(x)
        h = SelfAttention(cfg, name="self_attention")(h, mask, rel, deterministic, cache)
        x = x + dropout(h, deterministic=deterministic)
        h = Mlp(cfg, name="mlp")(norm(name="post_attention_layernorm")(x))
        x = x + dropout(h, deterministic=deterministic)
        return _constrain(x, ("batch", "length", "embed"))


# ----------------------------------------------------------------------------
# Masks and positions.
# ----------------------------------------------------------------------------
def causal_attention_mask(
    length: int, segment_ids: Optional[Array] = None, branch_ids: Optional[Array] = None
) -> Array:
    """Visible keys, bool [B or 1, 1, L, L]: key index <= query index, same segment (and
    not padding), and the key is trunk (branch 0) or on the query's own branch."""
    idx = jnp.arange(length)
    mask = (idx[None, :] <= idx[:, None])[None, None]
    if segment_ids is not None:
        q, k = segment_ids[:, None, :, None], segment_ids[:, None, None, :]
        mask = mask & (q == k) & (k > 0)
    if branch_ids is not None:
        q, k = branch_ids[:, None, :, None], branch_ids[:, None, None, :]
        mask = mask & ((k == 0) | (k == q))
    return mask


def relative_positions(query_positions: Array, key_positions: Array) -> Array:
    """Key position - query position, int32 [B, 1, Q, K] (what ALiBi multiplies)."""
    rel = key_positions[:, None, None, :] - query_positions[:, None, :, None]
    return rel.astype(jnp.int32)


# ----------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------
class Bloom(nn.Module):
    """BLOOM causal LM; `__call__` returns float32 logits [B, L, vocab] (see module doc)."""

    config: BloomConfig

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        segment_ids: Optional[Array] = None,
        positions: Optional[Array] = None,
        branch_ids: Optional[Array] = None,
        *,
        enable_dropout: bool = False,
        decode: bool = False,
        max_decode_length: Optional[int] = None,
    ) -> Array:
        cfg = self.config
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}.")
        length = tokens.shape[1]
        deterministic = not enable_dropout
        embed = Embed(cfg.vocab_size, cfg.hidden_size, cfg.activation_dtype, name="word_embeddings")
        norm = functools.partial(LayerNorm, cfg.layer_norm_epsilon, cfg.activation_dtype)
        x = norm(name="word_embeddings_layernorm")(embed(tokens))
        if decode:
            if branch_ids is not None:
                raise ValueError("branch_ids are for scoring rows; decode rows have no branches.")
            mask, rel, cache = self._decode_inputs(
                tokens, segment_ids, positions, max_decode_length
            )
        else:
            if branch_ids is not None and positions is None:
                raise ValueError(
                    "branch_ids need explicit positions (branches restart where the trunk "
                    "ends): build the row with pack_choices."
                )
            if positions is None:
                positions = jnp.arange(length, dtype=jnp.int32)[None, :]
            mask = causal_attention_mask(length, segment_ids, branch_ids)
            rel, cache = relative_positions(positions, positions), None
        remat = cfg.remat_policy == "full" and not decode
        block_cls = nn.remat(Block, static_argnums=(4,)) if remat else Block
        for i in range(cfg.num_layers):
            block = block_cls(cfg, name=f"h_{i}")
            x = (
                block(x, mask, rel, deterministic)
                if cache is None
                else block(x, mask, rel, deterministic, cache)
            )
        return embed.attend(norm(name="ln_f")(x))

    def _decode_inputs(self, tokens, segment_ids, positions, max_decode_length):
        """Appends this call's positions/validity to the cache; (mask, rel, (index, length))."""
        batch, length = tokens.shape
        exists = self.has_variable("cache", "cache_index")
        size = max_decode_length or length
        index_var = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        pos_var = self.variable("cache", "cached_positions", jnp.zeros, (batch, size), jnp.int32)
        valid_var = self.variable("cache", "cached_valid", jnp.zeros, (batch, size), jnp.bool_)
        cache_len = pos_var.value.shape[1]
        if exists and max_decode_length and max_decode_length != cache_len:
            raise ValueError(
                f"max_decode_length={max_decode_length} but the cache holds {cache_len} "
                "positions: pass the length the cache was made with (or None)."
            )
        if length > cache_len:
            raise ValueError(f"{length} tokens do not fit a decoding cache of {cache_len}.")
        valid = jnp.ones((batch, length), bool) if segment_ids is None else segment_ids > 0
        index = index_var.value
        if positions is None:  # continue after each row's last valid cached position
            last = jnp.max(jnp.where(valid_var.value, pos_var.value, -1), axis=1)
            positions = last[:, None] + jnp.cumsum(valid, axis=1, dtype=jnp.int32)
        positions = jnp.broadcast_to(positions, (batch, length)).astype(jnp.int32)
        pos_var.value = jax.lax.dynamic_update_slice(pos_var.value, positions, (0, index))
        valid_var.value = jax.lax.dynamic_update_slice(valid_var.value, valid, (0, index))
        index_var.value = index + length
        query_index = index + jnp.arange(length)
        mask = jnp.arange(cache_len)[None, :] <= query_index[:, None]
        mask = mask[None, None] & valid_var.value[:, None, None, :]
        rel = relative_positions(positions, pos_var.value)
        return mask, rel, (index, cache_len)


# ----------------------------------------------------------------------------
# Parameters and caches.
# ----------------------------------------------------------------------------
def _init_boxed(config: BloomConfig, rng):
    return Bloom(config).init(rng, jnp.ones((1, 1), jnp.int32))["params"]


def init_params(config: BloomConfig, rng: jax.Array):
    """Random float32 parameters (plain arrays)."""
    boxed = jax.jit(functools.partial(_init_boxed, config))(rng)
    return nn.meta.unbox(boxed)


def abstract_params_with_axes(config: BloomConfig):
    """(params as jax.ShapeDtypeStruct tree, matching logical PartitionSpecs); no allocation."""
    from t0x.models import abstract

    return abstract.abstract_params_with_axes(functools.partial(_init_boxed, config))


def init_cache(config: BloomConfig, batch_size: int, max_decode_length: int):
    """Empty decoding cache for `batch_size` rows of up to `max_decode_length` tokens.

    Use it as `apply({"params": p, "cache": cache}, tokens, segment_ids, decode=True,
    mutable=["cache"])`: the first call may hold a whole (padded) prompt (prefill), later
    calls one token each. Leaves are [batch, ...] except the scalar `cache_index`, so
    `t0x.decoding.gather_beams` reorders beams. Size it for prompt + generated tokens: the
    index is traced, so writing past the end cannot raise (XLA clamps the write).
    """

    def make():
        tokens = jnp.ones((batch_size, 1), jnp.int32)
        variables = Bloom(config).init(
            jax.random.key(0), tokens, decode=True, max_decode_length=max_decode_length
        )
        return variables["cache"]

    shapes = jax.eval_shape(make)
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


# ----------------------------------------------------------------------------
# Several answer choices of one prompt in one row (rank classification).
# ----------------------------------------------------------------------------
def pack_choices(
    prompt_tokens: Array, prompt_mask: Array, choice_tokens: Array, choice_mask: Array
) -> dict[str, Array]:
    """Row = [prompt block (P), choice 1 block (T), ..., choice C block (T)].

    prompt_tokens/prompt_mask [B, P] and choice_tokens/choice_mask [B, C, T] (mask: True for
    real tokens; the prompt must have at least one). Choice tokens see the whole prompt and
    the earlier tokens of their own choice only (branch c + 1), and their positions continue
    from the prompt's true length: every choice is scored as if it followed the prompt alone.
    Returns the network inputs `tokens`, `segment_ids` (1 real, 0 padding), `branch_ids`,
    `positions` ([B, P + C*T] each) and `predictor_index` [B, C, T]: the row index whose
    logits predict each choice token (the prompt's last real token for a choice's first).
    """
    batch, plen = prompt_tokens.shape
    _, num_choices, clen = choice_tokens.shape
    prompt_mask, choice_mask = prompt_mask.astype(bool), choice_mask.astype(bool)
    prompt_len = jnp.sum(prompt_mask, axis=1, dtype=jnp.int32)
    prompt_pos = jnp.cumsum(prompt_mask, axis=1, dtype=jnp.int32) - 1
    choice_pos = prompt_len[:, None, None] + jnp.cumsum(choice_mask, axis=2, dtype=jnp.int32) - 1
    valid = jnp.concatenate([prompt_mask, choice_mask.reshape(batch, -1)], axis=1)
    branches = jnp.repeat(jnp.arange(1, num_choices + 1, dtype=jnp.int32), clen)
    branch_ids = jnp.concatenate(
        [jnp.zeros((batch, plen), jnp.int32), jnp.broadcast_to(branches, (batch, branches.size))],
        axis=1,
    )
    positions = jnp.concatenate([prompt_pos, choice_pos.reshape(batch, -1)], axis=1)
    row_index = plen + jnp.arange(num_choices * clen, dtype=jnp.int32).reshape(num_choices, clen)
    last_real = jax.lax.cummax(jnp.where(choice_mask, row_index, -1), axis=2)
    before = jnp.concatenate(
        [jnp.full((batch, num_choices, 1), -1, jnp.int32), last_real[:, :, :-1]], axis=2
    )
    prompt_last = jnp.max(jnp.where(prompt_mask, jnp.arange(plen), -1), axis=1)
    return {
        "tokens": jnp.concatenate([prompt_tokens, choice_tokens.reshape(batch, -1)], axis=1).astype(
            jnp.int32
        ),
        "segment_ids": valid.astype(jnp.int32),
        "branch_ids": branch_ids,
        "positions": jnp.where(valid, positions, 0),
        "predictor_index": jnp.where(before >= 0, before, prompt_last[:, None, None]),
    }


def choice_log_likelihoods(
    logits: Array, predictor_index: Array, choice_tokens: Array, choice_mask: Array
) -> Array:
    """Summed log-likelihood of every choice, float32 [B, C], from the logits [B, R, V] of a
    `pack_choices` row (only the rows that predict choice tokens are normalised)."""
    batch, num_choices, clen = choice_tokens.shape
    index = predictor_index.reshape(batch, -1)
    rows = logits[jnp.arange(batch)[:, None], index].astype(jnp.float32)  # [B, C*T, V]
    log_probs = jax.nn.log_softmax(rows, axis=-1)
    targets = choice_tokens.reshape(batch, -1, 1).astype(jnp.int32)
    token_ll = jnp.take_along_axis(log_probs, targets, axis=-1)[..., 0]
    token_ll = jnp.where(choice_mask.reshape(batch, -1), token_ll, 0.0)
    return token_ll.reshape(batch, num_choices, clen).sum(axis=-1)
