"""Checkpoints: the t0x store, checksums, T5X and Hugging Face formats, loading and conversion.

Modules:
  store      the t0x checkpoint store (orbax): atomic, verified, keep-N, preemption-safe;
             its API is re-exported here (`checkpoints.CheckpointStore`, `restore_params`, ...)
  checksums  content digests written with every step and verified on restore
  t5x        reading T5X checkpoints (legacy msgpack, tensorstore directories, orbax)
  hf_files   reading and writing Hugging Face model folders (any family)
  load       `load(path)`: the model family, config and params of any checkpoint path
  convert    writing a checkpoint in another format (`t0x convert`)
"""

from t0x.checkpoints.store import (  # noqa: F401
    CHECKSUMS_KEY,
    FORMAT,
    FORMAT_VERSION,
    META_ITEM,
    PARAMS_KEY,
    STATE_ITEM,
    CheckpointStore,
    SigtermFlag,
    check_target,
    install_sigterm_handler,
    is_step_dir,
    reached_preemption,
    read_meta,
    restore_params,
    step_dir,
    verify,
)
from t0x.errors import (  # noqa: F401
    CheckpointDamagedError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
)
