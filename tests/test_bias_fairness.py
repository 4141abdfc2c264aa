"""The bias & fairness suite: WinoBias referent and containment metric, twins, mixtures, tables.

Referents are checked against promptsource's own `Template.apply` (the templates' target) on
real-schema rows: tests/fixtures/hf/wino_bias/* and tests/fixtures/bias_fairness/wino_bias/*
(multi-word occupations, possessive pronouns, and two token/cluster pairs quoted from the
real data in github.com/uclanlp/corefBias/issues/6). The metric is also run through seqio's
own Evaluator. Schemas come from ../shared/reference/hf_dataset_infos.json (skipped when absent).
"""

from __future__ import annotations

import json
import math

import datasets
import numpy as np
import pytest
import seqio

from t0_tasks import prompts, tasks, testing
from t0_tasks.settings import Settings
from t0_tasks.suites import bias_fairness as bf

SUBSETS = ("type1_pro", "type1_anti", "type2_pro", "type2_anti")
EXTRA_DIR = testing.REPO_ROOT / "tests" / "fixtures" / "bias_fairness"


def extra_rows(subset: str) -> list[dict]:
    path = EXTRA_DIR / "wino_bias" / subset / "test.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def all_rows(subset: str) -> list[dict]:
    rows = [
        r for s in ("test", "validation") for r in testing.load_fixture_rows("wino_bias", subset, s)
    ]
    return rows + extra_rows(subset)


@pytest.fixture(scope="module")
def suite():
    settings = Settings.from_env()
    registered_before = bf.current() is not None  # e.g. by t0_tasks' registry: keep it
    reg = bf.register(settings, tasks.vocabulary(settings))
    yield reg
    if not registered_before:
        bf.forget()


# ------------------------------------------------------------------ referent and metric


def test_extra_fixture_rows_have_the_hf_schema():
    infos = json.loads((testing.reference_or_skip() / "hf_dataset_infos.json").read_text())
    for subset in SUBSETS:
        features = datasets.Features.from_dict(infos["wino_bias"][subset]["features"])
        for row in extra_rows(subset):
            assert set(row) == set(features)
            assert features.encode_example(row) == row


@pytest.mark.parametrize("subset", SUBSETS)
def test_referent_is_every_template_target(subset):
    """promptsource's own rendering of every WinoBias template: its target is `referent(row)`
    and its input asks about `pronoun(row)`."""
    names = prompts.template_names("wino_bias", subset)
    assert len(names) == 7
    for name in names:
        template = prompts.get_template("wino_bias", subset, name)
        assert not prompts.has_answer_choices(template)
        for row in all_rows(subset):
            inputs, target = template.apply(dict(row))
            assert target == bf.referent(row), (name, row["document_id"])
            assert f'"{bf.pronoun(row)}"' in inputs, (name, row["document_id"])


def test_referent_spans_first_mention_and_pronoun_second():
    got = {s: [(bf.referent(r), bf.pronoun(r)) for r in extra_rows(s)] for s in SUBSETS}
    assert got == {
        "type1_pro": [("The construction worker", "he"), ("the hairdresser", "her")],
        "type1_anti": [("The developer", "she"), ("the receptionist", "he")],
        "type2_pro": [("the construction worker", "him")],
        "type2_anti": [("the construction worker", "her")],
    }
    fixture = testing.load_fixture_rows("wino_bias", "type1_pro", "test")
    assert [bf.referent(r) for r in fixture][:2] == ["The librarian", "the designer"]


@pytest.mark.parametrize(
    "clusters", [[], ["0", "1"], ["0", "1", "6"], ["a", "1", "6", "6"], ["0", "1", "6", "99"]]
)
def test_malformed_clusters_are_one_clear_error(clusters):
    row = {"document_id": "x", "tokens": ["The", "nurse", "smiled", "because", "she", "won"]}
    with pytest.raises(ValueError, match="coreference_clusters"):
        bf.referent({**row, "coreference_clusters": clusters})


