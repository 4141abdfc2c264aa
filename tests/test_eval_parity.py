"""Parity with the T0 evaluation protocol of t-zero's `evaluation/run_eval.py`.

The reference below reimplements that script's algorithm with transformers (PyTorch) on the
same random tiny T5 and the same fixture rows: promptsource's `apply` and
`get_answer_choices_list` per row; inputs tokenized without special tokens (truncated to
1024), each answer choice tokenized with EOS (truncated to 256); the input repeated per
choice; labels padded with the pad id and masked by a labels attention mask; score = sum of
masked target-token log-probabilities; prediction = argmax over choices; accuracy = share of
rows predicted right. transformers' T5Tokenizer cannot load seqio's tiny test SentencePiece
model, so the reference tokenizes with the `sentencepiece` library directly, which is what
the (slow) T5 tokenizer does for T0's vocabulary.

Our side is the real job: `t0x.evaluate.evaluate` on the checkpoint that transformers saved,
read through `t0x.hf`, running the `_score_eval` tasks of the held-out mixture.
"""

import json

import numpy as np
import pytest

import t0_tasks
from t0_tasks import testing as task_testing
from t0x.jobs import evaluate as ev
from t0x.models.t5 import testing

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

DATASETS = ("super_glue/rte", "super_glue/cb", "hellaswag")
PROMPTS_PER_DATASET = 4  # the first ones of t0_eval_score_eval (time: the CPU is small)
EOS, PAD = 1, 0


def _reference_predictions(model, sp, template, rows, batch_size=4):
    """t-zero run_eval.py's algorithm: (predictions, accuracy in percent, scores)."""
    features = []
    for row in rows:
        inputs, target = template.apply(dict(row))
        choices = template.get_answer_choices_list(dict(row))
        assert target in choices
        features.append(
            (
                sp.encode(inputs)[:1024],
                [sp.encode(c)[:255] + [EOS] for c in choices],
                choices.index(target),
            )
        )
    preds, scores = [], []
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        flat = [(inp, lab) for inp, labels, _ in chunk for lab in labels]
        max_in = max(len(i) for i, _ in flat)
        max_lab = max(len(l) for _, l in flat)
        input_ids = torch.tensor([i + [PAD] * (max_in - len(i)) for i, _ in flat])
        attention = torch.tensor([[1] * len(i) + [0] * (max_in - len(i)) for i, _ in flat])
        labels = torch.tensor([l + [PAD] * (max_lab - len(l)) for _, l in flat])
        labels_mask = torch.tensor([[1] * len(l) + [0] * (max_lab - len(l)) for _, l in flat])
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention, labels=labels).logits
        masked = labels_mask.unsqueeze(-1) * torch.log_softmax(logits, dim=-1)
        seq = torch.gather(masked, -1, labels.unsqueeze(-1)).squeeze(-1).sum(-1)
        seq = seq.view(len(chunk), -1)  # run_eval assumes equal choice counts per batch
        preds += seq.argmax(-1).tolist()
        scores += seq.tolist()
    targets = [t for _, _, t in features]
    accuracy = 100.0 * float(np.mean([p == t for p, t in zip(preds, targets)]))
    return preds, accuracy, scores


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    # Some templates draw a random phrasing per row (promptsource's jinja filter `choice` calls
    # random.choice, unseeded, so run_eval.py itself is not repeatable on them). Both sides
    # here render with the first option instead, so that those prompts compare too.
    from promptsource import templates

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(templates.env.filters, "choice", lambda options: options[0])
        yield _setup(tmp_path_factory)


def _setup(tmp_path_factory):
    import sentencepiece

    reg = t0_tasks.configure(data_dir=task_testing.FIXTURES_DIR.as_posix())
    root = tmp_path_factory.mktemp("parity")
    model = testing.random_hf_t5(testing.tiny_config(), seed=7)
    checkpoint = str(root / "hf")
    model.save_pretrained(checkpoint)
    sp = sentencepiece.SentencePieceProcessor(model_file=reg.settings.vocab_path)
    tasks = []
    for name in DATASETS:
        tasks += [
            t for t, _ in reg.mixtures["t0_eval_score_eval"] if reg.spec_of(t).dataset.label == name
        ][:PROMPTS_PER_DATASET]
    out = root / "eval"
    results = ev.evaluate(checkpoint, str(out), tasks=tasks, batch_size=8, log=lambda s: None)
    return reg, model, sp, tasks, out, results


def test_covers_the_chosen_datasets(setup):
    reg, _, _, tasks, _, results = setup
    assert {reg.spec_of(t).dataset.label for t in tasks} == set(DATASETS)
    for name in DATASETS:
        assert results["datasets"][name]["num_prompts"] == sum(
            reg.spec_of(t).dataset.label == name for t in tasks
        )


def test_predictions_and_accuracies_equal_t_zero_run_eval(setup):
    from promptsource.templates import DatasetTemplates

    reg, model, sp, tasks, out, results = setup
    templates = {}
    for task in tasks:
        spec = reg.spec_of(task)
        ds = spec.dataset
        if ds.label not in templates:
            templates[ds.label] = DatasetTemplates(
                ds.name if ds.subset is None else f"{ds.name}/{ds.subset}"
            )
        template = templates[ds.label][spec.template_name]
        rows = task_testing.load_fixture_rows(ds.name, ds.subset, spec.source_split("validation"))
        preds, accuracy, scores = _reference_predictions(model, sp, template, rows)
        ours = json.loads((out / "tasks" / f"{task}.json").read_text())
        assert ours["rows"] == list(range(len(rows))), task
        np.testing.assert_allclose(ours["scores"], scores, rtol=1e-4, atol=1e-4, err_msg=task)
        assert ours["predictions"] == preds, task
        assert ours["score"] == pytest.approx(accuracy), task
        assert results["datasets"][ds.label]["prompts"][spec.template_name] == pytest.approx(
            accuracy
        )
