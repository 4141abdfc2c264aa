"""The BLOOM decoder-only model: training loss, rank scores and generation.

Vocabulary:
  batch     the output of `t0x.models.bloom.features.CausalLMFeatureConverter`:
            `decoder_input_tokens` (inputs + targets of each packed example),
            `decoder_target_tokens` (the next token at every position),
            `decoder_loss_weights` (1 where the next token is a target),
            `decoder_segment_ids` (0 = padding) and `decoder_positions` (restarting per example).
  loss      `t0x.models.losses` with BigScience's BLOOMZ setting by default: each example's
            loss averaged over its own target tokens, then over examples
            ("AVERAGE_PER_SEQUENCE", Megatron's norm-target-loss), no z-loss.
  score     of a target given its input: the summed log-likelihood of the target tokens, the
            input's prefix computed once for all choices (`network.pack_choices`); EOS is not
            scored unless `score_eos` (BigScience scored BLOOMZ's choices as continuations,
            without an end token; T0's protocol, for T5, scores the EOS).
  predict   the prompt (right-padded, 0 = padding) is prefilled into the KV cache, then one
            token per step (greedy, sampling, or beam search), starting from each row's last
            prompt token.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp

from t0x.models import abstract, decoding, losses
from t0x.models.bloom import network
from t0x.models.bloom.config import BloomConfig

PyTree = Any
Batch = Mapping[str, jax.Array]
DECODE_METHODS = ("greedy", "beam", "sample")


class DecoderOnlyModel:
    """BLOOM around `network.Bloom` (the bloom family's Model; see t0x.models.family)."""

    def __init__(
        self,
        config: BloomConfig,
        z_loss: float = 0.0,
        loss_normalizing_factor: Union[None, float, str] = "AVERAGE_PER_SEQUENCE",
        score_eos: bool = False,
    ):
        self.config = config
        self.module = network.Bloom(config)
        self.z_loss = float(z_loss)
        self.loss_normalizing_factor = losses.check_loss_normalizing_factor(loss_normalizing_factor)
        self.score_eos = score_eos
        self.eos_id = config.eos_token_id

    # ------------------------------------------------------------------ params
    def init_boxed(self, rng) -> PyTree:
        return network._init_boxed(self.config, rng)  # pylint: disable=protected-access

    def init_params(self, rng: jax.Array) -> PyTree:
        return network.init_params(self.config, rng)

    def abstract_params_with_axes(self):
        return abstract.abstract_params_with_axes(self.init_boxed)

    # ------------------------------------------------------------------ training
    def compute_logits(
        self, params: PyTree, batch: Batch, dropout_rng: Optional[jax.Array] = None
    ) -> jax.Array:
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
        return self.module.apply(
            {"params": params},
            batch["decoder_input_tokens"],
            batch.get("decoder_segment_ids"),
            batch.get("decoder_positions"),
            enable_dropout=rngs is not None,
            rngs=rngs,
        )

    def loss_fn(self, params: PyTree, batch: Batch, dropout_rng: Optional[jax.Array]):
        """(scalar loss, metrics); see `t0x.models.losses`."""
        logits = self.compute_logits(params, batch, dropout_rng)
        return losses.loss_and_metrics(logits, batch, self.z_loss, self.loss_normalizing_factor)

    # ------------------------------------------------------------------ scoring
    def score(self, params: PyTree, inputs, targets, weights) -> jax.Array:
        """[B, C] summed log-likelihoods of C targets [B, C, T] after inputs [B, L]."""
        scored = weights > 0
        if not self.score_eos:
            scored = scored & (targets != self.eos_id)
        row = network.pack_choices(inputs, inputs > 0, targets, targets > 0)
        logits = self.module.apply(
            {"params": params},
            row["tokens"],
            row["segment_ids"],
            row["positions"],
            row["branch_ids"],
        )
        return network.choice_log_likelihoods(logits, row["predictor_index"], targets, scored)

    # ------------------------------------------------------------------ generation
    def _step(self, params):
        def step(tokens, cache, segment_ids=None):
            logits, variables = self.module.apply(
                {"params": params, "cache": cache},
                tokens,
                segment_ids,
                decode=True,
                mutable=["cache"],
            )
            return logits, variables["cache"]

        return step

    def predict(
        self,
        params: PyTree,
        inputs: jax.Array,
        *,
        max_decode_length: int,
        method: str = "greedy",
        num_beams: int = 4,
        temperature: float = 1.0,
        top_k: int = 0,
        rng: Optional[jax.Array] = None,
        alpha: float = 0.6,
    ) -> jax.Array:
        """Generated tokens [B, max_decode_length] after right-padded prompts [B, L] (module
        doc); EOS kept, zeros after it."""
        if method not in DECODE_METHODS:
            raise ValueError(f"method={method!r}: use one of {DECODE_METHODS}.")
        if method == "sample" and rng is None:
            raise ValueError('method="sample" needs an rng key (rng=jax.random.key(seed)).')
        batch, plen = inputs.shape
        n = num_beams if method == "beam" else 1
        valid = inputs > 0
        lengths = jnp.maximum(valid.sum(axis=1), 1)
        last = jnp.take_along_axis(inputs, (lengths - 1)[:, None], axis=1)[:, 0]
        prefill_seg = (jnp.arange(plen)[None, :] < (lengths - 1)[:, None]).astype(jnp.int32)
        step = self._step(params)
        cache = network.init_cache(self.config, batch * n, plen + max_decode_length)
        _, cache = step(
            decoding.expand_for_beams(inputs, n), cache, decoding.expand_for_beams(prefill_seg, n)
        )

        def tokens_to_logits(tokens, cache):
            logits, cache = step(tokens, cache)
            return logits[:, -1], cache

        common = dict(max_decode_length=max_decode_length, eos_id=self.eos_id)
        if method == "beam":
            seqs, _ = decoding.beam_search(
                tokens_to_logits,
                cache,
                batch_size=batch,
                num_beams=n,
                alpha=alpha,
                start_id=last,
                **common,
            )
            return seqs[:, 0]
        tokens, _ = decoding.temperature_sample(
            tokens_to_logits,
            cache,
            batch_size=batch,
            rng=rng,
            temperature=0.0 if method == "greedy" else temperature,
            top_k=top_k,
            start_id=last,
            **common,
        )
        return tokens
