"""The vocabulary a run tokenizes its tasks with, chosen by path.

Vocabulary:
  SentencePiece   a `.model` file (T5's `cc_all.32000.100extra`, mT5's
                  `mc4.250000.100extra`, seqio's test model): `seqio.SentencePieceVocabulary`.
                  The `*.100extra` files already hold the 100 sentinel pieces, so T5X builds
                  them with `extra_ids=0`, and so do we (equal under seqio's `__eq__`, which
                  T5X checks against its model's vocabulary).
  HF tokenizer    a Hugging Face `tokenizer.json` (or a folder holding one), e.g. BLOOM's BPE:
                  `HFTokenizerVocabulary`, a seqio Vocabulary over the `tokenizers` library.
                  No BOS is added; EOS is the tokenizer's `</s>`.

`vocabulary(path, extra_ids)` picks the kind from the path; `t0_tasks.configure(vocab_path=...)`
re-registers every task with it, so the same task names serve T5, mT5 and BLOOM runs.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import seqio
import tensorflow as tf

TOKENIZER_FILE = "tokenizer.json"


def is_hf_tokenizer(path: str) -> bool:
    """A `.json` file, or a local folder holding `tokenizer.json` (remote folders are never
    probed: registration touches no network; name the file itself)."""
    if path.endswith(".json"):
        return True
    return "://" not in path and os.path.isfile(os.path.join(path, TOKENIZER_FILE))


class HFTokenizerVocabulary(seqio.Vocabulary):
    """seqio Vocabulary over a Hugging Face `tokenizers` tokenizer (BLOOM's, for instance).

    Special ids come from the tokenizer's own tokens: EOS `</s>`, UNK `<unk>`; padding in
    batches is 0 as everywhere in seqio (decoder-only models mark it by segment id 0).
    """

    def __init__(self, tokenizer_file: str, extra_ids: int = 0):
        if not tokenizer_file.endswith(".json"):
            tokenizer_file = os.path.join(tokenizer_file, TOKENIZER_FILE)
        self.tokenizer_file = tokenizer_file
        super().__init__(extra_ids=extra_ids)

    @functools.cached_property
    def tokenizer(self):
        from tokenizers import Tokenizer

        with tf.io.gfile.GFile(self.tokenizer_file) as f:
            return Tokenizer.from_str(f.read())

    def _special(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    @property
    def eos_id(self) -> int | None:
        return self._special("</s>")

    @property
    def unk_id(self) -> int | None:
        return self._special("<unk>")

    @property
    def _base_vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def _encode(self, s: str) -> list[int]:
        return self.tokenizer.encode(s, add_special_tokens=False).ids

    def _decode(self, ids) -> str:
        ids = [int(i) for i in ids if 0 <= int(i) < self._base_vocab_size]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        def encode(text):
            text = text.item() if isinstance(text, np.ndarray) else text
            return np.asarray(self._encode(text.decode("utf-8")), np.int32)

        ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
        ids.set_shape([None])
        return ids

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        def decode(values):
            return self._decode(values.tolist()).encode("utf-8")

        out = tf.numpy_function(decode, [ids], tf.string, stateful=False)
        out.set_shape([])
        return out

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, HFTokenizerVocabulary)
            and self.tokenizer_file == other.tokenizer_file
            and self.extra_ids == other.extra_ids
        )

    def __hash__(self) -> int:
        return hash((self.tokenizer_file, self.extra_ids))


def vocabulary(path: str, extra_ids: int = 0) -> seqio.Vocabulary:
    """The vocabulary at `path` (see the module doc for the kinds)."""
    if is_hf_tokenizer(path):
        return HFTokenizerVocabulary(path, extra_ids=extra_ids)
    return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)
