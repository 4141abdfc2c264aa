"""The t0x checkpoint store: orbax save/restore of training state, plus its metadata.

Vocabulary
- *store*: a directory of *step dirs* `<directory>/<step>/`, each holding two orbax items:
  - `state/`: an orbax PyTree checkpoint (OCDBT) of the training state, a pytree of
    arrays. Convention: the model parameters live under the top-level key (or attribute)
    `params`, e.g. `{"params": ..., "opt_state": ..., "step": ...}`; `restore_params`
    relies on it. Arrays may be sharded across a mesh; each host writes its own shards.
  - `meta/metadata`: JSON: `{"format": "t0x", "format_version": 1, "step": int,
    "checksums": {path: checksum}, ...}` plus what the caller passes, e.g.
    `{"batches_consumed": int, "config": {...}, "vocabulary": {...}}`. `checksums` is the
    content digest of the state (t0x.checksums) computed when the step was saved.
- *abstract state*: the state's pytree with `jax.ShapeDtypeStruct(shape, dtype,
  sharding=...)` leaves; restoring with it puts every array straight onto its sharding.

Invariants
- Saves are atomic: orbax writes `<step>.orbax-checkpoint-tmp-<ts>/` and renames it to
  `<step>/` when complete (on GCS it writes `commit_success.txt` last instead). A step dir
  left half written by a crash is never listed, restored or pruned into; a writable store
  deletes such leftovers when it opens (a `read_only` store never touches the directory).
- A saved step is never overwritten: saving an existing step is a no-op returning False.
- Restores are bit-exact (bf16 included) and verified: every restored array's checksum
  must equal the one written at save (steps saved before checksums existed are read
  unverified, with a warning). A mismatch, or files orbax cannot read (truncated, missing),
  raise `CheckpointDamagedError` naming the step dir, the array and the fix.
  `set_aside(step)` renames a damaged step dir to `<step>.damaged-<n>` (kept, never deleted;
  orbax no longer lists it).
- Multi-host: every process constructs the store and calls `save`, `wait` and `restore`
  with the same arguments at the same point; orbax synchronises the hosts and each
  writes only the shards it owns. `reached_preemption(step)` is likewise collective.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from t0x.checkpoints import checksums
from t0x.errors import (
    CheckpointDamagedError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
)

FORMAT = "t0x"
FORMAT_VERSION = 1
STATE_ITEM = "state"
META_ITEM = "meta"
PARAMS_KEY = "params"

log = logging.getLogger(__name__)


CHECKSUMS_KEY = "checksums"
_FIX = (
    "Fix: delete or move that step dir to resume from the previous step (training can do it "
    "for you: --gin.FALLBACK_ON_DAMAGED_CHECKPOINT=True sets it aside and warns)"
)


def _damaged(step_dir, what: str) -> CheckpointDamagedError:
    return CheckpointDamagedError(f"checkpoint {step_dir} is damaged: {what}. {_FIX}.")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def verify(tree: Any, meta: Mapping[str, Any], step_dir, prefix: str = "") -> None:
    """Raises CheckpointDamagedError unless every array of `tree` has its saved checksum.

    `prefix` is the path of `tree` inside the saved state (e.g. "params/").
    """
    expected = meta.get(CHECKSUMS_KEY)
    if not expected:
        log.warning(
            "checkpoint %s has no checksums (saved by an older t0x): not verified", step_dir
        )
        return
    digest = {prefix + path: value for path, value in checksums.tree_digest(tree).items()}
    bad = checksums.mismatches(digest, expected)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise _damaged(
            step_dir, f"array {bad[0]}{more} does not match the checksum written at save"
        )


class CheckpointStore:
    """Saves and restores `(state, meta)` per training step under `directory`.

    `keep`: how many of the latest steps to keep (None: all). `async_save`: `save` returns
    once arrays are copied off the devices and writes in the background; call `wait()`
    before reading the files or exiting. `read_only`: for evaluators and converters
    reading a store another job writes.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        keep: int | None = None,
        async_save: bool = True,
        read_only: bool = False,
    ):
        if keep is not None and keep < 1:
            raise ValueError(f"keep={keep}: keep at least 1 checkpoint (or None for all).")
        self.directory = epath.Path(os.fspath(directory))
        if read_only and not self.directory.is_dir():
            raise CheckpointNotFoundError(f"no t0x checkpoint store at {self.directory}.")
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
            enable_async_checkpointing=async_save,
            create=not read_only,
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
            save_interval_steps=0 if read_only else 1,
        )
        self.read_only = read_only
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={
                STATE_ITEM: ocp.PyTreeCheckpointHandler(),
                META_ITEM: ocp.JsonCheckpointHandler(),
            },
            options=options,
        )

    # ------------------------------------------------------------ listing

    def all_steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending (re-read from disk when read-only)."""
        if self.read_only:
            self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    # ------------------------------------------------------------ saving

    def save(
        self, step: int, state: Any, meta: Mapping[str, Any] | None = None, force: bool = False
    ) -> bool:
        """Saves `state` and JSON `meta` as `step`; returns whether a save started.

        Every host must call it. An existing step is never overwritten (returns False).
        `force` saves even when orbax's save policy would skip the step.
        """
        if self.read_only:
            raise PermissionError(f"checkpoint store {self.directory} was opened read_only.")
        step = int(step)
        if step in self._manager.all_steps():
            log.info("checkpoint for step %d already in %s; not overwriting", step, self.directory)
            return False
        meta_json = {
            **dict(meta or {}),
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "step": step,
            CHECKSUMS_KEY: checksums.tree_digest(state),
        }
        try:
            json.dumps(meta_json)
        except TypeError as e:
            raise TypeError(
                f"checkpoint meta for step {step} is not JSON-serialisable: {e}"
            ) from None
        args = ocp.args.Composite(
            **{
                STATE_ITEM: ocp.args.PyTreeSave(state),
                META_ITEM: ocp.args.JsonSave(meta_json),
            }
        )
        return bool(self._manager.save(step, args=args, force=force))

    def wait(self) -> None:
        """Blocks until the background save (if any) is on disk and old steps are pruned."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> "CheckpointStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ restoring

    def _existing(self, step: int | None) -> int:
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointNotFoundError(f"no complete t0x checkpoint in {self.directory}.")
            return steps[-1]
        if int(step) not in steps:
            raise CheckpointNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; it has steps {steps}."
            )
        return int(step)

    def restore(self, step: int | None = None, abstract_state: Any = None) -> tuple[Any, dict]:
        """Returns `(state, meta)` of `step` (default: the latest).

        With `abstract_state` (pytree of ShapeDtypeStruct with `.sharding`) the arrays are
        restored straight onto those shardings (any mesh); without it, as host numpy arrays.
        """
        step = self._existing(step)
        where = self.directory / str(step)
        try:
            saved = self._manager.item_metadata(step)[STATE_ITEM]
        except Exception as e:  # noqa: BLE001 - unreadable metadata is damage
            raise _damaged(where, f"its metadata cannot be read ({_first_line(e)})") from e
        if abstract_state is not None:
            check_target(saved, abstract_state, where)
        try:
            if abstract_state is None:
                state_args = _numpy_restore_args(saved)
            else:
                state_args = ocp.args.PyTreeRestore(
                    item=abstract_state,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
                )
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    **{
                        STATE_ITEM: state_args,
                        META_ITEM: ocp.args.JsonRestore(),
                    }
                ),
            )
        except Exception as e:  # noqa: BLE001 - tensorstore / OCDBT read errors of every kind
            raise _damaged(where, f"its files cannot be read ({_first_line(e)})") from e
        state, meta = restored[STATE_ITEM], dict(restored[META_ITEM])
        verify(state, meta, where)
        return state, meta

    def set_aside(self, step: int) -> str:
        """Renames a (damaged) step dir to `<step>.damaged-<n>`; returns the new path."""
        if self.read_only:
            raise PermissionError(f"checkpoint store {self.directory} was opened read_only.")
        src = self.directory / str(int(step))
        n = 0
        while (dst := self.directory / f"{int(step)}.damaged-{n}").exists():
            n += 1
        src.rename(dst)
        self._manager.reload()
        return str(dst)

    def read_meta(self, step: int | None = None) -> dict:
        return read_meta(self.directory / str(self._existing(step)))

    def restore_params(self, step: int | None = None, abstract_params: Any = None) -> Any:
        return restore_params(self.directory / str(self._existing(step)), abstract_params)

    # ------------------------------------------------------------ preemption

    def reached_preemption(self, step: int) -> bool:
        return reached_preemption(step)


