"""Fixture rows are schema-faithful, coherent, and every promptsource template renders on them.

Vocabulary:
  pair          a catalog (HF dataset, subset) pair, subset "" when there is none; the
                catalog is T0's dataset table, read from ``../shared/reference/``.
  check split   the fixture split(s) a pair's templates must render on: the training
                split(s) of datasets T0 trains on, else the validation (``dev_*``) split(s),
                else ``test`` (crows_pairs, super_glue/axg are test-only and labelled).
                Check-split fixture rows are all labelled.
  renders       ``template.apply(row)`` (promptsource's own) gives a non-empty input and a
                non-empty target, and the target is one of ``get_answer_choices_list(row)``
                when the template has answer choices.

A template that cannot render some valid row is listed in KNOWN_NOT_APPLICABLE with the
reason; the test asserts that it really fails on some check-split row, so the list cannot
rot. Everything skips with a reason when the reference folder is absent.
"""

from __future__ import annotations

import csv
import functools
import json
import random

import datasets
import pytest
from promptsource import templates as ps

from t0_tasks import testing

_REASON_ONLY = "conditional template: renders only rows where {}; T0 drops the rows it skips"
_TREC_DRIFT = (
    "schema drift: promptsource 0.2.3 reads `label_coarse`/`label_fine` (the pre-2.x HF trec "
    "schema, other class order); HF trec now has `coarse_label`/`fine_label`"
)
_WIKI_HOP_DRIFT = (
    "schema drift: promptsource 0.2.3 reads `question`; HF wiki_hop/original now names it `query`"
)

KNOWN_NOT_APPLICABLE = {
    ("crows_pairs", "", "transform_stereo"): _REASON_ONLY.format("stereo_antistereo == 0"),
    ("crows_pairs", "", "transform_anti_stereo"): _REASON_ONLY.format("stereo_antistereo == 1"),
    ("glue", "mrpc", "generate_paraphrase"): _REASON_ONLY.format("label == 1 (equivalent)"),
    ("glue", "mrpc", "generate_sentence"): _REASON_ONLY.format("label == 1 (equivalent)"),
    ("paws", "labeled_final", "paraphrase-task"): _REASON_ONLY.format("label == 1 (paraphrase)"),
    **{
        ("wiki_qa", "", name): _REASON_ONLY.format("label == 1 (the answer is correct)")
        for name in (
            "Jeopardy style",
            "Topic Prediction - Question and Answer Pair",
            "Generate Question from Topic",
            "Topic Prediction - Question Only",
            "Topic Prediction - Answer Only",
            "Direct Answer to Question",
        )
    },
    **{
        ("duorc", subset, name): _REASON_ONLY.format("the question is answerable")
        for subset in ("SelfRC", "ParaphraseRC")
        for name in ("build_story_around_qa", "generate_question_by_answer")
    },
    **{
        ("squad_v2", "", name): _REASON_ONLY.format("the question is answerable")
        for name in (
            "Jeopardy with Context",
            "Jeopardy without Context",
            "Trivia",
            "Topic Prediction - Question and Answer Pair",
        )
    },
    ("super_glue", "copa", "…What could happen next, C1 or C2?"): _REASON_ONLY.format(
        'question == "effect"'
    ),
    ("super_glue", "copa", "…As a result, C1 or C2?"): _REASON_ONLY.format('question == "effect"'),
    ("super_glue", "copa", "…which may be caused by"): _REASON_ONLY.format('question == "cause"'),
    ("super_glue", "copa", "…why? C1 or C2"): _REASON_ONLY.format('question == "cause"'),
    ("wiqa", "", "which_of_the_following_is_the_supposed_perturbation"): (
        "template bug: INPARA_EFFECT rows target 'directly impacting a step of the process', "
        "which is missing from its two answer choices"
    ),
    ("imdb", "", "Negation template for positive and negative"): (
        "template quirk: the target is '<choice> review.', never exactly one of its answer choices"
    ),
    **{("trec", "", t.name): _TREC_DRIFT for t in ps.DatasetTemplates("trec").templates.values()},
    **{
        ("wiki_hop", "original", t.name): _WIKI_HOP_DRIFT
        for t in ps.DatasetTemplates("wiki_hop", "original").templates.values()
    },
}

