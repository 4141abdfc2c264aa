"""The errors t0x raises for expected failures, and the exit code of each.

Vocabulary:
  expected failure  something the user can fix: a setting, a name, an input file, a
                    checkpoint. Raised as a `T0xError` subclass whose message is one line
                    that names the thing and the fix. The CLI prints `t0x <cmd>: error: <msg>`
                    and exits with the class's `exit_code`, without a traceback (`--debug`
                    shows it). Anything else is a bug and keeps its traceback.
  exit codes        0 success; 1 unexpected error (a bug: traceback); 2 usage or
                    configuration (`ConfigError`, `OutputExistsError`); 3 data: names, caches,
                    rows (`DataError`, and t0_tasks' `T0TasksError`); 4 checkpoint
                    (`CheckpointError` and subclasses); 5 training diverged
                    (`NonFiniteLossError`); 143 stopped by SIGTERM after saving (`Preempted`;
                    rerun the same command to resume).

Each class also derives from the builtin exception it refines (ValueError,
FileNotFoundError, ...), so code that caught the builtin keeps working.
"""

from __future__ import annotations


class T0xError(Exception):
    """Base class of t0x's expected failures."""

    exit_code = 1


class ConfigError(T0xError, ValueError):
    """A setting, flag or gin binding is invalid or inconsistent."""

    exit_code = 2


class OutputExistsError(T0xError, FileExistsError):
    """An output would overwrite something the user has; pass --overwrite to allow it."""

    exit_code = 2


class DataError(T0xError, ValueError):
    """A task, mixture, cache or input file cannot be used as given."""

    exit_code = 3


class CheckpointError(T0xError, ValueError):
    """A checkpoint is missing, damaged, or does not match the run."""

    exit_code = 4


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No (such) checkpoint; the message names the directory and what is there."""


class CheckpointDamagedError(CheckpointError):
    """A checkpoint's files do not hold what was saved (checksum mismatch, truncation)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was saved for another model, vocabulary or input stream."""


class NonFiniteLossError(T0xError, FloatingPointError):
    """Training produced NaN/Inf; nothing non-finite was saved."""

    exit_code = 5


class Preempted(T0xError):
    """The job stopped on SIGTERM after saving; rerunning the same command resumes."""

    exit_code = 143


def exit_code(error: BaseException) -> int | None:
    """The documented exit code of an expected failure; None for anything else (a bug)."""
    if isinstance(error, T0xError):
        return error.exit_code
    try:
        from t0_tasks.errors import T0TasksError
    except ImportError:  # pragma: no cover - t0_tasks is always installed with t0x
        return None
    if isinstance(error, T0TasksError):
        return DataError.exit_code
    return None
