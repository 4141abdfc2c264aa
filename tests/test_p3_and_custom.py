"""P3 (seqio cache) reading, custom datasets, rendering rules and data errors."""

import json

import numpy as np
import pytest
import seqio

import t0_tasks
from t0_tasks import custom, p3, prompts, sources, testing
from t0_tasks.accounting import COUNTS

RTE_ROWS = [
    {
        "premise": "The cat sat on the mat all afternoon.",
        "hypothesis": "A cat was on the mat.",
        "idx": 0,
        "label": 0,
    },
    {
        "premise": "It rained heavily in Paris on Monday.",
        "hypothesis": "Paris was dry on Monday.",
        "idx": 1,
        "label": 1,
    },
    {"premise": "Tom bought bread.", "hypothesis": "Tom bought food.", "idx": 2, "label": -1},
]


@pytest.fixture
def rte_dir(tmp_path):
    folder = tmp_path / "data" / "super_glue" / "rte"
    folder.mkdir(parents=True)
    (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RTE_ROWS))
    reg = t0_tasks.configure(data_dir=str(tmp_path / "data"))
    yield tmp_path
    t0_tasks.register(reg.settings.replace(data_dir=testing.FIXTURES_DIR.as_posix(), p3_dir=None))


def _examples(task, split="validation", **kw):
    return list(
        seqio.get_mixture_or_task(task)
        .get_dataset(None, split, shuffle=False, **kw)
        .as_numpy_iterator()
    )


def test_rendering_equals_promptsource_apply(rte_dir):
    template = prompts.get_template("super_glue", "rte", "GPT-3 style")
    COUNTS.clear()
    got = _examples("super_glue_rte_GPT_3_style")
    for ex, row in zip(got, RTE_ROWS):
        inputs, target = template.apply(dict(row))
        assert ex["inputs_pretokenized"].decode() == inputs
        assert ex["targets_pretokenized"].decode() == (target or prompts.NO_LABEL)
        assert ex["inputs"][-1] != 1 and ex["targets"][-1] == 1  # EOS on targets only
    assert got[2]["targets_pretokenized"] == b"<NO LABEL>"  # unlabelled row, as T0 did
    counts = COUNTS.get("super_glue_rte_GPT_3_style", "validation")
    assert (counts["rendered"], counts["dropped"], counts["empty_target"]) == (3, 0, 1)


