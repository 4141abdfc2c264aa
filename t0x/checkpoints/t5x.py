"""Read T5X checkpoints without T5X.

Vocabulary
- *checkpoint dir*: `<model_dir>/checkpoint_<step>/`, one saved step, as T5X writes it.
- *msgpack file*: the flax-msgpack file `checkpoint` inside a checkpoint dir, or a legacy
  single-file checkpoint (`test_t5_tiny.checkpoint_0`). Its tree is
  `{"version": 3, "optimizer": {"target": params, "state": {"step", "param_states"}}}`.
- *layouts* (`T5XCheckpoint.layout`):
  - `msgpack`: every leaf is an inline array in the msgpack file; a leaf that T5X wrote
    with tensorstore is instead a zarr spec dict (`{"driver": "zarr", "kvstore": {"driver":
    "file"|"gfile"|"gcs", "path": <relative>}, "metadata": {...}, "dtype": ...}`) whose
    path is relative to the checkpoint dir (the T5X "directory format").
  - `orbax-msgpack`: T5X's first orbax format: the msgpack `checkpoint` file holds
    `"PLACEHOLDER://<name>"` leaves under `_optimizer/{target,state}`; the arrays are zarr
    folders `<dir>/<name>/` (or entries of an OCDBT store when `manifest.ocdbt` exists).
  - `orbax`: T5X's orbax CheckpointManager format: `checkpoint_<step>/state/` is an orbax
    PyTree checkpoint (`_METADATA`, OCDBT) of `{"target": params, "state": {...}}`.
- *params*: the `target` subtree with T5X's names kept
  (`encoder/layers_0/attention/query/kernel`, ...), as a nested dict.

Invariants: nothing here writes. Arrays come back as host numpy arrays in the dtype T5X
stored (or `dtype` when given), or, when `abstract_params` (a pytree of
`jax.ShapeDtypeStruct` with `.sharding`) is given, as `jax.Array`s built from per-shard
reads, so a host reads only the slices it holds. `gs://` paths go to tensorstore's `gcs`
driver (files are listed and read through `etils.epath`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from typing import Any, Mapping

import numpy as np
import tensorstore as ts
from etils import epath

PLACEHOLDER_PREFIX = "PLACEHOLDER://"
_STEP_DIR = re.compile(r"checkpoint_(\d+)")
_EXPECTED = (
    "a T5X checkpoint: a checkpoint_<step> dir holding a msgpack `checkpoint` file (or an "
    "orbax `state/` dir), that `checkpoint` file itself, a legacy single-file msgpack "
    "checkpoint, or a model dir holding checkpoint_<step> dirs"
)


class T5XCheckpointError(ValueError):
    """A path is not a readable T5X checkpoint; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class T5XCheckpoint:
    """Where a T5X checkpoint's pieces are: `directory` resolves relative array paths."""

    path: str  # what the caller gave
    directory: str  # the checkpoint dir
    file: str | None  # the msgpack file; None for the `orbax` layout
    layout: str  # "msgpack" | "orbax-msgpack" | "orbax"
    tree: dict | None = dataclasses.field(default=None, repr=False, compare=False)  # decoded file


# ---------------------------------------------------------------- locating


def _is_gcs(path: str) -> bool:
    return str(path).startswith("gs://")


def _join(*parts: str) -> str:
    return os.path.join(*[str(p) for p in parts])


def _latest_step_dir(directory: epath.Path) -> epath.Path | None:
    steps = []
    for child in directory.iterdir():
        m = _STEP_DIR.fullmatch(child.name)  # excludes T5X's `checkpoint_N.tmp-<ts>`
        if m and child.is_dir():
            steps.append((int(m.group(1)), child))
    return max(steps)[1] if steps else None


def locate(path: str | os.PathLike) -> T5XCheckpoint:
    """Finds the checkpoint file/dir for `path` (dir, file inside it, legacy file, model dir)."""
    given = os.fspath(path)
    p = epath.Path(given)
    if not p.exists():
        raise T5XCheckpointError(f"T5X checkpoint not found: {given} does not exist.")
    if p.is_dir():
        if (p / "state" / "_METADATA").exists():
            return T5XCheckpoint(given, str(p), None, "orbax")
        if (p / "_METADATA").exists() and p.name == "state":
            return T5XCheckpoint(given, str(p.parent), None, "orbax")
        if (p / "checkpoint").exists() and not (p / "checkpoint").is_dir():
            return _classify_file(given, p / "checkpoint")
        latest = _latest_step_dir(p)
        if latest is not None:
            return locate(str(latest))
        raise T5XCheckpointError(
            f"{given} is a directory but not {_EXPECTED}: it holds no `checkpoint` file, "
            "no `state/_METADATA` and no checkpoint_<step> dirs."
        )
    return _classify_file(given, p)


