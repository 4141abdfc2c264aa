"""The Flax BLOOM network computes what transformers' BloomForCausalLM computes.

Packing, the several-choices row, cached decoding and greedy generation are checked against
transformers (or against the same examples run alone); sharding on a ("data", "model") mesh
keeps whole heads on each device.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t0x import partitioning
from t0x.models import decoding
from t0x.models.bloom import hf, network, testing

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIGS = {  # a power-of-two head count and one that is not
    "heads4": testing.tiny_config(),
    "heads6": testing.tiny_config(num_heads=6, hidden_size=48),
}


@functools.lru_cache(maxsize=None)
def _pair(name):
    """(config, transformers model, t0x params) with the same random weights."""
    config = CONFIGS[name]
    model = testing.random_hf_bloom(config, seed=3)
    return config, model, hf.params_from_hf_state_dict(testing.hf_state_dict(model), config)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request):
    return _pair(request.param)


@pytest.fixture(scope="module")
def heads6():
    return _pair("heads6")


@functools.lru_cache(maxsize=None)
def _jitted_forward(config):
    return jax.jit(lambda p, t, kw: network.Bloom(config).apply({"params": p}, t, **kw))


def _forward(config, params, tokens, **kwargs):
    return np.asarray(_jitted_forward(config)(params, jnp.asarray(tokens), kwargs))


def _hf_logits(model, tokens, mask=None):
    with torch.no_grad():
        kwargs = {} if mask is None else {"attention_mask": torch.tensor(mask, dtype=torch.long)}
        return model(input_ids=torch.tensor(tokens, dtype=torch.long), **kwargs).logits.numpy()


def _next_token_ll(logits, tokens, valid):
    """Per-row sum of log p(token t+1 | logits at t) over valid pairs (float64)."""
    logp = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), -1).numpy()
    ll = np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]
    return (ll * (valid[:, :-1] & valid[:, 1:])).sum(-1)


def test_alibi_slopes_match_transformers():
    build = transformers.models.bloom.modeling_bloom.build_alibi_tensor
    for heads in list(range(1, 13)) + [16, 112]:
        # positions 0 and 1: the bias at position 1 is the slope itself
        theirs = build(torch.ones(1, 2, dtype=torch.long), heads, torch.float32)[:, 0, 1].numpy()
        np.testing.assert_allclose(network.alibi_slopes(heads), theirs, rtol=1e-6)
    with pytest.raises(ValueError, match="at least one head"):
        network.alibi_slopes(0)


@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_logits_and_log_likelihoods_match_transformers(pair, padding):
    config, model, params = pair
    tokens = testing.random_tokens(3, 17, config.vocab_size, seed=4)
    lengths = np.array([17, 9, 13]) if padding != "none" else np.array([17, 17, 17])
    valid = np.arange(17)[None, :] < lengths[:, None]
    if padding == "left":
        valid = valid[:, ::-1]
    kwargs = {} if padding == "none" else {"segment_ids": jnp.asarray(valid.astype(np.int32))}
    ours = _forward(config, params, tokens, **kwargs)
    theirs = _hf_logits(model, tokens, None if padding == "none" else valid.astype(np.int64))
    np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(
        _next_token_ll(ours, tokens, valid), _next_token_ll(theirs, tokens, valid), atol=1e-4
    )


def test_packed_examples_do_not_see_each_other(heads6):
    config, _, params = heads6
    a, b = (testing.random_tokens(1, n, config.vocab_size, seed=s)[0] for s, n in ((1, 7), (2, 9)))
    row = np.zeros((1, 20), np.int32)
    row[0, :7], row[0, 7:16] = a, b
    segments = np.array([[1] * 7 + [2] * 9 + [0] * 4], np.int32)
    positions = np.array([list(range(7)) + list(range(9)) + [0] * 4], np.int32)
    packed = _forward(config, params, row, segment_ids=segments, positions=positions)
    alone = np.stack([np.pad(a, (0, 2)), b])  # each example alone in its own row
    alone_seg = np.array([[1] * 7 + [0] * 2, [1] * 9], np.int32)
    alone = _forward(config, params, alone, segment_ids=alone_seg)
    np.testing.assert_allclose(packed[0, :7], alone[0, :7], atol=1e-5)
    np.testing.assert_allclose(packed[0, 7:16], alone[1], atol=1e-5)
    # row offsets as positions give the same biases inside contiguous segments
    by_row = _forward(config, params, row, segment_ids=segments, positions=np.arange(20)[None])
    np.testing.assert_allclose(by_row[0, :16], packed[0, :16], atol=1e-5)
    changed = row.copy()
    changed[0, 7:16] = (changed[0, 7:16] + 1) % config.vocab_size
    other = _forward(config, params, changed, segment_ids=segments, positions=positions)
    np.testing.assert_array_equal(other[0, :7], packed[0, :7])
    assert np.abs(other[0, 7:16] - packed[0, 7:16]).max() > 1e-2


def test_choice_row_scores_equal_transformers_per_choice(pair):
    config, model, params = pair
    rng = np.random.default_rng(7)
    prompt_lens, choice_lens = [5, 8], [[1, 4, 2], [3, 3, 5]]
    P, T = 8, 5
    prompts = testing.random_tokens(2, P, config.vocab_size, seed=8)
    choices = rng.integers(0, config.vocab_size, (2, 3, T)).astype(np.int32)
    prompt_mask = np.arange(P)[None] < np.array(prompt_lens)[:, None]
    choice_mask = np.arange(T)[None, None] < np.array(choice_lens)[..., None]
    row = network.pack_choices(prompts, prompt_mask, choices, choice_mask)
    inputs = {k: row[k] for k in ("segment_ids", "positions", "branch_ids")}
    logits = _forward(config, params, np.asarray(row["tokens"]), **inputs)
    ours = np.asarray(
        network.choice_log_likelihoods(logits, row["predictor_index"], choices, choice_mask)
    )
    for b in range(2):
        for c in range(3):
            prompt = prompts[b, : prompt_lens[b]]
            choice = choices[b, c, : choice_lens[b][c]]
            seq = np.concatenate([prompt, choice])[None]
            logp = torch.log_softmax(torch.tensor(_hf_logits(model, seq), dtype=torch.float64), -1)
            n = len(prompt)
            theirs = sum(logp[0, n - 1 + t, int(choice[t])].item() for t in range(len(choice)))
            np.testing.assert_allclose(ours[b, c], theirs, atol=1e-4)


def _step_fn(config, params):
    module = network.Bloom(config)

    def step(tokens, cache, segment_ids=None):
        logits, variables = module.apply(
            {"params": params, "cache": cache},
            tokens,
            segment_ids,
            decode=True,
            mutable=["cache"],
        )
        return logits, variables["cache"]

    return step


def test_cached_decoding_reproduces_the_full_forward(heads6):
    config, _, params = heads6
    tokens = testing.random_tokens(2, 10, config.vocab_size, seed=5)
    full = _forward(config, params, tokens)
    step = jax.jit(_step_fn(config, params))
    ones = jnp.ones((2, 1), jnp.int32)
    cache = network.init_cache(config, 2, 12)
    one_by_one = []
    for t in range(10):
        logits, cache = step(jnp.asarray(tokens[:, t : t + 1]), cache, ones)
        one_by_one.append(np.asarray(logits[:, 0]))
    np.testing.assert_allclose(np.stack(one_by_one, 1), full, atol=1e-5)
    # prefill 6 tokens at once (row 1: 4 real tokens, right-padded), then one by one:
    # each row continues after its own last real token
    seg = np.array([[1] * 6, [1] * 4 + [0] * 2], np.int32)
    cache = network.init_cache(config, 2, 12)
    logits, cache = step(jnp.asarray(tokens[:, :6]), cache, jnp.asarray(seg))
    np.testing.assert_allclose(np.asarray(logits)[seg > 0], full[:, :6][seg > 0], atol=1e-5)
    for t in range(4):
        feed = np.stack([tokens[0, 6 + t : 7 + t], tokens[1, 4 + t : 5 + t]])
        logits, cache = step(jnp.asarray(feed), cache, ones)
        np.testing.assert_allclose(np.asarray(logits[0, 0]), full[0, 6 + t], atol=1e-5)
        np.testing.assert_allclose(np.asarray(logits[1, 0]), full[1, 4 + t], atol=1e-5)


def greedy_generate(config, params, prompts, prompt_mask, steps, eos_id):
    """(tokens [B, steps], log-likelihoods [B]) for right-padded prompts [B, P]: prefill all
    but each row's last real token (its segment id is set to 0), then decode starting from
    that token (start_id per row)."""
    batch, plen = prompts.shape
    lengths = prompt_mask.sum(1)
    last = prompts[np.arange(batch), lengths - 1]
    prefill_seg = (np.arange(plen)[None] < (lengths - 1)[:, None]).astype(np.int32)
    step = _step_fn(config, params)
    cache = network.init_cache(config, batch, plen + steps)
    _, cache = jax.jit(step)(jnp.asarray(prompts), cache, jnp.asarray(prefill_seg))

    def tokens_to_logits(tokens, cache):
        logits, cache = step(tokens, cache)
        return logits[:, -1], cache

    fn = jax.jit(
        lambda cache, start: decoding.temperature_sample(
            tokens_to_logits,
            cache,
            batch_size=batch,
            max_decode_length=steps,
            temperature=0.0,
            eos_id=eos_id,
            start_id=start,
        )
    )
    tokens, scores = fn(cache, jnp.asarray(last, jnp.int32))
    return np.asarray(tokens), np.asarray(scores)


def test_greedy_generation_matches_transformers_generate():
    config = CONFIGS["heads4"]
    model = testing.random_hf_bloom(config, seed=11)
    params = hf.params_from_hf_state_dict(testing.hf_state_dict(model), config)
    lengths = np.array([6, 3, 5])
    prompts = testing.random_tokens(3, 6, config.vocab_size, seed=12, low=4)
    right = np.arange(6)[None] < lengths[:, None]
    ours, scores = greedy_generate(config, params, np.where(right, prompts, 0), right, 8, eos_id=2)
    assert len(set(ours.ravel().tolist())) > 6  # not one token repeated
    # transformers: left-padded batch and each prompt alone
    left = np.zeros_like(prompts)
    for b, n in enumerate(lengths):
        left[b, 6 - n :] = prompts[b, :n]
    with torch.no_grad():
        batch_out = model.generate(
            input_ids=torch.tensor(left, dtype=torch.long),
            attention_mask=torch.tensor(left > 0, dtype=torch.long),
            do_sample=False,
            max_new_tokens=8,
            eos_token_id=2,
            pad_token_id=3,
        ).numpy()[:, 6:]
    for b, n in enumerate(lengths):
        with torch.no_grad():
            alone = model.generate(
                input_ids=torch.tensor(prompts[b : b + 1, :n], dtype=torch.long),
                do_sample=False,
                max_new_tokens=8,
                eos_token_id=2,
                pad_token_id=3,
            ).numpy()[0, n:]
        stop = list(ours[b]).index(2) + 1 if 2 in ours[b] else 8
        np.testing.assert_array_equal(ours[b, :stop], alone[:stop])
        seq = np.concatenate([prompts[b, :n], ours[b, :stop]])[None]
        logp = torch.log_softmax(torch.tensor(_hf_logits(model, seq), dtype=torch.float64), -1)
        theirs = sum(logp[0, n - 1 + t, int(seq[0, n + t])].item() for t in range(stop))
        np.testing.assert_allclose(scores[b], theirs, atol=1e-4)
        np.testing.assert_array_equal(ours[b, :stop], batch_out[b, :stop])


def test_remat_dropout_and_bfloat16():
    config = testing.tiny_config(num_layers=1, dropout_rate=0.1, attention_dropout_rate=0.1)
    params = hf.params_from_hf_state_dict(
        testing.hf_state_dict(testing.random_hf_bloom(config, seed=2)), config
    )
    tokens = jnp.asarray(testing.random_tokens(2, 8, config.vocab_size, seed=3))

    def loss(cfg, p, rng):
        logits = network.Bloom(cfg).apply(
            {"params": p}, tokens, enable_dropout=True, rngs={"dropout": rng}
        )
        return -jnp.mean(jax.nn.log_softmax(logits)[:, :-1].max(-1))

    def grads(cfg):
        return jax.jit(jax.value_and_grad(functools.partial(loss, cfg)))

    key = functools.partial(jax.random.key, impl="rbg")  # compiles faster than threefry on CPU
    plain = grads(config)
    (l0, g0), (l1, g1) = (
        plain(params, key(7)),
        grads(config.replace(remat_policy="full"))(params, key(7)),
    )
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), g0, g1)
    assert abs(float(l0) - float(plain(params, key(8))[0])) > 1e-6  # rng is used
    clean = config.replace(dropout_rate=0.0, attention_dropout_rate=0.0)
    f32 = _forward(clean, params, tokens)
    bf16 = _forward(clean.replace(dtype="bfloat16"), params, tokens)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, f32, atol=0.05 * np.abs(f32).max())


def test_param_tree_and_logical_axes():
    config = testing.tiny_config(num_heads=8, hidden_size=64, num_layers=2)
    shapes, axes = network.abstract_params_with_axes(config)
    flat = {
        jax.tree_util.keystr(p, simple=True, separator="/"): (s.shape, tuple(a))
        for (p, s), a in zip(
            jax.tree_util.tree_leaves_with_path(shapes),
            jax.tree_util.tree_leaves(
                axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
            ),
        )
    }
    assert flat == {
        "word_embeddings/embedding": ((200, 64), ("vocab", "embed")),
        "word_embeddings_layernorm/scale": ((64,), ("embed",)),
        "word_embeddings_layernorm/bias": ((64,), ("embed",)),
        "ln_f/scale": ((64,), ("embed",)),
        "ln_f/bias": ((64,), ("embed",)),
        **{
            f"h_{i}/{name}": value
            for i in range(2)
            for name, value in {
                "input_layernorm/scale": ((64,), ("embed",)),
                "input_layernorm/bias": ((64,), ("embed",)),
                "self_attention/query_key_value/kernel": ((64, 8, 24), ("embed", "heads", "kv")),
                "self_attention/query_key_value/bias": ((8, 24), ("heads", "kv")),
                "self_attention/dense/kernel": ((64, 64), ("joined_kv", "embed")),
                "self_attention/dense/bias": ((64,), ("embed",)),
                "post_attention_layernorm/scale": ((64,), ("embed",)),
                "post_attention_layernorm/bias": ((64,), ("embed",)),
                "mlp/dense_h_to_4h/kernel": ((64, 256), ("embed", "mlp")),
                "mlp/dense_h_to_4h/bias": ((256,), ("mlp",)),
                "mlp/dense_4h_to_h/kernel": ((256, 64), ("mlp", "embed")),
                "mlp/dense_4h_to_h/bias": ((64,), ("embed",)),
            }.items()
        },
    }


def test_model_parallel_shards_hold_whole_heads():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    config = testing.tiny_config(num_heads=8, hidden_size=64)
    model = testing.random_hf_bloom(config, seed=5)
    sd = testing.hf_state_dict(model)
    params = hf.params_from_hf_state_dict(sd, config)
    mesh = partitioning.create_mesh(num_partitions=4, devices=jax.devices()[:8])
    assert dict(mesh.shape) == {"data": 2, "model": 4}
    _, axes = network.abstract_params_with_axes(config)
    shardings = partitioning.shardings_for(axes, mesh)
    layer = shardings["h_0"]
    assert tuple(layer["self_attention"]["query_key_value"]["kernel"].spec) == (None, "model", None)
    assert tuple(layer["mlp"]["dense_h_to_4h"]["kernel"].spec) == (None, "model")
    assert tuple(layer["mlp"]["dense_4h_to_h"]["kernel"].spec) == ("model", None)
    sharded = jax.device_put(params, shardings)
    kernel = sharded["h_1"]["self_attention"]["query_key_value"]["kernel"]
    hf_qkv = sd["transformer.h.1.self_attention.query_key_value.weight"]  # [3H, H]
    d = config.head_dim
    for shard in kernel.addressable_shards:
        heads = range(config.num_heads)[shard.index[1]]
        assert shard.data.shape == (64, 2, 3 * d)  # 8 heads over 4 devices
        for j, h in enumerate(heads):  # q, k and v of head h, in transformers' rows
            np.testing.assert_array_equal(
                np.asarray(shard.data)[:, j].T, hf_qkv[h * 3 * d : (h + 1) * 3 * d]
            )
    mlp = sharded["h_0"]["mlp"]["dense_h_to_4h"]["kernel"]
    assert {s.data.shape for s in mlp.addressable_shards} == {(64, 64)}
    tokens = testing.random_tokens(4, 12, config.vocab_size, seed=6)
    with partitioning.activate(mesh):
        fn = jax.jit(lambda p, t: network.Bloom(config).apply({"params": p}, t))
        got = np.asarray(fn(sharded, jax.device_put(tokens, partitioning.batch_sharding(mesh))))
    np.testing.assert_allclose(got, _forward(config, params, tokens), atol=1e-5)
