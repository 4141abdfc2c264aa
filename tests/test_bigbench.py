"""BIG-bench JSON tasks (t0_tasks.suites.bigbench) against BIG-bench's own code and data.

Upstream code: `bigbench/api/json_task.py` (JsonTask, make_nshot_dataset) and
`bigbench/api/task_metrics.py` (measure_multiple_choice_grade) of the bigbench package, found
under T0_BIGBENCH_SRC (a folder holding the `bigbench` package, e.g. the unpacked bigbench
1.0.0 sdist) or as an installed package. They import TensorFlow, t5, scipy and sklearn (all
installed here) and `datasets.load_metric` (gone since datasets 3), which is stubbed only
while they import. Without them those tests skip, saying so.
Real data: the tasks dir `locate()` finds (T0_BIGBENCH_DIR, an installed package), else
T0_BIGBENCH_SRC's `bigbench/benchmark_tasks`.
Fixtures: tests/fixtures/bigbench holds the 14 T0 tasks with 2-4 real examples each, copied from
bigbench 1.0.0 (Apache-2.0), keeping each task.json's real fields: two containers
(conceptual_combinations with 2 of its 6 subtasks, logical_deduction), custom prefixes and
task_prefix, `append_choices_to_input` false and the string "false" (logic_grid_puzzle), two
correct choices (hindu_knowledge, novel_concepts), exact duplicates (strategyqa, winowhy).
Golden: tests/golden/bigbench_prompts.json is BIG-bench 1.0.0's JsonTask output on the fixtures.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import seqio

from t0_tasks.suites import bigbench as bb
from t0_tasks.testing import reference_or_skip

FIXTURES = Path(__file__).parent / "fixtures" / "bigbench"
GOLDEN = Path(__file__).parent / "golden" / "bigbench_prompts.json"
SMALL_REAL_TASKS = [
    t
    for t in bb.T0_SUITE
    if t
    not in (
        "language_identification",
        "movie_dialog_same_or_different",
        "formal_fallacies_syllogisms_negation",
        "vitaminc_fact_verification",
    )
]


def _fixture_leaves():
    return [
        leaf for task in sorted(os.listdir(FIXTURES)) for leaf in bb.leaves(str(FIXTURES), task)
    ]


def _as_golden(data: bb.LeafData) -> dict:
    return {
        "bigbench_name": data.name,
        "examples": [
            {"prompt": e.prompt, "choices": list(e.choices), "target_scores": list(e.target_scores)}
            for e in data.examples
        ],
    }


@pytest.fixture(scope="module")
def upstream():
    """BIG-bench's json_task and task_metrics modules, or a skip saying why not."""
    root = os.environ.get("T0_BIGBENCH_SRC")
    if not root:
        spec = importlib.util.find_spec("bigbench")
        if spec and spec.submodule_search_locations:
            root = str(Path(list(spec.submodule_search_locations)[0]).parent)
    if not root or not (Path(root) / "bigbench" / "api" / "json_task.py").is_file():
        pytest.skip(
            "BIG-bench's own code is not available: set T0_BIGBENCH_SRC to a folder holding the "
            "bigbench package (e.g. the unpacked bigbench 1.0.0 sdist) or install bigbench"
        )
    import datasets

    stubbed = not hasattr(datasets, "load_metric")
    if stubbed:  # task_metrics imports it at module level; our tests never call it
        datasets.load_metric = lambda *a, **k: None
    sys.path.insert(0, root)
    try:
        json_task = importlib.import_module("bigbench.api.json_task")
        task_metrics = importlib.import_module("bigbench.api.task_metrics")
    except ImportError as e:
        pytest.skip(f"BIG-bench's code under {root} does not import here: {e}")
    finally:
        sys.path.remove(root)
        if stubbed:
            del datasets.load_metric
        for name in [m for m in sys.modules if m == "bigbench" or m.startswith("bigbench.")]:
            del sys.modules[name]  # the functions keep their modules; nothing else sees them
    return types.SimpleNamespace(json_task=json_task, task_metrics=task_metrics)


