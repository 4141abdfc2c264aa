"""`t0x score`: log-likelihood of targets given inputs, line by line (JSONL in, JSONL out).

Each input line holds `inputs` and `targets`, either strings (tokenised with `vocab_path`, the
checkpoint's `spiece.model`, or t0_tasks' vocabulary; targets get EOS appended, inputs do
not, as in T0's tasks) or lists of token ids (used as given: no EOS is added). Each output
line is the input line plus `log_likelihood`: the sum over target tokens of log p(token |
inputs, previous targets), with decoder start id 0.

Safety: an existing `--output` is never replaced unless `overwrite=True`, and the output is
written to a temporary file renamed into place only when every line is scored (a failure
leaves what was there). Ids are checked against the model's vocabulary before anything runs
(`file:line` in the error); a non-finite score is an error, never a `NaN` in the JSON.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from t0x import inference
from t0x.eval.rank import bucket
from t0x.jobs import infer
from t0x.errors import DataError, OutputExistsError


def _ids(value, vocab, add_eos: bool, where: str) -> list[int]:
    if isinstance(value, str):
        ids = list(vocab.encode(value))
        return ids + [vocab.eos_id] if add_eos else ids
    if isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    ):
        if not value:
            raise DataError(f"{where}: empty list of token ids")
        return list(value)
    raise DataError(
        f"{where}: expected a string or a list of token ids, got {type(value).__name__}"
    )


def check_ids(pairs, vocab_size: int, where: str) -> None:
    """Every id in [1, vocab_size); else DataError naming `where:line`."""
    for i, (inputs, targets) in enumerate(pairs, 1):
        for name, ids in (("inputs", inputs), ("targets", targets)):
            bad = [t for t in ids if not 0 < t < vocab_size]
            if bad:
                raise DataError(
                    f"{where}:{i}: {name} has token id {bad[0]} outside [1, {vocab_size}) "
                    f"(the model has vocab_size={vocab_size}; 0 is padding): fix the ids or "
                    "pass strings to be tokenised"
                )


def _pad(rows: list[list[int]], length: int) -> np.ndarray:
    out = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def score_records(
    loaded: inference.LoadedModel,
    records: list[dict],
    vocab=None,
    batch_size: int = 32,
    where: str = "input",
) -> list[float]:
    """Sum of target log-likelihoods for each record (`inputs`, `targets`)."""

    def fn(params, inputs, targets, weights):  # one choice per input: the model's scorer
        return loaded.model.score(params, inputs, targets[:, None], weights[:, None])[:, 0]

    scorer = inference.jit_on_mesh(loaded, fn, num_batch_args=3)
    pairs = [
        (
            _ids(r["inputs"], vocab, False, f"{where}:{i + 1}: inputs"),
            _ids(r["targets"], vocab, True, f"{where}:{i + 1}: targets"),
        )
        for i, r in enumerate(records)
    ]
    check_ids(pairs, loaded.config.vocab_size, where)
    rows = batch_size
    if loaded.mesh is not None:
        data = loaded.mesh.shape["data"]
        rows = -(-batch_size // data) * data
    scores: list[float] = []
    for start in range(0, len(pairs), rows):
        chunk = pairs[start : start + rows]
        real = len(chunk)
        chunk = chunk + [chunk[0]] * (rows - real)
        in_len = bucket(max(len(x) for x, _ in chunk))
        tgt_len = bucket(max(len(y) for _, y in chunk), minimum=4)
        targets = _pad([y for _, y in chunk], tgt_len)
        out = scorer(_pad([x for x, _ in chunk], in_len), targets, _target_weights(chunk, tgt_len))
        for k, value in enumerate(out[:real]):
            if not math.isfinite(float(value)):
                raise DataError(
                    f"{where}:{start + k + 1}: the log-likelihood is {float(value)} (not finite); "
                    "check the checkpoint (NaN weights?) and the line's ids"
                )
            scores.append(float(value))
    return scores


def _target_weights(chunk, length):
    """1 on every given target token (EOS included), 0 on padding."""
    w = np.zeros((len(chunk), length), np.int32)
    for i, (_, y) in enumerate(chunk):
        w[i, : len(y)] = 1
    return w


def score_jsonl(
    checkpoint: str,
    input_path: str,
    output_path: str,
    vocab_path: str | None = None,
    batch_size: int = 32,
    model_config=None,
    overwrite: bool = False,
) -> int:
    """Scores every line of `input_path` into `output_path`; returns the number of lines."""
    if os.path.exists(output_path) and not overwrite:
        raise OutputExistsError(
            f"--output {output_path} exists; pass --overwrite to replace it, or choose another path"
        )
    records = []
    with open(input_path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{input_path}:{i}: not JSON ({e.msg})") from None
            if not isinstance(r, dict) or "inputs" not in r or "targets" not in r:
                raise DataError(f"{input_path}:{i}: each line needs 'inputs' and 'targets'")
            records.append(r)
    needs_vocab = any(isinstance(r[k], str) for r in records for k in ("inputs", "targets"))
    vocab = infer.vocabulary(checkpoint, vocab_path) if needs_vocab else None
    loaded = inference.load_model(checkpoint, model_config=model_config)
    scores = score_records(loaded, records, vocab, batch_size, input_path)
    tmp = f"{output_path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for r, s in zip(records, scores):
            f.write(json.dumps({**r, "log_likelihood": s}, allow_nan=False) + "\n")
    os.replace(tmp, output_path)
    return len(records)