def _classify_file(given: str, file: epath.Path) -> T5XCheckpoint:
    with file.open("rb") as f:
        head = f.read(21)
    if head == b"model_checkpoint_path":
        raise T5XCheckpointError(
            f"{file} is a TensorFlow (Mesh TensorFlow) T5 checkpoint, not {_EXPECTED}. "
            "Use the T5X-format release of the model (gs://t5-data/pretrained_models/t5x/...) "
            "or convert it with T5X first."
        )
    tree = _read_msgpack(file)
    layout = "orbax-msgpack" if _has_placeholder(tree) else "msgpack"
    return T5XCheckpoint(given, str(file.parent), str(file), layout, tree)


def _read_msgpack(file: epath.Path) -> dict:
    from flax import serialization

    try:
        tree = serialization.msgpack_restore(file.read_bytes())
    except Exception as e:  # msgpack raises several unrelated types
        raise T5XCheckpointError(
            f"{file} is not {_EXPECTED}: it does not decode as flax msgpack ({e})."
        ) from None
    if not isinstance(tree, dict):
        raise T5XCheckpointError(
            f"{file} is not {_EXPECTED}: it decodes to a {type(tree).__name__}, not a dict."
        )
    return tree


def _has_placeholder(tree: Any) -> bool:
    if isinstance(tree, dict):
        return any(_has_placeholder(v) for v in tree.values())
    return isinstance(tree, str) and tree.startswith(PLACEHOLDER_PREFIX)


def _state_root(tree: dict, where: str) -> dict:
    """The `{"target", "state"}` dict of any T5X layout."""
    for key in ("optimizer", "_optimizer"):
        if isinstance(tree.get(key), dict):
            return tree[key]
    if "target" in tree:
        return tree
    raise T5XCheckpointError(
        f"{where} is not {_EXPECTED}: expected top-level 'optimizer' (T5X msgpack), "
        f"'_optimizer' (T5X orbax-msgpack) or 'target' (T5X orbax); found keys "
        f"{sorted(map(str, tree))}."
    )


# ---------------------------------------------------------------- tensorstore leaves


def _is_ts_spec(x: Any) -> bool:
    return isinstance(x, dict) and {"driver", "kvstore"} <= set(x) and "metadata" in x


def _kvstore(directory: str, relative: str) -> dict:
    """A tensorstore kvstore for `relative` inside checkpoint dir `directory`."""
    if _is_gcs(directory):
        m = re.fullmatch(r"gs://([^/]+)/?(.*)", directory, re.DOTALL)
        bucket, prefix = m.group(1), m.group(2)
        return {"driver": "gcs", "bucket": bucket, "path": _join(prefix, relative)}
    return {"driver": "file", "path": _join(os.path.abspath(directory), relative)}


def _resolve_spec(spec: Mapping[str, Any], directory: str) -> dict:
    """T5X zarr spec with its relative path made absolute (local file or gcs)."""
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in spec.items()}
    kv = spec.get("kvstore")
    relative = kv.get("path") if isinstance(kv, dict) else None
    if relative is None:
        relative = spec.pop("path", None)  # tensorstore < 0.1.14 put it at the top
    if relative is None:
        raise T5XCheckpointError(f"T5X tensorstore spec in {directory} has no 'path': {spec}")
    spec.pop("path", None)
    spec["kvstore"] = _kvstore(directory, relative)
    if spec.get("dtype") == "uint16" or spec.get("metadata", {}).get("dtype") == "<u2":
        raise T5XCheckpointError(
            f"array {relative} in {directory} was saved as uint16 (an old bfloat16 "
            "encoding); re-save it as bfloat16 with T5X."
        )
    return spec