def _shapes(tree: Any, prefix: str = "") -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(getattr(tree, "tree", tree))[0]
    return {
        prefix + checksums.path_str(path): (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
        for path, leaf in flat
        if hasattr(leaf, "shape")
    }


def check_target(saved_metadata: Any, target: Any, where, prefix: str = "") -> None:
    """Raises CheckpointMismatchError unless every array of `target` is saved with its shape.

    A wrong shape is not damage: the checkpoint belongs to another model (e.g. another
    vocabulary size), and restoring it anyway (orbax's `strict=False`) would corrupt the run.
    """
    saved, want = _shapes(saved_metadata), _shapes(target, prefix)
    missing = sorted(set(want) - set(saved))
    if missing:
        raise CheckpointMismatchError(
            f"checkpoint {where} has no array {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ": it was saved for another model or optimizer; use another MODEL_DIR or "
            "the checkpoint's own settings"
        )
    for path in sorted(want):
        if saved[path][0] != want[path][0]:
            raise CheckpointMismatchError(
                f"checkpoint {where} holds {path} with shape {saved[path][0]}, but this run's "
                f"model needs {want[path][0]}: the checkpoint was saved with another model "
                "config (e.g. vocab_size or dimensions); use that config, or another MODEL_DIR"
            )


def _numpy_restore_args(metadata: Any) -> ocp.args.PyTreeRestore:
    tree = getattr(metadata, "tree", metadata)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return ocp.args.PyTreeRestore(item=tree, restore_args=restore_args)


# ---------------------------------------------------------------- reading by path


def is_step_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is one complete t0x step dir (`state/` and t0x `meta/metadata`)."""
    p = epath.Path(os.fspath(path))
    meta = p / META_ITEM / "metadata"
    if not ((p / STATE_ITEM).is_dir() and meta.exists()):
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except (ValueError, AttributeError):
        return False


def step_dir(path: str | os.PathLike, step: int | None = None) -> epath.Path:
    """The step dir for `path`: itself if it is one, else `step` (default latest) of a store."""
    p = epath.Path(os.fspath(path))
    if step is None and is_step_dir(p):
        return p
    if not p.is_dir():
        raise CheckpointNotFoundError(f"no t0x checkpoint at {p}: not a directory.")
    store = CheckpointStore(p, read_only=True)
    try:
        chosen = store._existing(step)  # pylint: disable=protected-access
    finally:
        store.close()
    return p / str(chosen)


def read_meta(path: str | os.PathLike) -> dict:
    """The JSON meta of a step dir, or of the latest step of a store."""
    d = step_dir(path)
    return json.loads((d / META_ITEM / "metadata").read_text())


def restore_params(path: str | os.PathLike, abstract_params: Any = None) -> Any:
    """Only the `params` subtree of a t0x checkpoint (store dir: latest step; or a step dir).

    For finetuning or eval from a checkpoint: optimizer state is never read. With
    `abstract_params` the arrays land on its shardings; else host numpy arrays.
    """
    where = step_dir(path)
    state_dir = where / STATE_ITEM
    handler = ocp.PyTreeCheckpointHandler()
    try:
        try:
            tree = handler.metadata(state_dir).tree
        except Exception as e:  # noqa: BLE001 - unreadable metadata is damage
            raise _damaged(where, f"its metadata cannot be read ({_first_line(e)})") from e
        if not isinstance(tree, Mapping) or PARAMS_KEY not in tree:
            keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
            raise KeyError(
                f"t0x checkpoint state at {state_dir} has no '{PARAMS_KEY}' (has {keys})."
            )
        if abstract_params is None:
            item = tree[PARAMS_KEY]
            args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
        else:
            item = abstract_params
            args = ocp.checkpoint_utils.construct_restore_args(abstract_params)
        if abstract_params is not None:
            check_target(tree, abstract_params, where, prefix=PARAMS_KEY + "/")
        try:
            out = handler.restore(
                state_dir,
                args=ocp.args.PyTreeRestore(
                    item={PARAMS_KEY: item}, restore_args={PARAMS_KEY: args}, partial_restore=True
                ),
            )
        except Exception as e:  # noqa: BLE001 - tensorstore / OCDBT read errors of every kind
            raise _damaged(where, f"its files cannot be read ({_first_line(e)})") from e
    finally:
        handler.close()
    verify(out[PARAMS_KEY], read_meta(where), where, prefix=PARAMS_KEY + "/")
    return out[PARAMS_KEY]


# ---------------------------------------------------------------- preemption


def reached_preemption(step: int) -> bool:
    """True once JAX's preemption service says all hosts reached a sync point at `step`.

    Collective: every process must call it at every step. Needs `jax.distributed`
    (the coordination service notices SIGTERM on any host); False when unavailable.
    """
    try:
        from jax.experimental import multihost_utils

        return bool(multihost_utils.reached_preemption_sync_point(step))
    except (ImportError, AttributeError, RuntimeError):
        return False


class SigtermFlag:
    """Callable returning True once SIGTERM arrived; `uninstall()` restores the old handler.

    Per-process: in a multi-host job let `reached_preemption` decide (it agrees across
    hosts); this flag is for single-process runs, where it can be OR-ed in.
    """

    def __init__(self, previous: Any):
        self._event = threading.Event()
        self._previous = previous

    def __call__(self) -> bool:
        return self._event.is_set()

    def _handle(self, signum: int, frame: Any) -> None:
        self._event.set()
        log.warning("SIGTERM received: will save a checkpoint and exit")
        if callable(self._previous):
            self._previous(signum, frame)

    def uninstall(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def install_sigterm_handler() -> SigtermFlag:
    """Flags SIGTERM instead of dying, so the trainer can save and exit cleanly.

    Call from the main thread. A previous Python handler still runs after the flag is set.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_sigterm_handler must be called from the main thread.")
    flag = SigtermFlag(signal.getsignal(signal.SIGTERM))
    signal.signal(signal.SIGTERM, flag._handle)  # pylint: disable=protected-access
    return flag
