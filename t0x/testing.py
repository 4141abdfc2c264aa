"""Test helpers every model family shares (library code, in the spirit of seqio's test_utils).

  seqio_test_vocabulary   seqio's bundled test SentencePiece model (no download), 100 extra ids
  counting_texts          short distinct (inputs, targets) strings the test vocabulary encodes
  register_counting_task  a seqio task of them (split "train"), for training-job tests

Family-specific helpers (tiny configs, random Hugging Face models, batches) live in
`t0x.models.<family>.testing`.
"""

from __future__ import annotations

import numpy as np

EOS_ID = 1

SEQIO_TEST_MODEL_VOCAB = 128
_LETTERS = "easoilcmpwhdnrtv"  # letters the seqio test vocabulary has pieces for


def seqio_test_vocabulary():
    """seqio's bundled test SentencePieceVocabulary (no download), with 100 extra ids."""
    import os

    import seqio

    path = os.path.join(
        os.path.dirname(seqio.__file__), "test_data", "sentencepiece", "sentencepiece.model"
    )
    return seqio.SentencePieceVocabulary(path, extra_ids=100)


def counting_texts(num_examples: int, seed: int = 0) -> list[tuple[str, str]]:
    """`num_examples` distinct (inputs, targets) strings of 1-3 / 1 short words."""
    rng = np.random.default_rng(seed)

    def word():
        return "".join(rng.choice(list(_LETTERS), size=int(rng.integers(2, 4))))

    seen: dict[str, str] = {}
    while len(seen) < num_examples:
        inputs = " ".join(word() for _ in range(int(rng.integers(1, 4))))
        seen.setdefault(inputs, word())
    return list(seen.items())


def register_counting_task(
    name: str = "t0x_test_counting", num_examples: int = 48, seed: int = 0
) -> str:
    """Registers (once per process) a seqio task of `counting_texts`; returns its name.

    Split "train"; features `inputs` (no EOS) and `targets` (EOS), as T0's tasks.
    """
    import seqio
    import tensorflow as tf

    if name in seqio.TaskRegistry.names():
        return name
    texts = counting_texts(num_examples, seed)
    vocab = seqio_test_vocabulary()

    def dataset_fn(split, shuffle_files, seed=None):
        del split, shuffle_files, seed
        return tf.data.Dataset.from_tensor_slices(
            {"inputs": [i for i, _ in texts], "targets": [t for _, t in texts]}
        )

    seqio.TaskRegistry.add(
        name,
        seqio.FunctionDataSource(dataset_fn, splits=["train"]),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
        output_features={
            "inputs": seqio.Feature(vocab, add_eos=False),
            "targets": seqio.Feature(vocab),
        },
    )
    return name
