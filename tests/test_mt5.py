"""mT5 (mT0's base model): presets, Hugging Face MT5ForConditionalGeneration folders, T5X
mT5 checkpoints, and rank evaluation of the multilingual suite against transformers.

The oracle is transformers' own MT5ForConditionalGeneration: its parameter count (built on
the meta device), the files its `save_pretrained` writes, and its scores of each example
alone. mT5 is T5 1.1 with a 250,112-token vocabulary; the tiny model here keeps a small
vocabulary and says it is an mT5 through `hf_model_type` (the folder's `model_type`).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from t0x.checkpoints import convert, load
from t0x.models.t5 import hf, testing
from t0x.models.t5.config import CONFIGS, MT5_VOCAB_SIZE
from t0x.models.t5.model import EncoderDecoderModel

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

T5X_TINY = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "reference"
    / "t5x_testdata"
    / "test_t5_tiny.checkpoint_0"
)

# (emb_dim, heads, layers, mlp_dim) of DESIGN.md's mT5 table, and the parameter counts:
# token embedding and untied LM head (250,112 x emb_dim each) plus the T5 1.1 stacks.
MT5_SIZES = {
    "small": ((512, 6, 8, 1024), 300_176_768),
    "base": ((768, 12, 12, 2048), 582_401_280),
    "large": ((1024, 16, 24, 2816), 1_229_581_312),
    "xl": ((2048, 32, 24, 5120), 3_742_619_648),
    "xxl": ((4096, 64, 24, 10240), 12_921_057_280),
}


def _num_params(config) -> int:
    shapes, _ = EncoderDecoderModel(config).abstract_params_with_axes()
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


@pytest.fixture(scope="module")
def tiny():
    """(config, transformers' MT5ForConditionalGeneration with random weights)."""
    config = testing.tiny_config(hf_model_type="mt5")
    model = testing.random_hf_t5(config, seed=11)
    assert type(model).__name__ == "MT5ForConditionalGeneration"
    return config, model


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("mt5") / "hf"
    tiny[1].save_pretrained(str(path))
    return str(path)


def test_mt5_presets_and_their_parameter_counts():
    for size, ((emb, heads, layers, mlp), want) in MT5_SIZES.items():
        config = CONFIGS[f"mt5_{size}"]
        assert (config.vocab_size, config.hf_model_type) == (MT5_VOCAB_SIZE, "mt5")
        assert (config.emb_dim, config.num_heads, config.mlp_dim, config.head_dim) == (
            emb,
            heads,
            mlp,
            64,
        )
        assert config.num_encoder_layers == config.num_decoder_layers == layers
        t5 = CONFIGS[f"t5_1_1_{size}"]  # the same architecture, T5's vocabulary
        assert config == t5.replace(vocab_size=MT5_VOCAB_SIZE, hf_model_type="mt5")
        hf_config = hf.config_to_hf(config)
        assert hf_config["model_type"] == "mt5" and hf_config["tie_word_embeddings"] is False
        assert _num_params(config) == want, size
        assert testing.hf_num_params(hf_config) == want, size  # transformers' own count
    assert hf.config_to_hf(CONFIGS["t5_1_1_xxl"])["model_type"] == "t5"


def test_model_type_rule():
    assert testing.tiny_config().hf_model_type == "t5"
    assert testing.tiny_config(vocab_size=MT5_VOCAB_SIZE).hf_model_type == "t5"  # explicit
    assert type(CONFIGS["t5_1_1_tiny"])(vocab_size=MT5_VOCAB_SIZE).hf_model_type == "mt5"
    with pytest.raises(ValueError, match="hf_model_type"):
        testing.tiny_config(hf_model_type="bart")
    with pytest.raises(ValueError, match="untied"):
        hf.config_to_hf(testing.tiny_config(hf_model_type="mt5", logits_via_embedding=True))
    config = testing.tiny_config(hf_model_type="mt5", num_decoder_layers=3)
    hf_config = hf.config_to_hf(config)
    assert hf_config["architectures"] == ["MT5ForConditionalGeneration"]
    assert hf_config["tokenizer_class"] == "T5Tokenizer"
    assert "scale_decoder_outputs" not in hf_config
    assert hf.config_from_hf(hf_config, dtype="float32") == config
    for model_type in ("t5", "mt5"):  # keys a config.json omits: transformers' defaults
        defaults = hf.hf_classes(model_type)[0]().to_dict()
        want = hf.config_from_hf({**defaults, "model_type": model_type})
        assert hf.config_from_hf({"model_type": model_type}) == want


def test_hf_to_t0x_to_hf_is_exact(tiny, saved, tmp_path):
    config, model = tiny
    sd = testing.hf_state_dict(model)
    back = hf.params_to_hf_state_dict(hf.params_from_hf_state_dict(sd, config), config)
    assert set(back) == set(sd)
    for name, value in sd.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    # through files: transformers' folder -> a t0x checkpoint -> a Hugging Face folder
    convert.convert(saved, tmp_path / "t0x", to_fmt="t0x")
    assert load.load(tmp_path / "t0x").config.hf_model_type == "mt5"
    convert.convert(tmp_path / "t0x", tmp_path / "hf", to_fmt="hf")
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (written["model_type"], written["tie_word_embeddings"]) == ("mt5", False)
    loaded, info = transformers.MT5ForConditionalGeneration.from_pretrained(
        str(tmp_path / "hf"), output_loading_info=True
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    auto = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path / "hf"))
    assert type(auto).__name__ == "MT5ForConditionalGeneration"
    for name, value in testing.hf_state_dict(loaded).items():
        np.testing.assert_array_equal(value, sd[name], err_msg=name)


