"""Generation from any checkpoint: prompts in, decoded text out (`t0x infer`).

Vocabulary:
  prompt      the text given to the encoder, tokenized without EOS (as T0's inputs were in
              training) and truncated to `max_input_length` tokens.
  method      "greedy", "beam" (`num_beams`, brevity penalty `alpha`) or "sample"
              (`temperature`, `top_k`, `seed`), as the family's `predict` (t0x.models.family).
  vocabulary  `vocab_path` when given; else the checkpoint's own `spiece.model` (Hugging Face
              dirs such as bigscience/T0 ship one); else t0_tasks' vocabulary (`T0_VOCAB`, by
              default T5's cc_all.32000.100extra).
  predictor   `make_predict_fn(...)`: inputs [B, L] -> decoded token ids [B, T] as numpy,
              jitted once per shape (the family's `predict`); on a mesh the batch is split
              along "data" and the weights as in training (t0x.inference). Used by
              evaluation too.

Batches have a fixed number of rows (`batch_size`; missing rows repeat a real one and are
dropped) and input lengths rounded up to a power of two, so a stream of prompts compiles
the decoder a handful of times.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable, Iterable, Sequence

import numpy as np

from t0x.eval.rank import bucket
from t0x.inference import LoadedModel, jit_on_mesh, load_model

MIN_INPUT_LENGTH = 16


def make_predict_fn(
    loaded: LoadedModel,
    method: str = "greedy",
    num_beams: int = 4,
    temperature: float = 1.0,
    top_k: int = 0,
    alpha: float = 0.6,
    seed: int = 0,
) -> Callable[[np.ndarray, int], np.ndarray]:
    """`predict(inputs [B, L], max_decode_length) -> tokens [B, T]` (numpy).

    Sampling draws a fresh key per call from `seed`, so a run is reproducible.
    """
    import jax

    model = loaded.model
    compiled: dict[int, Callable] = {}
    calls = [0]

    def predict(inputs: np.ndarray, max_decode_length: int) -> np.ndarray:
        if max_decode_length not in compiled:

            def fn(params, enc, key_data):
                return model.predict(
                    params,
                    enc,
                    method=method,
                    num_beams=num_beams,
                    temperature=temperature,
                    top_k=top_k,
                    max_decode_length=max_decode_length,
                    alpha=alpha,
                    rng=jax.random.wrap_key_data(key_data),
                )

            compiled[max_decode_length] = jit_on_mesh(loaded, fn, 1, 1)
        key = jax.random.fold_in(jax.random.key(seed), calls[0])
        calls[0] += 1
        return compiled[max_decode_length](
            np.asarray(inputs, np.int32), np.asarray(jax.random.key_data(key))
        )

    return predict


def vocabulary(checkpoint_path: str | None = None, vocab_path: str | None = None):
    """`vocab_path`; else the checkpoint folder's own tokenizer (`spiece.model` of HF T5 /
    mT5 folders, `tokenizer.json` of HF BLOOM folders); else t0_tasks' (T0_VOCAB)."""
    from t0_tasks import vocabularies
    from t0_tasks.settings import Settings

    settings = Settings.from_env()
    if vocab_path is None and checkpoint_path:
        for name in ("spiece.model", vocabularies.TOKENIZER_FILE):
            if os.path.isfile(os.path.join(checkpoint_path, name)):
                vocab_path = os.path.join(checkpoint_path, name)
                break
    return vocabularies.vocabulary(vocab_path or settings.vocab_path, settings.extra_ids)


def generate(
    predict: Callable,
    vocab,
    prompts: Sequence[str],
    batch_size: int = 8,
    max_input_length: int = 1024,
    max_decode_length: int = 64,
) -> list[str]:
    """Decoded generations for `prompts`, in order, through a `make_predict_fn` predictor."""
    encoded = [np.asarray(vocab.encode(p), np.int32)[:max_input_length] for p in prompts]
    lengths = [bucket(len(tokens), MIN_INPUT_LENGTH) for tokens in encoded]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        ids = order[start : start + batch_size]
        length = max(lengths[i] for i in ids)
        enc = np.zeros((batch_size, length), np.int32)
        for row in range(batch_size):
            tokens = encoded[ids[row] if row < len(ids) else ids[0]]
            enc[row, : len(tokens)] = tokens
        tokens = predict(enc, max_decode_length)
        for row, i in enumerate(ids):
            out[i] = vocab.decode([int(t) for t in tokens[row]])
    return out


def infer(
    checkpoint: str,
    prompts: Sequence[str],
    method: str = "greedy",
    num_beams: int = 4,
    temperature: float = 1.0,
    top_k: int = 0,
    max_decode_length: int = 64,
    vocab_path: str | None = None,
    batch_size: int = 8,
    seed: int = 0,
    max_input_length: int = 1024,
    dtype: str | None = "float32",
    num_partitions: int = 1,
    model_config=None,
) -> list[str]:
    """Generations for `prompts` from the checkpoint at `checkpoint` (any format)."""
    if not prompts:
        return []
    loaded = load_model(
        checkpoint, dtype=dtype, model_config=model_config, num_partitions=num_partitions
    )
    _check_rows(batch_size, loaded)
    predict = make_predict_fn(loaded, method, num_beams, temperature, top_k, seed=seed)
    return generate(
        predict,
        vocabulary(checkpoint, vocab_path),
        list(prompts),
        batch_size,
        max_input_length,
        max_decode_length,
    )


def _check_rows(batch_size: int, loaded: LoadedModel) -> None:
    if loaded.mesh is not None:
        from t0x import partitioning

        partitioning.check_batch_size(batch_size, loaded.mesh)


def read_records(lines: Iterable[str], source: str = "input") -> list[dict]:
    """JSONL records, each with a string `inputs`; errors name the line."""
    records = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{source}:{n}: not JSON ({e}); expected one object per line with an "
                "'inputs' string"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("inputs"), str):
            raise ValueError(f"{source}:{n}: expected an object with an 'inputs' string")
        records.append(record)
    return records


def infer_jsonl(
    checkpoint: str, input_path: str, output_path: str | None = None, **kwargs
) -> list[dict]:
    """Reads JSONL (`inputs` per line; "-" is stdin), adds `generation`, writes JSONL.

    `output_path` None or "-" writes to stdout; an existing file is never overwritten.
    Returns the records.
    """
    if output_path not in (None, "-") and os.path.exists(output_path):
        raise FileExistsError(
            f"{output_path} exists; choose another output file (t0x infer never overwrites)"
        )
    if input_path == "-":
        records = read_records(sys.stdin, "<stdin>")
    else:
        with open(input_path, encoding="utf-8") as f:
            records = read_records(f, input_path)
    generations = infer(checkpoint, [r["inputs"] for r in records], **kwargs)
    for record, text in zip(records, generations):
        record["generation"] = text
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if output_path in (None, "-"):
        sys.stdout.write(lines)
    else:
        tmp = f"{output_path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(lines)
        os.replace(tmp, output_path)
    return records
