"""Generation from any checkpoint: prompts in, decoded text out (`t0x infer`).

Vocabulary:
  prompt      the text given to the encoder, tokenized without EOS (as T0's inputs were in
              training) and truncated to `max_input_length` tokens.
  method      "greedy", "beam" (`num_beams`, brevity penalty `alpha`) or "sample"
              (`temperature`, `top_k`, `seed`), as `EncoderDecoderModel.predict_batch`.
  vocabulary  `vocab_path` when given; else the checkpoint's own `spiece.model` (Hugging Face
              dirs such as bigscience/T0 ship one); else t0_tasks' vocabulary (`T0_VOCAB`, by
              default T5's cc_all.32000.100extra).
  predictor   `make_predict_fn(...)`: batch dict (`encoder_input_tokens` [B, L]) -> decoded
              token ids [B, T] as numpy, jitted once per shape; on a mesh the batch is split
              along "data" and the weights as in training. Used by `t0x.evaluate` too.

Batches have a fixed number of rows (`batch_size`; missing rows repeat a real one and are
dropped) and input lengths rounded up to a power of two, so a stream of prompts compiles
the decoder a handful of times.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from t0x.rank_eval import bucket

EOS_ID = 1
MIN_INPUT_LENGTH = 16


@dataclasses.dataclass
class LoadedModel:
    model: Any  # t0x.model.EncoderDecoderModel
    params: Any  # host numpy tree, or device arrays placed on `mesh`
    config: Any  # t0x.network.T5Config
    mesh: Any = None  # jax.sharding.Mesh or None (default device, plain jit)


def load_model(
    checkpoint_path: str,
    dtype: str | None = "float32",
    model_config=None,
    num_partitions: int = 1,
    use_mesh: bool = True,
) -> LoadedModel:
    """Loads a t0x, T5X or Hugging Face checkpoint for inference (dropout off).

    `dtype` sets the activation dtype (None: the checkpoint's own); float32 by default, as
    t-zero recommends for T0 (bf16 is fine on TPU). With `use_mesh`, params are placed on a
    ("data", "model") mesh of all devices with `num_partitions` along "model".
    """
    import jax

    from t0x import convert, partitioning
    from t0x.model import EncoderDecoderModel

    params, config = convert.load_params(checkpoint_path, config=model_config)
    if config is None:
        raise ValueError(
            f"{checkpoint_path}: cannot tell the model config of this checkpoint; "
            "pass model_config (e.g. 't5_1_1_small' or a T5Config)"
        )
    changes = {"dropout_rate": 0.0}
    if dtype:
        changes["dtype"] = dtype
    config = config.replace(**changes)
    model = EncoderDecoderModel(config)
    mesh = None
    if use_mesh:
        mesh = partitioning.create_mesh(num_partitions)
        specs = model.abstract_params_with_axes()[1]
        params = jax.device_put(params, partitioning.shardings_for(specs, mesh))
    return LoadedModel(model, params, config, mesh)


def global_batch(arrays: Sequence[np.ndarray], mesh) -> list:
    """Host arrays (identical on every host) as global arrays split along "data"."""
    import jax

    from t0x import partitioning

    sharding = partitioning.batch_sharding(mesh)
    return [
        jax.make_array_from_callback(a.shape, sharding, lambda idx, a=a: a[idx]) for a in arrays
    ]


class MeshFunction:
    """`fn(params, *batch_arrays, *replicated_arrays)` jitted for a LoadedModel's mesh.

    Called with host arrays, returns host numpy. On a mesh, params keep their shardings,
    batch arrays are split along "data", the rest is replicated, and tracing and running
    happen inside `partitioning.activate(mesh)` (so the network's logical constraints apply).
    Without a mesh: plain jit on the default device. `lower(*arrays)` gives the lowered
    program (for inspection, e.g. `t0x.program_stats`).
    """

    def __init__(
        self, loaded: LoadedModel, fn: Callable, num_batch_args: int, num_replicated_args: int = 0
    ):
        import jax

        from t0x import partitioning

        self.loaded, self.num_batch_args = loaded, num_batch_args
        mesh = loaded.mesh
        if mesh is None:
            self.jitted = jax.jit(fn)
            return
        param_sh = jax.tree.map(lambda x: x.sharding, loaded.params)
        self.jitted = jax.jit(
            fn,
            in_shardings=(param_sh,)
            + (partitioning.batch_sharding(mesh),) * num_batch_args
            + (partitioning.replicated(mesh),) * num_replicated_args,
            out_shardings=partitioning.replicated(mesh),
        )

    def _args(self, arrays):
        if self.loaded.mesh is None:
            return (self.loaded.params, *arrays)
        batch = global_batch(arrays[: self.num_batch_args], self.loaded.mesh)
        return (self.loaded.params, *batch, *arrays[self.num_batch_args :])

    def _context(self):
        import contextlib

        from t0x import partitioning

        mesh = self.loaded.mesh
        return contextlib.nullcontext() if mesh is None else partitioning.activate(mesh)

    def __call__(self, *arrays):
        import jax

        with self._context():
            out = self.jitted(*self._args(arrays))
        return jax.tree.map(np.asarray, out)

    def lower(self, *arrays):
        with self._context():
            return self.jitted.lower(*self._args(arrays))


def jit_on_mesh(
    loaded: LoadedModel, fn: Callable, num_batch_args: int, num_replicated_args: int = 0
) -> MeshFunction:
    """`fn(params, *batch_arrays, *replicated_arrays)` jitted on the model's mesh (see
    `MeshFunction`); call it with host arrays, get host numpy back."""
    return MeshFunction(loaded, fn, num_batch_args, num_replicated_args)


def make_predict_fn(
    loaded: LoadedModel,
    method: str = "greedy",
    num_beams: int = 4,
    temperature: float = 1.0,
    top_k: int = 0,
    alpha: float = 0.6,
    seed: int = 0,
) -> Callable[[np.ndarray, int], np.ndarray]:
    """`predict(encoder_input_tokens [B, L], max_decode_length) -> tokens [B, T]` (numpy).

    Sampling draws a fresh key per call from `seed`, so a run is reproducible.
    """
    import jax

    model = loaded.model
    compiled: dict[int, Callable] = {}
    calls = [0]

    def predict(encoder_input_tokens: np.ndarray, max_decode_length: int) -> np.ndarray:
        if max_decode_length not in compiled:

            def fn(params, enc, key_data):
                return model.predict_batch(
                    params,
                    {"encoder_input_tokens": enc},
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
            np.asarray(encoder_input_tokens, np.int32), np.asarray(jax.random.key_data(key))
        )

    return predict


def vocabulary(checkpoint_path: str | None = None, vocab_path: str | None = None):
    import seqio

    from t0_tasks.settings import Settings

    settings = Settings.from_env()
    if (
        vocab_path is None
        and checkpoint_path
        and os.path.isfile(os.path.join(checkpoint_path, "spiece.model"))
    ):
        vocab_path = os.path.join(checkpoint_path, "spiece.model")
    return seqio.SentencePieceVocabulary(
        vocab_path or settings.vocab_path, extra_ids=settings.extra_ids
    )


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
