"""T5 1.1 encoder-decoder Transformer in Flax linen.

Vocabulary:
  emb_dim          width of the residual stream ("embed" axis).
  heads, head_dim  attention heads and their width; "joined_kv" is heads*head_dim.
  mlp_dim          width of the feed-forward hidden layer ("mlp" axis).
  segment ids      1, 2, ... mark the examples packed into one row; 0 is padding.
  positions        position of each token inside its own packed example (accepted
                   for seqio/T5X batches; relative offsets inside a segment equal
                   offsets in the row, so the bias is computed from row positions).
  decode mode      one decoder token per call, keys/values kept in the 'cache'
                   collection (`cached_key`, `cached_value`, `cache_index` per
                   self-attention layer).

Invariants:
  - The parameter tree is T5X's minimal T5 (t5x/examples/t5/network.py): the
    same module names, 2-D kernels with the same shapes ([embed, joined_kv] for
    query/key/value, [joined_kv, embed] for out, [embed, mlp] / [mlp, embed]
    for the MLP, [heads, relpos_buckets] relative biases, [embed, vocab]
    logits), so T5X checkpoints load without renaming.
  - Parameters are float32 and carry logical axis names
    (`nn.with_logical_partitioning`); activations run in `config.dtype` and
    carry logical constraints ('batch', 'length', 'embed', 'heads', 'kv',
    'mlp', 'vocab'), which are no-ops unless logical axis rules are set.
    Logits are float32.
  - Attention logits are not scaled by 1/sqrt(head_dim): as in T5, the factor
    is folded into the query initializer.
  - Packed examples never see each other: every attention mask requires equal
    segment ids (with decoder segment ids alone, several targets share one
    unpacked input: each target sees only itself and the whole input); relative offsets within a segment are the row offsets, so one
    [1, heads, L, L] bias serves every row (as T5X).
    Padding (token id 0) is masked as key and as query.
  - One relative-position bias table per stack, computed once per call and
    shared by all layers of the stack; the encoder's is bidirectional, the
    decoder's causal.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from t0x.models.matmul import project
from t0x.models.t5.config import CONFIGS, T5Config, activation_fn  # noqa: F401 (re-exported)

NEG_INF = -1.0e10  # additive attention bias of a masked position (as T5X)

Array = jax.Array


def _init(fn, axes):
    return nn.with_logical_partitioning(fn, axes)


def _constrain(x, axes):
    return nn.with_logical_constraint(x, axes)


# ----------------------------------------------------------------------------
# Building blocks.
# ----------------------------------------------------------------------------
class Dense(nn.Module):
    """Bias-free projection of the last axis with a 2-D float32 kernel, computed in `dtype`
    with float32 accumulation (t0x.models.matmul)."""

    features: int
    kernel_axes: tuple[str, str]
    dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param(
            "kernel",
            _init(self.kernel_init, self.kernel_axes),
            (x.shape[-1], self.features),
            jnp.float32,
        )
        return project(x, kernel, self.dtype)


class RMSNorm(nn.Module):
    """T5 layer norm: no mean subtraction, no bias; statistics in float32."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param(
            "scale", _init(nn.initializers.ones, ("embed",)), (x.shape[-1],), jnp.float32
        )
        x = x.astype(jnp.float32)
        y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
        return y.astype(self.dtype) * scale.astype(self.dtype)


class Embed(nn.Module):
    """Token embedding table [vocab, embed]; `attend` gives tied logits."""

    num_embeddings: int
    features: int
    dtype: Any = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding",
            _init(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
            (self.num_embeddings, self.features),
            jnp.float32,
        )

    def __call__(self, tokens: Array) -> Array:
        x = jnp.take(self.embedding, tokens.astype(jnp.int32), axis=0)
        return _constrain(x.astype(self.dtype), ("batch", "length", "embed"))

    def attend(self, x: Array) -> Array:
        return jnp.dot(x.astype(jnp.float32), self.embedding.T)