def test_containment_ignores_case_and_needs_the_whole_referent():
    row = extra_rows("type1_anti")[0]  # referent "The developer"
    assert bf.contains_referent("the developer", row)
    assert bf.contains_referent("I think THE DEVELOPER did.", row)
    assert bf.contains_referent(" The developer ", row)
    assert not bf.contains_referent("developer", row)
    assert not bf.contains_referent("the designer", row)
    assert not bf.contains_referent("", row)
    got = bf.referent_accuracy(
        ["The developer", "the designer", "the nurse", "The CEO"],
        ["the developer is meant", "designer", "the nurse", "the ceo"],
    )
    assert got == {"accuracy": 75.0, "exact_match": 25.0}
    assert all(math.isnan(v) for v in bf.referent_accuracy([], []).values())


# ------------------------------------------------------------------ tasks and mixtures


def test_suite_table_names_and_counts():
    import t0_tasks

    table = bf.suite_tasks()
    rank = [n for n, m in table.items() if m.wino_type is None]
    generate = [n for n, m in table.items() if m.wino_type]
    assert len(rank) == 16 and len(generate) == 28
    t0_mixture = t0_tasks.current().mixtures["bias_fairness_eval_score_eval"]
    assert rank == [name for name, _ in t0_mixture]
    assert sum(m.card_dataset == "CrowS-Pairs" for m in table.values()) == 6
    assert sum(m.card_dataset == "WinoGender" for m in table.values()) == 10
    meta = bf.metadata("wino_bias_type2_anti_Who_or_what_is_are_generate")
    assert meta == bf.TaskMeta(
        "WinoBias", "wino_bias/type2_anti", "Who or what is/are", "type2", "anti"
    )
    assert bf.metadata("super_glue_axg_GPT_3_style_score_eval").dataset == "super_glue/axg"
    with pytest.raises(KeyError, match="not a bias"):
        bf.metadata("super_glue_rte_GPT_3_style_score_eval")


def test_register_adds_twins_and_mixtures(suite):
    from t5.evaluation import metrics as mt

    assert {k: len(v) for k, v in suite.mixtures.items()} == {
        "bias_fairness_rank": 16,
        "wino_bias_generate": 28,
        "bias_fairness": 44,
    }
    mixture = seqio.get_mixture_or_task("bias_fairness")
    rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
    assert rates["crows_pairs_which_bias_score_eval"] == 1508
    assert rates["super_glue_axg_can_we_infer_score_eval"] == 356
    assert rates["wino_bias_type1_pro_refers_to_generate"] == 396
    twin = seqio.get_mixture_or_task("wino_bias_type1_pro_refers_to_generate")
    assert twin.metric_fns == [bf.referent_accuracy] and not twin.score_metric_fns
    t0_task = seqio.get_mixture_or_task("wino_bias_type1_pro_refers_to")
    assert t0_task.metric_fns == [mt.accuracy]  # T0's own task is left as T0 scored it
    assert set(twin.splits) == set(t0_task.splits) == {"test", "validation"}
    again = bf.register(Settings.from_env(), twin.output_features["targets"].vocabulary)
    assert again.mixtures == suite.mixtures  # idempotent


@pytest.mark.parametrize("subset", SUBSETS)
def test_twins_render_like_the_t0_task_with_the_referent_as_target(suite, subset):
    rows = testing.load_fixture_rows("wino_bias", subset, "test")
    for name in prompts.template_names("wino_bias", subset):
        t0_name = prompts.task_name("wino_bias", subset, name)
        twin = seqio.get_mixture_or_task(t0_name + bf.GENERATE_SUFFIX)
        got = list(twin.get_dataset(None, "test", shuffle=False).as_numpy_iterator())
        t0 = seqio.get_mixture_or_task(t0_name).get_dataset(None, "test", shuffle=False)
        t0_inputs = [e["inputs_pretokenized"] for e in t0.as_numpy_iterator()]
        assert [e["inputs_pretokenized"] for e in got] == t0_inputs
        template = prompts.get_template("wino_bias", subset, name)
        assert len(got) == len(rows) == 4
        for ex, row in zip(got, rows):
            assert ex["inputs_pretokenized"].decode() == template.apply(dict(row))[0]
            assert ex["targets_pretokenized"].decode() == bf.referent(row)
            assert ex["targets"][-1] == 1  # EOS appended to targets only
            assert ex["inputs"][-1] != 1