def _chunk_keys(metadata: Mapping[str, Any]) -> list[str]:
    shape, chunks = metadata["shape"], metadata["chunks"]
    if not shape:
        return ["0"]
    sep = metadata.get("dimension_separator", ".")
    grid = [range(math.ceil(s / c)) if s else range(1) for s, c in zip(shape, chunks)]
    return [sep.join(map(str, idx)) for idx in itertools.product(*grid)]


def _open_zarr(spec: dict, name: str, dtype: Any = None):
    """Opens a zarr array; falls back to the spec's metadata when `.zarray` is absent.

    T5X's own test data ships the chunk files without `.zarray`; its msgpack spec then
    carries the complete metadata (shape, chunks, compressor, dtype). The fallback is used
    only when every chunk file is present, so a missing array never reads as zeros.
    """
    try:
        store = ts.open(spec, open=True).result()
    except ValueError as e:
        if "NOT_FOUND" not in str(e):
            raise
        store = _open_with_spec_metadata(spec, name, e)
    if dtype is not None and np.dtype(dtype) != store.dtype.numpy_dtype:
        store = ts.cast(store, ts.dtype(np.dtype(dtype).name))
    return store


def _open_with_spec_metadata(spec: dict, name: str, error: Exception):
    meta = spec.get("metadata", {})
    where = spec["kvstore"]["path"]
    if not {"shape", "chunks", "compressor"} <= set(meta) or "dtype" not in spec:
        raise T5XCheckpointError(
            f"array {name!r}: no zarr metadata (.zarray) at {where} and the checkpoint "
            f"does not carry it either; the checkpoint is incomplete ({error})."
        ) from None
    if not _is_gcs(where):
        missing = [k for k in _chunk_keys(meta) if not os.path.exists(_join(where, k))]
        if missing:
            raise T5XCheckpointError(
                f"array {name!r}: chunk files {missing[:4]} missing under {where}; the "
                "checkpoint is incomplete."
            )
    return ts.open(spec, open=True, assume_metadata=True).result()


def _placeholder_spec(ckpt: T5XCheckpoint, name: str) -> dict:
    base = _kvstore(ckpt.directory, "")
    if epath.Path(_join(ckpt.directory, "manifest.ocdbt")).exists():
        kvstore = {"driver": "ocdbt", "base": base, "path": name + "/"}
    else:
        kvstore = _kvstore(ckpt.directory, name + "/")
    return {"driver": "zarr", "kvstore": kvstore}


# ---------------------------------------------------------------- reading trees


def _leaf_reader(ckpt: T5XCheckpoint, dtype: Any):
    """Returns f(path, leaf) -> opened tensorstore, or the inline value."""

    def read(keypath: str, leaf: Any):
        if _is_ts_spec(leaf):
            return _open_zarr(_resolve_spec(leaf, ckpt.directory), keypath, dtype)
        if isinstance(leaf, str) and leaf.startswith(PLACEHOLDER_PREFIX):
            name = leaf[len(PLACEHOLDER_PREFIX) :]
            return _open_zarr(_placeholder_spec(ckpt, name), keypath, dtype)
        if dtype is not None and isinstance(leaf, np.ndarray):
            return leaf.astype(dtype)
        return leaf

    return read


def _map_tree(fn, tree: Any, prefix: str = "") -> Any:
    """Maps fn(keypath, leaf) over nested dicts; zarr spec dicts are leaves."""
    if isinstance(tree, dict) and not _is_ts_spec(tree):
        return {k: _map_tree(fn, v, f"{prefix}/{k}" if prefix else str(k)) for k, v in tree.items()}
    return fn(prefix, tree)


def _materialise(tree: Any, abstract: Any = None) -> Any:
    """Reads every opened tensorstore in `tree` (concurrently), or shards it onto `abstract`."""
    if abstract is not None:
        return _to_sharded(tree, abstract)
    futures = _map_tree(lambda _, x: x.read() if isinstance(x, ts.TensorStore) else x, tree)
    return _map_tree(
        lambda _, x: np.asarray(x.result()) if isinstance(x, ts.Future) else x, futures
    )


def _to_sharded(tree: Any, abstract: Any) -> Any:
    import jax

    def one(keypath: str, leaf: Any):
        want = _lookup(abstract, keypath)
        shape = tuple(leaf.shape)
        if shape != tuple(want.shape):
            raise T5XCheckpointError(
                f"{keypath}: checkpoint shape {shape} != expected {tuple(want.shape)}."
            )
        source = leaf if isinstance(leaf, ts.TensorStore) else np.asarray(leaf)

        def read_slice(index):
            part = source[index]
            part = part.read().result() if isinstance(part, ts.TensorStore) else part
            return np.asarray(part, dtype=want.dtype)

        return jax.make_array_from_callback(want.shape, want.sharding, read_slice)

    _check_same_keys(tree, abstract)
    return _map_tree(one, tree)