# Catalog pairs promptsource 0.2.3 has no templates for (they still get schema fixtures).
TEMPLATELESS = {("jigsaw_toxicity_pred", "")}


def _read_catalog() -> list[dict]:
    if not testing.REFERENCE_DIR.is_dir():
        return []
    with (testing.REFERENCE_DIR / "t0_datasets.csv").open(newline="") as f:
        return list(csv.DictReader(f))


_CATALOG = _read_catalog()
_PAIRS = [pytest.param(row, id=f"{row['HF_name']}/{row['subset'] or '-'}") for row in _CATALOG] or [
    pytest.param(None, id="no-reference")
]


@functools.lru_cache(maxsize=None)
def _infos() -> dict:
    return json.loads((testing.reference_or_skip() / "hf_dataset_infos.json").read_text())


def _pair(row: dict | None) -> tuple[str, str]:
    testing.reference_or_skip()
    return row["HF_name"], row["subset"]


def _check_splits(row: dict) -> list[str]:
    splits = testing.fixture_splits(row["HF_name"], row["subset"])
    if row["do_train"]:
        return [s for s in splits if s.startswith("train")]
    evals = [s for s in splits if s in ("validation", "val") or s.startswith("dev")]
    return evals or ["test"]


@functools.lru_cache(maxsize=None)
def _templates(hf_name: str, subset: str) -> tuple:
    return tuple(ps.DatasetTemplates(hf_name, subset or None).templates.values())


