"""How T5 trains on seqio tasks: the encoder-decoder feature converter and its batch keys.

Vocabulary (seqio's `EncDecFeatureConverter`): a task's `inputs` become
`encoder_input_tokens`, its `targets` (EOS-terminated) `decoder_target_tokens`, shifted right
with start id 0 into `decoder_input_tokens`, with `decoder_loss_weights` 1 on real targets;
packing adds `*_segment_ids` (1, 2, ... per example, 0 padding) and `*_positions`.
"""

from __future__ import annotations

TOKEN_KEYS = ("encoder_input_tokens", "decoder_target_tokens")


def feature_converter(pack: bool = True):
    import seqio

    return seqio.EncDecFeatureConverter(pack=pack)
