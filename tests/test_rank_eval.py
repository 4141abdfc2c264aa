"""Rank classification: grouping, bucketed batching across rows and choices, scoring.

The batched scorer (`score_choices`: each input encoded once, choices decoded against it,
rows and choices padded into a few fixed shapes) must give the same scores as scoring every
(input, choice) pair alone and unpadded with `score_batch`.
"""

import numpy as np
import pytest

from t0x.eval import rank as rank_eval
from t0x.inference import LoadedModel
from t0x.models.t5.model import EncoderDecoderModel
from t0x.models.t5.testing import tiny_config


def _examples(seed=0, rows=7, vocab=128):
    """score_eval-style examples with 1..4 choices and varied lengths, rows interleaved."""
    rng = np.random.default_rng(seed)
    out = []
    for row in range(rows):
        inputs = rng.integers(2, vocab, size=int(rng.integers(3, 40))).astype(np.int32)
        num_choices = int(rng.integers(1, 5))
        correct = int(rng.integers(0, num_choices))
        for c in range(num_choices):
            targets = rng.integers(2, vocab, size=int(rng.integers(1, 11))).astype(np.int32)
            targets[-1] = 1
            out.append(
                {
                    "inputs": inputs,
                    "targets": targets,
                    "idx": np.array([row, c], np.int32),
                    "is_correct": c == correct,
                    "weight": np.float32(1.0),
                    "targets_pretokenized": f"choice {c}".encode(),
                }
            )
    return out


def test_group_examples_orders_rows_and_choices_and_truncates():
    exs = _examples()
    shuffled = [exs[i] for i in np.random.default_rng(1).permutation(len(exs))]
    items = rank_eval.group_examples(
        sorted(shuffled, key=lambda e: int(e["idx"][0])), max_input_length=10, max_target_length=4
    )
    assert [it.row for it in items] == list(range(7))
    for it in items:
        assert [int(e["idx"][1]) for e in it.examples] == list(range(it.num_choices))
        assert len(it.inputs) <= 10 and sum(it.is_correct) == 1
        for tokens, ex in zip(it.choices, it.examples):
            assert tokens[-1] == 1 and len(tokens) == min(4, len(ex["targets"]))
            np.testing.assert_array_equal(tokens[:-1], ex["targets"][: len(tokens) - 1])
    assert [it.row for it in rank_eval.group_examples(exs, max_rows=3)] == [0, 1, 2]


def test_group_examples_rejects_mixed_inputs():
    exs = _examples(rows=1)
    if len(exs) == 1:
        exs.append(dict(exs[0], idx=np.array([0, 1], np.int32)))
    exs[1] = dict(exs[1], inputs=np.array([5, 6], np.int32))
    with pytest.raises(ValueError, match="different inputs"):
        rank_eval.group_examples(exs)


def test_batches_are_bucketed_and_well_formed():
    items = rank_eval.group_examples(_examples(rows=20, seed=3))
    batches = rank_eval.make_batches(items, batch_size=4)
    assert sorted(i for b in batches for i in b.item_ids) == list(range(20))
    for b in batches:
        B, C, T = b.targets.shape
        L = b.inputs.shape[1]
        assert B == 4 and L & (L - 1) == 0 and T & (T - 1) == 0 and L >= 16 and T >= 4
        for r, i in enumerate(b.item_ids):
            it = items[i]
            assert b.choice_mask[r].sum() == it.num_choices
            np.testing.assert_array_equal(b.inputs[r, : len(it.inputs)], it.inputs)
            for c, tokens in enumerate(it.choices):
                assert b.weights[r, c].sum() == len(tokens)
                np.testing.assert_array_equal(b.targets[r, c, : len(tokens)], tokens)
        assert not b.weights[len(b.item_ids) :].any()  # pad rows weigh nothing


def test_batched_scores_equal_brute_force_per_pair():
    config = tiny_config()
    model = EncoderDecoderModel(config)
    import jax

    params = model.init_params(jax.random.key(0))
    items = rank_eval.group_examples(_examples(rows=7, seed=5))
    calls = []
    scorer = rank_eval.make_score_fn(LoadedModel(model, params, config))

    def counting(*arrays):
        calls.append(arrays[0].shape)
        return scorer(*arrays)

    result = rank_eval.evaluate_items(items, counting, batch_size=3)
    assert len(calls) == len(rank_eval.make_batches(items, 3))
    # Brute force: every (input, choice) pair as its own row of one plain score_batch call.
    pairs = [(it.inputs, tokens) for it in items for tokens in it.choices]
    enc = np.zeros((len(pairs), 64), np.int32)
    tgt = np.zeros((len(pairs), 16), np.int32)
    for r, (inputs, tokens) in enumerate(pairs):
        enc[r, : len(inputs)], tgt[r, : len(tokens)] = inputs, tokens
    dec_in = np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], axis=1)
    brute = np.asarray(
        jax.jit(model.score_batch)(
            params,
            {
                "encoder_input_tokens": enc,
                "decoder_input_tokens": dec_in,
                "decoder_target_tokens": tgt,
                "decoder_loss_weights": (tgt > 0).astype(np.float32),
            },
        )
    )
    start = 0
    for it, scores, pred in zip(items, result.scores, result.predictions):
        expect = brute[start : start + it.num_choices]
        start += it.num_choices
        np.testing.assert_allclose(scores, expect, rtol=1e-5, atol=1e-4)
        assert pred == int(np.argmax(expect))
    expected = 100 * np.mean([it.is_correct[p] for it, p in zip(items, result.predictions)])
    assert result.accuracy == pytest.approx(expected)
    assert result.labels == [[it.is_correct.index(True)] for it in items]


def test_argmax_takes_first_of_ties_and_accuracy_is_weighted():
    assert rank_eval.predictions([np.array([1.0, 3.0, 3.0])]) == [1]
    tokens = np.array([5, 1], np.int32)
    items = [
        rank_eval.Item(
            row=r,
            inputs=tokens,
            choices=[tokens, tokens],
            is_correct=[True, False],
            weight=w,
            examples=[],
        )
        for r, w in enumerate([3.0, 1.0])
    ]
    assert rank_eval.accuracy(items, [0, 1]) == pytest.approx(75.0)


def test_scorer_shape_is_checked():
    items = rank_eval.group_examples(_examples(rows=2))
    with pytest.raises(ValueError, match="shape"):
        rank_eval.score_items(items, lambda enc, *_: np.zeros((enc.shape[0],)), batch_size=2)
