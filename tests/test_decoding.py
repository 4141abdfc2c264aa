"""Cached decoding: greedy equals transformers' generate; beams and sampling behave."""

import functools

import jax
import numpy as np
import pytest

from t0x.models.t5 import testing
from t0x.models.t5 import hf
from t0x.models.t5.model import EncoderDecoderModel

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

MAX_LEN = 10


@pytest.fixture(scope="module")
def setup():
    config = testing.tiny_config(vocab_size=64)
    hf_model = testing.random_hf_t5(config, seed=11)
    batch = testing.random_batch(6, input_len=12, target_len=MAX_LEN, vocab_size=64, seed=4)
    _make_some_rows_stop_early(hf_model, batch)
    params = hf.params_from_hf_state_dict(
        {k: v.numpy() for k, v in hf_model.state_dict().items()}, config
    )
    model = EncoderDecoderModel(config)
    predict = jax.jit(
        model.predict_batch_with_aux,
        static_argnames=(
            "method",
            "num_beams",
            "temperature",
            "top_k",
            "max_decode_length",
            "eos_id",
        ),
    )
    return config, hf_model, params, batch, model, predict


def _hf_greedy(hf_model, batch):
    enc = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long)
    with torch.no_grad():
        out = hf_model.generate(
            input_ids=enc,
            attention_mask=enc > 0,
            do_sample=False,
            num_beams=1,
            max_new_tokens=MAX_LEN,
            min_new_tokens=0,
            decoder_start_token_id=0,
            eos_token_id=1,
            pad_token_id=0,
        )
    return out.numpy()


def _make_some_rows_stop_early(hf_model, batch):
    """Swap EOS's LM-head row with a token that greedy emits at varied steps in some rows
    and never in others: the random model then stops at varied lengths."""
    first = _hf_greedy(hf_model, batch)[:, 1:]

    def first_steps(tok):
        return [int(np.argmax(row == tok)) if (row == tok).any() else MAX_LEN for row in first]

    candidates = [t for t in np.unique(first) if t > 1 and MAX_LEN in first_steps(t)]
    tok = max(candidates, key=lambda t: (len(set(first_steps(t))), min(first_steps(t))))
    with torch.no_grad():
        w = hf_model.lm_head.weight
        w[[1, tok]] = w[[tok, 1]].clone()


def _lengths(tokens):
    """Tokens up to and including the first EOS (or all)."""
    out = []
    for row in np.asarray(tokens):
        eos = np.nonzero(row == 1)[0]
        out.append(int(eos[0]) + 1 if len(eos) else len(row))
    return np.array(out)


@functools.lru_cache
def _jitted_logits(model):
    return jax.jit(model.compute_logits)


def _teacher_forced(model, params, batch, tokens):
    """Full-forward (no cache) logits and log-likelihoods of `tokens` up to the first EOS.

    The decoder masks are built from ones, not from the tokens: a random model may emit
    token 0, which the forward pass would otherwise treat as padding.
    """
    tokens = np.asarray(tokens)
    weights = (np.arange(tokens.shape[1])[None] < _lengths(tokens)[:, None]).astype(np.float32)
    targets = (tokens * weights).astype(np.int32)
    inputs = np.zeros_like(targets)
    inputs[:, 1:] = targets[:, :-1]
    forced = dict(
        batch, decoder_target_tokens=weights.astype(np.int32), decoder_input_tokens=inputs
    )
    logits = np.asarray(_jitted_logits(model)(params, forced), dtype=np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    token_logp = np.take_along_axis(logp, targets[..., None], -1)[..., 0] * weights
    return logits, token_logp.sum(-1), targets, weights


def test_greedy_matches_transformers_generate(setup):
    config, hf_model, params, batch, model, predict = setup
    tokens, aux = predict(params, batch, method="greedy")
    tokens = np.asarray(tokens)
    theirs = _hf_greedy(hf_model, batch)
    assert (theirs[:, 0] == 0).all()
    theirs = theirs[:, 1:]
    padded = np.zeros_like(tokens)
    padded[:, : theirs.shape[1]] = theirs
    np.testing.assert_array_equal(tokens, padded)
    lengths = _lengths(tokens)
    assert (lengths < MAX_LEN).any() and (lengths == MAX_LEN).any(), lengths
    # the cache gives the same logits as the full forward pass: greedy is the argmax
    # of teacher-forced logits, and its score is their log-likelihood
    logits, scores, targets, weights = _teacher_forced(model, params, batch, tokens)
    np.testing.assert_array_equal(np.argmax(logits, -1) * (weights > 0), targets)
    np.testing.assert_allclose(aux["scores"], scores, atol=1e-4)


def test_beam_search_scores_at_least_greedy(setup):
    config, hf_model, params, batch, model, predict = setup
    greedy, g_aux = predict(params, batch, method="greedy")
    greedy_done = (np.asarray(greedy) == 1).any(axis=1)
    assert greedy_done.any()
    for beams in (4,):
        best, aux = predict(params, batch, method="beam", num_beams=beams, alpha=0.0)
        # greedy's finished sequence is one of the beam's candidates
        beam_scores, greedy_scores = np.asarray(aux["scores"]), np.asarray(g_aux["scores"])
        assert (beam_scores[greedy_done] >= greedy_scores[greedy_done] - 1e-5).all()
    assert aux["all_tokens"].shape == (6, 4, MAX_LEN)
    assert (np.diff(np.asarray(aux["all_scores"]), axis=1) <= 1e-6).all()  # best first
    # returned scores are the model's log-likelihoods of the returned sequences
    np.testing.assert_allclose(
        aux["scores"], _teacher_forced(model, params, batch, best)[1], atol=1e-4
    )
    # with the brevity penalty, the score is the log-likelihood / ((5 + len) / 6) ** alpha
    best_a, aux_a = predict(params, batch, method="beam", num_beams=4, alpha=0.6)
    _, scores, _, weights = _teacher_forced(model, params, batch, best_a)
    finished = (np.asarray(best_a) == 1).any(axis=1)
    assert finished.any()
    want = scores / ((5.0 + weights.sum(1)) / 6.0) ** 0.6
    np.testing.assert_allclose(np.asarray(aux_a["scores"])[finished], want[finished], atol=1e-4)


def test_sampling(setup):
    config, hf_model, params, batch, model, predict = setup
    greedy, _ = predict(params, batch, method="greedy")
    top1, _ = predict(params, batch, method="sample", top_k=1, rng=jax.random.key(0))
    np.testing.assert_array_equal(top1, greedy)
    sample = functools.partial(predict, params, batch, method="sample", temperature=1.0, top_k=5)
    a, aux = sample(rng=jax.random.key(1))
    b, _ = sample(rng=jax.random.key(1))
    c, _ = sample(rng=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    logits, scores, targets, weights = _teacher_forced(model, params, batch, a)
    np.testing.assert_allclose(aux["scores"], scores, atol=1e-4)
    # every sampled token is among the 5 most likely at its step
    rank = (logits > np.take_along_axis(logits, targets[..., None], -1)).sum(-1)
    assert (rank[weights > 0] < 5).all()
    with pytest.raises(ValueError, match="rng"):
        model.predict_batch(params, batch, method="sample")
