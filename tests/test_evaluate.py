"""The eval job: gin files, end-to-end on a Hugging Face checkpoint, resume, generative
tasks through seqio's Evaluator, and `infer`."""

import json

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

import t0_tasks
import t0_tasks.tasks
from t0_tasks import testing as task_testing
from t0x.jobs import evaluate as ev
from t0x import gin_config
from t0x.models.t5 import testing
from t0x.jobs import infer

torch = pytest.importorskip("torch")

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
    {
        "premise": "Tom bought bread and milk.",
        "hypothesis": "Tom bought food.",
        "idx": 2,
        "label": 0,
    },
]
TASKS = ["super_glue_rte_GPT_3_style_score_eval", "super_glue_rte_does_it_follow_that_score_eval"]


@pytest.fixture(scope="module")
def rte_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    folder = root / "super_glue" / "rte"
    folder.mkdir(parents=True)
    (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RTE_ROWS))
    reg = t0_tasks.configure(data_dir=str(root))
    yield root
    t0_tasks.register(reg.settings.replace(data_dir=task_testing.FIXTURES_DIR.as_posix()))


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_hf"
    testing.random_hf_t5(testing.tiny_config(), seed=3).save_pretrained(str(path))
    return str(path)


def _bound(param):
    """The value bound to `param`, through a macro and a configurable call if it names them
    (the recipe's T5X names reach t0x.evaluate through getters: t0x/t5x_names.py)."""
    value = gin.query_parameter(param)
    if isinstance(value, gin.config.ConfigurableReference):
        value = gin.query_parameter(f"{value.scoped_selector}.value")
    if isinstance(value, gin.config.ConfigurableReference) and value.evaluate:
        return value.scoped_configurable_fn()
    return value


def test_gin_eval_t0_binds_the_job():
    gin_config.parse(["eval_t0.gin"], ["CHECKPOINT_PATH = '/ckpt'", "MAX_EVAL_EXAMPLES = 5"])
    try:
        assert _bound("t0x.evaluate.checkpoint_path") == "/ckpt"
        assert _bound("t0x.evaluate.mixture_or_task_name") == "t0_eval_score_eval"
        assert _bound("t0x.evaluate.max_examples") == 5
        assert _bound("t0x.evaluate.feature_lengths") == {"inputs": 1024, "targets": 256}
        assert _bound("t0x.evaluate.output_dir") is None
        assert _bound("t0x.evaluate.batch_size") == 32  # T5X's eval.gin default
        assert _bound("t0x.evaluate.split") == "validation"  # the recipe's T5X binding
    finally:
        gin.clear_config()


def test_anli_tasks_report_per_round_and_pooled():
    info = ev.task_info("anli_GPT_3_style_r2_score_eval", "validation")
    assert (info.dataset, info.template, info.group) == ("anli/r2", "GPT-3 style", "anli")
    info = ev.task_info("super_glue_rte_GPT_3_style_score_eval", "validation")
    assert (info.dataset, info.group) == ("super_glue/rte", None)


def _fake_scorer(calls):
    def score(enc, dec_tgt, weights):
        calls.append(enc.shape)
        return (dec_tgt * weights).sum(-1) % 7 - enc.sum(-1, keepdims=True) % 3  # any function

    return score


def test_resume_skips_finished_tasks(rte_data, tmp_path):
    out = str(tmp_path / "eval")
    calls = []
    first = ev.evaluate_tasks(
        TASKS,
        out,
        _fake_scorer(calls),
        split="validation",
        batch_size=2,
        run_key={"checkpoint": "x"},
        log=lambda s: None,
    )
    assert calls and [r["num_examples"] for r in first] == [3, 3]
    assert first[0]["metrics"]["accuracy"] == pytest.approx(first[0]["score"])
    assert "f1" in first[0]["metrics"]  # t5's rank_classification on fixed choices
    calls.clear()
    again = ev.evaluate_tasks(
        TASKS,
        out,
        _fake_scorer(calls),
        split="validation",
        batch_size=2,
        run_key={"checkpoint": "x"},
        log=lambda s: None,
    )
    assert calls == [] and again == first
    (tmp_path / "eval" / "tasks" / f"{TASKS[1]}.json").unlink()  # as if stopped mid-way
    ev.evaluate_tasks(
        TASKS,
        out,
        _fake_scorer(calls),
        split="validation",
        batch_size=2,
        run_key={"checkpoint": "x"},
        log=lambda s: None,
    )
    assert len(calls) == 2  # only the missing task: 3 rows in batches of 2
    with pytest.raises(FileExistsError, match="another evaluation"):
        ev.evaluate_tasks(
            TASKS,
            out,
            _fake_scorer(calls),
            split="validation",
            batch_size=2,
            run_key={"checkpoint": "other"},
            log=lambda s: None,
        )


