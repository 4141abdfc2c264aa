"""Model families as plug-ins (see `t0x.models.family` for the contract).

`FAMILIES` maps a family name to the module that builds its `ModelFamily` (imported on first
use, so a job pays only for the family it runs). Adding a family: a folder
`t0x/models/<name>/` whose `__init__` defines `FAMILY`, and one entry here (or
`register(name, module)` at run time for a family that lives outside t0x).
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from t0x.models.family import ModelFamily

FAMILIES: dict[str, str] = {
    "t5": "t0x.models.t5",
    "bloom": "t0x.models.bloom",
}


def register(name: str, module: str) -> None:
    """Adds a family whose module defines `FAMILY` (a ModelFamily)."""
    FAMILIES[name] = module


def get(name: str) -> ModelFamily:
    if name not in FAMILIES:
        from t0x.errors import ConfigError

        raise ConfigError(f"unknown model family {name!r}: use one of {sorted(FAMILIES)}")
    return importlib.import_module(FAMILIES[name]).FAMILY


def all_families() -> list[ModelFamily]:
    return [get(name) for name in FAMILIES]


def of_config(config: Any) -> ModelFamily:
    """The family whose config class `config` is an instance of."""
    for family in all_families():
        if isinstance(config, family.config_class):
            return family
    from t0x.errors import ConfigError

    raise ConfigError(
        f"{type(config).__name__} is not the config of a known model family "
        f"({', '.join(sorted(FAMILIES))})"
    )


def of_hf_config(hf_config: Mapping[str, Any]) -> ModelFamily:
    """The family that reads a Hugging Face config.json (by its `model_type`)."""
    model_type = hf_config.get("model_type")
    for family in all_families():
        if model_type in family.hf_model_types:
            return family
    from t0x.errors import CheckpointError

    known = sorted(t for f in all_families() for t in f.hf_model_types)
    raise CheckpointError(
        f"Hugging Face model_type {model_type!r} is not supported: t0x reads {known}"
    )


def preset(name: str):
    """A config preset by name from any family (`t5_1_1_xxl`, `mt5_xl`, `bloom_560m`, ...)."""
    for family in all_families():
        if name in family.presets:
            return family.presets[name]
    from t0x.errors import ConfigError

    names = sorted(n for f in all_families() for n in f.presets)
    raise ConfigError(f"unknown model preset {name!r}: use one of {names}")


def make_model(config: Any, **options):
    """The model for `config` (loss options such as z_loss go to the family's model)."""
    return of_config(config).make_model(config, **options)