def relative_position_bucket_table(
    bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """Bucket of each distance 0..max_distance (larger distances share the last).

    Same rule as T5 / T5X / HF: half of the buckets (per direction) are exact
    distances, the rest grow logarithmically up to `max_distance`.
    """
    n_buckets = num_buckets // 2 if bidirectional else num_buckets
    max_exact = n_buckets // 2
    dist = np.arange(max_distance + 1)
    with np.errstate(divide="ignore"):
        log_ratio = np.log(dist.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
    large = max_exact + (
        log_ratio / np.log(max_distance / max_exact) * (n_buckets - max_exact)
    ).astype(np.int32)
    large = np.minimum(large, n_buckets - 1)
    return np.where(dist < max_exact, dist, large).astype(np.int32)


def relative_position_buckets(
    relative_position: Array, bidirectional: bool, num_buckets: int, max_distance: int
) -> Array:
    """Buckets of `relative_position` = key position - query position."""
    table = jnp.asarray(relative_position_bucket_table(bidirectional, num_buckets, max_distance))
    if bidirectional:
        offset = jnp.where(relative_position > 0, num_buckets // 2, 0)
        dist = jnp.abs(relative_position)
    else:
        offset = 0
        dist = jnp.maximum(-relative_position, 0)
    return offset + table[jnp.minimum(dist, max_distance)]


def _data_shards(batch: int) -> int:
    """The mesh's data-parallel size when the batch splits evenly over it, else 1."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or "data" not in mesh.axis_names:
        return 1
    shards = mesh.shape["data"]
    return shards if batch % shards == 0 else 1


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _batch_bias(table: Array, buckets: Array, batch: int, dtype) -> Array:
    """[batch, heads, q, k] = table[:, buckets] for every row (forward: a broadcast).

    Its gradient is reduced into the [heads, buckets] table on each data shard before
    anything crosses devices (see `_batch_bias_bwd`), so the data-parallel all-reduce moves
    the table's few kB, not a [heads, q, k] tensor per microbatch.
    """
    bias = jnp.transpose(jnp.take(table.T.astype(dtype), buckets, axis=0), (2, 0, 1))
    return jnp.broadcast_to(bias[None], (batch,) + bias.shape)


def _batch_bias_fwd(table, buckets, batch, dtype):
    return _batch_bias(table, buckets, batch, dtype), (table, buckets)


def _batch_bias_bwd(batch, dtype, residuals, g):
    table, buckets = residuals
    heads, num_buckets = table.shape
    shards = _data_shards(batch)
    # per data shard: sum its own rows (local), then scatter-add into the table (local)
    g = g.astype(jnp.float32).reshape((shards, batch // shards) + g.shape[1:]).sum(axis=1)
    if shards > 1:
        free = jax.sharding.PartitionSpec.UNCONSTRAINED
        g = jax.lax.with_sharding_constraint(
            g, jax.sharding.PartitionSpec("data", free, free, free)
        )
    flat = g.reshape(shards, heads, -1)
    per_shard = jax.vmap(
        lambda x: jax.ops.segment_sum(x.T, buckets.reshape(-1), num_segments=num_buckets).T
    )(flat)
    return per_shard.sum(axis=0).astype(table.dtype), None


_batch_bias.defvjp(_batch_bias_fwd, _batch_bias_bwd)


class RelativePositionBiases(nn.Module):
    """T5 relative position biases: [batch or 1, heads, q_len, k_len]."""

    num_buckets: int
    max_distance: int
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, q_positions: Array, k_positions: Array, bidirectional: bool, batch: int | None = None
    ) -> Array:
        """Positions [1, len]; `batch`: return the bias for that many rows (training: the
        gradient then stays on its data shard until it is a table gradient), else [1, ...]."""
        table = self.param(
            "rel_embedding",
            _init(
                nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                ("heads", "relpos_buckets"),
            ),
            (self.num_heads, self.num_buckets),
            jnp.float32,
        )
        rel = k_positions[:, None, :] - q_positions[:, :, None]  # [1, q, k]
        buckets = relative_position_buckets(rel, bidirectional, self.num_buckets, self.max_distance)
        if batch is not None and rel.shape[0] == 1:
            return _batch_bias(table, buckets[0], batch, self.dtype)
        bias = jnp.take(table.T.astype(self.dtype), buckets, axis=0)  # [b, q, k, heads]
        return jnp.transpose(bias, (0, 3, 1, 2))


def _dropout(cfg: "T5Config", x: Array, deterministic: bool, broadcast: bool = True) -> Array:
    return nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,) if broadcast else ())(
        x, deterministic=deterministic
    )


class MultiHeadAttention(nn.Module):
    """T5 multi-head dot-product attention with an optional decoding cache.

    `mask` (bool, [batch, 1, q, k]) selects visible keys; `bias` ([b, heads, q, k]) is
    added to the logits (relative positions). In decode mode `bias` covers all
    `max_decode_length` query positions and the row of the current step is used.
    """

    config: "T5Config"

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        mask: Optional[Array],
        bias: Optional[Array] = None,
        *,
        deterministic: bool = True,
        decode: bool = False,
    ) -> Array:
        cfg = self.config
        dtype = cfg.activation_dtype
        joined = cfg.num_heads * cfg.head_dim
        kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")

        def query_init(*args):  # T5: 1/sqrt(head_dim) lives in the query init
            return kernel_init(*args) / np.sqrt(cfg.head_dim).astype(np.float32)

        def project(name, init, x):
            y = Dense(joined, ("embed", "joined_kv"), dtype, init, name=name)(x)
            y = y.reshape(y.shape[:-1] + (cfg.num_heads, cfg.head_dim))
            return _constrain(y, ("batch", "length", "heads", "kv"))

        query = project("query", query_init, inputs_q)
        key = project("key", kernel_init, inputs_kv)
        value = project("value", kernel_init, inputs_kv)

        if decode:
            key, value, mask, bias = self._use_cache(key, value, mask, bias)

        if cfg.float32_attention_logits:
            query, key = query.astype(jnp.float32), key.astype(jnp.float32)
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key)
        if bias is not None:
            logits = logits + bias.astype(logits.dtype)
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.asarray(NEG_INF, logits.dtype))
        weights = jax.nn.softmax(logits.astype(jnp.float32)).astype(dtype)
        if not deterministic and cfg.dropout_rate > 0.0:
            # one dropout pattern for all queries (broadcast over the query axis)
            keep = jax.random.bernoulli(
                self.make_rng("dropout"),
                1.0 - cfg.dropout_rate,
                weights.shape[:2] + (1,) + weights.shape[3:],
            )
            weights = weights * (keep.astype(dtype) / jnp.asarray(1.0 - cfg.dropout_rate, dtype))
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        out = out.reshape(out.shape[:-2] + (joined,))
        return Dense(inputs_q.shape[-1], ("joined_kv", "embed"), dtype, kernel_init, name="out")(
            out
        )

    def _use_cache(self, key, value, mask, bias):
        """Decode mode: store this step's key/value and attend to steps so far."""
        initialized = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32))
        if not initialized:  # the call that creates the cache: plain attention
            return key, value, mask, bias
        batch, length, heads, head_dim = cached_key.value.shape
        if key.shape != (batch, 1, heads, head_dim):
            raise ValueError(
                f"Decoding feeds one token per call: got keys {key.shape} "
                f"for a cache of {cached_key.value.shape}."
            )
        index = cache_index.value
        key = jax.lax.dynamic_update_slice(cached_key.value, key, (0, index, 0, 0))
        value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, index, 0, 0))
        cached_key.value, cached_value.value = key, value
        cache_index.value = index + 1
        if bias is not None and bias.shape[-1] != length:
            raise ValueError(
                f"Decoder relative-position bias covers {bias.shape[-1]} positions "
                f"but the cache holds {length}: pass max_decode_length={length} "
                "to Transformer.decode in decode mode."
            )
        step_mask = (jnp.arange(length) <= index)[None, None, None, :]
        mask = step_mask if mask is None else jnp.logical_and(mask, step_mask)
        if bias is not None:
            bias = jax.lax.dynamic_slice_in_dim(bias, index, 1, axis=2)
        return key, value, mask, bias


