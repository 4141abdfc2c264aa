"""The run's vocabulary: T5X's own vocabulary objects for T5 and mT5 (seqio equality, as T5X
checks it before step 0), and Hugging Face tokenizers (BLOOM) as seqio vocabularies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import seqio
import tensorflow as tf

import t0_tasks
from t0_tasks import settings as settings_lib
from t0_tasks import tasks, vocabularies

# What T5X's model gin files build (t5x/examples/t5/t5_1_1/base.gin and mt5/base.gin:
# `seqio.SentencePieceVocabulary.sentencepiece_model_file = "<path>"`, extra_ids unbound = 0).
T5X_T5_VOCAB = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
T5X_MT5_VOCAB = "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model"


def test_default_vocabulary_is_t5xs_own():
    ours = tasks.vocabulary(settings_lib.Settings())
    assert ours == seqio.SentencePieceVocabulary(T5X_T5_VOCAB)  # nothing is downloaded
    # what t0_tasks built before: the same file with 100 more sentinels, which T5X refuses
    assert ours != seqio.SentencePieceVocabulary(T5X_T5_VOCAB, extra_ids=100)


def test_mt5_vocabulary_is_chosen_per_run():
    ours = tasks.vocabulary(settings_lib.Settings(vocab_path=T5X_MT5_VOCAB))
    assert ours == seqio.SentencePieceVocabulary(T5X_MT5_VOCAB)


@pytest.fixture(scope="module")
def bloom_like_tokenizer(tmp_path_factory):
    """A byte-level BPE tokenizer with BLOOM's special tokens (<unk> 0, <s> 1, </s> 2,
    <pad> 3), trained on fixture text (the `tokenizers` library; no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from t0_tasks import testing

    text = [
        json.dumps(r)
        for r in testing.load_fixture_rows("super_glue", "rte", "validation")
        + testing.load_fixture_rows("super_glue", "rte", "train")
    ] + ["Yes No True False héllo 世界"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(text, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return str(path)


def test_hf_tokenizer_vocabulary(bloom_like_tokenizer):
    from tokenizers import Tokenizer

    vocab = vocabularies.vocabulary(bloom_like_tokenizer)
    assert isinstance(vocab, vocabularies.HFTokenizerVocabulary)
    assert (vocab.eos_id, vocab.unk_id) == (2, 0)
    oracle = Tokenizer.from_file(bloom_like_tokenizer)
    for text in ("Is this true? Yes", " Yes", "héllo 世界"):
        ids = vocab.encode(text)
        assert ids == oracle.encode(text, add_special_tokens=False).ids
        assert vocab.decode(ids + [2, 7, 7]) == text  # decoding stops at EOS
        tf_ids = vocab.encode_tf(tf.constant(text)).numpy().tolist()
        assert tf_ids == ids
        assert vocab.decode_tf(tf.constant(ids, tf.int32)).numpy().decode() == text
    assert vocab == vocabularies.vocabulary(bloom_like_tokenizer)
    folder = bloom_like_tokenizer.rsplit("/", 1)[0]
    assert vocabularies.is_hf_tokenizer(folder)


def test_bloomz_rendering_prefixes_targets_with_a_space(bloom_like_tokenizer):
    reg = t0_tasks.current()
    try:
        t0_tasks.configure(vocab_path=bloom_like_tokenizer, target_prefix=" ")
        twin = seqio.get_mixture_or_task("super_glue_rte_GPT_3_style_score_eval")
        examples = list(twin.get_dataset(None, "validation", shuffle=False).as_numpy_iterator())
        assert examples and all(e["targets_pretokenized"].startswith(b" ") for e in examples)
        assert all(e["targets"][-1] == 2 for e in examples)  # BLOOM's </s>
        labelled = [e for e in examples if e["is_correct"]]
        assert labelled  # the space does not break which choice is correct
        task = seqio.get_mixture_or_task("super_glue_rte_GPT_3_style")
        ex = next(task.get_dataset(None, "validation", shuffle=False).as_numpy_iterator())
        assert ex["targets_pretokenized"].startswith(b" ")
        assert not ex["inputs_pretokenized"].startswith(b" ")
        vocab = twin.output_features["targets"].vocabulary
        np.testing.assert_array_equal(
            ex["targets"][:-1], vocab.encode(ex["targets_pretokenized"].decode())
        )
    finally:
        t0_tasks.register(reg.settings)
