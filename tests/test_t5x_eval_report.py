"""`t0x eval-report`: T5X's own evaluation output (tests/fixtures/t5x_eval, written by
upstream t5x/eval.py) becomes t0x's report, median over prompts per dataset."""

import json
import shutil
import statistics
from pathlib import Path

import pytest

from t0x.errors import DataError, OutputExistsError
from t0x.eval import t5x_report

FIXTURE = Path(__file__).parent / "fixtures" / "t5x_eval"


def test_t5x_eval_dir_becomes_the_report(tmp_path):
    results = t5x_report.write_t5x_report(str(FIXTURE), str(tmp_path / "report"))
    assert results["run"]["engine"] == "t5x" and results["run"]["step"] == 6
    assert results["run"]["checkpoint"] == "/tmp/t0xxl/checkpoint_6"
    rte = results["datasets"]["super_glue/rte"]
    assert rte["num_prompts"] == 10 and rte["median"] == 50.0
    assert {d: results["datasets"][d]["num_prompts"] for d in ("anli/r1", "anli")} == {
        "anli/r1": 2,
        "anli": 6,
    }
    assert (tmp_path / "report" / "results.md").read_text().count("super_glue/rte") == 1
    assert (tmp_path / "report" / "results.png").stat().st_size > 0
    with pytest.raises(OutputExistsError, match="--overwrite"):
        t5x_report.write_t5x_report(str(FIXTURE), str(tmp_path / "report"))


def test_later_step_and_the_median_over_prompts(tmp_path):
    eval_dir = tmp_path / "t5x"
    shutil.copytree(FIXTURE, eval_dir)
    metrics = sorted((eval_dir / "inference_eval").glob("super_glue_rte_*-metrics.jsonl"))
    accuracies = [10.0 * i for i in range(len(metrics))]
    for path, accuracy in zip(metrics, accuracies):
        with path.open("a") as f:  # T5X appends one line per evaluated step
            f.write(json.dumps({"step": 8, "accuracy": accuracy, "f1": 0.0}) + "\n")
    latest, step = t5x_report.read_t5x_metrics(str(eval_dir))
    assert step == 6  # the latest step every task has (the ANLI files stop at 6)
    with pytest.raises(DataError, match="no line for step 8"):
        t5x_report.read_t5x_metrics(str(eval_dir), step=8)
    for path in (eval_dir / "inference_eval").glob("anli_*"):
        path.unlink()
    results = t5x_report.write_t5x_report(str(eval_dir), str(tmp_path / "out"))
    assert results["run"]["step"] == 8
    assert results["datasets"]["super_glue/rte"]["median"] == statistics.median(accuracies)


def test_bad_input_names_the_file_and_line(tmp_path):
    with pytest.raises(DataError, match="no T5X metrics"):
        t5x_report.read_t5x_metrics(str(tmp_path))
    (tmp_path / "inference_eval").mkdir()
    bad = tmp_path / "inference_eval" / "super_glue_rte_GPT_3_style_score_eval-metrics.jsonl"
    bad.write_text('{"step": 6, "accuracy": 50.0}\n{not json\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:2"):
        t5x_report.read_t5x_metrics(str(tmp_path))


def test_cli_eval_report(tmp_path, capsys):
    from t0x import cli

    out = tmp_path / "report"
    assert cli.main(["eval-report", str(FIXTURE), "--output_dir", str(out)]) == 0
    assert "16 tasks at step 6" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["run"]["engine"] == "t5x"
    assert cli.main(["eval-report", str(FIXTURE), "--output_dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["eval-report", str(tmp_path / "nothing")]) == 3