@pytest.fixture(scope="module", autouse=True)
def _compile_each_template_once():
    """``Template.apply`` recompiles its Jinja source on every call, which dominates the
    run time; memoizing compilation of identical sources changes nothing rendered."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ps.env, "from_string", functools.lru_cache(maxsize=None)(ps.env.from_string))
        yield


@pytest.fixture(autouse=True)
def _seeded_random():
    random.seed(0)  # Templates use random.choice (jinja filter `choice`).


# ----------------------------------------------------------------- (a) schema
# Four rows per split, except where a filtered template needs more: trec's fine-grained
# ABBR and LOC prompts keep only rows of that coarse class, so its train split has two of each
# (else those t0_train tasks would have no training rows and end the mixture's stream).
FIXTURE_ROWS = {("trec", "", "train"): 8}


@pytest.mark.parametrize("row", _PAIRS)
def test_fixtures_cover_every_split_and_encode_under_the_hf_schema(row):
    hf_name, subset = _pair(row)
    info = _infos()[hf_name][subset]
    assert testing.fixture_splits(hf_name, subset) == sorted(info["splits"])
    features = datasets.Features.from_dict(info["features"])
    for split in info["splits"]:
        rows = testing.load_fixture_rows(hf_name, subset, split)
        want = FIXTURE_ROWS.get((hf_name, subset, split), 4)
        assert len(rows) == want, (split, len(rows))
        assert len({json.dumps(r, sort_keys=True) for r in rows}) == want, f"{split}: duplicates"
        for i, r in enumerate(rows):
            assert set(r) == set(features), (split, i, sorted(set(r) ^ set(features)))
            # Round trip: the row is already in HF's storage form (Sequence of dicts as a
            # dict of lists, ClassLabels as ints), i.e. what load_dataset would return.
            assert features.encode_example(r) == r, (split, i)


# ----------------------------------------------------------- (b) templates render
def _render_problems(template, rows: list[dict]) -> list[str]:
    problems = []
    for i, r in enumerate(rows):
        try:
            parts = template.apply(r)
            choices = template.get_answer_choices_list(r)
        except Exception as e:  # noqa: BLE001 - a template error is a finding, reported per row.
            problems.append(f"row {i}: raises {e!r}")
            continue
        inputs, target = parts[0], parts[1] if len(parts) > 1 else ""
        if not inputs:
            problems.append(f"row {i}: empty input")
        elif not target:
            problems.append(f"row {i}: empty target")
        elif choices is not None and target not in choices:
            problems.append(f"row {i}: target {target!r} not among answer choices {choices}")
    return problems


@pytest.mark.parametrize("row", _PAIRS)
def test_every_template_renders_on_the_check_split(row):
    hf_name, subset = _pair(row)
    templates = _templates(hf_name, subset)
    if (hf_name, subset) in TEMPLATELESS:
        assert not templates, "promptsource now has templates: remove the pair from TEMPLATELESS"
        return
    assert templates, f"no promptsource templates for {hf_name}/{subset}: add it to TEMPLATELESS?"
    splits = _check_splits(row)
    rows = [r for s in splits for r in testing.load_fixture_rows(hf_name, subset, s)]
    failures = {}
    for template in templates:
        problems = _render_problems(template, rows)
        if (hf_name, subset, template.name) in KNOWN_NOT_APPLICABLE:
            if not problems:
                failures[template.name] = (
                    "renders on every row: remove it from KNOWN_NOT_APPLICABLE"
                )
        elif problems:
            failures[template.name] = problems
    assert not failures, f"{hf_name}/{subset} {splits}: {json.dumps(failures, indent=1)}"


@pytest.mark.parametrize("row", _PAIRS)
def test_no_template_raises_on_any_fixture_row(row):
    """Every split, unlabelled test rows included (label -1, empty answers, ...)."""
    hf_name, subset = _pair(row)
    templates = [
        t
        for t in _templates(hf_name, subset)
        if not KNOWN_NOT_APPLICABLE.get((hf_name, subset, t.name), "").startswith("schema drift")
    ]
    for split in testing.fixture_splits(hf_name, subset):
        for i, r in enumerate(testing.load_fixture_rows(hf_name, subset, split)):
            for template in templates:
                try:
                    template.apply(r)
                    template.get_answer_choices_list(r)
                except Exception as e:  # noqa: BLE001
                    pytest.fail(f"{hf_name}/{subset} {split}[{i}] {template.name!r} raises {e!r}")


def test_known_not_applicable_names_real_templates():
    testing.reference_or_skip()
    for hf_name, subset, name in KNOWN_NOT_APPLICABLE:
        assert name in {t.name for t in _templates(hf_name, subset)}, (hf_name, subset, name)


# ------------------------------------------------------------- (c) coherence
def _spans(r):
    answers = r["answers"]
    return list(zip(answers["answer_start"], answers["text"]))


def _check_extractive(r):
    for start, text in _spans(r):
        assert r["context"][start : start + len(text)] == text


def _check_record(r):
    spans = r["entity_spans"]
    for start, end, text in zip(spans["start"], spans["end"], spans["text"]):
        assert r["passage"][start : end + 1] == text  # ReCoRD's end offsets are inclusive.
    assert set(r["answers"]) <= set(r["entities"]) and "@placeholder" in r["query"]


def _check_labelled_choice(key, labels):
    def check(r):
        assert r[key] == "" or r[key] in labels(r), (r[key], labels(r))

    return check


def _check_wsc(r):
    words = r["text"].split(" ")
    assert words[r["span1_index"]].startswith(r["span1_text"].split()[0])
    assert words[r["span2_index"]].strip(".,").lower() == r["span2_text"].lower()


def _check_wic(r):
    for n in "12":
        form = r[f"sentence{n}"][r[f"start{n}"] : r[f"end{n}"]]
        assert form.lower().startswith(r["word"][:3].lower()) and " " not in form, form


def _check_wino_bias(r):
    a, b, c, d = (int(x) for x in r["coreference_clusters"])
    assert 0 <= a <= b < c == d < len(r["tokens"])
    assert r["tokens"][c].lower() in {"he", "she", "him", "her"}


def _check_duorc(r):
    assert r["no_answer"] == (r["answers"] == []), (r["no_answer"], r["answers"])


_COHERENCE = {
    "squad_v2": _check_extractive,
    "adversarial_qa": _check_extractive,
    "quoref": _check_extractive,
    "super_glue/record": _check_record,
    "super_glue/wsc.fixed": _check_wsc,
    "super_glue/wic": _check_wic,
    "wino_bias": _check_wino_bias,
    "wiki_hop": _check_labelled_choice("answer", lambda r: r["candidates"]),
    "cos_e": _check_labelled_choice("answer", lambda r: r["choices"]),
    "dream": _check_labelled_choice("answer", lambda r: r["choice"]),
    "ai2_arc": _check_labelled_choice("answerKey", lambda r: r["choices"]["label"]),
    "openbookqa": _check_labelled_choice("answerKey", lambda r: r["choices"]["label"]),
    "qasc": _check_labelled_choice("answerKey", lambda r: r["choices"]["label"]),
    "quartz": _check_labelled_choice("answerKey", lambda r: r["choices"]["label"]),
    "race": _check_labelled_choice("answer", lambda r: "ABCD"[: len(r["options"])]),
    "winogrande": _check_labelled_choice("answer", lambda r: ("1", "2")),
    "hellaswag": _check_labelled_choice("label", lambda r: ("0", "1", "2", "3")),
    "duorc": _check_duorc,
}


@pytest.mark.parametrize("row", _PAIRS)
def test_fixture_rows_are_coherent(row):
    """Answers sit where their offsets say; gold choices are among the candidates."""
    hf_name, subset = _pair(row)
    check = _COHERENCE.get(f"{hf_name}/{subset}") or _COHERENCE.get(hf_name)
    if check is None:
        return
    for split in testing.fixture_splits(hf_name, subset):
        for i, r in enumerate(testing.load_fixture_rows(hf_name, subset, split)):
            try:
                check(r)
            except AssertionError as e:
                raise AssertionError(f"{hf_name}/{subset} {split}[{i}]: {e}") from e


def test_train_fixtures_cover_several_classes():
    testing.reference_or_skip()
    for row in _CATALOG:
        hf_name, subset = row["HF_name"], row["subset"]
        features = _infos()[hf_name][subset]["features"]
        if "train" not in testing.fixture_splits(hf_name, subset):
            continue
        for key in ("label", "stereo_antistereo", "answer_label", "coarse_label", "toxic", "star"):
            if key in features:
                labels = {r[key] for r in testing.load_fixture_rows(hf_name, subset, "train")}
                assert len(labels) >= 2, (hf_name, subset, key, labels)


# ---------------------------------------------------------- story cloze reader
def test_story_cloze_reader_errors_name_the_file_and_the_fix(tmp_path):
    from t0_tasks import story_cloze

    missing = tmp_path / story_cloze.STORY_CLOZE_FILES["validation"]
    with pytest.raises(FileNotFoundError, match="rocstories"):
        story_cloze.read_story_cloze_csv(missing)
    good = testing.STORY_CLOZE_FIXTURES_DIR / story_cloze.STORY_CLOZE_FILES["validation"]
    header, first, *_ = good.read_text(encoding="utf-8").splitlines()
    for name, text in (
        ("header.csv", "id,s1,s2,s3,s4,q1,q2,answer\n" + first),
        ("ending.csv", header + "\n" + first[: first.rindex(",")] + ",3"),
        ("short.csv", header + "\n" + first[: first.rindex(",")]),
    ):
        (tmp_path / name).write_text(text + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=f"{name}.*rocstories"):
            story_cloze.read_story_cloze_csv(tmp_path / name)
