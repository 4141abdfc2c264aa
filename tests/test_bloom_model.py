"""The bloom family end to end: packed causal-LM batches, loss, scores and generation against
transformers' BloomForCausalLM, and training (sharded, resumed) through the engine.

The oracle is transformers run on each example alone: a loss is the mean over each example's
target tokens, averaged over examples (BigScience's norm-target-loss); a score is the summed
log-likelihood of a choice's tokens (EOS not scored) after the prompt.
"""

from __future__ import annotations

import functools
import json

import jax
import numpy as np
import optax
import pytest
import tensorflow as tf

from t0_tasks import accounting
from t0x import models, partitioning, trainer
from t0x.models import losses
from t0x.models.bloom import features, hf, testing
from t0x.models.bloom.model import DecoderOnlyModel

torch = pytest.importorskip("torch")

EOS = 1  # the tests' vocabularies (seqio's test model) end targets with id 1


@functools.lru_cache(maxsize=None)
def _pair(heads=4):
    config = testing.tiny_config(num_heads=heads, hidden_size=8 * heads, eos_token_id=EOS)
    model = testing.random_hf_bloom(config, seed=5)
    return config, model, hf.params_from_hf_state_dict(testing.hf_state_dict(model), config)


def _examples(n=5, seed=0, vocab=200):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        inputs = rng.integers(4, vocab, int(rng.integers(2, 7))).astype(np.int32)
        targets = np.append(rng.integers(4, vocab, int(rng.integers(1, 4))), EOS).astype(np.int32)
        out.append((inputs, targets))
    return out


def _converted(examples, length=24, pack=True):
    ds = tf.data.Dataset.from_generator(
        lambda: ({"inputs": i, "targets": t} for i, t in examples),
        output_signature={
            "inputs": tf.TensorSpec([None], tf.int32),
            "targets": tf.TensorSpec([None], tf.int32),
        },
    )
    conv = features.feature_converter(pack)
    rows = list(conv(ds, {"inputs": length, "targets": length}).as_numpy_iterator())
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _hf_token_losses(model, inputs, targets):
    """Per-target-token cross-entropy of transformers on one example alone."""
    seq = np.concatenate([inputs, targets])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(seq[None], dtype=torch.long)).logits[0].numpy()
    logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    pos = np.arange(len(inputs) - 1, len(seq) - 1)
    return -logp[pos, seq[pos + 1]]


def test_packed_rows_weigh_targets_only_and_skip_what_does_not_fit():
    too_long = (np.arange(4, 16, dtype=np.int32), np.array([9, 8, 7, 6, EOS], np.int32))
    examples = _examples(6, seed=1) + [too_long]  # each feature fits, the sum does not
    accounting.COUNTS.clear()
    batch = _converted(examples, length=16)
    assert accounting.COUNTS.get(features.PACKING_KEY, "train")["skipped_too_long"] == 1
    seen = []
    for row in range(batch["decoder_input_tokens"].shape[0]):
        seg = batch["decoder_segment_ids"][row]
        for s in range(1, seg.max() + 1):
            at = np.flatnonzero(seg == s)
            tokens = batch["decoder_input_tokens"][row, at]
            inputs, targets = next(
                (i, t) for i, t in examples if np.array_equal(np.concatenate([i, t]), tokens)
            )
            seen.append(len(inputs))
            np.testing.assert_array_equal(batch["decoder_positions"][row, at], np.arange(len(at)))
            weighted = np.flatnonzero(batch["decoder_loss_weights"][row, at])
            np.testing.assert_array_equal(weighted, np.arange(len(inputs) - 1, len(at) - 1))
            np.testing.assert_array_equal(
                batch["decoder_target_tokens"][row, at][weighted], targets
            )
    assert len(seen) == 6  # every example that fits, once


@pytest.mark.parametrize("heads", [4, 6])
def test_loss_equals_transformers_per_example_mean(heads):
    config, hf_model, params = _pair(heads)
    examples = _examples(5, seed=heads)
    batch = _converted(examples)
    assert (batch["decoder_segment_ids"].max(axis=1) > 1).any()  # really packed
    model = DecoderOnlyModel(config)
    loss, metrics = jax.jit(model.loss_fn)(params, batch, None)
    want = np.mean([_hf_token_losses(hf_model, i, t).mean() for i, t in examples])
    np.testing.assert_allclose(float(loss), want, rtol=1e-4, atol=1e-5)
    assert int(metrics["num_examples"]) == len(examples)
    total = sum(len(t) for _, t in examples)
    assert int(metrics["num_target_tokens"]) == total


