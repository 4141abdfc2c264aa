"""Losses and log-likelihoods shared by the model families (T5X's conventions).

Vocabulary:
  batch      any family's training batch with `decoder_target_tokens` [B, T] (the token each
             position must predict), `decoder_loss_weights` [B, T] and, when packed,
             `decoder_segment_ids` [B, T] (1, 2, ... per example; 0 padding).
  loss       T5X's `compute_weighted_cross_entropy`: per token cross-entropy plus
             z_loss * logsumexp(logits)^2, times the loss weights, summed, divided by the
             loss normalising factor: None (a sum over tokens, T5X's default), a number, or
             "NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS", "AVERAGE_PER_SEQUENCE" (each
             example's tokens weighted 1/its own target count, divided by the number of
             examples: mT0's setting, and BigScience's `norm-target-loss` for BLOOMZ).
  metrics    scalars of one batch; sums add across microbatches: loss, z_loss, cross_ent_loss
             (= loss - z_loss), correct_tokens, num_target_tokens (sum of the raw weights),
             cross_ent_sum (unnormalised), num_examples; accuracy = correct / num tokens.
  score      sum over target tokens of log p(token) * weight: a rank-classification score.
"""

from __future__ import annotations

from typing import Mapping, Optional, Union

import jax
import jax.numpy as jnp

Batch = Mapping[str, jax.Array]
SPECIAL_LOSS_NORMALIZING_FACTORS = (
    "NUM_REAL_TARGET_TOKENS",
    "NUM_TOTAL_TARGET_TOKENS",
    "AVERAGE_PER_SEQUENCE",
)


def check_loss_normalizing_factor(lnf):
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
    lnf = check_loss_normalizing_factor(lnf)
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


def loss_and_metrics(
    logits: jax.Array, batch: Batch, z_loss: float, loss_normalizing_factor
) -> tuple[jax.Array, dict]:
    """(scalar loss, metrics) of float logits [B, T, V] against the batch (module doc)."""
    targets = batch["decoder_target_tokens"]
    factor, weights = loss_normalizing_factor_and_weights(loss_normalizing_factor, batch)
    token_loss, token_z = cross_entropy_with_z_loss(logits, targets, z_loss)
    loss, z_total = jnp.sum(token_loss * weights), jnp.sum(token_z * weights)
    if factor is not None:
        loss, z_total = loss / factor, z_total / factor
    raw = batch.get("decoder_loss_weights")
    raw = (targets > 0 if raw is None else raw).astype(jnp.float32)
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * raw)
    num_tokens = jnp.sum(raw)
    metrics = {
        "loss": loss,
        "z_loss": z_total,
        "cross_ent_loss": loss - z_total,
        "accuracy": correct / jnp.maximum(num_tokens, 1e-8),
        "correct_tokens": correct,
        "num_target_tokens": num_tokens,
        # unnormalised, for a per-token figure whatever the normalising factor
        "cross_ent_sum": jnp.sum((token_loss - token_z) * raw),
        "num_examples": count_examples(batch).astype(jnp.float32),
    }
    return loss, metrics


def weighted_log_likelihood(logits, targets, weights) -> jax.Array:
    """Per-row sum over the last axis of log p(target) * weight (logits [..., T, V])."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)
    return jnp.sum(token[..., 0] * weights.astype(jnp.float32), axis=-1)
