"""Hugging Face checkpoints: exact round trips, files transformers loads, tied T5 1.0 heads."""

import json
import os

import jax
import numpy as np
import pytest

from t0x.models.t5 import testing
from t0x.checkpoints import hf_files
from t0x.models.t5 import hf
from t0x.models.t5.model import EncoderDecoderModel

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _numpy_sd(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _hf_logits(model, batch):
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(batch["encoder_input_tokens"], dtype=torch.long),
            attention_mask=torch.tensor(batch["encoder_input_tokens"] > 0),
            decoder_input_ids=torch.tensor(batch["decoder_input_tokens"], dtype=torch.long),
        ).logits.numpy()


def _assert_same_logits(params, config, hf_model, batch):
    ours = np.asarray(jax.jit(EncoderDecoderModel(config).compute_logits)(params, batch))
    valid = batch["decoder_loss_weights"] > 0
    np.testing.assert_allclose(
        ours[valid], _hf_logits(hf_model, batch)[valid], atol=1e-4, rtol=1e-4
    )


@pytest.fixture(scope="module")
def hf_model():
    return testing.random_hf_t5(testing.tiny_config(), seed=0)


def test_config_round_trip_and_rejections():
    config = testing.tiny_config(num_decoder_layers=3, dropout_rate=0.1)
    assert hf.config_from_hf(hf.config_to_hf(config), dtype="float32") == config
    relu = testing.tiny_config(mlp_activations=("relu",))
    assert hf.config_from_hf(hf.config_to_hf(relu), dtype="float32") == relu
    with pytest.raises(ValueError, match="feed_forward_proj"):
        hf.config_from_hf({**hf.config_to_hf(config), "feed_forward_proj": "gelu"})
    with pytest.raises(ValueError, match="model_type"):
        hf.config_from_hf({**hf.config_to_hf(config), "model_type": "bart"})
    with pytest.raises(ValueError, match="no transformers"):
        hf.config_to_hf(testing.tiny_config(mlp_activations=("gelu", "relu")))


def test_hf_to_t0x_to_hf_is_exact(hf_model):
    config = testing.tiny_config()
    sd = _numpy_sd(hf_model)
    back = hf.params_to_hf_state_dict(hf.params_from_hf_state_dict(sd, config), config)
    assert set(back) == set(sd)
    for name, value in sd.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_save_hf_loads_in_transformers_without_missing_keys(hf_model, tmp_path):
    config = testing.tiny_config()
    params = hf.params_from_hf_state_dict(_numpy_sd(hf_model), config)
    out = hf.save_hf(str(tmp_path / "export"), params, config)
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    assert json.load(open(os.path.join(out, "config.json")))["tie_word_embeddings"] is False
    loaded, info = transformers.T5ForConditionalGeneration.from_pretrained(
        out, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    for name, value in _numpy_sd(loaded).items():
        np.testing.assert_array_equal(value, _numpy_sd(hf_model)[name], err_msg=name)
    params2, config2 = hf.load_hf(out, dtype="float32")
    assert config2 == config
    jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)
    # never overwrite what a user has, unless asked
    with pytest.raises(FileExistsError, match="overwrite=True"):
        hf.save_hf(out, params, config)
    hf.save_hf(out, params, config, overwrite=True)


def test_load_hf_reads_transformers_own_files(hf_model, tmp_path):
    config = testing.tiny_config()
    batch = testing.random_batch(3, input_len=10, target_len=6, seed=1)
    hf_model.save_pretrained(tmp_path / "plain")  # transformers 5: tie=true, scale=false
    hf_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert os.path.exists(tmp_path / "sharded" / hf_files.SAFE_INDEX)
    torch_dir = tmp_path / "torch"
    torch_dir.mkdir()
    torch.save(hf_model.state_dict(), torch_dir / hf_files.TORCH_WEIGHTS)
    (torch_dir / "config.json").write_text(json.dumps(hf.config_to_hf(config)))
    for name in ("plain", "sharded", "torch"):
        params, loaded_config = hf.load_hf(str(tmp_path / name), dtype="float32")
        assert loaded_config == config, name
        _assert_same_logits(params, config, hf_model, batch)
    with pytest.raises(FileNotFoundError, match="config.json"):
        hf.load_hf(str(tmp_path))


def test_tied_t5_1_0_checkpoint_is_imported_with_its_scale(tmp_path):
    config = testing.tiny_config(mlp_activations=("relu",))
    hf_config = {**hf.config_to_hf(config), "tie_word_embeddings": True}
    hf_config.pop("scale_decoder_outputs")
    torch.manual_seed(0)
    tied = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf_config)).eval()
    assert tied.config.scale_decoder_outputs
    tied.save_pretrained(tmp_path / "t5_1_0")
    params, loaded_config = hf.load_hf(str(tmp_path / "t5_1_0"), dtype="float32")
    assert not loaded_config.logits_via_embedding
    batch = testing.random_batch(3, input_len=10, target_len=6, seed=2)
    _assert_same_logits(params, loaded_config, tied, batch)
    # exported again, it is an untied checkpoint with the same function
    out = hf.save_hf(str(tmp_path / "again"), params, loaded_config)
    again = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    np.testing.assert_allclose(_hf_logits(again, batch), _hf_logits(tied, batch), atol=1e-5)


def test_mismatched_config_is_a_clear_error(hf_model):
    sd = _numpy_sd(hf_model)
    with pytest.raises(ValueError, match="does not match"):
        hf.params_from_hf_state_dict(sd, testing.tiny_config(num_encoder_layers=3))
    with pytest.raises(ValueError, match="expected"):
        hf.params_from_hf_state_dict(sd, testing.tiny_config(mlp_dim=48))
