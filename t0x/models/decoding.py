"""Autoregressive decoding over a cache-based step function: sampling and beam search.

Vocabulary:
  step function  `tokens_to_logits(tokens [N, 1] int32, cache) -> (logits [N, V], cache)`:
                 feeds one token per sequence and returns the next-token logits
                 and the updated cache (a pytree whose array leaves have N as their
                 leading axis; scalar leaves such as a cache index are shared).
  flat beams     beam search runs N = batch * num_beams sequences, laid out
                 beam-minor: row b * num_beams + k is beam k of example b.
  tokens         outputs [.., max_decode_length]: the generated tokens, without the
                 decoder start token; EOS is kept, every position after it is 0.
  scores         sum of the log-probabilities of the generated tokens up to and
                 including EOS; beam search divides by the brevity penalty
                 ((5 + length) / 6) ** alpha (T5X's; alpha=0 gives raw sums).

Everything runs inside `lax.while_loop`, so it jits once per shape, and stops
early when every sequence has produced EOS (or, for beams, once no live beam can
beat the finished ones).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

NEG_INF = -1.0e7  # log-probability of an impossible beam (finite: no inf - inf)
TokensToLogits = Callable[[jax.Array, Any], tuple[jax.Array, Any]]


def brevity_penalty(alpha: float, length) -> jax.Array:
    """T5X's length normalisation: ((5 + length) / 6) ** alpha."""
    return jnp.power((5.0 + jnp.asarray(length, jnp.float32)) / 6.0, alpha)


def _top_k_filter(logits: jax.Array, top_k: int) -> jax.Array:
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    return jnp.where(logits < kth, NEG_INF, logits)


def temperature_sample(
    tokens_to_logits: TokensToLogits,
    cache: Any,
    *,
    batch_size: int,
    max_decode_length: int,
    rng: Optional[jax.Array] = None,
    temperature: float = 1.0,
    top_k: int = 0,
    eos_id: int = 1,
    start_id: int | jax.Array = 0,
) -> tuple[jax.Array, jax.Array]:
    """Samples one sequence per row; temperature 0 is greedy (argmax) decoding.

    Returns (tokens [batch, max_decode_length] int32, log-likelihoods [batch] float32)
    where the log-likelihood is that of the tokens under the model (untempered).
    """
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy).")
    greedy = temperature == 0.0
    if not greedy and rng is None:
        raise ValueError("Sampling with temperature > 0 needs an rng key.")
    rng = jax.random.key(0) if rng is None else rng

    def cond(state):
        step, _, _, ended, _, _, _ = state
        return jnp.logical_and(step < max_decode_length, jnp.logical_not(jnp.all(ended)))

    def body(state):
        step, cur, tokens, ended, score, cache, key = state
        logits, cache = tokens_to_logits(cur[:, None], cache)
        logits = logits.astype(jnp.float32)
        log_probs = jax.nn.log_softmax(logits)
        if greedy:
            nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            key, sub = jax.random.split(key)
            nxt = jax.random.categorical(sub, _top_k_filter(logits / temperature, top_k))
            nxt = nxt.astype(jnp.int32)
        nxt = jnp.where(ended, 0, nxt)
        gained = jnp.take_along_axis(log_probs, nxt[:, None], axis=-1)[:, 0]
        score = score + jnp.where(ended, 0.0, gained)
        tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (0, step))
        ended = jnp.logical_or(ended, nxt == eos_id)
        return step + 1, nxt, tokens, ended, score, cache, key

    state = (
        jnp.array(0, jnp.int32),
        jnp.full((batch_size,), start_id, jnp.int32),
        jnp.zeros((batch_size, max_decode_length), jnp.int32),
        jnp.zeros((batch_size,), bool),
        jnp.zeros((batch_size,), jnp.float32),
        cache,
        rng,
    )
    _, _, tokens, _, score, _, _ = jax.lax.while_loop(cond, body, state)
    return tokens, score


def greedy_search(
    tokens_to_logits: TokensToLogits,
    cache: Any,
    *,
    batch_size: int,
    max_decode_length: int,
    eos_id: int = 1,
    start_id: int | jax.Array = 0,
) -> tuple[jax.Array, jax.Array]:
    """Argmax decoding; same outputs as `temperature_sample(temperature=0)`."""
    return temperature_sample(
        tokens_to_logits,
        cache,
        batch_size=batch_size,
        max_decode_length=max_decode_length,
        temperature=0.0,
        eos_id=eos_id,
        start_id=start_id,
    )


def gather_beams(tree: Any, beam_indices: jax.Array, batch_size: int, num_beams: int) -> Any:
    """Reorders every [batch * beams, ...] leaf by `beam_indices` [batch, new_beams]."""

    def gather(x):
        if x.ndim == 0 or x.shape[0] != batch_size * num_beams:
            return x  # shared leaves (e.g. the cache index)
        x = x.reshape((batch_size, num_beams) + x.shape[1:])
        idx = beam_indices.reshape(beam_indices.shape + (1,) * (x.ndim - 2))
        x = jnp.take_along_axis(x, idx, axis=1)
        return x.reshape((-1,) + x.shape[2:])

    return jax.tree_util.tree_map(gather, tree)