def _real_tasks_dir() -> str:
    found, _ = bb.locate()
    if found is None and os.environ.get("T0_BIGBENCH_SRC"):
        found = bb.tasks_dir_in(os.environ["T0_BIGBENCH_SRC"])
    if found is None or not os.path.isfile(os.path.join(found, "winowhy", "task.json")):
        pytest.skip(
            "the real BIG-bench tasks are absent: set T0_BIGBENCH_DIR (or T0_BIGBENCH_SRC) to "
            "bigbench 1.0.0's benchmark_tasks (or its sdist)"
        )
    return found


# ---------------------------------------------------------------------------------------------
# Prompts.


def test_prompts_match_golden():
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    ours = {leaf.name: _as_golden(bb.load_leaf(leaf)) for leaf in _fixture_leaves()}
    assert sorted(ours) == sorted(golden)
    for name in golden:
        assert ours[name] == golden[name], name


def test_hand_checked_prompts():
    """Prompts read off the fixtures by hand: RandomState(42).permutation(2) = [1, 0] and
    permutation(4) = [1, 3, 0, 2] order the sorted choices shown."""
    load = lambda *parts: bb.load_leaf(bb.Leaf(str(FIXTURES), *parts))  # noqa: E731
    known = load("known_unknowns", None).examples[0]
    assert known.prompt == (
        "\nQ: How often did Abraham Lincoln cut his toenails?"
        "\n  choice: Unknown\n  choice: Every Saturday night\nA: "
    )
    assert known.choices == ("Every Saturday night", "Unknown")
    assert known.target_scores == (0, 1)
    hindu = load("hindu_knowledge", None).examples[0]
    assert "\n  choice: Indra\n  choice: Vishnu\n  choice: Brahma\n  choice: Shiva\nA: " in (
        hindu.prompt
    )
    assert hindu.choices == ("Vishnu", "Shiva", "Indra", "Brahma")
    misconceptions = load("misconceptions", None).examples[0]
    assert misconceptions.prompt == (
        "Is the following statement true or false? Output T for true and F for false."
        "\nQ: Twinkies are edible for decades or longer.\nA: "
    )
    # "append_choices_to_input": "false" is a truthy string: BIG-bench shows the choices
    puzzle = load("logic_grid_puzzle", None).examples[0]
    assert "\n  choice: 1\n  choice: " in puzzle.prompt and puzzle.prompt.endswith("\nA: ")
    homonyms = load("conceptual_combinations", "homonyms")
    assert homonyms.name == "conceptual_combinations:homonyms"
    assert homonyms.examples[0].prompt.endswith(
        "\n option: Alort boxers have wrinkly faces.\n option: Alort boxers wear gloves."
        "\n option: Alort boxers are airier than briefs.\n option: Alort boxers put things in "
        "boxes.\nAnswer: "
    )
    novel = load("novel_concepts", None).examples[0]
    assert (
        novel.target_scores.count(1) == 2 and novel.target == "They all involve vertical movement."
    )
    assert len(load("strategyqa", None).examples) == 3  # 4 entries, one exact duplicate


def test_golden_and_prompts_are_bigbench_output(upstream):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    for task in sorted(os.listdir(FIXTURES)):
        ref = upstream.json_task.JsonTask(str(FIXTURES / task / "task.json"))
        for leaf, r in zip(bb.leaves(str(FIXTURES), task), ref.subtasks or [ref], strict=True):
            theirs = {
                "bigbench_name": r.name,
                "examples": [
                    {
                        "prompt": r.task_prefix + s["input"],
                        "choices": s["choice"],
                        "target_scores": [s["target_scores"][c] for c in s["choice"]],
                    }
                    for s in r._ds
                ],
            }
            assert _as_golden(bb.load_leaf(leaf)) == theirs == golden[leaf.name], leaf.name


