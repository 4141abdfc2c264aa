"""The evaluation report: medians/means over prompts, ANLI pooled, and the files it writes."""

import json
import os

import pytest

from t0x.eval import report as eval_report


def _result(task, dataset, template, score, group=None):
    r = {
        "task": task,
        "dataset": dataset,
        "template": template,
        "score": score,
        "metric": "accuracy",
        "metrics": {"accuracy": score},
    }
    if group:
        r["group"] = group
    return r


def _write(output_dir, results):
    folder = os.path.join(output_dir, eval_report.TASKS_DIR)
    os.makedirs(folder, exist_ok=True)
    for r in results:
        with open(os.path.join(folder, r["task"] + ".json"), "w") as f:
            json.dump(r, f)


RESULTS = [
    _result("rte_a", "super_glue/rte", "a", 50.0),
    _result("rte_b", "super_glue/rte", "b", 60.0),
    _result("rte_c", "super_glue/rte", "c", 70.0),
    _result("rte_d", "super_glue/rte", "d", 100.0),
    _result("cb_a", "super_glue/cb", "a", 40.0),
    _result("anli_x_r1", "anli/r1", "x", 30.0, group="anli"),
    _result("anli_y_r1", "anli/r1", "y", 36.0, group="anli"),
    _result("anli_x_r2", "anli/r2", "x", 33.0, group="anli"),
    _result("anli_y_r2", "anli/r2", "y", 35.0, group="anli"),
    _result("anli_x_r3", "anli/r3", "x", 31.0, group="anli"),
    _result("anli_y_r3", "anli/r3", "y", 40.0, group="anli"),
]


def test_aggregate_median_mean_and_anli_pooled():
    d = eval_report.aggregate(RESULTS)
    rte = d["super_glue/rte"]
    assert rte["median"] == 65.0  # even count: mean of the two middle values
    assert rte["mean"] == 70.0
    assert (rte["min"], rte["max"], rte["num_prompts"]) == (50.0, 100.0, 4)
    assert rte["prompts"] == {"a": 50.0, "b": 60.0, "c": 70.0, "d": 100.0}
    assert d["super_glue/cb"]["median"] == 40.0 and d["super_glue/cb"]["mean"] == 40.0
    assert d["anli/r1"]["median"] == 33.0 and d["anli/r1"]["mean"] == 33.0
    assert d["anli/r3"]["median"] == 35.5
    anli = d["anli"]
    assert anli["num_prompts"] == 6
    assert anli["prompts"]["x (r2)"] == 33.0
    assert anli["median"] == 34.0  # sorted 30 31 33 35 36 40
    assert anli["mean"] == pytest.approx(205.0 / 6)


def test_duplicate_prompt_is_an_error():
    with pytest.raises(ValueError, match="both report"):
        eval_report.aggregate([_result("t1", "d", "a", 1.0), _result("t2", "d", "a", 2.0)])


def test_write_report_files(tmp_path):
    out = str(tmp_path)
    _write(out, RESULTS)
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"super_glue/rte": 64.55, "anli": 33.0}))
    run = {"checkpoint": "/ckpt", "mixture": "t0_eval_score_eval", "split": "validation", "step": 7}
    results = eval_report.write_report(out, run=run, reference_file=str(ref))

    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert on_disk["datasets"]["super_glue/rte"]["median"] == 65.0
    assert on_disk["run"]["checkpoint"] == "/ckpt" and on_disk["run"]["num_tasks"] == len(RESULTS)
    assert {"time", "t0x_version"} <= set(on_disk["run"])

    md = (tmp_path / "results.md").read_text()
    rte_line = next(l for l in md.splitlines() if l.startswith("| super_glue/rte "))
    assert [c.strip() for c in rte_line.strip("|").split("|")] == [
        "super_glue/rte",
        "65.00",
        "70.00",
        "50.00",
        "100.00",
        "4",
        "64.55",
        "+0.45",
    ]
    cb_line = next(l for l in md.splitlines() if l.startswith("| super_glue/cb "))
    assert cb_line.rstrip().endswith("| – | – |")

    png = (tmp_path / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(
        str(tmp_path / "tensorboard"), size_guidance={event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert "eval/super_glue/rte/median" in tags and "eval/anli/mean" in tags
    import tensorflow as tf

    event = acc.Tensors("eval/super_glue/rte/median")[0]
    assert event.step == 7
    assert float(tf.make_ndarray(event.tensor_proto)) == pytest.approx(65.0)
    assert not [p for p in os.listdir(out) if ".tmp-" in p]


def test_write_report_without_results_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="tasks"):
        eval_report.write_report(str(tmp_path))


def test_bad_reference_file(tmp_path):
    ref = tmp_path / "ref.json"
    ref.write_text("[1, 2]")
    with pytest.raises(ValueError, match="dataset"):
        eval_report.read_reference(str(ref))
