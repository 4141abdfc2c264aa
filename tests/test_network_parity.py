"""The Flax network computes what transformers' PyTorch T5 1.1 computes, and has T5X's tree."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t0x.models.t5 import testing
from t0x.models.t5 import hf
from t0x.models.t5.model import EncoderDecoderModel
from t0x.models.t5.network import CONFIGS, relative_position_buckets

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

T5X_TINY = os.path.join(
    os.path.dirname(__file__),
    "..",
    "..",
    "shared",
    "reference",
    "t5x_testdata",
    "test_t5_tiny.checkpoint_0",
)

CONFIGS_UNDER_TEST = {
    # small bucket count: log-spaced buckets are hit at short lengths
    "small_buckets": testing.tiny_config(),
    # transformers' defaults (32 buckets, 128 distance), odd sizes, asymmetric depth
    "default_buckets": testing.tiny_config(
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        emb_dim=24,
        num_heads=3,
        head_dim=5,
        mlp_dim=40,
        num_encoder_layers=3,
        num_decoder_layers=2,
    ),
}


def _hf_forward(model, batch):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(batch["encoder_input_tokens"], dtype=torch.long),
            attention_mask=torch.tensor(batch["encoder_input_tokens"] > 0),
            decoder_input_ids=torch.tensor(batch["decoder_input_tokens"], dtype=torch.long),
        )
    return out.logits.numpy()


def _hf_scores(logits, batch):
    logp = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), -1).numpy()
    tok = np.take_along_axis(logp, batch["decoder_target_tokens"][..., None], -1)[..., 0]
    return (tok * batch["decoder_loss_weights"]).sum(-1)


def test_relative_position_buckets_match_transformers():
    rel = np.arange(-400, 401)
    for num_buckets, max_distance in [(32, 128), (8, 20), (64, 256), (10, 30)]:
        for bidirectional in (True, False):
            ours = np.asarray(
                relative_position_buckets(
                    jnp.asarray(rel), bidirectional, num_buckets, max_distance
                )
            )
            theirs = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
                torch.tensor(rel),
                bidirectional=bidirectional,
                num_buckets=num_buckets,
                max_distance=max_distance,
            ).numpy()
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", sorted(CONFIGS_UNDER_TEST))
def test_logits_and_scores_match_transformers(name):
    config = CONFIGS_UNDER_TEST[name]
    hf_model = testing.random_hf_t5(config, seed=3)
    sd = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    params = hf.params_from_hf_state_dict(sd, config)
    # lengths up to 40 reach the log-spaced and the last relative-position buckets
    batch = testing.random_batch(
        4, input_len=40, target_len=24, vocab_size=config.vocab_size, seed=5, min_len=3
    )
    assert (batch["encoder_input_tokens"] == 0).any()  # padding in inputs
    assert (batch["decoder_target_tokens"] == 0).any()  # and in targets
    model = EncoderDecoderModel(config)
    ours = np.asarray(jax.jit(model.compute_logits)(params, batch))
    theirs = _hf_forward(hf_model, batch)
    valid = batch["decoder_loss_weights"] > 0
    np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=1e-4)
    scores = np.asarray(jax.jit(model.score_batch)(params, batch))
    np.testing.assert_allclose(scores, _hf_scores(theirs, batch), atol=1e-4, rtol=1e-5)


def test_packed_examples_do_not_see_each_other():
    config = testing.tiny_config()
    model = EncoderDecoderModel(config)
    params = model.init_params(jax.random.key(0))
    examples = testing.random_examples(
        3, input_len=7, target_len=5, vocab_size=128, seed=1, min_len=2
    )

    def rows(*groups):  # one packed row per group of examples; same shapes for all
        parts = [testing.make_batch(g, input_len=21, target_len=15, pack=True) for g in groups]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    packed = rows(examples, examples[:1], examples[1:2])
    single = rows(examples[:1], examples[1:2], examples[2:])
    assert packed["decoder_segment_ids"][0].max() == 3
    logits = jax.jit(model.compute_logits)
    together, alone = np.asarray(logits(params, packed)), np.asarray(logits(params, single))
    start = 0
    for row, (_, targets) in enumerate(examples):
        n = len(targets)
        np.testing.assert_allclose(together[0, start : start + n], alone[row, :n], atol=2e-5)
        start += n
    np.testing.assert_allclose(together[1:], alone[:2], atol=2e-5)  # same rows, same logits


def test_param_tree_shapes_and_axes_are_t5x():
    config = CONFIGS["t5_1_1_tiny"]
    shapes, axes = EncoderDecoderModel(config).abstract_params_with_axes()
    flat = {
        jax.tree_util.keystr(p): s.shape for p, s in jax.tree_util.tree_flatten_with_path(shapes)[0]
    }
    assert flat["['token_embedder']['embedding']"] == (32128, 8)
    assert flat["['encoder']['layers_1']['attention']['query']['kernel']"] == (8, 12)
    assert flat["['encoder']['layers_1']['attention']['out']['kernel']"] == (12, 8)
    assert flat["['decoder']['layers_0']['mlp']['wi_1']['kernel']"] == (8, 16)
    assert flat["['decoder']['relpos_bias']['rel_embedding']"] == (4, 32)
    assert flat["['decoder']['logits_dense']['kernel']"] == (8, 32128)
    query_axes = axes["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    assert tuple(query_axes) == ("embed", "joined_kv")
    assert tuple(axes["decoder"]["layers_0"]["mlp"]["wo"]["kernel"]) == ("mlp", "embed")
    assert tuple(axes["encoder"]["relpos_bias"]["rel_embedding"]) == ("heads", "relpos_buckets")
    assert tuple(axes["decoder"]["logits_dense"]["kernel"]) == ("embed", "vocab")
    assert tuple(axes["token_embedder"]["embedding"]) == ("vocab", "embed")
    assert tuple(axes["decoder"]["decoder_norm"]["scale"]) == ("embed",)
    if not os.path.exists(T5X_TINY):
        pytest.skip(f"T5X's own checkpoint {T5X_TINY} is absent (shared/reference).")
    from flax import serialization

    with open(T5X_TINY, "rb") as f:
        target = serialization.msgpack_restore(f.read())["optimizer"]["target"]
    theirs = {
        jax.tree_util.keystr(p): np.shape(x)
        for p, x in jax.tree_util.tree_flatten_with_path(target)[0]
    }
    assert theirs == flat
    batch = testing.random_batch(2, vocab_size=32128, seed=0)
    logits = EncoderDecoderModel(config).compute_logits(target, batch)
    assert np.isfinite(np.asarray(logits)).all()


def test_remat_and_bfloat16_keep_the_function():
    config = testing.tiny_config(dropout_rate=0.1, num_encoder_layers=1, num_decoder_layers=1)
    batch = testing.random_batch(2, seed=2)
    base = EncoderDecoderModel(config)
    params = base.init_params(jax.random.key(1))
    remat = EncoderDecoderModel(config.replace(remat_policy="full"))

    def grads(model):
        fn = lambda p: model.loss_fn(p, batch, jax.random.key(7))[0]  # noqa: E731
        return jax.jit(jax.value_and_grad(fn))(params)

    (l0, g0), (l1, g1) = grads(base), grads(remat)
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), g0, g1)
    bf16 = EncoderDecoderModel(config.replace(dtype="bfloat16"))
    s32 = np.asarray(jax.jit(base.score_batch)(params, batch))
    s16 = np.asarray(jax.jit(bf16.score_batch)(params, batch))
    np.testing.assert_allclose(s16, s32, rtol=0.05)