class MlpBlock(nn.Module):
    """Gated feed-forward block: prod_i act_i(x W_i) then W_o."""

    config: "T5Config"

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        dtype = cfg.activation_dtype
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
        acts = cfg.mlp_activations
        hidden = None
        for i, act in enumerate(acts):
            name = "wi" if len(acts) == 1 else f"wi_{i}"
            h = activation_fn(act)(Dense(cfg.mlp_dim, ("embed", "mlp"), dtype, init, name=name)(x))
            hidden = h if hidden is None else hidden * h
        hidden = _dropout(cfg, hidden, deterministic)
        hidden = _constrain(hidden, ("batch", "length", "mlp"))
        return Dense(x.shape[-1], ("mlp", "embed"), dtype, init, name="wo")(hidden)


# ----------------------------------------------------------------------------
# Layers and stacks.
# ----------------------------------------------------------------------------
class EncoderLayer(nn.Module):
    config: "T5Config"

    @nn.compact
    def __call__(self, x, mask, bias, deterministic):
        cfg = self.config
        norm = functools.partial(RMSNorm, cfg.layer_norm_epsilon, cfg.activation_dtype)
        h = norm(name="pre_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg, name="attention")(h, h, mask, bias, deterministic=deterministic)
        x = x + _dropout(cfg, h, deterministic)
        h = norm(name="pre_mlp_layer_norm")(x)
        h = MlpBlock(cfg, name="mlp")(h, deterministic)
        x = x + _dropout(cfg, h, deterministic)
        return _constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    config: "T5Config"

    @nn.compact
    def __call__(self, x, encoded, self_mask, self_bias, cross_mask, deterministic, decode):
        cfg = self.config
        norm = functools.partial(RMSNorm, cfg.layer_norm_epsilon, cfg.activation_dtype)
        h = norm(name="pre_self_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg, name="self_attention")(
            h, h, self_mask, self_bias, deterministic=deterministic, decode=decode
        )
        x = x + _dropout(cfg, h, deterministic)
        h = norm(name="pre_cross_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg, name="encoder_decoder_attention")(
            h, encoded, cross_mask, None, deterministic=deterministic
        )
        x = x + _dropout(cfg, h, deterministic)
        h = norm(name="pre_mlp_layer_norm")(x)
        h = MlpBlock(cfg, name="mlp")(h, deterministic)
        x = x + _dropout(cfg, h, deterministic)
        return _constrain(x, ("batch", "length", "embed"))


def _relpos(cfg: "T5Config") -> RelativePositionBiases:
    return RelativePositionBiases(
        cfg.relative_attention_num_buckets,
        cfg.relative_attention_max_distance,
        cfg.num_heads,
        cfg.activation_dtype,
        name="relpos_bias",
    )


def _row_positions(length: int) -> Array:
    """Positions 0..length-1 shared by every row: the relative-position bias is [1, H, L, L].

    Packed rows need no per-example positions here: within a segment, offsets in the row
    equal offsets in the example, and attention across segments is masked out (as T5X).
    """
    return jnp.arange(length, dtype=jnp.int32)[None, :]


class Encoder(nn.Module):
    config: "T5Config"
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, tokens, mask, positions=None, deterministic=True):
        cfg = self.config
        del positions  # see _row_positions
        pos = _row_positions(tokens.shape[1])
        bias = _relpos(cfg)(pos, pos, True, batch=tokens.shape[0])
        x = _dropout(cfg, self.shared_embedding(tokens), deterministic)
        layer_cls = (
            nn.remat(EncoderLayer, static_argnums=(4,))
            if cfg.remat_policy == "full"
            else EncoderLayer
        )
        for i in range(cfg.num_encoder_layers):
            x = layer_cls(cfg, name=f"layers_{i}")(x, mask, bias, deterministic)
        x = RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, name="encoder_norm")(x)
        return _dropout(cfg, x, deterministic, broadcast=False)