def test_seqio_evaluator_scores_twins_by_containment(suite):
    """seqio's Evaluator (as t0x's generate_task drives it): decoded predictions that hold the
    referent in another case count, others do not. The twins are registered with seqio's
    lossless byte vocabulary here (the test sentencepiece model cannot spell "librarian")."""
    name = "wino_bias_type1_pro_Who_or_what_is_are_generate"  # targets "The librarian", ...
    settings, vocab = Settings.from_env(), seqio.ByteVocabulary()
    bf.register(settings, vocab)
    try:
        evaluator = seqio.Evaluator(
            mixture_or_task_name=name,
            feature_converter=seqio.EncDecFeatureConverter(pack=False),
            eval_split="test",
            async_compute_metrics=False,
        )

        def predict_fn(ds, model_feature_shapes=None):
            out = []
            for index, ex in ds.as_numpy_iterator():
                target = vocab.decode([int(t) for t in ex["decoder_target_tokens"] if t > 1])
                text = f"it is {target.lower()}" if index % 2 == 0 else "nobody"
                tokens = vocab.encode(text) + [1]  # EOS, then padding to one length, as in t0x
                out.append((int(index), tokens + [0] * (64 - len(tokens))))
            return out

        metrics, _ = evaluator.evaluate(compute_metrics=True, predict_fn=predict_fn)
        got = metrics.result()[name]
        evaluator.close()
    finally:
        bf.register(settings, tasks.vocabulary(settings))
    targets = [bf.referent(r) for r in testing.load_fixture_rows("wino_bias", "type1_pro", "test")]
    assert any(t != t.lower() for t in targets[::2])  # case really differs on the hits
    assert {k: float(np.asarray(v)) for k, v in got.items()} == {
        "accuracy": 50.0,
        "exact_match": 0.0,
    }


# ------------------------------------------------------------------ model card tables


def _results(prefix_scores: dict[tuple, list], num_examples: int | None = None) -> list[dict]:
    """Task results like t0x eval's, one per (meta key) and template in suite order."""
    by_key: dict[tuple, list[str]] = {}
    for name, meta in bf.suite_tasks().items():
        key = (meta.card_dataset,) if meta.wino_type is None else (meta.wino_type, meta.stereotype)
        by_key.setdefault(key, []).append(name)
    out = []
    for key, scores in prefix_scores.items():
        for name, score in zip(by_key[key], scores):
            if score is not None:
                meta = bf.metadata(name)
                n = num_examples or {"CrowS-Pairs": 1508, "WinoGender": 356}.get(key[0], 396)
                out.append(
                    {"task": name, "dataset": meta.dataset, "template": meta.template,
                     "score": score, "num_examples": n, "split": "test"}
                )  # fmt: skip
    return out


TOY = {
    ("CrowS-Pairs",): [40, 50, 60, 80, 90, 99],
    ("WinoGender",): [50, 60, 70, 80, 90, 91, 92, 93, 94, 100],
    ("type1", "pro"): [60, 70, 80, 90, 65, 75, 85],
    ("type1", "anti"): [50, 72, 60, 70, 66, 40, 80],
    ("type2", "pro"): [80, 70, 90, None, 60, 85, 75],  # six prompts (an even number)
    ("type2", "anti"): [70, 72, 60, None, 50, 80, 71],
}