def test_evaluate_end_to_end_on_hf_checkpoint(rte_data, hf_checkpoint, tmp_path):
    out = tmp_path / "eval"
    lines = []
    results = ev.evaluate(hf_checkpoint, str(out), tasks=TASKS, batch_size=8, log=lines.append)
    rte = results["datasets"]["super_glue/rte"]
    assert set(rte["prompts"]) == {"GPT-3 style", "does it follow that"}
    assert results["run"]["checkpoint"] == hf_checkpoint and results["run"]["format"] == "hf"
    for name in ("results.json", "results.md", "results.png"):
        assert (out / name).is_file()
    task = json.loads((out / "tasks" / f"{TASKS[0]}.json").read_text())
    assert task["predictions"] and len(task["scores"]) == 3
    assert task["choices"][0] == ["True", "False"]
    assert any("[1/2]" in line for line in lines)

    # The same model as a t0x checkpoint gives the same results.
    from t0x.checkpoints import convert

    t0x_checkpoint = str(tmp_path / "t0x_ckpt")
    convert.convert(hf_checkpoint, t0x_checkpoint, to_fmt="t0x")
    again = ev.evaluate(
        t0x_checkpoint,
        str(tmp_path / "eval_t0x"),
        tasks=TASKS[:1],
        batch_size=8,
        log=lambda s: None,
    )
    assert again["run"]["format"] == "t0x"
    task_t0x = json.loads((tmp_path / "eval_t0x" / "tasks" / f"{TASKS[0]}.json").read_text())
    assert task_t0x["predictions"] == task["predictions"]
    np.testing.assert_allclose(task_t0x["scores"], task["scores"], rtol=1e-6)


def _register_generative_task(name):
    """A plain seqio task whose text the tiny test vocabulary round-trips (lower case)."""
    from t5.evaluation import metrics

    rows = [("is it hot", "that"), ("is ice hot", "no"), ("is the sun hot", "that")]
    vocab = t0_tasks.tasks.vocabulary(t0_tasks.current().settings)
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        seqio.FunctionDataSource(
            lambda split, shuffle_files, seed=None: tf.data.Dataset.from_tensor_slices(
                {"inputs": [r[0] for r in rows], "targets": [r[1] for r in rows]}
            ),
            splits=["validation"],
        ),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
        output_features=t0_tasks.tasks.output_features(vocab),
        metric_fns=[metrics.accuracy],
    )
    return vocab


def test_generative_task_through_seqio_evaluator(tmp_path):
    vocab = _register_generative_task("t0x_test_yes_no")
    answer = np.asarray(vocab.encode("that") + [1], np.int32)
    seen = []

    def predict(enc, decode_length):  # always "that"
        seen.append((enc.shape, decode_length))
        out = np.zeros((enc.shape[0], decode_length), np.int32)
        out[:, : len(answer)] = answer[:decode_length]
        return out

    (result,) = ev.evaluate_tasks(
        ["t0x_test_yes_no"], str(tmp_path), predict=predict, batch_size=4, log=lambda s: None
    )
    assert result["kind"] == "generate" and result["predictions"] == ["that"] * 3
    assert result["metric"] == "accuracy" and result["score"] == pytest.approx(200 / 3)
    assert result["dataset"] == result["template"] == "t0x_test_yes_no"
    assert seen and all(shape[0] == 4 for shape, _ in seen)
    seqio.TaskRegistry.remove("t0x_test_yes_no")


def test_infer_equals_transformers_greedy(hf_checkpoint, tmp_path):
    prompts = ["Is this true? yes or no", "Hello world.", "a b c d e f g h i j k l m n o p q"]
    got = infer.infer(hf_checkpoint, prompts, max_decode_length=6, batch_size=8)
    vocab = infer.vocabulary(hf_checkpoint)
    model = __import__("transformers").T5ForConditionalGeneration.from_pretrained(hf_checkpoint)
    for prompt, text in zip(prompts, got):
        ids = torch.tensor([vocab.encode(prompt)])
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                do_sample=False,
                num_beams=1,
                max_new_tokens=6,
                min_new_tokens=0,
                decoder_start_token_id=0,
                eos_token_id=1,
                pad_token_id=0,
            )
        assert text == vocab.decode([int(t) for t in out[0, 1:]])

    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"inputs": p, "id": i}) + "\n" for i, p in enumerate(prompts))
    )
    records = infer.infer_jsonl(
        hf_checkpoint, str(src), str(tmp_path / "out.jsonl"), max_decode_length=6, batch_size=8
    )
    written = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written == records and [r["generation"] for r in written] == got
    assert [r["id"] for r in written] == [0, 1, 2]
    with pytest.raises(FileExistsError):
        infer.infer_jsonl(hf_checkpoint, str(src), str(tmp_path / "out.jsonl"))


def test_infer_beam_and_seeded_sampling(hf_checkpoint):
    prompts = ["is it hot", "the sun"]
    beams = infer.infer(
        hf_checkpoint, prompts, method="beam", num_beams=2, max_decode_length=5, batch_size=8
    )
    assert len(beams) == 2 and all(isinstance(t, str) for t in beams)
    kw = dict(method="sample", temperature=1.0, top_k=5, max_decode_length=5, batch_size=8)
    assert infer.infer(hf_checkpoint, prompts, seed=1, **kw) == infer.infer(
        hf_checkpoint, prompts, seed=1, **kw
    )