class Decoder(nn.Module):
    config: "T5Config"
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        encoded,
        tokens,
        self_mask,
        cross_mask,
        positions=None,
        deterministic=True,
        decode=False,
        max_decode_length=None,
    ):
        cfg = self.config
        length = max_decode_length if decode and max_decode_length else tokens.shape[1]
        del positions  # see _row_positions
        pos = _row_positions(length)
        bias = _relpos(cfg)(pos, pos, False, batch=None if decode else tokens.shape[0])
        y = _dropout(cfg, self.shared_embedding(tokens), deterministic)
        use_remat = cfg.remat_policy == "full" and not decode
        layer_cls = nn.remat(DecoderLayer, static_argnums=(6, 7)) if use_remat else DecoderLayer
        for i in range(cfg.num_decoder_layers):
            y = layer_cls(cfg, name=f"layers_{i}")(
                y, encoded, self_mask, bias, cross_mask, deterministic, decode
            )
        y = RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, name="decoder_norm")(y)
        y = _dropout(cfg, y, deterministic)
        if cfg.logits_via_embedding:
            logits = self.shared_embedding.attend(y) / np.sqrt(y.shape[-1]).astype(np.float32)
        else:
            logits = Dense(cfg.vocab_size, ("embed", "vocab"), jnp.float32, name="logits_dense")(y)
        return _constrain(logits, ("batch", "length", "vocab"))


