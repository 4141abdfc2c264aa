"""The mT0/BLOOMZ multilingual held-out suite: table, fixtures, rendering, twins, mixtures.

Facts come from ../shared/reference/multilingual_eval.csv (skipped when absent); renderings
are checked against promptsource's own `Template.apply`. Fixture rows live under
tests/fixtures/hf/<org>/<name>/<lang>/<split>.jsonl in each dataset's HF schema.
"""

from __future__ import annotations

import csv
import re

import pytest
import seqio

from t0_tasks import prompts, sources, tasks, testing
from t0_tasks.settings import Settings
from t0_tasks.suites import multilingual as ml

MAIN_TEXT = {"xcopa": "premise", "xnli": "premise", "xstory_cloze": "input_sentence_1"}
MAIN_TEXT["xwinograd"] = "sentence"


def gold(ds_name: str, row: dict) -> int:
    """The index of the right answer choice, from the row's label in its HF schema."""
    if ds_name == "xstory_cloze":
        return row["answer_right_ending"] - 1
    if ds_name == "xwinograd":
        return int(row["answer"]) - 1
    return row["label"]


@pytest.fixture(scope="module")
def suite():
    settings = Settings.from_env()
    registered_before = ml.current() is not None  # e.g. by t0_tasks' registry: keep it
    reg = ml.register(settings, tasks.vocabulary(settings))
    yield reg
    if not registered_before:
        ml.forget()


def reference_rows() -> dict[str, dict]:
    path = testing.reference_or_skip() / "multilingual_eval.csv"
    with open(path, newline="", encoding="utf-8") as f:
        return {r["dataset"]: r for r in csv.DictReader(f)}


def test_suite_table_is_the_reference_csv():
    ref = reference_rows()
    assert [ds.name for ds in ml.SUITE] == list(ref)
    for ds in ml.SUITE:
        row = ref[ds.name]
        l1 = row["languages_in_xp3"].split("(")[0].split()
        l1 += re.findall(r"\((\w+) =", row["languages_in_xp3"])  # "(en = story_cloze/2016)"
        assert (ds.hf_id, ds.split) == (row["hf_id"], row["split"])
        assert sorted(ds.l1) == sorted(l1) and list(ds.l2) == row["languages_not_in_xp3"].split()
        assert "/".join(ds.twin) == row["english_twin_templates"]
        assert list(ds.prompts) == row["prompts_used"].split("|")
        sizes = row["examples_per_language"].replace("/", " ").split()
        if ds.eval_sizes:
            assert dict(ds.eval_sizes) == {k: int(v) for k, v in zip(sizes[::2], sizes[1::2])}
        else:
            assert dict(ds.sizes) == {k: int(v) for k, v in zip(sizes[::2], sizes[1::2])}
    assert [len(ds.languages) for ds in ml.SUITE] == [11, 15, 11, 6]


def test_every_prompt_is_a_promptsource_template_with_choices():
    for ds in ml.SUITE:
        for name in ds.prompts:
            template = prompts.get_template(*ds.twin, name)  # KeyError lists the real names
            assert prompts.has_answer_choices(template), (ds.name, name)


def test_fixtures_cover_every_language_in_the_hf_schema():
    ref = reference_rows()
    data_dir = Settings.from_env().data_dir
    for ds in ml.SUITE:
        columns = re.sub(r"\([^)]*\)", "", ref[ds.name]["columns"]).split()
        if ds.name == "xstory_cloze":  # "input_sentence_1..4"
            columns = [c for c in columns if ".." not in c]
            columns += [f"input_sentence_{i}" for i in range(1, 5)]
        for lang in ds.languages:
            path = sources.local_path(data_dir, ds.hf_id, lang, ds.split)
            org, name = ds.hf_id.split("/")
            assert path == testing.FIXTURES_DIR / org / name / lang / f"{ds.split}.jsonl"
            rows = testing.load_fixture_rows(ds.hf_id, lang, ds.split)
            assert 2 <= len(rows) <= 3, path
            for row in rows:
                assert sorted(row) == sorted(columns), path
                assert isinstance(gold(ds.name, row), int)
            assert len({gold(ds.name, r) for r in rows}) > 1, f"{path}: one class only"


def test_every_template_renders_every_fixture_row():
    """promptsource's own apply, on every row of every language: an input holding the row's
    text verbatim (non-Latin scripts intact) and the gold choice as target. (The seqio tasks'
    renderings are compared with apply in the twin test below.)"""
    for ds in ml.SUITE:
        for name in ds.prompts:
            template = prompts.get_template(*ds.twin, name)
            for lang in ds.languages:
                for row in testing.load_fixture_rows(ds.hf_id, lang, ds.split):
                    inputs, target = template.apply(dict(row))
                    choices = template.get_answer_choices_list(dict(row))
                    assert row[MAIN_TEXT[ds.name]] in inputs, (ds.name, lang, name)
                    assert target.strip() == choices[gold(ds.name, row)], (ds.name, lang, name)


