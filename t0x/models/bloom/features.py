"""How BLOOM trains on seqio tasks: one causal sequence per example, packed into rows.

Vocabulary (a row of length L = task_feature_lengths["targets"], seqio's decoder-only
convention; `inputs` and `targets` are each trimmed to their own task length first):
  sequence                 inputs + targets (the targets carry their EOS; no BOS, as
                           BigScience finetuned BLOOM): the tokens the network reads,
                           `decoder_input_tokens`.
  decoder_target_tokens    at position t, the token t + 1 of the same example (0 at its end):
                           what position t predicts.
  decoder_loss_weights     1 where that next token is a target token (the last input token
                           predicts the first target): loss on targets only.
  decoder_segment_ids      1, 2, ... per packed example, 0 for padding (BLOOM's id 0 is a real
                           token, `<unk>`, so padding is said by segment id only; unpacked
                           rows carry segment ids too).
  decoder_positions        position inside its own example: ALiBi restarts per example.
Examples whose sequence is longer than L are skipped, as BigScience did, and counted
(`t0_tasks.accounting`, task "<packing>", field `skipped_too_long`).
"""

from __future__ import annotations

import numpy as np
import seqio
import tensorflow as tf

TOKEN_KEYS = ("decoder_input_tokens",)
PACKING_KEY = "<packing>"


def _count_skipped(too_long) -> np.int32:
    from t0_tasks import accounting

    if bool(too_long):
        accounting.COUNTS.add(PACKING_KEY, "train", skipped_too_long=1)
    return np.int32(0)


class CausalLMFeatureConverter(seqio.FeatureConverter):
    """seqio FeatureConverter: `inputs` + `targets` -> packed causal-LM rows (module doc)."""

    TASK_FEATURES = {
        "inputs": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        "targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    }
    MODEL_FEATURES = {
        name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
        for name in (
            "decoder_input_tokens",
            "decoder_target_tokens",
            "decoder_loss_weights",
            "decoder_segment_ids",
            "decoder_positions",
        )
    }
    PACKING_FEATURE_DTYPES = {"decoder_segment_ids": tf.int32, "decoder_positions": tf.int32}

    def _sequence(self, ex):
        """Per-example features, each shifted by +1: seqio's packing takes 0 for padding
        (and drops it), while 0 is a real token id, next token or weight here."""
        inputs, targets = ex["inputs"], ex["targets"]
        tokens = tf.concat([inputs, targets], axis=0)
        n, n_in = tf.size(tokens), tf.size(inputs)
        nxt = tf.concat([tokens[1:], tf.zeros([1], tf.int32)], axis=0)
        t = tf.range(n)
        weights = tf.cast((t + 1 >= n_in) & (t + 1 < n) & (n_in > 0), tf.int32)
        return {"tokens": tokens + 1, "next": nxt + 1, "weights": weights + 1}

    def _convert_features(self, ds, task_feature_lengths):
        length = task_feature_lengths["targets"]

        def fits(ex):
            too_long = tf.size(ex["inputs"]) + tf.size(ex["targets"]) > length
            done = tf.numpy_function(_count_skipped, [too_long], tf.int32, stateful=True)
            with tf.control_dependencies([done]):
                return tf.logical_not(too_long)

        ds = ds.filter(fits).map(self._sequence, num_parallel_calls=tf.data.AUTOTUNE)
        lengths = {"tokens": length, "next": length, "weights": length}
        ds = self._pack_or_pad(ds, lengths)

        def to_model(ex):
            real = tf.cast(ex["tokens"] > 0, tf.int32)
            if self.pack:
                segments, positions = ex["tokens_segment_ids"], ex["tokens_positions"]
            else:
                segments = real
                positions = tf.cumsum(real, exclusive=True) * real
            return {
                "decoder_input_tokens": (ex["tokens"] - 1) * real,
                "decoder_target_tokens": (ex["next"] - 1) * real,
                "decoder_loss_weights": (ex["weights"] - 1) * real,
                "decoder_segment_ids": segments,
                "decoder_positions": positions,
            }

        return ds.map(to_model, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths):
        return {name: task_feature_lengths["targets"] for name in self.MODEL_FEATURES}


def feature_converter(pack: bool = True) -> CausalLMFeatureConverter:
    return CausalLMFeatureConverter(pack=pack)
