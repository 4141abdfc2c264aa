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

from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp
from flax import linen as nn

from t0x.models import abstract, decoding, losses
from t0x.models.t5.config import T5Config
from t0x.models.t5.network import Transformer

PyTree = Any
Batch = Mapping[str, jax.Array]
DECODE_METHODS = ("greedy", "beam", "sample")


class EncoderDecoderModel:
    """T5 1.1 / mT5 encoder-decoder model around `network.Transformer` (the t5 family's
    implementation of the `t0x.models.family` Model protocol)."""

    eos_id = 1

    def __init__(
        self,
        config: T5Config,
        z_loss: float = 1e-4,
        loss_normalizing_factor: Union[None, float, str] = None,
    ):
        self.config = config
        self.module = Transformer(config)
        self.z_loss = float(z_loss)
        self.loss_normalizing_factor = losses.check_loss_normalizing_factor(loss_normalizing_factor)

    # ------------------------------------------------------------------ params
    def _init_boxed(self, rng, batch_size, input_len, target_len):
        enc = jnp.ones((batch_size, input_len), jnp.int32)
        dec = jnp.ones((batch_size, target_len), jnp.int32)
        return self.module.init(rng, enc, dec, dec, enable_dropout=False)["params"]

    def init_boxed(self, rng) -> PyTree:
        """Logically boxed random params (for sharded init under jit; see t0x.trainer)."""
        return self._init_boxed(rng, 1, 8, 8)

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
        return abstract.abstract_params_with_axes(
            lambda rng: self._init_boxed(rng, 1, input_len, target_len)
        )

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
        return losses.loss_and_metrics(logits, batch, self.z_loss, self.loss_normalizing_factor)

    def score_batch(self, params: PyTree, batch: Batch) -> jax.Array:
        """Per-row sum of target log-likelihoods weighted by decoder_loss_weights: [B]."""
        logits = self.compute_logits(params, batch)
        return losses.weighted_log_likelihood(
            logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"]
        )

    def score(
        self,
        params: PyTree,
        inputs: jax.Array,
        targets: jax.Array,
        weights: jax.Array,
    ) -> jax.Array:
        """The family contract's scorer: [B, C] summed log-likelihoods of C targets per input
        (decoder inputs are the targets shifted right with start id 0); see `score_choices`."""
        decoder_inputs = jnp.pad(targets, [(0, 0), (0, 0), (1, 0)])[..., :-1]
        return self.score_choices(params, inputs, decoder_inputs, targets, weights)

    def predict(self, params: PyTree, inputs: jax.Array, **options) -> jax.Array:
        """The family contract's decoder: `predict_batch` on encoder inputs [B, L]."""
        return self.predict_batch(params, {"encoder_input_tokens": inputs}, **options)

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
        scores = losses.weighted_log_likelihood(
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
