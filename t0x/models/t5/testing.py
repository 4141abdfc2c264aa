"""Test helpers for T5 (library code so that every test suite can reuse them).

Vocabulary:
  example   a pair (inputs, targets) of 1-D int32 token arrays; targets end with
            EOS (1); no token is 0 (padding) and none but the last target is 1.
  batch     the dict seqio's EncDecFeatureConverter produces (numpy arrays):
            encoder_input_tokens, decoder_input_tokens (targets shifted right, each
            example starting with 0), decoder_target_tokens, decoder_loss_weights,
            and for packed batches encoder/decoder_segment_ids (1, 2, ...; 0 pads)
            and encoder/decoder_positions (restarting at 0 for every example).

torch and transformers are imported lazily: only the `hf_*` oracles and `random_hf_t5`
need them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from t0x.models.t5.config import CONFIGS, T5Config

EOS_ID = 1


def tiny_config(**overrides) -> T5Config:
    """A tiny float32, dropout-free T5 1.1 for fast CPU tests (vocab 128 by default)."""
    fields = dict(
        vocab_size=128,
        emb_dim=32,
        num_heads=4,
        head_dim=8,
        mlp_dim=64,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dtype="float32",
        dropout_rate=0.0,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
    )
    fields.update(overrides)
    return CONFIGS["t5_1_1_tiny"].replace(**fields)


def random_hf_t5(config: T5Config, seed: int = 0):
    """A randomly initialised transformers T5ForConditionalGeneration (eval mode), or
    MT5ForConditionalGeneration when `config.hf_model_type` is "mt5".

    Layer-norm scales, relative biases and the (untied) LM head are randomised too,
    so that a wrong weight mapping cannot hide behind all-ones or tied tensors.
    """
    import torch

    from t0x.models.t5.hf import config_to_hf, hf_classes

    config_class, model_class = hf_classes(config.hf_model_type)
    hf_config = config_class(**config_to_hf(config))
    torch.manual_seed(seed)
    model = model_class(hf_config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif "relative_attention_bias" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
        if not config.logits_via_embedding:
            head = torch.randn(model.lm_head.weight.shape, generator=gen) * config.emb_dim**-0.5
            model.lm_head.weight = torch.nn.Parameter(head)
    return model.eval()


def hf_state_dict(model) -> dict[str, np.ndarray]:
    """A transformers model's state dict as numpy copies (every alias of a tied tensor)."""
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def hf_logits(model, batch: dict[str, np.ndarray]) -> np.ndarray:
    """transformers' logits [B, T, V] for a `make_batch` batch (not packed)."""
    import torch

    with torch.no_grad():
        return model(
            input_ids=torch.tensor(batch["encoder_input_tokens"], dtype=torch.long),
            attention_mask=torch.tensor(batch["encoder_input_tokens"] > 0),
            decoder_input_ids=torch.tensor(batch["decoder_input_tokens"], dtype=torch.long),
        ).logits.numpy()


def hf_scores(model, batch: dict[str, np.ndarray]) -> np.ndarray:
    """transformers' per-row summed log-likelihood of `decoder_target_tokens` (EOS
    included), weighted by `decoder_loss_weights`; log-softmax in float64."""
    import torch

    logits = torch.tensor(hf_logits(model, batch), dtype=torch.float64)
    logp = torch.log_softmax(logits, -1).numpy()
    tok = np.take_along_axis(logp, batch["decoder_target_tokens"][..., None], -1)[..., 0]
    return (tok * batch["decoder_loss_weights"]).sum(-1)


def hf_example_score(model, inputs: np.ndarray, targets: np.ndarray) -> float:
    """transformers' log-likelihood of `targets` (EOS included) given `inputs`, alone."""
    inputs, targets = np.asarray(inputs, np.int32), np.asarray(targets, np.int32)
    batch = make_batch([(inputs, targets)], input_len=len(inputs), target_len=len(targets))
    return float(hf_scores(model, batch)[0])


def hf_num_params(hf_config: dict) -> int:
    """Parameters of the transformers model for a config.json dict, counted by transformers
    itself on the meta device (no memory): every stored tensor once (`shared.weight` once
    for its encoder/decoder `embed_tokens` aliases; an untied `lm_head.weight` counted)."""
    import torch

    from t0x.models.t5.hf import hf_classes

    config_class, model_class = hf_classes(hf_config.get("model_type", "t5"))
    with torch.device("meta"):
        model = model_class(config_class(**hf_config))
    aliases = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
    sizes = {k: v.numel() for k, v in model.state_dict().items() if k not in aliases}
    if hf_config.get("tie_word_embeddings"):
        sizes.pop("lm_head.weight", None)
    return int(sum(sizes.values()))