def _lookup(tree: Any, keypath: str) -> Any:
    for k in keypath.split("/"):
        tree = tree[k]
    return tree


def _flat_keys(tree: Any, prefix: str = "") -> set[str]:
    if isinstance(tree, Mapping):
        out: set[str] = set()
        for k, v in tree.items():
            out |= _flat_keys(v, f"{prefix}/{k}" if prefix else str(k))
        return out
    return {prefix}


def _check_same_keys(tree: Any, abstract: Any) -> None:
    have, want = _flat_keys(tree), _flat_keys(abstract)
    if have != want:
        raise T5XCheckpointError(
            "checkpoint params do not match the expected tree: missing "
            f"{sorted(want - have)[:8]}, unexpected {sorted(have - want)[:8]}."
        )


def _orbax_restore(ckpt: T5XCheckpoint, subtree: tuple[str, ...], dtype, abstract):
    """Partial restore of `subtree` of an orbax-layout T5X checkpoint."""
    import jax
    import orbax.checkpoint as ocp

    state_dir = epath.Path(ckpt.directory) / "state"
    handler = ocp.PyTreeCheckpointHandler()
    try:
        tree = handler.metadata(state_dir).tree
        root_key = next((k for k in ("optimizer", "_optimizer") if k in tree), None)
        node = tree[root_key] if root_key else tree
        for k in subtree:
            if not isinstance(node, Mapping) or k not in node:
                raise T5XCheckpointError(
                    f"{ckpt.path}: orbax T5X checkpoint has no {'/'.join(subtree)!r}."
                )
            node = node[k]
        if abstract is None:
            item = node
            args = jax.tree.map(
                lambda _: ocp.RestoreArgs(restore_type=np.ndarray, dtype=dtype), node
            )
        else:
            item, args = abstract, ocp.checkpoint_utils.construct_restore_args(abstract)
        for k in reversed(((root_key,) if root_key else ()) + subtree):
            item, args = {k: item}, {k: args}
        out = handler.restore(
            state_dir,
            args=ocp.args.PyTreeRestore(item=item, restore_args=args, partial_restore=True),
        )
    finally:
        handler.close()
    for k in ((root_key,) if root_key else ()) + subtree:
        out = out[k]
    return out


# ---------------------------------------------------------------- public API


def read_t5x_tree(path: str | os.PathLike | T5XCheckpoint) -> tuple[T5XCheckpoint, dict]:
    """The raw `{"target", "state"}` tree (leaves: arrays, zarr spec dicts or placeholders)."""
    ckpt = path if isinstance(path, T5XCheckpoint) else locate(path)
    if ckpt.layout == "orbax":
        raise T5XCheckpointError(
            f"{ckpt.path} is an orbax-layout T5X checkpoint; read it with read_t5x_params."
        )
    return ckpt, _state_root(ckpt.tree, ckpt.file)


def read_t5x_params(
    path: str | os.PathLike, dtype: Any = None, abstract_params: Any = None
) -> dict:
    """T5X's `target` params as a nested dict of numpy arrays (T5X names kept).

    `path`: a checkpoint_<step> dir, the `checkpoint` file in it, a legacy single-file
    checkpoint, or a model dir (its latest checkpoint_<step>). `dtype` casts on read.
    `abstract_params`: pytree of `jax.ShapeDtypeStruct` with `.sharding`; then the result
    is `jax.Array`s read shard by shard (each host reads only what it holds).
    """
    ckpt = locate(path)
    if ckpt.layout == "orbax":
        return _orbax_restore(ckpt, ("target",), dtype, abstract_params)
    _, root = read_t5x_tree(ckpt)
    target = root.get("target")
    if not isinstance(target, dict):
        raise T5XCheckpointError(f"{ckpt.path}: T5X checkpoint has no 'target' params dict.")
    opened = _map_tree(_leaf_reader(ckpt, dtype), target)
    return _materialise(opened, abstract_params)


