"""The encoder-decoder model: training loss, log-likelihood scores and decoding.

Vocabulary:
  batch      seqio EncDecFeatureConverter output: `encoder_input_tokens`,
             `decoder_input_tokens`, `decoder_target_tokens`, `decoder_loss_weights`,
             and for packed batches `encoder_segment_ids`, `decoder_segment_ids`,
             `encoder_positions`, `decoder_positions` (all [batch, length]).
  params     the network's parameter tree (T5X's minimal T5 layout), float32,
             *unboxed* (plain arrays, no `nn.LogicallyPartitioned` boxes);
             `abstract_params_with_axes()` gives their shapes and logical
             PartitionSpecs without allocating them.
  score      sum over target tokens of log p(token) * decoder_loss_weights: the
             rank-classification score of a (input, choice) pair. No z-loss.
  loss       T5X's `compute_weighted_cross_entropy`: per token cross-entropy plus
             z_loss * logsumexp(logits)^2, times the loss weights, summed, divided by
             `loss_normalizing_factor` (None: not divided, i.e. a sum over tokens; a
             number; or one of "NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS",
             "AVERAGE_PER_SEQUENCE" as in T5X's SpecialLossNormalizingFactor).
  metrics    scalars of one batch; sums add across microbatches:
             loss, z_loss, cross_ent_loss (= loss - z_loss), correct_tokens,
             num_target_tokens (sum of the raw loss weights), num_examples;
             accuracy = correct_tokens / num_target_tokens.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp
from flax import linen as nn

from t0x import decoding
from t0x.network import T5Config, Transformer

PyTree = Any
Batch = Mapping[str, jax.Array]
SPECIAL_LOSS_NORMALIZING_FACTORS = (
    "NUM_REAL_TARGET_TOKENS",
    "NUM_TOTAL_TARGET_TOKENS",
    "AVERAGE_PER_SEQUENCE",
)
DECODE_METHODS = ("greedy", "beam", "sample")


def _check_lnf(lnf):
    if lnf is None or isinstance(lnf, (int, float)):
        return lnf
    if isinstance(lnf, str) and lnf.upper() in SPECIAL_LOSS_NORMALIZING_FACTORS:
        return lnf.upper()
    raise ValueError(
        f"loss_normalizing_factor={lnf!r}: use None, a number, or one of "
        f"{SPECIAL_LOSS_NORMALIZING_FACTORS}."
    )


def _per_segment_sum(weights: jax.Array, segment_ids: Optional[jax.Array]) -> jax.Array:
    """For each token, the sum of the weights of its own sequence (segment)."""
    if segment_ids is None:
        return jnp.sum(weights, axis=-1, keepdims=True)
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return jnp.einsum("bts,bs->bt", same.astype(weights.dtype), weights)


def loss_normalizing_factor_and_weights(lnf: Union[None, float, str], batch: Batch):
    """(factor or None, per-token loss weights) for T5X's loss normalisation modes."""
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights")
    weights = (targets > 0 if weights is None else weights).astype(jnp.float32)
    lnf = _check_lnf(lnf)
    if lnf is None or not isinstance(lnf, str):
        return lnf, weights
    if lnf == "NUM_REAL_TARGET_TOKENS":
        return jnp.sum(weights), weights
    if lnf == "NUM_TOTAL_TARGET_TOKENS":
        return float(targets.size), weights
    norm = _per_segment_sum(weights, batch.get("decoder_segment_ids"))
    weights = jnp.where(norm > 0, weights / jnp.where(norm > 0, norm, 1.0), 0.0)
    return jnp.sum(weights), weights