@pytest.mark.parametrize("task", bb.T0_SUITE)
def test_real_prompts_match_bigbench(upstream, task):
    """Every T0 task's real file: small tasks whole (read by `load_leaf`), large ones on their
    first 300 entries (formatted by BIG-bench from a dict)."""
    tasks_dir = _real_tasks_dir()
    if task in SMALL_REAL_TASKS:
        ref = upstream.json_task.JsonTask(os.path.join(tasks_dir, task, "task.json"))
        pairs = []
        for leaf, r in zip(bb.leaves(tasks_dir, task), ref.subtasks or [ref], strict=True):
            bb.load_leaf.cache_clear()
            pairs.append((bb.load_leaf(leaf), r))
    else:  # no containers among them
        data = bb.read_task_json(os.path.join(tasks_dir, task, "task.json"))
        data["examples"] = data["examples"][:300]
        fmt = bb.Format.of(data)
        examples = [bb.format_example(e, fmt) for e in bb.distinct(data["examples"])]
        pairs = [
            (bb.LeafData(data["name"], fmt, tuple(examples)), upstream.json_task.JsonTask(data))
        ]
    for ours, ref in pairs:
        assert ours.name == ref.name
        assert len(ours.examples) == len(ref._ds)
        for ours_ex, s in zip(ours.examples, ref._ds):
            assert ours_ex.prompt == ref.task_prefix + s["input"]
            assert list(ours_ex.choices) == s["choice"]
            assert list(ours_ex.target_scores) == [s["target_scores"][c] for c in s["choice"]]


def test_max_examples_match_bigbench(upstream):
    samples = [{"input": f"q{i}", "target": [str(i)]} for i in range(50)]
    for k in (1, 7, 49, 50, 80):
        theirs = upstream.json_task.make_nshot_dataset(samples, 0, random_seed=42, max_examples=k)
        assert bb.select_examples(samples, k) == theirs
    # a container gives each subtask max_examples // subtasks, sampled per subtask
    path = str(FIXTURES / "logical_deduction" / "task.json")
    ref = upstream.json_task.JsonTask(path, max_examples=3)
    reg = bb.register(_vocab(), str(FIXTURES), tasks=["logical_deduction"], max_examples=3)
    try:
        for leaf, r in zip(reg.tasks.values(), ref.subtasks, strict=True):
            theirs = upstream.json_task.make_nshot_dataset(
                r._ds, 0, random_seed=42, max_examples=r.num_examples
            )
            ours = bb.load_leaf(leaf, 1).examples
            assert [e.prompt for e in ours] == [r.task_prefix + s["input"] for s in theirs]
    finally:
        bb.unregister()


# ---------------------------------------------------------------------------------------------
# Grading.

TOY_LOG_PROBS = [
    [-1.0, -2.0, -3.0],
    [-4.0, -0.5],
    [-2.0, -2.0, -7.0],  # tie between a right and a wrong choice
    [-1.5, -1.5, -1.5, -1.5],
    [-3.0, -1.0, -2.0],  # two correct choices
    [-0.1, -9.0, -9.0],  # fractional target scores
]
TOY_SCORES = [[1, 0, 0], [1, 0], [1, 0, 0], [0, 0, 1, 0], [1, 1, 0], [0.25, 0.75, 0.0]]


def test_grade_matches_bigbench(upstream):
    for absolute in (False, True):
        samples = []
        for lp, scores in zip(TOY_LOG_PROBS, TOY_SCORES):
            choices = [f"c{i}" for i in range(len(lp))]
            normalized = list(np.array(lp) - upstream.json_task.logsumexp(lp))
            samples.append(
                {
                    "choice": choices,
                    "target_scores": dict(zip(choices, scores)),
                    "log_prob": lp if absolute else normalized,
                }
            )
        theirs = upstream.task_metrics.measure_multiple_choice_grade(samples)
        assert bb.multiple_choice_grade(TOY_LOG_PROBS, TOY_SCORES, absolute) == theirs
        for lp, s in zip(TOY_LOG_PROBS, samples):
            values = lp if absolute else bb.normalized_log_probs(lp)
            assert bb.bigbench_argmax(values) == upstream.task_metrics.argmax(s["log_prob"])


