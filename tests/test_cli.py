"""The `t0x` command end to end: score and convert against transformers, tasks commands."""

import json

import numpy as np
import pytest
import torch

from t0x import cli
from t0x.models.t5 import hf
from t0x.testing import seqio_test_vocabulary
from t0x.models.t5.testing import random_hf_t5, tiny_config
from t0_tasks.testing import REFERENCE_DIR


def _hf_loglik(model, inputs: list[int], targets: list[int]) -> float:
    with torch.no_grad():
        out = model(input_ids=torch.tensor([inputs]), labels=torch.tensor([targets]))
        logp = torch.log_softmax(out.logits.float(), -1)[0]
        return float(logp[torch.arange(len(targets)), torch.tensor(targets)].sum())


def test_score_matches_transformers(tmp_path, capsys):
    cfg = tiny_config()
    model = random_hf_t5(cfg, seed=3)
    ckpt = tmp_path / "hf"
    model.save_pretrained(ckpt)
    vocab = seqio_test_vocabulary()
    lines = [
        {"inputs": [5, 9, 14, 3], "targets": [7, 8, 1]},
        {"inputs": [21, 4], "targets": [11]},
        {"inputs": "a cat sat", "targets": "on a mat", "id": "x"},
    ]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(l) + "\n" for l in lines))
    vocab_path = vocab.sentencepiece_model_file
    assert (
        cli.main(
            [
                "score",
                "--checkpoint",
                str(ckpt),
                "--input",
                str(src),
                "--output",
                str(dst),
                "--vocab",
                vocab_path,
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    out = [json.loads(l) for l in dst.read_text().splitlines()]
    assert [o["inputs"] for o in out] == [l["inputs"] for l in lines] and out[2]["id"] == "x"
    expected = [
        _hf_loglik(model, [5, 9, 14, 3], [7, 8, 1]),
        _hf_loglik(model, [21, 4], [11]),  # id lists: no EOS added
        _hf_loglik(model, list(vocab.encode("a cat sat")), list(vocab.encode("on a mat")) + [1]),
    ]
    np.testing.assert_allclose([o["log_likelihood"] for o in out], expected, atol=1e-4)


def test_score_rejects_bad_lines(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"inputs": "only inputs"}\n')
    assert (
        cli.main(
            [
                "score",
                "--checkpoint",
                str(tmp_path),
                "--input",
                str(src),
                "--output",
                str(tmp_path / "o.jsonl"),
            ]
        )
        == 3  # a data error (t0x.errors.DataError)
    )
    assert "in.jsonl:1: each line needs 'inputs' and 'targets'" in capsys.readouterr().err


def test_convert_t5x_to_hf_loads_in_transformers(tmp_path, capsys):
    ckpt = REFERENCE_DIR / "t5x_testdata" / "test_t5_tiny.checkpoint_0"
    if not ckpt.exists():
        pytest.skip(f"T5X's test checkpoint not found at {ckpt}")
    from transformers import T5ForConditionalGeneration

    dst = tmp_path / "hf"
    assert cli.main(["convert", "--from", "t5x", "--to", "hf", str(ckpt), str(dst)]) == 0
    model, info = T5ForConditionalGeneration.from_pretrained(dst, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    params, _ = hf.load_hf(dst)
    from t0x.checkpoints.t5x import read_t5x_params

    t5x = read_t5x_params(ckpt)
    np.testing.assert_array_equal(
        params["decoder"]["logits_dense"]["kernel"], t5x["decoder"]["logits_dense"]["kernel"]
    )
    # a second convert into the same folder is refused, naming the flag
    assert cli.main(["convert", "--from", "t5x", "--to", "hf", str(ckpt), str(dst)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_tasks_commands(capsys):
    assert cli.main(["tasks", "list", "--mixture", "t0_eval_score_eval"]) == 0
    names = capsys.readouterr().out.split()
    assert "super_glue_rte_GPT_3_style_score_eval" in names
    assert cli.main(["tasks", "show", "super_glue_rte_GPT_3_style", "-n", "1"]) == 0
    shown = capsys.readouterr().out
    assert "inputs:" in shown and "targets:" in shown and "answer_choices:" in shown
    assert cli.main(["tasks", "stats", "t0_train", "--steps", "100", "--batch-size", "8"]) == 0
    assert capsys.readouterr().out.strip().endswith("313 tasks")
    assert cli.main(["tasks", "show", "super_glue_rte_GPT3_style"]) == 3  # unknown name: data
    assert "Did you mean: super_glue_rte_GPT_3_style" in capsys.readouterr().err


def test_gin_includes_resolve_with_a_runs_folder_in_the_working_dir(tmp_path, monkeypatch):
    """`runs/demo` in the cwd is a namespace package to Python; gin must still find
    'runs/finetune.gin' in the repo's gin/ folder (a second `make demo` used to crash)."""
    from t0x import gin_config

    (tmp_path / "runs" / "demo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    gin_config.parse([str(gin_config.GIN_DIR / "demo.gin")], ["MODEL_DIR = '/tmp/x'"])
    gin_config.parse([str(gin_config.GIN_DIR / "demo.gin")], ["MODEL_DIR = '/tmp/x'"])
    import gin

    assert gin.query_parameter("t0x.train.batch_size") is not None
    with pytest.raises(OSError, match="nope.gin"):
        gin_config.parse(["nope.gin"], [])