def random_examples(
    n: int, *, input_len: int, target_len: int, vocab_size: int, seed: int = 0, min_len: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """n random examples with inputs of 1..input_len and targets of 1..target_len tokens."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        li = int(rng.integers(min(min_len, input_len), input_len + 1))
        lt = int(rng.integers(min(min_len, target_len), target_len + 1))
        inputs = rng.integers(2, vocab_size, size=li).astype(np.int32)
        targets = rng.integers(2, vocab_size, size=lt).astype(np.int32)
        targets[-1] = EOS_ID
        out.append((inputs, targets))
    return out


def make_batch(
    examples: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    input_len: int,
    target_len: int,
    pack: bool = False,
) -> dict[str, np.ndarray]:
    """EncDecFeatureConverter-style batch; with `pack`, examples fill rows in order."""
    rows: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for inputs, targets in examples:
        if len(inputs) > input_len or len(targets) > target_len:
            raise ValueError(
                f"Example of lengths ({len(inputs)}, {len(targets)}) exceeds "
                f"input_len={input_len} / target_len={target_len}."
            )
        if pack and rows:
            used_i = sum(len(i) for i, _ in rows[-1])
            used_t = sum(len(t) for _, t in rows[-1])
            if used_i + len(inputs) <= input_len and used_t + len(targets) <= target_len:
                rows[-1].append((inputs, targets))
                continue
        rows.append([(inputs, targets)])

    n = len(rows)
    batch = {
        k: np.zeros((n, input_len if k.startswith("encoder") else target_len), np.int32)
        for k in (
            "encoder_input_tokens",
            "encoder_segment_ids",
            "encoder_positions",
            "decoder_input_tokens",
            "decoder_target_tokens",
            "decoder_segment_ids",
            "decoder_positions",
        )
    }
    for r, row in enumerate(rows):
        ei = dt = 0
        for seg, (inputs, targets) in enumerate(row, start=1):
            li, lt = len(inputs), len(targets)
            batch["encoder_input_tokens"][r, ei : ei + li] = inputs
            batch["encoder_segment_ids"][r, ei : ei + li] = seg
            batch["encoder_positions"][r, ei : ei + li] = np.arange(li)
            batch["decoder_target_tokens"][r, dt : dt + lt] = targets
            batch["decoder_input_tokens"][r, dt + 1 : dt + lt] = targets[:-1]
            batch["decoder_segment_ids"][r, dt : dt + lt] = seg
            batch["decoder_positions"][r, dt : dt + lt] = np.arange(lt)
            ei, dt = ei + li, dt + lt
    batch["decoder_loss_weights"] = (batch["decoder_target_tokens"] > 0).astype(np.float32)
    if not pack:
        for k in (
            "encoder_segment_ids",
            "encoder_positions",
            "decoder_segment_ids",
            "decoder_positions",
        ):
            del batch[k]
    return batch


def random_batch(
    batch_size: int = 2,
    *,
    input_len: int = 12,
    target_len: int = 8,
    vocab_size: int = 128,
    seed: int = 0,
    pack: bool = False,
    min_len: int = 1,
) -> dict[str, np.ndarray]:
    """A random batch of `batch_size` examples (fewer rows when packed)."""
    examples = random_examples(
        batch_size,
        input_len=input_len,
        target_len=target_len,
        vocab_size=vocab_size,
        seed=seed,
        min_len=min_len,
    )
    return make_batch(examples, input_len=input_len, target_len=target_len, pack=pack)


# =========================================================================================
# Training-job fixtures (tests/test_train_job.py, tests/test_multihost.py): a tiny seqio
# task on seqio's own test SentencePiece model. Separate section; the helpers above are
# owned elsewhere.
#   seqio test vocabulary  26 pieces + 100 extra ids; `SEQIO_TEST_MODEL_VOCAB` (128) is
#                          the model vocab size that covers it.
#   counting task          `num_examples` distinct (inputs, targets) text pairs of varying
#                          lengths, deterministic for a given `seed`: batches at different
#                          stream positions differ, so a wrong resume position shows.
# =========================================================================================