def cross_entropy_with_z_loss(logits: jax.Array, targets: jax.Array, z_loss: float):
    """Per-token (cross-entropy + z_loss * log_z^2, z_loss * log_z^2), both [B, T]."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[
        ..., 0
    ]
    z_term = z_loss * jnp.square(log_z)
    return log_z - target_logit + z_term, z_term


def count_examples(batch: Batch) -> jax.Array:
    """Examples in a batch: packed segments when segment ids are present."""
    seg = batch.get("decoder_segment_ids")
    if seg is None:
        return jnp.sum(jnp.any(batch["decoder_target_tokens"] > 0, axis=-1))
    starts = jnp.logical_and(
        seg > 0,
        jnp.concatenate([jnp.ones_like(seg[:, :1], bool), seg[:, 1:] != seg[:, :-1]], axis=1),
    )
    return jnp.sum(starts)


class EncoderDecoderModel:
    """T5 1.1 encoder-decoder model around `network.Transformer`."""

    def __init__(
        self,
        config: T5Config,
        z_loss: float = 1e-4,
        loss_normalizing_factor: Union[None, float, str] = None,
    ):
        self.config = config
        self.module = Transformer(config)
        self.z_loss = float(z_loss)
        self.loss_normalizing_factor = _check_lnf(loss_normalizing_factor)

    # ------------------------------------------------------------------ params
    def _init_boxed(self, rng, batch_size, input_len, target_len):
        enc = jnp.ones((batch_size, input_len), jnp.int32)
        dec = jnp.ones((batch_size, target_len), jnp.int32)
        return self.module.init(rng, enc, dec, dec, enable_dropout=False)["params"]

    def init_params(
        self, rng: jax.Array, batch_size: int = 1, input_len: int = 8, target_len: int = 8
    ) -> PyTree:
        """Random float32 parameters, unboxed (plain arrays). Shapes do not depend on
        the lengths given; they only size the tracing inputs."""
        init = jax.jit(self._init_boxed, static_argnums=(1, 2, 3))
        return nn.meta.unbox(init(rng, batch_size, input_len, target_len))

    def abstract_params_with_axes(self, input_len: int = 8, target_len: int = 8):
        """(params as jax.ShapeDtypeStruct tree, matching tree of logical PartitionSpecs,
        e.g. PartitionSpec('vocab', 'embed')); nothing is allocated."""
        boxed = jax.eval_shape(
            functools.partial(
                self._init_boxed, batch_size=1, input_len=input_len, target_len=target_len
            ),
            jax.random.key(0),
        )
        return _unbox_shapes(boxed), nn.get_partition_spec(boxed)

    # -------------------------------------------------------------- forward
    def compute_logits(
        self, params: PyTree, batch: Batch, dropout_rng: Optional[jax.Array] = None
    ) -> jax.Array:
        """Float32 logits [B, T, vocab]; dropout on iff `dropout_rng` is given."""
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
        return self.module.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            batch["decoder_target_tokens"],
            encoder_segment_ids=batch.get("encoder_segment_ids"),
            decoder_segment_ids=batch.get("decoder_segment_ids"),
            encoder_positions=batch.get("encoder_positions"),
            decoder_positions=batch.get("decoder_positions"),
            enable_dropout=rngs is not None,
            rngs=rngs,
        )

    def loss_fn(
        self, params: PyTree, batch: Batch, dropout_rng: Optional[jax.Array]
    ) -> tuple[jax.Array, dict]:
        """(scalar loss, metrics) as T5X's EncoderDecoderModel.loss_fn."""
        logits = self.compute_logits(params, batch, dropout_rng)
        targets = batch["decoder_target_tokens"]
        factor, weights = loss_normalizing_factor_and_weights(self.loss_normalizing_factor, batch)
        token_loss, token_z = cross_entropy_with_z_loss(logits, targets, self.z_loss)
        loss, z_loss = jnp.sum(token_loss * weights), jnp.sum(token_z * weights)
        if factor is not None:
            loss, z_loss = loss / factor, z_loss / factor
        raw = batch.get("decoder_loss_weights")
        raw = (targets > 0 if raw is None else raw).astype(jnp.float32)
        correct = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * raw)
        num_tokens = jnp.sum(raw)
        metrics = {
            "loss": loss,
            "z_loss": z_loss,
            "cross_ent_loss": loss - z_loss,
            "accuracy": correct / jnp.maximum(num_tokens, 1e-8),
            "correct_tokens": correct,
            "num_target_tokens": num_tokens,
            # unnormalised, for a per-token figure whatever the normalising factor
            "cross_ent_sum": jnp.sum((token_loss - token_z) * raw),
            "num_examples": count_examples(batch).astype(jnp.float32),
        }
        return loss, metrics

    def score_batch(self, params: PyTree, batch: Batch) -> jax.Array:
        """Per-row sum of target log-likelihoods weighted by decoder_loss_weights: [B]."""
        logits = self.compute_logits(params, batch)
        return _weighted_log_likelihood(
            logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"]
        )

    def score_choices(
        self,
        params: PyTree,
        encoder_input_tokens: jax.Array,
        decoder_input_tokens: jax.Array,
        decoder_target_tokens: jax.Array,
        decoder_loss_weights: jax.Array,
    ) -> jax.Array:
        """Scores [B, C] of C choices per input; each input is encoded once.

        encoder_input_tokens [B, L]; the decoder arrays are [B, C, T]. The C choices of an
        input are packed into one decoder row of C*T tokens (segment c+1 each), so the
        encoder output and its cross-attention keys/values are computed once per input;
        self-attention stays within a choice, as if each were decoded alone.
        """
        B, C, T = decoder_target_tokens.shape
        encoded = self.module.apply(
            {"params": params},
            encoder_input_tokens,
            enable_dropout=False,
            method=Transformer.encode,
        )
        targets = decoder_target_tokens.reshape(B, C * T)
        segments = jnp.broadcast_to(
            jnp.arange(1, C + 1, dtype=jnp.int32)[None, :, None], (B, C, T)
        ).reshape(B, C * T)
        logits = self.module.apply(
            {"params": params},
            encoded,
            encoder_input_tokens,
            decoder_input_tokens.reshape(B, C * T),
            targets,
            decoder_segment_ids=jnp.where(targets > 0, segments, 0),
            enable_dropout=False,
            method=Transformer.decode,
        )
        scores = _weighted_log_likelihood(
            logits.reshape(B * C, T, -1),
            decoder_target_tokens.reshape(B * C, T),
            decoder_loss_weights.reshape(B * C, T),
        )
        return scores.reshape(B, C)

    # -------------------------------------------------------------- decoding
    def init_cache(self, params: PyTree, batch_size: int, max_decode_length: int) -> PyTree:
        """Zeroed decoding cache for `batch_size` sequences of `max_decode_length`."""

        def make(p):
            dec = jnp.ones((batch_size, max_decode_length), jnp.int32)
            _, variables = self.module.apply(
                {"params": p},
                jnp.ones((batch_size, 1), jnp.int32),
                dec,
                dec,
                enable_dropout=False,
                decode=True,
                mutable=["cache"],
            )
            return variables["cache"]

        shapes = jax.eval_shape(make, params)
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def predict_batch_with_aux(
        self,
        params: PyTree,
        batch: Batch,
        *,
        method: str = "greedy",
        num_beams: int = 4,
        temperature: float = 1.0,
        top_k: int = 0,
        max_decode_length: Optional[int] = None,
        rng: Optional[jax.Array] = None,
        eos_id: int = 1,
        alpha: float = 0.6,
    ) -> tuple[jax.Array, dict]:
        """(tokens [B, T], {"scores": [B]}); see `predict_batch`."""
        if method not in DECODE_METHODS:
            raise ValueError(f"method={method!r}: use one of {DECODE_METHODS}.")
        if method == "sample" and rng is None:
            raise ValueError('method="sample" needs an rng key (rng=jax.random.key(seed)).')
        enc_tokens = batch["encoder_input_tokens"]
        if max_decode_length is None:
            if "decoder_input_tokens" not in batch:
                raise ValueError(
                    "Pass max_decode_length or a batch with decoder_input_tokens "
                    "(its length sets the decode length)."
                )
            max_decode_length = batch["decoder_input_tokens"].shape[1]
        B, n = enc_tokens.shape[0], (num_beams if method == "beam" else 1)
        encoded = self.module.apply(
            {"params": params}, enc_tokens, enable_dropout=False, method=Transformer.encode
        )
        encoded = decoding.expand_for_beams(encoded, n)
        enc_tokens = decoding.expand_for_beams(enc_tokens, n)

        def tokens_to_logits(tokens, cache):
            logits, variables = self.module.apply(
                {"params": params, "cache": cache},
                encoded,
                enc_tokens,
                tokens,
                tokens,
                enable_dropout=False,
                decode=True,
                max_decode_length=max_decode_length,
                mutable=["cache"],
                method=Transformer.decode,
            )
            return logits[:, 0, :], variables["cache"]

        cache = self.init_cache(params, B * n, max_decode_length)
        if method == "beam":
            seqs, scores = decoding.beam_search(
                tokens_to_logits,
                cache,
                batch_size=B,
                num_beams=n,
                max_decode_length=max_decode_length,
                alpha=alpha,
                eos_id=eos_id,
            )
            return seqs[:, 0], {"scores": scores[:, 0], "all_tokens": seqs, "all_scores": scores}
        tokens, scores = decoding.temperature_sample(
            tokens_to_logits,
            cache,
            batch_size=B,
            max_decode_length=max_decode_length,
            rng=rng,
            temperature=0.0 if method == "greedy" else temperature,
            top_k=top_k,
            eos_id=eos_id,
        )
        return tokens, {"scores": scores}

    def predict_batch(
        self,
        params: PyTree,
        batch: Batch,
        *,
        method: str = "greedy",
        num_beams: int = 4,
        temperature: float = 1.0,
        top_k: int = 0,
        max_decode_length: Optional[int] = None,
        rng: Optional[jax.Array] = None,
        eos_id: int = 1,
        alpha: float = 0.6,
    ) -> jax.Array:
        """Decoded tokens [B, T] (no start token; EOS kept; zeros after it).

        method: "greedy"; "sample" (temperature, top_k; needs rng); "beam" (num_beams,
        brevity penalty alpha). T defaults to the batch's decoder_input_tokens length.
        """
        tokens, _ = self.predict_batch_with_aux(
            params,
            batch,
            method=method,
            num_beams=num_beams,
            temperature=temperature,
            top_k=top_k,
            max_decode_length=max_decode_length,
            rng=rng,
            eos_id=eos_id,
            alpha=alpha,
        )
        return tokens


def _unbox_shapes(boxed: PyTree) -> PyTree:
    """Unboxed ShapeDtypeStructs; no sharding constraint (they are not arrays), whatever
    mesh is active."""
    return jax.tree.map(
        lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.meta.AxisMetadata) else x,
        boxed,
        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata),
    )


def _weighted_log_likelihood(logits, targets, weights) -> jax.Array:
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)
    return jnp.sum(token[..., 0] * weights.astype(jnp.float32), axis=-1)