def test_grade_by_hand():
    untied = [0, 1, 4, 5]  # rows whose argmax is unique
    lps, scores = [TOY_LOG_PROBS[i] for i in untied], [TOY_SCORES[i] for i in untied]
    # argmaxes 0, 1, 1, 0 -> target scores 1, 0, 1, 0.25
    assert bb.multiple_choice_grade(lps, scores) == pytest.approx(2.25 / 4)
    assert bb.multiple_choice_grade(lps, scores, absolute_normalization=True) == pytest.approx(
        2.25 / 4
    )
    # a tie between equally scored choices grades the same whichever wins
    assert bb.multiple_choice_grade([[-1.0, -1.0, -5.0]], [[1, 1, 0]]) == 1.0
    assert bb.bigbench_argmax([-3.0, -1.0, -1.0, -9.0]) in (1, 2)
    assert bb.container_grade([0.5, 1.0, 0.0]) == 0.5
    with pytest.raises(ValueError, match="log-probs"):
        bb.multiple_choice_grade([[-1.0]], [[1, 0]])


# ---------------------------------------------------------------------------------------------
# Counts.


def test_suite_table_matches_real_package():
    tasks_dir = _real_tasks_dir()
    table = {(row.task, row.subtask): row for row in bb.t0_suite_table()}
    found = {}
    for task in bb.T0_SUITE:
        for leaf in bb.leaves(tasks_dir, task):
            examples = bb.read_task_json(leaf.path)["examples"]
            found[(task, leaf.subtask)] = (len(examples), len(bb.distinct(examples)))
    assert found == {key: (r.examples, r.distinct_examples) for key, r in table.items()}


def test_suite_table_matches_reference():
    rows = list(csv.DictReader(open(reference_or_skip() / "bigbench_t0_tasks.csv")))
    assert [r["bigbench_task_dir"].split(" ")[0] for r in rows] == list(bb.T0_SUITE)
    table = bb.t0_suite_table()
    for r in rows:
        task = r["bigbench_task_dir"].split(" ")[0]
        leaves = [leaf for leaf in table if leaf.task == task]
        assert sum(leaf.examples for leaf in leaves) == int(r["examples"]), task
        assert {leaf.card_name for leaf in leaves} == {r["t0_card_name"]}
    assert len([leaf for leaf in table if leaf.task == "conceptual_combinations"]) == 6
    assert len([leaf for leaf in table if leaf.task == "logical_deduction"]) == 3


# ---------------------------------------------------------------------------------------------
# seqio.


def _vocab():
    return seqio.SentencePieceVocabulary(os.environ["T0_VOCAB"])


@pytest.fixture
def registered():
    reg = bb.register(_vocab(), str(FIXTURES))
    yield reg
    bb.unregister()


def test_registration_names_and_mixtures(registered):
    leaves = _fixture_leaves()
    assert sorted(registered.tasks) == sorted(leaf.name for leaf in leaves)
    assert "bigbench_conceptual_combinations_homonyms" in seqio.TaskRegistry.names()
    assert registered.mixtures["bigbench_logical_deduction"] == [
        "bigbench_logical_deduction_five_objects",
        "bigbench_logical_deduction_seven_objects",
        "bigbench_logical_deduction_three_objects",
    ]
    suite = seqio.get_mixture_or_task(bb.MIXTURE)
    assert sorted(t.name for t in seqio.get_subtasks(suite)) == sorted(registered.tasks)
    assert registered.label_of("bigbench_conceptual_combinations_homonyms") == (
        "bigbench/conceptual_combinations:homonyms"
    )
    assert registered.group_of("bigbench_conceptual_combinations_homonyms") == (
        "bigbench/conceptual_combinations"
    )
    assert registered.group_of("bigbench_winowhy") is None
    assert registered.message is None and bb.unavailable_message(bb.MIXTURE) is None


