"""Evaluation suites end to end (`evaluate(..., suites=...)`, `t0x eval --suite`): each suite on
its fixtures with a tiny random T5, its report section checked against numbers recomputed
from the per-task result files; the combined report, the choice prefix per model family, and
the one-line errors.

Suites run on a few of their tasks (the task filter) with a few rows each, to stay fast.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

import t0_tasks
from t0_tasks import testing as task_testing
from t0_tasks.suites import bias_fairness as bf
from t0_tasks.suites import bigbench as bb
from t0_tasks.suites import multilingual as ml
from t0x import cli
from t0x.errors import ConfigError, DataError
from t0x.eval import suites
from t0x.jobs import evaluate as ev
from t0x.models.t5 import testing

pytest.importorskip("torch")

BIGBENCH_FIXTURES = Path(__file__).parent / "fixtures" / "bigbench"
QUIET = {"log": lambda s: None}


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_t5"
    testing.random_hf_t5(testing.tiny_config(), seed=5).save_pretrained(str(path))
    return str(path)


@pytest.fixture
def bigbench_fixtures():
    reg = t0_tasks.configure(bigbench_dir=str(BIGBENCH_FIXTURES))
    yield
    t0_tasks.register(reg.settings.replace(bigbench_dir=None))


def _tasks(out: Path, suite: str) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / suite / "tasks").glob("*.json")}


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_suite_table_and_errors():
    assert list(suites.SUITES) == ["t0_heldout", "bigbench_t0", "bias_fairness", "multilingual"]
    assert [s.name for s in suites.parse("multilingual, t0_heldout")] == [
        "multilingual",
        "t0_heldout",
    ]
    assert [s.name for s in suites.parse(["bias_fairness", "bias_fairness"])] == ["bias_fairness"]
    assert suites.get("multilingual").feature_lengths({"inputs": 1024, "targets": 256}) == {
        "inputs": 512,
        "targets": 256,
    }
    assert suites.get("bigbench_t0").split == "all" and suites.get("bias_fairness").split == "test"
    with pytest.raises(ConfigError, match="unknown evaluation suite 'nope'"):
        suites.parse("t0_heldout,nope")
    with pytest.raises(DataError, match=r"\['nothing_\*'\] match no task"):
        suites.plan(suites.parse("bias_fairness"), ["crows_pairs_*", "nothing_*"])
    assert suites.choice_prefix_change("bloom", {}, "") == " "
    assert suites.choice_prefix_change("t5", {}, " ") == ""
    assert suites.choice_prefix_change("t5", {}, "") is None
    assert suites.choice_prefix_change("bloom", {"target_prefix": ""}, "") is None


def test_bigbench_unavailable_is_one_line(tmp_path, capsys):
    reg = t0_tasks.configure(bigbench_dir=str(tmp_path / "absent"))
    try:
        with pytest.raises(DataError, match="BIG-bench tasks are not registered"):
            suites.plan(suites.parse("bigbench_t0"))
    finally:
        t0_tasks.register(reg.settings.replace(bigbench_dir=None))
    code = cli.main(["eval", "--suite", "t0_heldout", "--suite", "nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unknown evaluation suite 'nope'" in err[0]


def test_cli_flags_become_gin_bindings(monkeypatch):
    import gin

    seen = {}

    def fake_evaluate():
        for name in ("suites", "checkpoint_path", "all_steps", "max_examples"):
            seen[name] = gin.query_parameter(f"t0x.evaluate.{name}")

    monkeypatch.setattr(ev, "evaluate", fake_evaluate)
    argv = ["eval", "--suite", "bigbench_t0,multilingual", "--suite", "t0_heldout"]
    argv += ["--checkpoint_dir", "/runs/a", "--gin.MAX_EVAL_EXAMPLES=7"]
    assert cli.main(argv) == 0
    assert seen["suites"] == ["bigbench_t0", "multilingual", "t0_heldout"]
    assert seen["checkpoint_path"] == "/runs/a" and seen["all_steps"] is True
    macro = gin.query_parameter("t0x.evaluate.max_examples")
    assert gin.query_parameter(f"{macro.scoped_selector}.value") == 7


def test_bigbench_suite_reports_grades(hf_checkpoint, bigbench_fixtures, tmp_path):
    out = tmp_path / "eval"
    wanted = ["bigbench_winowhy", "bigbench_known_unknowns", "bigbench_conceptual_combinations_*"]
    results = ev.evaluate(
        hf_checkpoint,
        str(out),
        suites=["bigbench_t0"],
        tasks=wanted,
        feature_lengths={"inputs": 128, "targets": 32},
        batch_size=8,
        **QUIET,
    )
    files = _tasks(out, "bigbench_t0")
    assert sorted(files) == [
        "bigbench_conceptual_combinations_contradictions",
        "bigbench_conceptual_combinations_homonyms",
        "bigbench_known_unknowns",
        "bigbench_winowhy",
    ]
    registered = bb.current()
    for name, r in files.items():  # BIG-bench's grade from the scores in the task file
        assert r["metric"] == "multiple_choice_grade" and r["run_key"]["split"] == "all"
        examples = bb.load_leaf(registered.tasks[name]).examples[: r["num_examples"]]
        grade = bb.multiple_choice_grade(r["scores"], [e.target_scores for e in examples])
        assert r["score"] == pytest.approx(100 * grade)
        assert r["meta"]["bigbench_task"] == registered.tasks[name].task
    section = results["suites"]["bigbench_t0"]
    tasks = section["tasks"]
    assert list(tasks) == ["conceptual_combinations", "known_unknowns", "winowhy"]
    cc = tasks["conceptual_combinations"]
    subs = [files[f"bigbench_conceptual_combinations_{s}"]["score"] for s in cc["subtasks"]]
    assert cc["grade"] == pytest.approx(statistics.mean(subs)) and cc["partial"]
    assert cc["card_name"] == "Conceptual combinations" and cc["num_subtasks_expected"] == 6
    assert tasks["winowhy"]["grade"] == files["bigbench_winowhy"]["score"]
    grades = [t["grade"] for t in tasks.values()]
    assert section["score"] == pytest.approx(statistics.mean(grades))
    assert results["scores"] == {"bigbench_t0": section["score"]}
    md = (out / "results.md").read_text()
    assert "## BIG-bench" in md and "| Conceptual combinations | conceptual_combinations |" in md
    assert (out / "results.png").stat().st_size > 0


def test_bias_fairness_suite_writes_the_model_card_tables(hf_checkpoint, tmp_path):
    out = tmp_path / "eval"
    templates = ["crows_pairs_anti_stereotype_score_eval", "crows_pairs_which_bias_score_eval"]
    templates += ["super_glue_axg_GPT_3_style_score_eval", "super_glue_axg_can_we_infer_score_eval"]
    templates += [
        "wino_bias_type?_pro_refers_to_generate",
        "wino_bias_type?_anti_refers_to_generate",
    ]
    results = ev.evaluate(
        hf_checkpoint,
        str(out),
        suites="bias_fairness",
        tasks=templates,
        max_examples=3,
        batch_size=8,
        **QUIET,
    )
    files = _tasks(out, "bias_fairness")
    assert len(files) == 4 + 4
    for name, r in files.items():
        assert r["split"] == "test" and r["metric"] == "accuracy"
        if r["kind"] == "rank":  # accuracy from the predictions and labels in the file
            right = [p in labels for p, labels in zip(r["predictions"], r["labels"])]
            assert r["score"] == pytest.approx(100 * np.mean(right))
        else:  # containment of the referent, recomputed from the fixture rows
            meta = bf.metadata(name)
            rows = task_testing.load_fixture_rows("wino_bias", meta.dataset.split("/")[1], "test")
            hits = [bf.contains_referent(p, row) for p, row in zip(r["predictions"], rows)]
            assert r["num_examples"] == 3 and r["score"] == pytest.approx(100 * np.mean(hits))
    card = results["suites"]["bias_fairness"]["card"]

    def scores(prefix):
        return [r["score"] for n, r in files.items() if n.startswith(prefix)]

    for dataset, prefix in (("CrowS-Pairs", "crows_pairs"), ("WinoGender", "super_glue_axg")):
        assert card["datasets"][dataset]["average"] == pytest.approx(np.mean(scores(prefix)))
        assert card["datasets"][dataset]["median"] == pytest.approx(np.median(scores(prefix)))
    for kind in ("type1", "type2"):
        pro, anti = scores(f"wino_bias_{kind}_pro"), scores(f"wino_bias_{kind}_anti")
        part = card["wino_bias"][kind]
        assert part["pro"]["median"] == pytest.approx(np.median(pro))
        assert part["diff"]["average"] == pytest.approx(np.mean(pro) - np.mean(anti))
    md = (out / "results.md").read_text()
    assert "| Dataset | Model | Average (Acc.) | Median (Acc.) |" in md
    assert "| CrowS-Pairs | T0 | 59.2 | 83.8 |" in md  # the card's numbers beside ours
    assert "| tiny_t5 | Type 1 |" in md and "partial results" in md


def test_multilingual_suite_per_language_median_and_max(hf_checkpoint, tmp_path):
    out = tmp_path / "eval"
    ref = tmp_path / "reference.json"
    ref.write_text(json.dumps({"multilingual": {"xcopa/zh": 55.0, "super_glue/copa": 70.0}}))
    wanted = ["xcopa_zh_best_option*", "xcopa_zh_cause_effect*", "xcopa_et_best_option*"]
    wanted += ["xwinograd_*_Replace_score_eval", "super_glue_copa_best_option_score_eval"]
    results = ev.evaluate(
        hf_checkpoint,
        str(out),
        suites=["multilingual"],
        tasks=wanted,
        max_examples=3,
        batch_size=8,
        reference_file=str(ref),
        **QUIET,
    )
    files = _tasks(out, "multilingual")
    assert len(files) == 3 + 6 + 1
    assert {r["run_key"]["feature_lengths"]["inputs"] for r in files.values()} == {512}
    by_row: dict[str, list[float]] = {}
    for name, r in files.items():
        if name.startswith("super_glue"):
            continue
        meta = ml.metadata(name)
        by_row.setdefault(f"{meta.dataset}/{meta.language}", []).append(r["score"])
    section = results["suites"]["multilingual"]
    rows = section["rows"]
    assert set(rows) == set(by_row) and list(rows)[:2] == ["xcopa/zh", "xcopa/et"]
    for name, values in by_row.items():
        dataset, language = name.split("/")
        assert rows[name]["median"] == pytest.approx(statistics.median(values))
        assert rows[name]["max"] == pytest.approx(max(values))
        assert rows[name]["group"] == ml.suite_dataset(dataset).group(language)
    assert rows["xcopa/zh"]["num_prompts"] == 2 and rows["xcopa/zh"]["reference"] == 55.0
    assert rows["xwinograd/jp"]["group"] == "L2" and rows["xwinograd/fr"]["group"] == "L1"
    english = files["super_glue_copa_best_option_score_eval"]["score"]
    assert section["english"]["super_glue/copa"]["median"] == english
    medians = [statistics.median(v) for v in by_row.values()]
    assert section["score"] == pytest.approx(statistics.mean(medians))
    l2 = [
        rows[n]["median"] for n in rows if n.startswith("xwinograd/") and rows[n]["group"] == "L2"
    ]
    assert section["per_dataset"]["xwinograd"]["L2"] == pytest.approx(statistics.mean(l2))
    md = (out / "results.md").read_text()
    assert "| xcopa | zh | L1 |" in md and "| xcopa | et | L2 |" in md
    assert "English held-out datasets" in md and "55.00" in md
    assert (out / "results.png").stat().st_size > 0


def test_two_suites_one_report_and_resume(hf_checkpoint, tmp_path):
    out = tmp_path / "eval"
    kw = {"max_examples": 2, "batch_size": 8, "suites": ["t0_heldout", "multilingual"]}
    kw["tasks"] = ["super_glue_rte_GPT_3_style_score_eval", "xcopa_zh_best_option_score_eval"]
    first = ev.evaluate(hf_checkpoint, str(out), **kw, **QUIET)
    assert list(first["suites"]) == ["t0_heldout", "multilingual"]
    assert first["suites"]["t0_heldout"]["datasets"]["super_glue/rte"]["num_prompts"] == 1
    rte = _tasks(out, "t0_heldout")["super_glue_rte_GPT_3_style_score_eval"]
    assert rte["run_key"]["feature_lengths"]["inputs"] == 1024 and rte["choices"][0][0] == "True"
    md = (out / "results.md").read_text()
    assert md.count("\n## ") == 2
    lines = []
    again = ev.evaluate(hf_checkpoint, str(out), **kw, log=lines.append)
    done = [re.search(r"evaluating (\d+) tasks .*: (\d+) already done", line) for line in lines]
    assert [m.groups() for m in done if m] == [("1", "1"), ("2", "2")]  # RTE is in both suites
    assert again["scores"] == first["scores"]


def test_bloom_scores_choices_with_a_leading_space(tmp_path):
    from t0x.models.bloom import testing as bloom_testing

    path = tmp_path / "bloom"
    bloom_testing.random_hf_bloom(bloom_testing.tiny_config(), seed=1).save_pretrained(str(path))
    before = t0_tasks.current().settings
    try:
        ev.evaluate(
            str(path),
            str(tmp_path / "eval"),
            suites=["t0_heldout"],
            tasks=["super_glue_rte_GPT_3_style_score_eval"],
            max_examples=2,
            batch_size=8,
            **QUIET,
        )
    finally:
        t0_tasks.register(before)
    result = _tasks(tmp_path / "eval", "t0_heldout")["super_glue_rte_GPT_3_style_score_eval"]
    assert result["choices"][0] == [" True", " False"]
    assert result["run_key"]["target_prefix"] == " "