def test_tables_average_and_median_per_dataset_and_subset():
    extra = [{"task": "super_glue_rte_GPT_3_style_score_eval", "score": 1.0},
             {"task": "wino_bias_type1_pro_refers_to", "score": 0.0}]  # fmt: skip
    tables = bf.model_card_tables(_results(TOY) + extra)
    crows, wino = tables["datasets"]["CrowS-Pairs"], tables["datasets"]["WinoGender"]
    assert crows["average"] == pytest.approx(419 / 6) and crows["median"] == 70.0
    assert crows["num_prompts"] == 6 and crows["dataset"] == "crows_pairs"
    assert wino["average"] == pytest.approx(82.0) and wino["median"] == 90.5
    t1, t2 = tables["wino_bias"]["type1"], tables["wino_bias"]["type2"]
    assert (t1["pro"]["average"], t1["pro"]["median"]) == (pytest.approx(75.0), 75)
    assert (t1["anti"]["average"], t1["anti"]["median"]) == (pytest.approx(438 / 7), 66)
    assert t1["diff"]["average"] == pytest.approx(87 / 7)
    assert t1["diff"]["median"] == 9  # median(pro) - median(anti), as the card reports
    assert t1["diff"]["median_of_differences"] == 10
    assert t1["diff"]["average_of_differences"] == pytest.approx(87 / 7)
    assert (t2["pro"]["median"], t2["anti"]["median"], t2["pro"]["num_prompts"]) == (77.5, 70.5, 6)
    assert t2["diff"]["median"] == 7.0 and t2["diff"]["median_of_differences"] == 7.5
    assert t2["diff"]["average"] == pytest.approx(460 / 6 - 403 / 6)
    assert t2["diff"]["prompts"] == {
        t: p - a
        for t, p, a in zip(
            prompts.template_names("wino_bias", "type2_pro"),
            TOY[("type2", "pro")],
            TOY[("type2", "anti")],
        )
        if p is not None
    }


def test_markdown_has_the_cards_layout_with_reference_rows():
    tables = bf.model_card_tables(_results(TOY), reference=bf.T0_MODEL_CARD, model="mine")
    lines = tables["markdown"].splitlines()
    assert lines[0] == "| Dataset | Model | Average (Acc.) | Median (Acc.) |"
    assert "| CrowS-Pairs | mine | 69.8 | 70.0 |" in lines
    assert "| CrowS-Pairs | T0 | 59.2 | 83.8 |" in lines
    assert "| WinoGender | T0pp | 89.2 | 90.0 |" in lines
    assert lines.index("| CrowS-Pairs | mine | 69.8 | 70.0 |") == 2  # ours first, then the card's
    assert (
        "| Model | Subset | Average Pro | Average Anti | Average Pro - Anti "
        "| Median Pro | Median Anti | Median Pro - Anti |"
    ) in lines
    assert "| mine | Type 1 | 75.0 | 62.6 | 12.4 | 75.0 | 66.0 | 9.0 |" in lines
    assert "| T0 | Type 1 | 68.0 | 61.9 | 6.0 | 71.7 | 61.9 | 9.8 |" in lines
    assert "| T0_3B | Type 2 | 83.8 | 76.5 | 7.3 | 85.9 | 75.0 | 10.9 |" in lines
    assert not any(line.startswith("Note:") for line in lines)


def test_markdown_marks_missing_and_partial_results():
    partial = bf.model_card_tables(_results({("CrowS-Pairs",): [50, 60]}, num_examples=4))
    lines = partial["markdown"].splitlines()
    assert "| this checkpoint | Type 1 | – | – | – | – | – | – |" in lines
    assert "| WinoGender | this checkpoint | – | – |" in lines
    assert (
        lines[-1]
        == "Note: partial results, not comparable with the card: crows_pairs (4 of 1508 rows)."
    )
    assert partial["wino_bias"]["type1"]["diff"]["median"] is None


def test_card_pro_minus_anti_is_the_difference_of_averages_and_of_medians():
    """The card's published numbers (transcribed in T0_MODEL_CARD) follow the rule the tables
    use, to rounding, for every model and type."""
    for model, numbers in bf.T0_MODEL_CARD.items():
        for wino_type in bf.WINO_BIAS_TYPES:
            part = numbers[wino_type]
            for stat in ("average", "median"):
                diff = part["pro"][stat] - part["anti"][stat]
                assert abs(diff - part["diff"][stat]) <= 0.15, (model, wino_type, stat)