def _take_beams(x: jax.Array, beam_indices: jax.Array) -> jax.Array:
    """x [batch, beams, ...] gathered along beams -> [batch, len(indices), ...]."""
    idx = beam_indices.reshape(beam_indices.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def beam_search(
    tokens_to_logits: TokensToLogits,
    cache: Any,
    *,
    batch_size: int,
    num_beams: int,
    max_decode_length: int,
    alpha: float = 0.6,
    eos_id: int = 1,
    start_id: int | jax.Array = 0,
) -> tuple[jax.Array, jax.Array]:
    """Beam search with T5X's brevity penalty.

    `cache` must already hold batch * num_beams rows (beam-minor). Returns
    (sequences [batch, num_beams, max_decode_length], scores [batch, num_beams]),
    best first. Sequences that reach max_decode_length without EOS are returned
    only for examples where no beam finished.
    """
    B, K, T = batch_size, num_beams, max_decode_length
    max_penalty = brevity_penalty(alpha, T)

    def cond(state):
        step, _, live_logp, _, _, fin_scores, _ = state
        # the best a live beam can still reach vs the worst finished beam
        best_possible = live_logp[:, 0] / max_penalty
        done = jnp.all(best_possible < fin_scores[:, -1])
        return jnp.logical_and(step < T, jnp.logical_not(done))

    def body(state):
        step, live_seqs, live_logp, last, fin_seqs, fin_scores, cache = state
        logits, cache = tokens_to_logits(last.reshape(B * K, 1), cache)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(B, K, -1)
        vocab = log_probs.shape[-1]
        cand = (live_logp[:, :, None] + log_probs).reshape(B, K * vocab)
        cand_logp, flat_idx = jax.lax.top_k(cand, 2 * K)
        src_beam, tok = flat_idx // vocab, (flat_idx % vocab).astype(jnp.int32)
        cand_seqs = _take_beams(live_seqs, src_beam)
        cand_seqs = jax.lax.dynamic_update_slice(cand_seqs, tok[:, :, None], (0, 0, step))
        is_eos = tok == eos_id
        # live beams: the best K candidates that did not end
        live_cand = jnp.where(is_eos, NEG_INF, cand_logp)
        live_logp, pick = jax.lax.top_k(live_cand, K)
        live_seqs = _take_beams(cand_seqs, pick)
        last = jnp.take_along_axis(tok, pick, axis=1)
        cache = gather_beams(cache, jnp.take_along_axis(src_beam, pick, axis=1), B, K)
        # finished beams: merge candidates that ended with the finished set
        ended_ok = jnp.logical_and(is_eos, cand_logp > NEG_INF / 2)
        new_scores = jnp.where(ended_ok, cand_logp / brevity_penalty(alpha, step + 1), NEG_INF)
        all_scores = jnp.concatenate([fin_scores, new_scores], axis=1)
        all_seqs = jnp.concatenate([fin_seqs, cand_seqs], axis=1)
        fin_scores, pick = jax.lax.top_k(all_scores, K)
        fin_seqs = _take_beams(all_seqs, pick)
        return step + 1, live_seqs, live_logp, last, fin_seqs, fin_scores, cache

    init_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (K - 1), jnp.float32), (B, 1))
    state = (
        jnp.array(0, jnp.int32),
        jnp.zeros((B, K, T), jnp.int32),
        init_logp,
        _start_tokens(start_id, B, K),
        jnp.zeros((B, K, T), jnp.int32),
        jnp.full((B, K), NEG_INF, jnp.float32),
        cache,
    )
    _, live_seqs, live_logp, _, fin_seqs, fin_scores, _ = jax.lax.while_loop(cond, body, state)
    none_finished = jnp.all(fin_scores <= NEG_INF / 2, axis=1)
    seqs = jnp.where(none_finished[:, None, None], live_seqs, fin_seqs)
    scores = jnp.where(none_finished[:, None], live_logp / max_penalty, fin_scores)
    return seqs, scores


def _start_tokens(start_id, batch_size: int, num_beams: int) -> jax.Array:
    """[batch, beams] first tokens from a scalar or a per-row [batch] start id."""
    start = jnp.asarray(start_id, jnp.int32)
    if start.ndim == 1:
        start = start[:, None]
    return jnp.broadcast_to(start, (batch_size, num_beams))


def expand_for_beams(x: jax.Array, num_beams: int) -> jax.Array:
    """[batch, ...] -> [batch * num_beams, ...], each row repeated num_beams times."""
    return jnp.repeat(x, num_beams, axis=0)


__all__ = [
    "brevity_penalty",
    "temperature_sample",
    "greedy_search",
    "beam_search",
    "gather_beams",
    "expand_for_beams",
    "NEG_INF",
]