def test_perturbing_one_packed_example_leaves_the_others_alone():
    config, _, params = _pair()
    examples = _examples(5, seed=3)
    model = DecoderOnlyModel(config)

    def token_losses(exs):
        batch = _converted(exs)
        logits = jax.jit(model.compute_logits)(params, batch)
        ce, _ = losses.cross_entropy_with_z_loss(logits, batch["decoder_target_tokens"], 0.0)
        return np.asarray(ce) * batch["decoder_loss_weights"], batch

    base, batch = token_losses(examples)
    changed = list(examples)
    changed[1] = (changed[1][0][::-1].copy(), changed[1][1])  # same length, other tokens
    other, batch2 = token_losses(changed)
    np.testing.assert_array_equal(batch["decoder_segment_ids"], batch2["decoder_segment_ids"])
    row = int(np.flatnonzero((batch["decoder_segment_ids"] == 2).any(axis=1))[0])
    mine = batch["decoder_segment_ids"] == 2
    mine[np.arange(len(mine)) != row] = False
    np.testing.assert_array_equal(base[~mine], other[~mine])
    assert not np.array_equal(base[mine], other[mine])


def _hf_choice_loglik(model, prompt, choice):
    return -_hf_token_losses(model, prompt, choice).sum()


@pytest.mark.parametrize("heads", [4, 6])
def test_scores_equal_transformers_continuation_loglik(heads):
    config, hf_model, params = _pair(heads)
    rng = np.random.default_rng(7)
    prompts = [rng.integers(4, 200, n).astype(np.int32) for n in (5, 3)]
    choices = [
        [rng.integers(4, 200, n).astype(np.int32) for n in lens] for lens in ((2, 4, 1), (3, 1, 2))
    ]
    inputs = np.zeros((2, 8), np.int32)
    targets = np.zeros((2, 3, 5), np.int32)
    for b, p in enumerate(prompts):
        inputs[b, : len(p)] = p
        for c, ch in enumerate(choices[b]):
            targets[b, c, : len(ch) + 1] = np.append(ch, EOS)
    weights = (targets > 0).astype(np.float32)
    model = DecoderOnlyModel(config)
    got = np.asarray(jax.jit(model.score)(params, inputs, targets, weights))
    want = [[_hf_choice_loglik(hf_model, p, ch) for ch in chs] for p, chs in zip(prompts, choices)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with_eos = DecoderOnlyModel(config, score_eos=True)
    got_eos = np.asarray(jax.jit(with_eos.score)(params, inputs, targets, weights))
    want_eos = [
        [_hf_choice_loglik(hf_model, p, np.append(ch, EOS)) for ch in chs]
        for p, chs in zip(prompts, choices)
    ]
    np.testing.assert_allclose(got_eos, want_eos, rtol=1e-4, atol=1e-4)


def test_greedy_predict_equals_transformers_generate():
    config, hf_model, params = _pair()
    rng = np.random.default_rng(9)
    prompts = [rng.integers(4, 200, n).astype(np.int32) for n in (6, 3, 5)]
    inputs = np.zeros((3, 8), np.int32)
    for b, p in enumerate(prompts):
        inputs[b, : len(p)] = p
    model = DecoderOnlyModel(config)
    got = np.asarray(jax.jit(functools.partial(model.predict, max_decode_length=6))(params, inputs))
    for b, p in enumerate(prompts):
        with torch.no_grad():
            out = hf_model.generate(
                torch.tensor(p[None], dtype=torch.long),
                max_new_tokens=6,
                do_sample=False,
                eos_token_id=EOS,
                pad_token_id=0,
            )[0, len(p) :].numpy()
        want = out[: np.flatnonzero(out == EOS)[0] + 1] if EOS in out else out
        np.testing.assert_array_equal(got[b, : len(want)], want)
        assert not got[b, len(want) :].any()
    beams = np.asarray(
        jax.jit(functools.partial(model.predict, max_decode_length=6, method="beam", num_beams=2))(
            params, inputs
        )
    )
    assert beams.shape == (3, 6)


needs_8 = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 simulated devices")


@needs_8
def test_sharded_step_equals_single_device_step():
    config, _, params = _pair()
    model = DecoderOnlyModel(config)
    batch = _converted(_examples(16, seed=4), length=16)
    batch = (
        {k: v[:8] for k, v in batch.items()} if len(batch["decoder_input_tokens"]) >= 8 else batch
    )
    rows = batch["decoder_input_tokens"].shape[0]
    batch = {k: np.concatenate([v] * (8 // rows + 1))[:8] for k, v in batch.items()}
    out = {}
    for data, mp in ((1, 1), (2, 4)):
        mesh = partitioning.create_mesh(mp, devices=jax.devices()[: data * mp])
        # plain SGD: parameters then differ exactly as the gradients do (Adam's m / sqrt(v)
        # would magnify float rounding of near-zero gradients)
        tr = trainer.Trainer(model, optax.sgd(0.1), mesh)
        state = tr.init_state(jax.random.key(0), params=params)
        state, metrics = tr.train_step(
            state, partitioning.to_global_batch(batch, mesh), jax.random.key(1)
        )
        out[(data, mp)] = (jax.device_get(state.params), float(metrics["loss"]))
        if mp == 4:
            qkv = state.params["h_0"]["self_attention"]["query_key_value"]["kernel"]
            assert qkv.sharding.shard_shape(qkv.shape)[1] == config.num_heads // 4
    (ref, ref_loss), (got, got_loss) = out[(1, 1)], out[(2, 4)]
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_plan_of_the_published_sizes():
    from t0x.jobs import train as train_lib

    for name, want in (("bloom_560m", 559_214_592), ("bloom_176b", 176_247_271_424)):
        plan = train_lib.plan_summary(
            models.preset(name), "xp3", {"inputs": 2048, "targets": 2048}, 1, 2048, 1, 1
        )
        assert plan["family"] == "bloom" and plan["params"] == want, (name, plan["params"])


def test_train_resume_and_loss_falls(tmp_path):
    from t0x.jobs import train as train_lib
    from t0x.testing import register_counting_task

    config = testing.tiny_config(eos_token_id=EOS, dtype="float32")

    def job(model_dir, **kw):
        return train_lib.train(
            model_dir=str(model_dir),
            mixture_or_task_name=register_counting_task(),
            task_feature_lengths={"inputs": 16, "targets": 24},
            train_steps=kw.pop("train_steps"),
            batch_size=8,
            model_config=config,
            learning_rate=3e-3,
            log_period=1,
            save_period=3,
            seed=2,
            log=lambda *a: None,
            **kw,
        )

    def losses_of(d):
        return [json.loads(l)["loss"] for l in (d / "metrics.jsonl").read_text().splitlines()]

    job(tmp_path / "a", train_steps=12)
    job(tmp_path / "b", train_steps=12, stop_after_steps=5)
    job(tmp_path / "b", train_steps=12)
    a, b = losses_of(tmp_path / "a"), losses_of(tmp_path / "b")
    assert len(a) == 12 and a == b  # bit-exact after the resume
    assert np.mean(a[-3:]) < 0.8 * np.mean(a[:3]), a  # it learns
    from t0x import checkpoints

    meta = checkpoints.read_meta(tmp_path / "b" / "checkpoints")
    assert meta["family"] == "bloom" and meta["config"]["eos_token_id"] == EOS
    pa = checkpoints.restore_params(tmp_path / "a" / "checkpoints")
    pb = checkpoints.restore_params(tmp_path / "b" / "checkpoints")
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def bloom_folder(tmp_path_factory):
    config, hf_model, _ = _pair()
    path = tmp_path_factory.mktemp("bloom") / "hf"
    hf_model.save_pretrained(str(path))
    return str(path), hf_model


def test_hf_bloom_folder_evaluates_like_transformers(bloom_folder, tmp_path):
    """`t0x eval` on an HF BLOOM folder: predictions equal transformers' argmax of the
    choices' continuation log-likelihoods (RTE and COPA fixture rows)."""
    import seqio

    from t0x.jobs import evaluate as ev

    path, hf_model = bloom_folder
    tasks = ["super_glue_rte_GPT_3_style_score_eval", "super_glue_copa_best_option_score_eval"]
    ev.evaluate(
        checkpoint_path=path,
        output_dir=str(tmp_path / "eval"),
        mixture_or_task_name=None,
        tasks=tasks,
        batch_size=8,
        log=lambda *a: None,
    )
    for name in tasks:
        result = json.loads((tmp_path / "eval" / "tasks" / f"{name}.json").read_text())
        by_row = {}
        for ex in (
            seqio.get_mixture_or_task(name)
            .get_dataset(None, "validation", shuffle=False)
            .as_numpy_iterator()
        ):
            by_row.setdefault(int(ex["idx"][0]), []).append(ex)
        want = []
        for row in result["rows"]:
            exs = sorted(by_row[row], key=lambda e: int(e["idx"][1]))
            scores = [_hf_choice_loglik(hf_model, e["inputs"], e["targets"][:-1]) for e in exs]
            want.append(int(np.argmax(scores)))
        assert result["predictions"] == want, name
        assert len(want) >= 2


def test_hf_bloom_converts_and_generates(bloom_folder, tmp_path):
    from t0x import cli
    from t0x.jobs import infer
    from t0x.testing import seqio_test_vocabulary

    path, hf_model = bloom_folder
    assert cli.main(["convert", "--from", "hf", "--to", "t0x", path, str(tmp_path / "t0x")]) == 0
    assert (
        cli.main(
            [
                "convert",
                "--from",
                "t0x",
                "--to",
                "hf",
                str(tmp_path / "t0x"),
                str(tmp_path / "back"),
            ]
        )
        == 0
    )
    back, info = transformers_bloom(str(tmp_path / "back"))
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for (name, a), b in zip(hf_model.state_dict().items(), back.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    vocab = seqio_test_vocabulary()
    prompt = "tell me a story"
    got = infer.infer(
        str(tmp_path / "t0x"),
        [prompt],
        max_decode_length=5,
        vocab_path=vocab.sentencepiece_model_file,
    )
    ids = list(vocab.encode(prompt))
    with torch.no_grad():
        out = hf_model.generate(
            torch.tensor([ids]), max_new_tokens=5, do_sample=False, eos_token_id=EOS, pad_token_id=0
        )
    decoder = infer.vocabulary(None, vocab.sentencepiece_model_file)  # what infer decodes with
    assert got == [decoder.decode(out[0, len(ids) :].tolist())]


def transformers_bloom(path):
    import transformers

    return transformers.BloomForCausalLM.from_pretrained(path, output_loading_info=True)


def test_hf_bloom_folder_generates_winobias_like_transformers(bloom_folder, tmp_path):
    """The bias suite's generative WinoBias prompts on a decoder-only checkpoint: t0x's
    greedy predictions equal transformers' `generate` on the same prompt tokens."""
    import seqio

    from t0x.jobs import evaluate as ev

    path, hf_model = bloom_folder
    name = "wino_bias_type1_anti_What_does_p_stand_for_generate"
    ev.evaluate(
        checkpoint_path=path,
        output_dir=str(tmp_path / "eval"),
        mixture_or_task_name=None,
        tasks=[name],
        split="test",
        batch_size=8,
        max_examples=3,
        log=lambda *a: None,
    )
    result = json.loads((tmp_path / "eval" / "tasks" / f"{name}.json").read_text())
    vocab = seqio.get_mixture_or_task(name).output_features["targets"].vocabulary
    rows = seqio.get_mixture_or_task(name).get_dataset(None, "test", shuffle=False).take(3)
    assert len(result["predictions"]) == 3
    for ex, got in zip(rows.as_numpy_iterator(), result["predictions"]):
        prompt = torch.tensor(ex["inputs"][None], dtype=torch.long)
        with torch.no_grad():
            out = hf_model.generate(
                prompt, max_new_tokens=32, do_sample=False, eos_token_id=EOS, pad_token_id=0
            )[0, prompt.shape[1] :].tolist()
        assert got == vocab.decode(out[: out.index(EOS)] if EOS in out else out)
