"""The base class of t0_tasks' expected failures.

Every error t0_tasks raises on purpose (an unknown task name, missing rows, a partial cache,
a template that does not fit a row, a malformed data file) derives from `T0TasksError` and
from the builtin it refines, and its message is one line naming the thing and the fix. The
`t0x` CLI reports them as data errors (exit code 3). This package never imports t0x.
"""

from __future__ import annotations


class T0TasksError(Exception):
    """Base class of t0_tasks' expected failures."""
