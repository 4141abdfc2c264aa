"""Loading any checkpoint path: its model family, config, params and step.

Formats (`detect_format` names them):
  t0x   a t0x checkpoint store (`<dir>/<step>/state`, `<step>/meta`) or one of its step dirs;
        the meta names the family (older stores without one are T5) and the config.
  t5x   a T5X checkpoint (see `t0x.checkpoints.t5x`): legacy msgpack file, a
        checkpoint_<step> dir (msgpack + tensorstore, or orbax), or a model dir. T5X holds the
        t5 family's tree as is.
  hf    a Hugging Face folder (`config.json` + weights); `model_type` picks the family
        (t5, mt5 -> t5; bloom -> bloom).

`load(path)` is the one place that turns a path into (family, config, params); training,
evaluation, inference, scoring and conversion all call it. A config passed in overrides the
stored one and is checked against the params' shapes. Params come back as host numpy
arrays, verified against their checksums when the format has them (t0x).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from etils import epath

from t0x import models
from t0x.checkpoints import hf_files, store
from t0x.checkpoints import t5x as t5x_checkpoint
from t0x.errors import CheckpointError, CheckpointNotFoundError

FORMATS = ("t5x", "hf", "t0x")
_T5_SHAPE_FIELDS = (
    "vocab_size",
    "emb_dim",
    "num_heads",
    "head_dim",
    "num_encoder_layers",
    "num_decoder_layers",
    "mlp_dim",
    "relative_attention_num_buckets",
)


class ConvertError(CheckpointError):
    """Bad checkpoint request; the message names the path or argument and the fix."""


@dataclasses.dataclass
class Checkpoint:
    family: Any  # t0x.models.family.ModelFamily
    config: Any
    params: Any  # host numpy tree
    step: int
    format: str
    path: str


def detect_format(path: str | os.PathLike) -> str:
    """ "t5x" | "hf" | "t0x" for `path`; raises ConvertError naming what each one looks like."""
    p = epath.Path(os.fspath(path))
    if not p.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {p} does not exist.")
    if p.is_dir():
        if (p / hf_files.CONFIG_NAME).exists() and any(
            (p / f).exists() for f in hf_files.WEIGHT_FILES
        ):
            return "hf"
        if store.is_step_dir(p) or any(
            c.name.isdigit() and store.is_step_dir(c) for c in p.iterdir()
        ):
            return "t0x"
    try:
        t5x_checkpoint.locate(p)
        return "t5x"
    except t5x_checkpoint.T5XCheckpointError as e:
        raise ConvertError(
            f"cannot tell the format of {p}: not a Hugging Face dir (config.json + "
            f"model.safetensors), not a t0x checkpoint (<step>/state + <step>/meta), and "
            f"not a T5X checkpoint ({e})"
        ) from None


def as_config(config: Any, family=None):
    """A config from a config object, a dict of its fields (given `family`), or a preset name."""
    if config is None or not isinstance(config, (str, dict)):
        return config
    if isinstance(config, str):
        return models.preset(config)
    return (family or models.get("t5")).config_from_dict(config)


def _check_shapes(params: Any, config: Any, where: str) -> None:
    """Raises ConvertError unless `params` has the shapes `config`'s model needs."""
    import jax

    abstract, _ = models.make_model(config).abstract_params_with_axes()
    want = {
        store.checksums.path_str(p): tuple(x.shape)
        for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]
    }
    have = {
        store.checksums.path_str(p): tuple(getattr(x, "shape", ()))
        for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    wrong = [k for k in sorted(want) if have.get(k) != want[k]]
    if wrong or set(have) - set(want):
        k = wrong[0] if wrong else sorted(set(have) - set(want))[0]
        raise ConvertError(
            f"the given config does not fit the params of {where}: {k} is "
            f"{have.get(k, 'absent')} in the checkpoint but the config needs "
            f"{want.get(k, 'no such array')}; pass the checkpoint's own config"
        )


def _t5x_config(params: Any, given: Any, where: str):
    """The given config checked against a T5X tree's shapes, else one inferred from them."""

    def infer(num_heads):
        try:
            return t5x_checkpoint.infer_config_from_params(params, num_heads=num_heads)
        except t5x_checkpoint.T5XCheckpointError:
            return None

    inferred = infer(None) or (infer(given.num_heads) if given is not None else None)
    if inferred is None:
        return given  # not a minimal-T5 tree: nothing to infer or check
    if given is None:
        return models.get("t5").config_from_dict(inferred)
    wrong = {
        k: (getattr(given, k), v)
        for k, v in inferred.items()
        if k in _T5_SHAPE_FIELDS and getattr(given, k) != v
    }
    if wrong:
        raise ConvertError(
            f"config does not fit the params of {where}: "
            + ", ".join(f"{k}={g} but the checkpoint has {v}" for k, (g, v) in wrong.items())
        )
    return given


def source_step(path: str | os.PathLike, fmt: str) -> int:
    """Training step of a checkpoint: T5X's `state/step`, t0x's meta step, 0 for HF."""
    if fmt == "t5x":
        return t5x_checkpoint.read_t5x_step(path)
    if fmt == "t0x":
        return int(store.read_meta(path)["step"])
    return 0


def family_of_meta(meta: dict):
    """The family a t0x checkpoint was saved for (stores older than families held T5)."""
    return models.get(meta.get("family", "t5"))


def load(path: str | os.PathLike, config: Any = None, fmt: str | None = None) -> Checkpoint:
    """(family, config, params, step) of a checkpoint of any format (see the module doc)."""
    fmt = fmt or detect_format(path)
    where = os.fspath(path)
    if fmt == "t5x":
        config = as_config(config, models.get("t5"))
        params = t5x_checkpoint.read_t5x_params(path)
        config = _t5x_config(params, config, where)
        family = models.get("t5")
    elif fmt == "t0x":
        meta = store.read_meta(path)
        family = family_of_meta(meta)
        config = as_config(config, family)
        params = store.restore_params(path)
        if config is None and meta.get("config") is not None:
            config = family.config_from_dict(meta["config"])
    elif fmt == "hf":
        family = models.of_hf_config(hf_files.read_config(where))
        given = as_config(config, family)
        params, config = family.hf_load(where)
        config = given or config
    else:
        raise ConvertError(f"unknown checkpoint format {fmt!r}: use one of {FORMATS}.")
    if config is None:
        raise ConvertError(
            f"{where}: cannot tell the model config of this checkpoint (its params are not a "
            "T5X minimal-T5 tree); pass config (a preset name such as 't5_1_1_small', or a "
            "config object)"
        )
    if fmt != "t5x":
        _check_shapes(params, config, where)
    return Checkpoint(family, config, params, source_step(path, fmt), fmt, where)
