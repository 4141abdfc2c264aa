"""t0_tasks registration: P3's names, T0's mixture membership, rates and exclusions.

promptsource's own template lists are the oracle for which tasks must exist.
"""

import csv

import pytest
import seqio

import t0_tasks
from t0_tasks import catalog, mixtures, prompts, report
from t0_tasks.suites import multilingual
from t0_tasks.testing import reference_or_skip

REG = t0_tasks.current()

# Task names as published in P3 (bigscience/P3's data folders).
P3_NAMES = [
    "super_glue_rte_GPT_3_style",
    "anli_GPT_3_style_r1",
    "anli_GPT_3_style_r3_score_eval",
    "ai2_arc_ARC_Challenge_heres_a_problem",
    "cos_e_v1.11_aligned_with_common_sense",
    "super_glue_wsc.fixed_GPT_3_Style",
    "winogrande_winogrande_xl_fill_in_the_blank",
    "hellaswag_Predict_ending_with_hint",
    "story_cloze_2016_Answer_Given_options",
    "glue_mrpc_equivalent",
    "wiki_qa_Is_This_True_",
    "duorc_ParaphraseRC_answer_question",
    "yelp_review_full_based_on_that",
    "ag_news_classify",
    "super_glue_cb_GPT_3_style_score_eval",
]


def test_catalog_matches_reference_table():
    ref = reference_or_skip()
    rows = list(csv.DictReader(open(ref / "t0_datasets.csv")))
    ours = {ds.key: ds for ds in catalog.t0_catalog()}
    assert len(ours) == len(rows) == 66
    stage = {"BASE": "t0", "GPT_EVAL": "t0+", "SGLUE": "t0++", "": None}
    role = {"BASE": "heldout", "BIAS_FAIRNESS": "bias_fairness", "": None}
    for r in rows:
        ds = ours[(r["HF_name"], r["subset"] or None)]
        assert ds.trained_in == stage[r["do_train"]]
        assert ds.evaluated_in == role[r["do_eval"]]
        assert ds.train_size == (int(r["train_size"]) if r["train_size"] else None)


@pytest.mark.parametrize("name", P3_NAMES)
def test_p3_task_names_are_registered(name):
    assert name in seqio.TaskRegistry.names()


def test_one_task_per_promptsource_template():
    expected = set()
    for ds in catalog.t0_catalog():
        names = prompts.template_names(ds.name, ds.subset)
        rounds = ["_r1", "_r2", "_r3"] if ds.name == "anli" else [""]
        expected |= {prompts.task_name(ds.name, ds.subset, t, r) for t in names for r in rounds}
    # the multilingual suite's twins (XCOPA, XNLI, ...) render T0 templates on other datasets
    suite = set(multilingual.current().specs)
    assert set(REG.specs) == expected | suite
    t0_specs = [s for name, s in REG.specs.items() if name not in suite]
    twins = {s.score_eval_name for s in t0_specs if s.score_eval_name}
    with_choices = {
        s.name + "_score_eval"
        for s in t0_specs
        if prompts.get_template(s.dataset.name, s.dataset.subset, s.template_name).answer_choices
    }
    assert twins == with_choices
    assert not prompts.template_names("jigsaw_toxicity_pred", None)  # in catalog, no templates


def test_task_name_cleaning():
    assert (
        prompts.task_name("ai2_arc", "ARC-Easy", "pick the most correct option")
        == "ai2_arc_ARC_Easy_pick_the_most_correct_option"
    )
    assert prompts.task_name("anli", None, "can we infer", "_r2") == "anli_can_we_infer_r2"


def test_training_mixtures_are_cumulative_and_exclude_blacklist():
    t0, t0p, t0pp = (set(report.list_names(m)) for m in ("t0_train", "t0+_train", "t0++_train"))
    assert t0 < t0p < t0pp
    excluded = set(catalog.t0_exclusions()["excluded_tasks"]["tasks"])
    for name in REG.mixtures:
        assert not excluded & set(report.list_names(name))
    assert any(t.startswith("hellaswag_") for t in t0p - t0)
    assert any(t.startswith("super_glue_record_") for t in t0pp - t0p)
    assert not any(t.startswith(("super_glue_rte", "anli_", "story_cloze")) for t in t0pp)
    for task in t0:
        assert REG.specs[task].dataset.trained_in == "t0"


def test_rates_follow_t0_cap():
    rates = dict(REG.mixtures["t0_train"])
    n_amazon = len(prompts.template_names("amazon_polarity", None))
    assert rates["amazon_polarity_Is_this_review"] == 500_000 // n_amazon
    assert rates["glue_mrpc_equivalent"] == 3668
    n_bio = len(prompts.template_names("wiki_bio", None))
    assert all(r == 500_000 // n_bio for t, r in rates.items() if t.startswith("wiki_bio_"))
    assert mixtures.training_rate(600_000, 7) == 500_000 // 7
    assert mixtures.training_rate(500_000, 7) == 500_000
    mix = seqio.get_mixture_or_task("t0_train")
    assert mix.get_rate(seqio.get_mixture_or_task("glue_mrpc_equivalent")) == 3668


def test_eval_mixtures():
    evals = set(report.list_names("t0_eval_score_eval"))
    assert {
        "super_glue_rte_GPT_3_style_score_eval",
        "anli_GPT_3_style_r1_score_eval",
        "anli_GPT_3_style_r2_score_eval",
        "story_cloze_2016_Answer_Given_options_score_eval",
    } <= evals
    for task in evals:
        spec = REG.spec_of(task)
        assert task.endswith("_score_eval") and spec.original_task
        assert spec.dataset.evaluated_in == "heldout"
    rate = dict(REG.mixtures["t0_eval_score_eval"])["super_glue_rte_GPT_3_style_score_eval"]
    assert rate == 2490  # number of (train) examples, capped at 500k
    bias = report.list_names("bias_fairness_eval_score_eval")
    assert bias and all(REG.spec_of(t).dataset.evaluated_in == "bias_fairness" for t in bias)


def test_train_score_eval_and_og_prompt_mixtures():
    excl = catalog.t0_exclusions()
    train_eval = set(report.list_names("t0_train_score_eval"))
    assert train_eval
    assert not train_eval & set(excl["excluded_train_score_eval_tasks"]["tasks"])
    for task in train_eval:
        assert not any(p in task for p in excl["train_score_eval_skipped_prefixes"]["prefixes"])
        assert REG.spec_of(task).original_task
    one = report.list_names("t0_train_one_og_prompt")
    datasets = [REG.specs[t].dataset.key for t in one]
    assert len(datasets) == len(set(datasets))
    all_og = set(report.list_names("t0_train_all_og_prompts"))
    assert set(one) <= all_og <= set(report.list_names("t0_train"))
    assert all(REG.specs[t].original_task for t in all_og)


def test_unknown_names_suggest_close_matches():
    with pytest.raises(report.UnknownNameError, match="super_glue_rte_GPT_3_style"):
        report.resolve("super_glue_rte_GPT3_style")
    with pytest.raises(report.UnknownNameError, match="t0_train"):
        report.list_names("t0_trian")


def test_stats_shares_sum_to_one():
    rows = report.mixture_stats("t0_train", steps=12_200, batch_size=1024)
    assert abs(sum(r.share for r in rows) - 1) < 1e-9
    mrpc = next(r for r in rows if r.task == "glue_mrpc_equivalent")
    assert mrpc.examples_seen == pytest.approx(12_200 * 1024 * mrpc.share)
    assert mrpc.epochs == pytest.approx(mrpc.examples_seen / 3668)