def read_t5x_state(path: str | os.PathLike) -> dict:
    """The whole `{"target", "state"}` tree (params + optimizer state) as numpy arrays."""
    ckpt, root = read_t5x_tree(path)
    return _materialise(_map_tree(_leaf_reader(ckpt, None), root))


def read_t5x_step(path: str | os.PathLike) -> int:
    """The training step saved in a T5X checkpoint (`state/step`).

    Falls back to the step in the dir name (`checkpoint_<N>`, or `<N>` for orbax) when the
    step array cannot be read (T5X's orbax test data has no array metadata).
    """
    ckpt = locate(path)
    try:
        if ckpt.layout == "orbax":
            return int(_orbax_restore(ckpt, ("state", "step"), None, None))
        _, root = read_t5x_tree(ckpt)
        leaf = root.get("state", {}).get("step")
        if leaf is None:
            raise T5XCheckpointError(f"{ckpt.path}: no 'state/step' in the checkpoint.")
        value = _materialise({"step": _leaf_reader(ckpt, None)("state/step", leaf)})["step"]
        return int(np.asarray(value))
    except T5XCheckpointError:
        name = epath.Path(ckpt.directory).name
        m = _STEP_DIR.fullmatch(name) or re.fullmatch(r"(\d+)", name)
        if m is None:
            raise
        return int(m.group(1))


def infer_config_from_params(params: Mapping[str, Any], num_heads: int | None = None) -> dict:
    """T5 config values implied by a T5X minimal-T5 params tree.

    Keys: vocab_size, emb_dim, num_heads, head_dim, num_encoder_layers,
    num_decoder_layers, mlp_dim, mlp_activations, logits_via_embedding,
    relative_attention_num_buckets. `num_heads` comes from the relative-position
    embedding's shape `(num_heads, num_buckets)`; pass `num_heads` for a tree without one
    (it is then checked against the attention kernels).
    """
    try:
        emb = params["token_embedder"]["embedding"]
        enc, dec = params["encoder"], params["decoder"]
        layer = enc["layers_0"]
        query = layer["attention"]["query"]["kernel"]
    except (KeyError, TypeError) as e:
        raise T5XCheckpointError(
            f"params are not a T5X minimal-T5 tree: missing {e}; expected token_embedder/"
            "embedding and encoder/layers_0/attention/query/kernel."
        ) from None
    rel = enc.get("relpos_bias", {}).get("rel_embedding")
    heads_from_rel = int(rel.shape[0]) if rel is not None else None
    if num_heads is None:
        num_heads = heads_from_rel
    elif heads_from_rel is not None and heads_from_rel != num_heads:
        raise T5XCheckpointError(
            f"num_heads={num_heads} disagrees with encoder/relpos_bias/rel_embedding "
            f"of shape {tuple(rel.shape)} (num_heads, num_buckets)."
        )
    if len(query.shape) == 3:  # DenseGeneral kernels (emb, heads, head_dim)
        heads_from_q, head_dim = int(query.shape[1]), int(query.shape[2])
        num_heads = num_heads or heads_from_q
    else:
        if num_heads is None:
            raise T5XCheckpointError(
                "cannot infer num_heads: no encoder/relpos_bias/rel_embedding; pass num_heads."
            )
        if query.shape[1] % num_heads:
            raise T5XCheckpointError(
                f"num_heads={num_heads} does not divide the attention width {query.shape[1]}."
            )
        head_dim = int(query.shape[1]) // num_heads
    mlp = layer["mlp"]
    gated = "wi_0" in mlp
    mlp_dim = int((mlp["wi_0"] if gated else mlp["wi"])["kernel"].shape[-1])
    config = {
        "vocab_size": int(emb.shape[0]),
        "emb_dim": int(emb.shape[1]),
        "num_heads": int(num_heads),
        "head_dim": head_dim,
        "num_encoder_layers": _count_layers(enc),
        "num_decoder_layers": _count_layers(dec),
        "mlp_dim": mlp_dim,
        "mlp_activations": ("gelu", "linear") if gated else ("relu",),
        "logits_via_embedding": "logits_dense" not in dec,
    }
    if rel is not None:
        config["relative_attention_num_buckets"] = int(rel.shape[1])
    return config


def _count_layers(stack: Mapping[str, Any]) -> int:
    return sum(1 for k in stack if re.fullmatch(r"layers_\d+", k))
