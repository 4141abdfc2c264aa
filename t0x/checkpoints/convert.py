"""Writing a checkpoint in another format (`t0x convert`): t5x | hf | t0x -> t0x | hf.

Reading goes through `t0x.checkpoints.load` (any family, any format); writing `hf` uses the
family's mapping (t5: T5/MT5ForConditionalGeneration folders, bloom: BloomForCausalLM), and
writing `t0x` stores `{"params": params}` as the state of one step (the source's step; 0 for
HF) with meta `{"family": ..., "config": ..., "source": ...}`.

Invariants: a non-empty destination is never replaced unless `overwrite=True`, and then
only after the new copy is complete (written beside it, then swapped in); the source is
never written to.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from typing import Any, Mapping

from etils import epath

from t0x.checkpoints import load as loading
from t0x.checkpoints import store
from t0x.checkpoints.load import FORMATS, ConvertError, detect_format  # noqa: F401
from t0x.errors import OutputExistsError

TARGET_FORMATS = ("t0x", "hf")


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    from_fmt: str | None = None,
    to_fmt: str = "t0x",
    config: Any = None,
    overwrite: bool = False,
) -> dict:
    """Writes `src`'s params (format `from_fmt`, detected when None) to `dst` as `to_fmt`.

    Returns a summary: {"src", "dst", "from", "to", "step", "num_params"}.
    """
    from_fmt = from_fmt or detect_format(src)
    if from_fmt not in FORMATS:
        raise ConvertError(f"--from {from_fmt!r}: use one of {FORMATS}.")
    if to_fmt not in TARGET_FORMATS:
        raise ConvertError(f"--to {to_fmt!r}: use one of {TARGET_FORMATS}.")
    src_s, dst_s = os.fspath(src), os.fspath(dst)
    _check_destination(src_s, dst_s, overwrite)
    ckpt = loading.load(src_s, config, from_fmt)
    params, cfg, step = ckpt.params, ckpt.config, ckpt.step

    def write(path: str) -> None:
        if to_fmt == "hf":
            ckpt.family.hf_save(path, params, cfg)
        else:
            meta = {
                "family": ckpt.family.name,
                "config": dataclasses.asdict(cfg),
                "source": {"format": from_fmt, "path": src_s, "step": step},
            }
            with store.CheckpointStore(path, async_save=False) as out:
                out.save(step, {store.PARAMS_KEY: params}, meta, force=True)

    _write_replacing(dst_s, overwrite, write)
    return {
        "src": src_s,
        "dst": dst_s,
        "family": ckpt.family.name,
        "from": from_fmt,
        "to": to_fmt,
        "step": step,
        "num_params": _count(params),
    }


def _count(tree: Any) -> int:
    if isinstance(tree, Mapping):
        return sum(_count(v) for v in tree.values())
    return int(getattr(tree, "size", 1))


def _is_nonempty(p: epath.Path) -> bool:
    return p.exists() and (not p.is_dir() or any(True for _ in p.iterdir()))


def _check_destination(src: str, dst: str, overwrite: bool) -> None:
    if _is_nonempty(epath.Path(dst)) and not overwrite:
        raise OutputExistsError(
            f"destination {dst} exists and is not empty; refusing to overwrite it. Pass "
            "overwrite=True (`t0x convert --overwrite`) to replace it, or choose another DST."
        )
    if not dst.startswith("gs://") and not src.startswith("gs://"):
        a, b = os.path.realpath(src), os.path.realpath(dst)
        if a == b or b.startswith(a + os.sep) or a.startswith(b + os.sep):
            raise ConvertError(f"destination {dst} overlaps the source {src}; choose another DST.")


def _write_replacing(dst: str, overwrite: bool, write) -> None:
    """Runs write(path) so that `dst` only ever holds a complete result."""
    target = epath.Path(dst)
    if dst.startswith("gs://"):  # no atomic rename on GCS: clear first, then write
        if overwrite and target.exists():
            target.rmtree()
        write(dst)
        return
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = os.path.join(parent, f".{os.path.basename(dst)}.t0x-convert-tmp-{tag}")
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.lexists(dst):
        old = os.path.join(parent, f".{os.path.basename(dst)}.t0x-convert-old-{tag}")
        os.rename(dst, old)
    os.rename(tmp, dst)
    if old is not None:
        shutil.rmtree(old) if os.path.isdir(old) and not os.path.islink(old) else os.remove(old)
