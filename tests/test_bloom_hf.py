"""BLOOM checkpoints move between transformers and t0x without loss, in every hub layout."""

import json

import jax
import numpy as np
import pytest

from t0x.models.bloom import config as bloom_config
from t0x.models.bloom import hf, network, testing

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIG = testing.tiny_config(num_heads=6, hidden_size=48)


@pytest.fixture(scope="module")
def hf_model():
    return testing.random_hf_bloom(CONFIG, seed=9)


def _assert_same_params(a, b):
    flat_a = dict(jax.tree_util.tree_leaves_with_path(a))
    flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
    assert flat_a.keys() == flat_b.keys()
    for k in flat_a:
        np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=jax.tree_util.keystr(k))


def test_state_dict_round_trip_is_bit_exact(hf_model):
    sd = testing.hf_state_dict(hf_model)
    params = hf.params_from_hf_state_dict(sd, CONFIG)
    back = hf.params_to_hf_state_dict(params, CONFIG)
    assert set(back) == set(sd) - {"lm_head.weight"}
    for name, x in back.items():
        np.testing.assert_array_equal(x, sd[name], err_msg=name)
    np.testing.assert_array_equal(sd["lm_head.weight"], back["transformer.word_embeddings.weight"])
    # the fused QKV kernel is transformers' head-interleaved layout, reshaped
    qkv = params["h_0"]["self_attention"]["query_key_value"]["kernel"]  # [H, heads, 3d]
    d = CONFIG.head_dim
    w = sd["transformer.h.0.self_attention.query_key_value.weight"]
    np.testing.assert_array_equal(qkv[:, 2, d : 2 * d].T, w[2 * 3 * d + d : 2 * 3 * d + 2 * d])


def test_save_hf_loads_in_transformers_without_missing_keys(hf_model, tmp_path):
    params = hf.params_from_hf_state_dict(testing.hf_state_dict(hf_model), CONFIG)
    path = hf.save_hf(str(tmp_path / "out"), params, CONFIG)
    loaded, info = transformers.BloomForCausalLM.from_pretrained(path, output_loading_info=True)
    assert info["missing_keys"] in ([], set()) and info["unexpected_keys"] in ([], set()), info
    tokens = torch.tensor(testing.random_tokens(2, 9, CONFIG.vocab_size, seed=1), dtype=torch.long)
    with torch.no_grad():
        np.testing.assert_array_equal(
            loaded.eval()(input_ids=tokens).logits.numpy(),
            hf_model(input_ids=tokens).logits.numpy(),
        )
    params2, config2 = hf.load_hf(path, dtype="float32")
    assert config2 == CONFIG
    _assert_same_params(params2, params)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        hf.save_hf(path, params, CONFIG)
    hf.save_hf(path, params, CONFIG, overwrite=True)


def test_bloom_model_checkpoint_with_legacy_config(hf_model, tmp_path):
    """BigScience's hub layout: saved from BloomModel (no `transformer.`, no lm_head) with
    n_embed / num_attention_heads / n_layer in config.json."""
    base = transformers.BloomModel(hf_model.config)
    base.load_state_dict(hf_model.transformer.state_dict())
    base.save_pretrained(tmp_path)
    with open(tmp_path / "config.json") as f:
        cfg = json.load(f)
    for new, old in (("hidden_size", "n_embed"), ("n_head", "num_attention_heads")):
        cfg[old] = cfg.pop(new)
    cfg.update(n_inner=None, masked_softmax_fusion=True, offset_alibi=100, seq_length=2048)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg, f)
    from t0x.checkpoints.hf_files import load_state_dict as load_hf_state_dict

    assert not any(
        k.startswith("transformer.") or k == "lm_head.weight"
        for k in load_hf_state_dict(str(tmp_path))
    )
    params, config = hf.load_hf(str(tmp_path), dtype="float32")
    assert config == CONFIG
    _assert_same_params(
        params, hf.params_from_hf_state_dict(testing.hf_state_dict(hf_model), CONFIG)
    )


def test_sharded_safetensors_folder(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert not (tmp_path / "model.safetensors").exists()
    params, config = hf.load_hf(str(tmp_path), dtype="float32")
    assert config == CONFIG
    _assert_same_params(
        params, hf.params_from_hf_state_dict(testing.hf_state_dict(hf_model), CONFIG)
    )


def test_checkpoint_errors_are_clear(hf_model):
    sd = testing.hf_state_dict(hf_model)
    untied = dict(sd, **{"lm_head.weight": sd["lm_head.weight"] + 1.0})
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        hf.params_from_hf_state_dict(untied, CONFIG)
    with pytest.raises(ValueError, match="unexpected"):
        hf.params_from_hf_state_dict(sd, CONFIG.replace(num_layers=1))
    with pytest.raises(ValueError, match="shape"):
        hf.params_from_hf_state_dict(sd, CONFIG.replace(vocab_size=300))
    with pytest.raises(ValueError, match="model_type"):
        hf.config_from_hf({"model_type": "gpt2"})
    with pytest.raises(ValueError, match="post_layernorm"):
        hf.config_from_hf(
            dict(hf.config_to_hf(CONFIG), apply_residual_connection_post_layernorm=True)
        )
    with pytest.raises(ValueError, match="num_heads"):
        bloom_config.BloomConfig(hidden_size=50, num_heads=6)
    with pytest.raises(ValueError, match="dtype"):
        bloom_config.BloomConfig(dtype="float16")


def test_config_round_trips_through_transformers():
    for config in (CONFIG, bloom_config.PRESETS["bloom_176b"].replace(dropout_rate=0.1)):
        theirs = transformers.BloomConfig(**hf.config_to_hf(config))
        assert (theirs.hidden_size, theirs.n_layer, theirs.n_head) == (
            config.hidden_size,
            config.num_layers,
            config.num_heads,
        )
        assert hf.config_from_hf(theirs.to_dict(), dtype=config.dtype) == config


def test_bloom_560m_parameter_count():
    config = bloom_config.PRESETS["bloom_560m"]
    shapes, _ = network.abstract_params_with_axes(config)
    ours = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
    assert ours == 559_214_592
    with torch.device("meta"):
        model = transformers.BloomForCausalLM(transformers.BloomConfig(**hf.config_to_hf(config)))
    assert sum(p.numel() for p in model.parameters()) == ours
    for name, preset in bloom_config.PRESETS.items():
        assert preset.vocab_size == 250880 and preset.mlp_dim == 4 * preset.hidden_size, name
