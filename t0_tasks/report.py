"""What the `t0x tasks` commands print: names, rendered examples, mixture statistics.

Statistics answer "how much of each task does a run see": a mixture samples task t with
probability share(t) = rate(t) / sum of rates, so a run of `steps` steps at `batch_size`
sequences, each holding `examples_per_sequence` examples (1 without packing; packing puts
several short examples in one sequence), sees steps * batch_size * examples_per_sequence *
share(t) examples of t, i.e. that many / (rows in t's train split) epochs of it.
"""

from __future__ import annotations

import dataclasses
import difflib

import seqio

from t0_tasks import accounting, registry, xp3
from t0_tasks.errors import T0TasksError


class UnknownNameError(T0TasksError, KeyError):
    def __str__(self):  # KeyError quotes its message; print it plainly
        return str(self.args[0])


def resolve(name: str, kind: str = "task or mixture") -> str:
    """`name` if registered, else an UnknownNameError suggesting close matches."""
    names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
    if name in names:
        return name
    close = difflib.get_close_matches(name, sorted(names), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else " See `t0x tasks list`."
    if name.split("_")[0] in (xp3.XP3, xp3.XP3MT) and not close:
        # xP3 tasks exist only once t0_tasks knows where the release folder is
        hint = (
            f" xP3 tasks and mixtures are registered from the release folder: set "
            f"{xp3.ENV_XP3_DIR} (and {xp3.ENV_XP3MT_DIR} for xp3mt) to the folder holding "
            "<lang>/merged_<lang>.jsonl (a local path or gs://)."
        )
    raise UnknownNameError(f"unknown {kind} {name!r}.{hint}")


def list_names(mixture: str | None = None) -> list[str]:
    reg = registry.current()
    if mixture is None:
        return sorted(reg.task_names())
    resolve(mixture, "mixture")
    return [t.name for t in seqio.get_mixture_or_task(mixture).tasks]


def examples(task: str, split: str = "validation", n: int = 3) -> list[dict]:
    """The first `n` rendered rows of a task split: `inputs`, `targets`, `answer_choices`.

    Read from the task's source, before tokenization, so no vocabulary is needed.
    `accounting.COUNTS.get(task, split)` then tells what rendering did with the rows read.
    """
    resolve(task, "task")
    t = seqio.get_mixture_or_task(task)
    if split not in t.splits:
        raise UnknownNameError(f"task {task!r} has no split {split!r}; it has {list(t.splits)}")
    ds = t.source.get_dataset(split=split, shuffle=False).take(n)
    return [{k: _plain(v) for k, v in ex.items()} for ex in ds.as_numpy_iterator()]


def accounting_line(task: str, split: str) -> str:
    """What rendering did with the rows read so far of a task split (for `tasks show`)."""
    c = accounting.COUNTS.get(task.removesuffix("_score_eval"), split)
    read = c["rendered"] + c["dropped"]
    empty = "dropped (training split)" if split == "train" else "kept as <NO LABEL>"
    return (
        f"rows read: {read}; rendered {c['rendered']}, dropped by the template "
        f"{c['dropped']}, empty targets {c['empty_target']} ({empty})"
    )


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class TaskShare:
    task: str
    rate: float
    share: float
    examples_seen: float
    train_examples: int | None
    epochs: float | None


def mixture_stats(
    mixture: str, steps: int = 0, batch_size: int = 0, examples_per_sequence: float = 1.0
) -> list[TaskShare]:
    resolve(mixture, "mixture")
    reg = registry.current()
    members = reg.mixtures.get(mixture) or [
        (t.name, seqio.get_mixture_or_task(mixture).get_rate(t))
        for t in seqio.get_mixture_or_task(mixture).tasks
    ]
    total = sum(rate for _, rate in members) or 1.0
    rows = []
    for task, rate in members:
        share = rate / total
        seen = steps * batch_size * examples_per_sequence * share
        try:
            spec = reg.spec_of(task)
            size = (
                spec.dataset.split_size(spec.source_split("train"))
                if "train" in spec.splits
                else None
            )
        except KeyError:  # not a catalog task (xP3, custom): ask seqio
            obj = seqio.get_mixture_or_task(task)
            size = obj.num_input_examples("train") if "train" in obj.splits else None
        rows.append(TaskShare(task, rate, share, seen, size, seen / size if size else None))
    return rows


def count_rows(task: str, split: str = "train") -> dict[str, int]:
    """Renders a whole task split and returns its accounting (rendered, dropped, empty
    targets); reads every row, so use it on local or modest data."""
    resolve(task, "task")
    t = seqio.get_mixture_or_task(task)
    if split not in t.splits:
        return dict.fromkeys(accounting.FIELDS, 0)
    name = task.removesuffix("_score_eval")
    before = accounting.COUNTS.get(name, split)
    for _ in t.source.get_dataset(split=split, shuffle=False).as_numpy_iterator():
        pass
    after = accounting.COUNTS.get(name, split)
    return {k: after[k] - before[k] for k in accounting.FIELDS}
