"""Gin for t0x: the search path, the external configurables, and flag parsing.

Layers of gin files (see gin/README.md): `models/<size>.gin` binds `t0x.T5Config`;
`runs/<mode>.gin` binds the job function (`t0x.train`, `t0x.evaluate`, `t0x.infer`) to
macros it documents at its top; a recipe (`t0_xxl.gin`, ...) includes one of each and sets
the macros. Flags follow T5X: `--gin_file=F` (repeatable, searched in `--gin_search_path`s,
then the repo's `gin/`) and `--gin.MACRO_OR_BINDING=VALUE` (a gin value: strings quoted,
e.g. `--gin.MODEL_DIR="'/tmp/run'"`; an unquoted path is accepted and quoted for you).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import gin

from t0x.models.bloom.config import BloomConfig
from t0x.models.t5.config import T5Config

GIN_DIR = Path(__file__).resolve().parent.parent / "gin"
# t0x's own files for T5X's include paths ('t5x/examples/t5/t5_1_1/xxl.gin'); searched
# first, so an installed T5X (or a t5x/ folder in the working directory) never shadows them.
LAYERS_DIR = GIN_DIR / "t0x_layers"
_registered = False


def _guard_package_path_lookup() -> None:
    """Makes gin's package-path include lookup fail soft.

    For an include such as 'runs/finetune.gin', gin also asks whether `runs` is a Python
    package; a plain `runs/` folder in the working directory (e.g. `runs/demo`) is a
    namespace package without a file, and gin's lookup then raises TypeError instead of
    trying the next search path. Wrapped, that lookup just answers "not here".
    """
    from gin import config as gin_config_module
    from gin import resource_reader

    def exists(path: str) -> bool:
        try:
            return resource_reader.system_path_file_exists(path)
        except (TypeError, ValueError, ImportError):
            return False

    gin_config_module._FILE_READERS[:] = [  # pylint: disable=protected-access
        (reader, exists if check is resource_reader.system_path_file_exists else check)
        for reader, check in gin_config_module._FILE_READERS  # pylint: disable=protected-access
    ]


def register_configurables() -> None:
    global _registered
    if _registered:
        return
    _guard_package_path_lookup()
    # T5X's name for the T5 network's config (`network.T5Config.emb_dim = ...`), so model
    # overrides read the same under both engines.
    gin.external_configurable(T5Config, name="T5Config", module="t0x.models.t5.network")
    gin.external_configurable(BloomConfig, name="BloomConfig", module="t0x.models.bloom.network")
    import t0x.t5x_names  # noqa: F401  (T5X's configurable names; see that module)

    _registered = True


def search_paths(extra: list[str] = ()) -> list[str]:
    """Where includes are looked up, in order: t0x's layers for T5X's paths, the
    `--gin_search_path`s, `$T0X_GIN_PATH`, the working directory, the repo's `gin/`."""
    paths = [str(LAYERS_DIR)] + list(extra)
    paths += [p for p in os.environ.get("T0X_GIN_PATH", "").split(":") if p]
    return paths + ["", str(GIN_DIR)]


def _set_search_paths(paths: list[str]) -> None:
    from gin import config as gin_config_module

    prefixes = gin_config_module._LOCATION_PREFIXES  # pylint: disable=protected-access
    prefixes[:] = list(dict.fromkeys(paths))


_BARE_PATH = re.compile(r"^(gs://|/|\./|~/)[^'\"]*$")


def _binding(flag_value: str) -> str:
    """`NAME=VALUE` from `--gin.NAME=VALUE`, quoting an obviously bare path."""
    name, sep, value = flag_value.partition("=")
    if not sep:
        raise ValueError(f"--gin.{flag_value}: expected --gin.NAME=VALUE")
    if _BARE_PATH.match(value.strip()):
        value = repr(value.strip())
    return f"{name} = {value}"


def split_gin_flags(argv: list[str]) -> tuple[list[str], list[str], list[str], list[str]]:
    """(gin files, gin bindings, search paths, remaining args) from T5X-style flags."""
    files, bindings, paths, rest = [], [], [], []
    it = iter(argv)
    for arg in it:
        for flag, out in (("--gin_file", files), ("--gin_search_path", paths)):
            if arg == flag:
                out.append(next(it))
                break
            if arg.startswith(flag + "="):
                out.append(arg.split("=", 1)[1])
                break
        else:
            if arg.startswith("--gin."):
                bindings.append(_binding(arg[len("--gin.") :]))
            elif arg == "--gin_bindings":
                bindings.append(next(it))
            elif arg.startswith("--gin_bindings="):
                bindings.append(arg.split("=", 1)[1])
            else:
                rest.append(arg)
    return files, bindings, paths, rest


def parse(files: list[str], bindings: list[str], paths: list[str] = ()) -> None:
    """Parses gin files and bindings (after clearing any earlier config)."""
    register_configurables()
    gin.clear_config()
    _set_search_paths(search_paths(list(paths)))
    if not files:
        raise ValueError("no --gin_file given; e.g. --gin_file=gin/demo.gin")
    # gin logs an ERROR for every search path an include is not in before it finds it;
    # a file found nowhere still raises, naming it.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
    finally:
        root.setLevel(level)