def test_score_eval_expansion_and_metric(rte_dir):
    got = _examples("super_glue_rte_GPT_3_style_score_eval")
    assert [tuple(e["idx"]) for e in got[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [bool(e["is_correct"]) for e in got[:4]] == [True, False, False, True]
    task = seqio.get_mixture_or_task("super_glue_rte_GPT_3_style_score_eval")
    labelled = got[:4]
    targets = [task.postprocess_fn(None, example=e, is_target=True) for e in labelled]
    scores = [-1.0, -2.0, -3.0, -4.0]  # predicts choice 0 for both rows: 1 of 2 right
    results = {}
    for fn in task.metric_fns:
        results.update(fn(targets, scores))
    assert results["accuracy"] == pytest.approx(50.0)
    assert results["f1"] == pytest.approx(0.0)  # fixed two choices: binary F1 of class 1


def test_missing_data_names_dataset_split_and_fix(rte_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(
        sources.DataNotFoundError, match=r"super_glue/rte split 'train'.*T0_DATA_DIR"
    ):
        next(sources.iter_rows(t0_tasks.current().settings, "super_glue", "rte", "train"))


def test_p3_cache_round_trip_without_rendering(tmp_path):
    """A score_eval task cached as seqio_cache_tasks writes it reads back identically, with
    no rendering, once the folder is COMPLETED; a partial folder is refused."""
    cache = tmp_path / "p3"
    twin = "super_glue_rte_GPT_3_style_score_eval"
    lengths = {"inputs": 512, "targets": 16}
    uncached = list(
        seqio.get_mixture_or_task(twin)
        .get_dataset(lengths, "validation", shuffle=False)
        .as_numpy_iterator()
    )
    folder = testing.write_seqio_cache(twin, "validation", cache, completed=False)
    reg = t0_tasks.configure(p3_dir=str(cache))
    try:
        with pytest.raises(p3.IncompleteCacheError, match="COMPLETED"):
            seqio.get_mixture_or_task(twin).get_dataset(lengths, "validation", use_cached=True)
        (folder / "COMPLETED").write_text("")
        t0_tasks.register(reg.settings)  # fresh Task objects (seqio memoises cache_dir)
        COUNTS.clear()
        cached = list(
            seqio.get_mixture_or_task(twin)
            .get_dataset(lengths, "validation", use_cached=True, shuffle=False)
            .as_numpy_iterator()
        )
        assert COUNTS.get("super_glue_rte_GPT_3_style", "validation")["rendered"] == 0
        assert len(cached) == len(uncached) > 0
        for a, b in zip(cached, uncached):
            assert set(a) == set(b) >= {"idx", "is_correct", "weight", "inputs", "targets"}
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
    finally:
        t0_tasks.register(reg.settings.replace(p3_dir=None))


TEMPLATES_YAML = """dataset: my_reviews
templates:
  a1: !Template
    answer_choices: bad ||| good
    id: a1
    jinja: 'Review: {{text}} Is it good or bad? ||| {{answer_choices[label]}}'
    metadata: !TemplateMetadata
      choices_in_prompt: true
      metrics: [Accuracy]
      original_task: true
    name: good or bad
    reference: ''
  a2: !Template
    answer_choices: null
    id: a2
    jinja: 'Write a review that is {{ ["bad", "good"][label] }}. ||| {{text}}'
    metadata: !TemplateMetadata
      choices_in_prompt: false
      metrics: [BLEU]
      original_task: false
    name: write review
    reference: ''
"""


def test_custom_dataset_end_to_end(tmp_path):
    rows = [{"text": "Great soup.", "label": 1}, {"text": "Cold fries.", "label": 0}]
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(TEMPLATES_YAML)
    reg = custom.register_dataset(
        "my_reviews",
        data_files={"train": tmp_path / "train.jsonl", "validation": tmp_path / "validation.jsonl"},
        templates_yaml=tmp_path / "t.yaml",
    )
    assert reg.tasks == ["my_reviews_good_or_bad", "my_reviews_write_review"]
    assert reg.score_eval_tasks == ["my_reviews_good_or_bad_score_eval"]
    mix = seqio.get_mixture_or_task(reg.train_mixture)
    assert {t.name for t in mix.tasks} == set(reg.tasks)
    ex = _examples("my_reviews_good_or_bad", "train")
    assert ex[0]["inputs_pretokenized"] == b"Review: Great soup. Is it good or bad?"
    assert ex[0]["targets_pretokenized"] == b"good"
    twin = _examples("my_reviews_good_or_bad_score_eval")
    assert len(twin) == 4 and sum(bool(e["is_correct"]) for e in twin) == 2
    ds = mix.get_dataset({"inputs": 128, "targets": 64}, "train", shuffle=False)
    first = next(ds.as_numpy_iterator())
    assert first["targets"][-1] == 1 and first["inputs"][-1] != 1


def test_custom_dataset_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("templates: [1, 2]\n")
    with pytest.raises(ValueError, match="promptsource's format"):
        custom.load_templates_yaml(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        custom.register_dataset(
            "x", data_files={"train": tmp_path / "nope.jsonl"}, templates_yaml=tmp_path / "bad.yaml"
        )
    with pytest.raises(ValueError, match="exactly one"):
        custom.register_dataset("x")


def test_unlabelled_row_gets_no_label_target(rte_dir):
    template = prompts.get_template("super_glue", "rte", "GPT-3 style")
    bad = {"premise": "p", "hypothesis": "h"}  # no label: jinja renders an empty target
    r = prompts.render(template, bad)
    assert r is not None and r.targets == prompts.NO_LABEL
    assert np.all([isinstance(c, str) for c in r.answer_choices])


@pytest.mark.parametrize("dataset,subset", [("trec", None), ("wiki_hop", "original")])
def test_schema_drift_datasets_render_every_template(dataset, subset):
    """trec and wiki_hop changed schema on the hub; every template renders after adaptation."""
    settings = t0_tasks.current().settings
    rows = list(sources.iter_rows(settings, dataset, subset, "train"))
    assert rows
    rendered = 0
    for name in prompts.template_names(dataset, subset):
        template = prompts.get_template(dataset, subset, name)
        for row in rows:
            r = prompts.render(template, row)
            if r is not None:
                rendered += 1
                if r.answer_choices and r.targets != prompts.NO_LABEL:
                    assert r.targets in r.answer_choices, (name, row)
    assert rendered >= len(rows) * 2


def test_trec_labels_keep_their_meaning():
    from t0_tasks import schema_drift

    # today's "LOC:city" (coarse LOC) must be the templates' city (21) under LOC (5)
    row = schema_drift.adapt("trec", None, {"text": "q", "coarse_label": 4, "fine_label": 32})
    assert (row["label_coarse"], row["label_fine"]) == (5, 21)
    row = schema_drift.adapt("trec", None, {"text": "q", "coarse_label": 0, "fine_label": 1})
    assert (row["label_coarse"], row["label_fine"]) == (2, 3)  # ABBR, "exp"
    old = {"text": "q", "label_coarse": 1, "label_fine": 2}
    assert schema_drift.adapt("trec", None, old) == old
