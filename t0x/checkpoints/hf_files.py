"""Hugging Face model folders, whatever the family: reading their weights and config.json,
writing them atomically.

Vocabulary:
  folder      a directory holding `config.json` and weights: `model.safetensors`, sharded
              safetensors (`model.safetensors.index.json` + shards), or PyTorch pickles
              (`pytorch_model.bin`, sharded too).
  state dict  flat {name: numpy array} as the folder stores it (torch Linear weights are
              [out, in]); each family maps it to its own parameter tree (t0x/models/*/hf.py).

Writing never replaces a non-empty folder unless asked, and writes each file to a temporary
name renamed into place.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

CONFIG_NAME = "config.json"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFE_WEIGHTS, SAFE_INDEX, TORCH_WEIGHTS, TORCH_INDEX, "flax_model.msgpack")


def is_hf_folder(path) -> bool:
    return (
        os.path.isdir(path)
        and os.path.exists(os.path.join(path, CONFIG_NAME))
        and any(os.path.exists(os.path.join(path, f)) for f in WEIGHT_FILES)
    )


def read_config(path: str) -> dict:
    """config.json of a Hugging Face folder."""
    config_file = os.path.join(path, CONFIG_NAME)
    if not os.path.exists(config_file):
        raise FileNotFoundError(
            f"{config_file} not found: is {path} a Hugging Face model directory?"
        )
    with open(config_file) as f:
        return json.load(f)


def _read_safetensors(file: str) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    try:
        with safe_open(file, framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (TypeError, ValueError) as e:  # e.g. bfloat16, which numpy lacks
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ValueError(
                f"{file}: cannot read with numpy ({e}); install torch to read bfloat16 safetensors."
            ) from e
        with safe_open(file, framework="pt") as f:
            return {k: f.get_tensor(k).float().numpy() for k in f.keys()}


def _read_torch(file: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"{file} is a PyTorch pickle; reading it needs torch "
            "(pip install torch), or convert it to model.safetensors."
        ) from e
    sd = torch.load(file, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in sd.items()}


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads model.safetensors, sharded safetensors, or pytorch_model.bin (sharded too)."""
    for index, reader in ((SAFE_INDEX, _read_safetensors), (TORCH_INDEX, _read_torch)):
        single = os.path.join(path, index.replace(".index.json", ""))
        if os.path.exists(single):
            return reader(single)
        if os.path.exists(os.path.join(path, index)):
            with open(os.path.join(path, index)) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            sd: dict[str, np.ndarray] = {}
            for shard in shards:
                sd.update(reader(os.path.join(path, shard)))
            return sd
    raise FileNotFoundError(
        f"{path} holds no {SAFE_WEIGHTS}, {SAFE_INDEX}, {TORCH_WEIGHTS} or "
        f"{TORCH_INDEX}: is it a Hugging Face model directory?"
    )


def prepare_folder(path: str, overwrite: bool) -> None:
    """Creates `path` for writing; refuses a file or a non-empty folder unless `overwrite`."""
    from t0x.errors import OutputExistsError

    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputExistsError(f"{path} exists and is a file: choose a directory path.")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise OutputExistsError(
            f"{path} exists and is not empty: choose a new directory or pass overwrite=True."
        )
    os.makedirs(path, exist_ok=True)


def write_folder(path: str, state_dict: Mapping[str, np.ndarray], hf_config: Mapping[str, Any]):
    """Writes model.safetensors and config.json (each to a temporary name, then renamed)."""
    from safetensors.numpy import save_file

    tmp = os.path.join(path, SAFE_WEIGHTS + ".tmp")
    save_file(dict(state_dict), tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(path, SAFE_WEIGHTS))
    tmp = os.path.join(path, CONFIG_NAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump(dict(hf_config), f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(path, CONFIG_NAME))