def test_scores_equal_transformers(tiny, saved):
    config, model = tiny
    # transformers 5 writes tie_word_embeddings: true for MT5, which never rescales
    assert json.loads((Path(saved) / "config.json").read_text())["tie_word_embeddings"]
    params, loaded = hf.load_hf(saved, dtype="float32")
    assert loaded == config
    batch = testing.random_batch(
        4, input_len=40, target_len=24, vocab_size=config.vocab_size, seed=5, min_len=3
    )
    ours = np.asarray(jax.jit(EncoderDecoderModel(loaded).score_batch)(params, batch))
    np.testing.assert_allclose(ours, testing.hf_scores(model, batch), rtol=1e-5, atol=1e-4)


def test_t5x_mt5_checkpoint_loads_as_mt5(tmp_path):
    """T5X's mT5 checkpoints have T5 1.1's tree with 250,112 embedding rows: T5X's own tiny
    checkpoint, widened to that vocabulary, loads as an mT5 and exports as one."""
    if not T5X_TINY.exists():
        pytest.skip(f"T5X's test checkpoint {T5X_TINY} is absent (shared/reference).")
    from flax import serialization

    target = serialization.msgpack_restore(T5X_TINY.read_bytes())["optimizer"]["target"]
    emb = target["token_embedder"]["embedding"]
    rows = np.resize(emb, (MT5_VOCAB_SIZE, emb.shape[1]))
    target["token_embedder"]["embedding"] = rows
    target["decoder"]["logits_dense"]["kernel"] = np.ascontiguousarray(rows.T[::-1])
    step_dir = tmp_path / "mt5_tiny" / "checkpoint_1000000"
    step_dir.mkdir(parents=True)
    tree = {"version": 3, "optimizer": {"target": target, "state": {"step": np.int32(1000000)}}}
    (step_dir / "checkpoint").write_bytes(serialization.msgpack_serialize(tree))
    ckpt = load.load(tmp_path / "mt5_tiny")
    assert (ckpt.format, ckpt.step) == ("t5x", 1000000)
    assert ckpt.config.vocab_size == MT5_VOCAB_SIZE and ckpt.config.hf_model_type == "mt5"
    want = CONFIGS["t5_1_1_tiny"].replace(vocab_size=MT5_VOCAB_SIZE, hf_model_type="mt5")
    assert ckpt.config == want
    convert.convert(tmp_path / "mt5_tiny", tmp_path / "hf", to_fmt="hf")
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (written["model_type"], written["vocab_size"]) == ("mt5", MT5_VOCAB_SIZE)
    params, _ = hf.load_hf(str(tmp_path / "hf"))
    jax.tree.map(np.testing.assert_array_equal, params, ckpt.params)


EVAL_TASKS = [  # fixture rows of XCOPA and XNLI (validation); L1 and L2 languages
    "xcopa_zh_best_option_score_eval",
    "xnli_sw_GPT_3_style_score_eval",
    "xnli_th_can_we_infer_score_eval",
]


def test_rank_eval_of_an_mt5_folder_equals_transformers(tiny, saved, tmp_path):
    """`t0x eval` on transformers' MT5 folder: each choice's score is transformers' summed
    log-likelihood of its tokens (EOS included) after the input, and each prediction their
    argmax."""
    import seqio

    from t0x.jobs import evaluate as ev

    _, model = tiny
    out = tmp_path / "eval"
    ev.evaluate(
        saved,
        str(out),
        mixture_or_task_name=None,
        tasks=EVAL_TASKS,
        batch_size=8,
        log=lambda *a: None,
    )
    for name in EVAL_TASKS:
        result = json.loads((out / "tasks" / f"{name}.json").read_text())
        by_row: dict[int, list] = {}
        task = seqio.get_mixture_or_task(name)
        for ex in task.get_dataset(None, "validation", shuffle=False).as_numpy_iterator():
            by_row.setdefault(int(ex["idx"][0]), []).append(ex)
        assert result["rows"] == sorted(by_row) and len(by_row) >= 2, name
        want = []
        for row in result["rows"]:
            exs = sorted(by_row[row], key=lambda e: int(e["idx"][1]))
            want.append([testing.hf_example_score(model, e["inputs"], e["targets"]) for e in exs])
        np.testing.assert_allclose(result["scores"], want, rtol=1e-5, atol=1e-4, err_msg=name)
        assert result["predictions"] == [int(np.argmax(w)) for w in want], name