def test_task_yields_rank_classification_examples(registered):
    vocab = _vocab()
    task = seqio.get_mixture_or_task("bigbench_novel_concepts")
    assert list(task.splits) == [bb.SPLIT]
    data = bb.load_leaf(registered.tasks["bigbench_novel_concepts"])
    assert task.num_input_examples(bb.SPLIT) == len(data.examples) == 3
    got = list(task.get_dataset(None, split=bb.SPLIT, shuffle=False).as_numpy_iterator())
    expected = [
        (row, c, ex, choice, score)
        for row, ex in enumerate(data.examples)
        for c, (choice, score) in enumerate(zip(ex.choices, ex.target_scores))
    ]
    assert len(got) == len(expected) == 5 + 10 + 10
    for g, (row, c, ex, choice, score) in zip(got, expected):
        assert g["idx"].tolist() == [row, c]
        assert g["inputs_pretokenized"].decode() == ex.prompt
        assert g["targets_pretokenized"].decode() == choice
        assert g["inputs"].tolist() == vocab.encode(ex.prompt)
        assert g["targets"].tolist() == vocab.encode(choice) + [1]
        assert bool(g["is_correct"]) == (score == max(ex.target_scores))
        assert g["target_score"] == pytest.approx(score) and g["weight"] == 1.0
    rows = list(task.source.get_dataset(split=bb.SPLIT, shuffle=False).as_numpy_iterator())
    assert [r["targets"].decode() for r in rows] == [ex.target for ex in data.examples]


def test_evaluator_reports_the_grade(registered):
    """t0x's rank evaluation of a BIG-bench task reports BIG-bench's grade as a task metric."""
    from t0x.eval import rank as rank_eval

    task = seqio.get_mixture_or_task("bigbench_hindu_knowledge")
    examples = list(task.get_dataset(None, split=bb.SPLIT, shuffle=False).as_numpy_iterator())
    items = rank_eval.group_examples(examples)

    def score_fn(enc, dec_tgt, weights):  # a made-up scorer: length-penalised ids
        return -np.sum(weights * (dec_tgt % 7 + 1), axis=-1)

    res = rank_eval.evaluate_items(items, score_fn, batch_size=2, task=task)
    data = bb.load_leaf(registered.tasks["bigbench_hindu_knowledge"])
    expected = bb.multiple_choice_grade(res.scores, [list(e.target_scores) for e in data.examples])
    assert res.metrics[bb.METRIC] == pytest.approx(100 * expected)


def test_missing_tasks_register_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(bb.ENV_DIR, raising=False)
    reg = bb.register(_vocab(), str(tmp_path / "absent"))
    assert not reg.tasks and not reg.mixtures and bb.MIXTURE not in seqio.MixtureRegistry.names()
    message = bb.unavailable_message(bb.MIXTURE)
    assert message == reg.message and "\n" not in message and bb.ENV_DIR in message
    assert bb.unavailable_message("super_glue_rte_GPT_3_style") is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert bb.locate(None) == (None, f"{bb.ENV_DIR} is unset and no bigbench package is installed")
    monkeypatch.setenv(bb.ENV_DIR, str(FIXTURES))
    assert bb.locate(None)[0] == str(FIXTURES)
    bb.unregister()


def test_partial_folder_registers_no_suite_mixture(tmp_path):
    (tmp_path / "winowhy").mkdir()
    (tmp_path / "winowhy" / "task.json").write_bytes(
        (FIXTURES / "winowhy" / "task.json").read_bytes()
    )
    reg = bb.register(_vocab(), str(tmp_path))
    try:
        assert list(reg.tasks) == ["bigbench_winowhy"] and bb.MIXTURE not in reg.mixtures
        assert "code_line_description" in reg.message and bb.MIXTURE in reg.message
        assert bb.unavailable_message(bb.MIXTURE) == reg.message
    finally:
        bb.unregister()