PIPELINE_CASES = [
    (ds.name, lang, ds.prompts[i % len(ds.prompts)])
    for ds, langs in zip(
        ml.SUITE,
        (
            ("ta", "th", "zh", "et", "vi"),
            ("ar", "bg", "el", "hi", "ru", "th", "ur", "zh", "en"),
            ("ar", "hi", "te", "zh", "my", "ru", "en"),
            ("zh", "jp", "ru", "en", "fr"),
        ),
    )
    for i, lang in enumerate(langs)
]


@pytest.mark.parametrize("ds_name, lang, prompt", PIPELINE_CASES)
def test_twin_examples_one_per_choice_with_text_intact(suite, ds_name, lang, prompt):
    ds = ml.suite_dataset(ds_name)
    template = prompts.get_template(*ds.twin, prompt)
    twin = ml.task_name(ds, lang, prompt) + "_score_eval"
    got = list(
        seqio.get_mixture_or_task(twin)
        .get_dataset(None, "validation", shuffle=False)
        .as_numpy_iterator()
    )
    rows = testing.load_fixture_rows(ds.hf_id, lang, ds.split)
    assert len(got) == sum(len(template.get_answer_choices_list(dict(r))) for r in rows)
    for i, row in enumerate(rows):
        mine = [e for e in got if e["idx"][0] == i]
        inputs, _ = template.apply(dict(row))
        choices = template.get_answer_choices_list(dict(row))
        assert [e["idx"][1] for e in mine] == list(range(len(choices)))
        assert [e["targets_pretokenized"].decode() for e in mine] == choices
        assert [bool(e["is_correct"]) for e in mine] == [
            c == gold(ds_name, row) for c in range(len(choices))
        ]
        text = mine[0]["inputs_pretokenized"].decode()
        assert text == inputs
        non_ascii = {c for c in row[MAIN_TEXT[ds_name]] if ord(c) > 127}
        assert non_ascii <= set(text)
        if lang in ("ta", "th", "zh", "ar", "bg", "el", "hi", "ru", "ur", "te", "my", "jp"):
            assert non_ascii, f"{lang} fixture text should be in its own script"


def test_mixtures_names_rates_and_metadata(suite):
    ref = reference_rows()
    assert {k: len(v) for k, v in suite.mixtures.items()} == {
        "mt0_eval_score_eval": 215,
        "xcopa_score_eval": 55,
        "xnli_score_eval": 75,
        "xstory_cloze_score_eval": 55,
        "xwinograd_score_eval": 30,
    }
    mixture = seqio.get_mixture_or_task("mt0_eval_score_eval")
    rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
    assert rates["xcopa_zh_C1_or_C2_premise_so_because__score_eval"] == 100
    assert rates["xnli_sw_GPT_3_style_score_eval"] == 2490
    assert rates["xstory_cloze_my_Generate_Ending_score_eval"] == 1511
    assert rates["xwinograd_jp_True_or_False_score_eval"] == 959
    for ds in ml.SUITE:
        l2 = set(ref[ds.name]["languages_not_in_xp3"].split())
        for lang in ds.languages:
            meta = ml.metadata(ml.task_name(ds, lang, ds.prompts[0]) + "_score_eval")
            assert meta.group == ("L2" if lang in l2 else "L1")
            assert (meta.report_name, meta.split) == (f"{ds.name}/{lang}", ds.split)
    spec = suite.specs["xwinograd_jp_Replace"]
    assert dict(spec.split_map) == {"validation": "test", "test": "test"}
    task = seqio.get_mixture_or_task("xwinograd_jp_Replace_score_eval")
    assert task.num_input_examples("test") == 2  # the local copy's rows, counted


def test_english_heldout_tasks_are_registered_t0_twins(suite):
    import t0_tasks

    reg = t0_tasks.current()
    heldout = ml.english_heldout_tasks()
    assert list(heldout) == [
        "anli/r1",
        "anli/r2",
        "anli/r3",
        "super_glue/cb",
        "super_glue/rte",
        "winogrande/winogrande_xl",
        "super_glue/copa",
        "story_cloze/2016",
    ]
    names = set(seqio.TaskRegistry.names())
    for label, twins in heldout.items():
        assert twins and set(twins) <= names, label
    assert heldout["super_glue/copa"][0] == "super_glue_copa_best_option_score_eval"
    assert len(heldout["story_cloze/2016"]) == len(heldout["winogrande/winogrande_xl"]) == 5
    t0_eval = {t for t, _ in reg.mixtures["t0_eval_score_eval"]}
    for label in ("anli/r1", "super_glue/cb", "super_glue/rte"):  # T0's held-out prompts
        dataset, _, _ = label.partition("/")
        prefix = "anli_" if dataset == "anli" else label.replace("/", "_") + "_"
        want = {t for t in t0_eval if t.startswith(prefix)}
        if dataset == "anli":
            want = {t for t in want if t.endswith("_r1_score_eval")}
        assert set(heldout[label]) == want