# ----------------------------------------------------------------------------
# Masks.
# ----------------------------------------------------------------------------
def attention_mask(query_valid: Array, key_valid: Array) -> Array:
    """[b, q] x [b, k] booleans -> [b, 1, q, k]."""
    return jnp.logical_and(query_valid[:, None, :, None], key_valid[:, None, None, :])


def segment_mask(query_segments: Array, key_segments: Array) -> Array:
    return query_segments[:, None, :, None] == key_segments[:, None, None, :]


def causal_mask(length: int) -> Array:
    idx = jnp.arange(length)
    return (idx[:, None] >= idx[None, :])[None, None]


# ----------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------
class Transformer(nn.Module):
    """T5 1.1 encoder-decoder; `__call__` returns float32 logits [B, T, vocab]."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, cfg.activation_dtype)
        self.encoder = Encoder(cfg, self.token_embedder)
        self.decoder = Decoder(cfg, self.token_embedder)

    def encode(
        self,
        encoder_input_tokens,
        encoder_segment_ids=None,
        encoder_positions=None,
        enable_dropout=True,
    ):
        if encoder_input_tokens.ndim != 2:
            raise ValueError(
                f"encoder_input_tokens must be [batch, length], got shape "
                f"{encoder_input_tokens.shape}."
            )
        valid = encoder_input_tokens > 0
        mask = attention_mask(valid, valid)
        if encoder_segment_ids is not None:
            mask = jnp.logical_and(mask, segment_mask(encoder_segment_ids, encoder_segment_ids))
        return self.encoder(
            encoder_input_tokens, mask, encoder_positions, deterministic=not enable_dropout
        )

    def decode(
        self,
        encoded,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        decoder_positions=None,
        enable_dropout=True,
        decode=False,
        max_decode_length=None,
    ):
        enc_valid = encoder_input_tokens > 0
        if decode:
            if encoder_segment_ids is not None or decoder_segment_ids is not None:
                raise ValueError(
                    "Packed inputs (segment ids) cannot be decoded "
                    "autoregressively: pass unpacked batches to decode."
                )
            self_mask = None
            cross_mask = enc_valid[:, None, None, :]
        else:
            dec_valid = decoder_target_tokens > 0
            self_mask = jnp.logical_and(
                causal_mask(decoder_target_tokens.shape[1]), attention_mask(dec_valid, dec_valid)
            )
            cross_mask = attention_mask(dec_valid, enc_valid)
            if encoder_segment_ids is not None and decoder_segment_ids is None:
                raise ValueError(
                    "encoder_segment_ids without decoder_segment_ids: pass both for packed batches."
                )
            if decoder_segment_ids is not None:
                self_mask = jnp.logical_and(
                    self_mask, segment_mask(decoder_segment_ids, decoder_segment_ids)
                )
            if encoder_segment_ids is not None:
                cross_mask = jnp.logical_and(
                    cross_mask, segment_mask(decoder_segment_ids, encoder_segment_ids)
                )
        return self.decoder(
            encoded,
            decoder_input_tokens,
            self_mask,
            cross_mask,
            positions=decoder_positions,
            deterministic=not enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
        )

    def __call__(
        self,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        encoder_positions=None,
        decoder_positions=None,
        *,
        enable_dropout=True,
        decode=False,
    ):
        encoded = self.encode(
            encoder_input_tokens,
            encoder_segment_ids=encoder_segment_ids,
            encoder_positions=encoder_positions,
            enable_dropout=enable_dropout,
        )
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            decoder_target_tokens,
            encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=decoder_segment_ids,
            decoder_positions=decoder_positions,
            enable_dropout=enable_dropout,
            decode=decode,
        )
