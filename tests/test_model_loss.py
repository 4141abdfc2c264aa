"""Loss (z-loss, T5X normalisation modes), metrics and rank-classification scores."""

import jax
import numpy as np
import pytest

from t0x.models.t5 import testing
from t0x.models.t5.model import EncoderDecoderModel


@pytest.fixture(scope="module")
def setup():
    config = testing.tiny_config()
    model = EncoderDecoderModel(config)
    params = model.init_params(jax.random.key(0))
    batch = testing.random_batch(5, input_len=12, target_len=8, seed=3, pack=True)
    batch["decoder_loss_weights"] = batch["decoder_loss_weights"] * np.float32(0.5)  # non-binary
    logits = np.asarray(jax.jit(model.compute_logits)(params, batch), dtype=np.float64)
    return config, params, batch, logits


def _numpy_loss(logits, batch, z_loss, factor):
    """T5X's compute_weighted_cross_entropy, written directly in numpy."""
    log_z = np.log(np.exp(logits).sum(-1))
    target_logit = np.take_along_axis(logits, batch["decoder_target_tokens"][..., None], -1)[..., 0]
    w = batch["decoder_loss_weights"]
    if factor == "AVERAGE_PER_SEQUENCE":
        w = w.copy()
        seg = batch["decoder_segment_ids"]
        for r in range(w.shape[0]):
            for s in set(seg[r][seg[r] > 0]):
                w[r, seg[r] == s] /= w[r, seg[r] == s].sum()
        factor = w.sum()
    elif factor == "NUM_REAL_TARGET_TOKENS":
        factor = w.sum()
    elif factor == "NUM_TOTAL_TARGET_TOKENS":
        factor = w.size
    z = z_loss * log_z**2
    total, z_total = ((log_z - target_logit + z) * w).sum(), (z * w).sum()
    if factor is not None:
        total, z_total = total / factor, z_total / factor
    return total, z_total


@pytest.mark.parametrize(
    "factor",
    [None, 1234.0, "NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS", "average_per_sequence"],
)
def test_loss_matches_numpy(setup, factor):
    config, params, batch, logits = setup
    model = EncoderDecoderModel(config, z_loss=1e-2, loss_normalizing_factor=factor)
    loss, metrics = jax.jit(lambda p, b: model.loss_fn(p, b, None))(params, batch)
    want, want_z = _numpy_loss(
        logits, batch, 1e-2, factor.upper() if isinstance(factor, str) else factor
    )
    np.testing.assert_allclose(loss, want, rtol=2e-5)
    np.testing.assert_allclose(metrics["z_loss"], want_z, rtol=2e-5)
    np.testing.assert_allclose(metrics["cross_ent_loss"], want - want_z, rtol=2e-5)
    w = batch["decoder_loss_weights"]
    correct = (np.argmax(logits, -1) == batch["decoder_target_tokens"]) * w
    np.testing.assert_allclose(metrics["num_target_tokens"], w.sum(), rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], correct.sum() / w.sum(), rtol=1e-5)
    assert metrics["num_examples"] == 5


def test_bad_loss_normalizing_factor_is_rejected():
    with pytest.raises(ValueError, match="NUM_REAL_TARGET_TOKENS"):
        EncoderDecoderModel(testing.tiny_config(), loss_normalizing_factor="per_token")


def test_dropout_only_with_an_rng(setup):
    config, params, _, _ = setup
    model = EncoderDecoderModel(config.replace(dropout_rate=0.3))
    batch = testing.random_batch(2, seed=1)
    loss = jax.jit(model.loss_fn)
    l0, l1 = loss(params, batch, None)[0], loss(params, batch, None)[0]
    d0, d1 = loss(params, batch, jax.random.key(1))[0], loss(params, batch, jax.random.key(2))[0]
    assert l0 == l1 and d0 != d1 and d0 != l0


def test_score_choices_equals_score_batch_on_expanded_pairs(setup):
    config, params, _, _ = setup
    model = EncoderDecoderModel(config)
    B, C, L, T = 3, 4, 12, 6
    inputs = testing.random_batch(B, input_len=L, target_len=T, seed=7)["encoder_input_tokens"]
    choices = testing.random_batch(B * C, input_len=L, target_len=T, seed=8)
    dec = {
        k: choices[k].reshape(B, C, T)
        for k in ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")
    }
    scores = jax.jit(model.score_choices)(
        params,
        inputs,
        dec["decoder_input_tokens"],
        dec["decoder_target_tokens"],
        dec["decoder_loss_weights"],
    )
    assert scores.shape == (B, C)
    expanded = dict(choices, encoder_input_tokens=np.repeat(inputs, C, axis=0))
    want = jax.jit(model.score_batch)(params, expanded)
    np.testing.assert_allclose(np.asarray(scores).reshape(-1), want, atol=1e-5, rtol=1e-6)
