"""BIG-bench JSON tasks formatted as BIG-bench formats them zero-shot, scored by rank classification.

Vocabulary:
  tasks dir     a folder of BIG-bench task folders, `<tasks dir>/<task>/task.json`: the folder
                named by the setting `bigbench_dir` / `T0_BIGBENCH_DIR` (it, its
                `benchmark_tasks/` or its `bigbench/benchmark_tasks/`), else the
                `bigbench/benchmark_tasks/` of an installed `bigbench` package, located with
                importlib's find_spec and never imported (importing it pulls TensorFlow, bleurt).
  container     a task whose task.json has no `examples`; its subtasks are its subfolders holding
                a task.json, in sorted path order. BIG-bench names a subtask
                `<task name>:<subtask name>` and scores a container by the unweighted mean of
                its subtasks' grades (`container_grade`).
  leaf          a task with examples (a task without subtasks, or a subtask): one seqio Task,
                `bigbench_<task>` or `bigbench_<task>_<subtask>` (folder names; runs of
                characters outside [A-Za-z0-9._] -> "_", as P3's names).
  example       one distinct entry of a leaf's `examples`: BIG-bench drops exact duplicates
                (compared as `json.dumps` strings), keeping the first.
  prompt        what the model is conditioned on, BIG-bench's zero-shot input:
                  task_prefix + example_input_prefix + input
                  [+ choice_prefix + choice_prefix.join(shown choices)] + example_output_prefix
                with BIG-bench's defaults "", "\\nQ: ", "\\n  choice: ", "\\nA: ". Choices are shown
                when `append_choices_to_input` (default True) is truthy in Python's sense (so
                logic_grid_puzzle's string "false" shows them, as in BIG-bench), in the order
                `np.random.RandomState(42).permutation(sorted(choices))`, a fresh generator per
                example. Nothing is stripped.
  choices       what the model scores, each as the target given the prompt: the target_scores
                keys in file order (BIG-bench's `sample["choice"]`), not the shown order.
  grade         BIG-bench's `multiple_choice_grade`: the mean over examples of the target score
                of the argmax choice. BIG-bench's model returns absolute log-probabilities
                (`cond_log_prob(..., absolute_normalization=True)`); the argmax is taken over
                them normalised by their logsumexp (unless the task sets
                `absolute_normalization`), ties broken by a sha256 of those float64 values.
  max_examples  BIG-bench's cap: `RandomState(42).choice(examples, n, replace=False)`, in that
                order, when n < the leaf's examples; a container gives each subtask
                n // (number of subtasks).

seqio: a leaf's source yields, on split `all` (BIG-bench has no splits; bbseqio calls the whole
task `all` too), one row per example: `inputs` (the prompt), `targets` (the first top-scored
choice), `answer_choices`, `target_scores`. Its task expands each row into one example per
choice shaped like t0_tasks' `_score_eval` twins (`inputs`, `targets` = the choice, `idx` =
[row, choice], `is_correct` = the choice has the row's top score, `weight` 1.0) plus
`target_score` (float32), tokenizes, appends EOS to `targets` only and leaves a cache
placeholder. Its score metric `multiple_choice_grade` is the grade in percent.
`register(vocabulary, source)` reads only containers' small task.json files; leaves' files are
read when a dataset is iterated or counted. Nothing here touches the network.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import importlib.resources
import importlib.util
import json
import os
import re
import statistics
from typing import Any, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from t0_tasks import tasks as t0_task_builders
from t0_tasks.p3 import CachedTask

SPLIT = "all"
SEED = 42  # BIG-bench's default random_seed (choice order, max_examples sampling)
PREFIX = "bigbench_"
MIXTURE = "bigbench_t0"
METRIC = "multiple_choice_grade"
ENV_DIR = "T0_BIGBENCH_DIR"
TASK_FILE = "task.json"
HOW_TO_GET = (
    f"set {ENV_DIR} to the bigbench/benchmark_tasks folder of a BIG-bench checkout (git clone "
    "https://github.com/google/BIG-bench) or of the bigbench 1.0.0 sdist, or "
    "`pip install bigbench==1.0.0 --no-deps` (pip 26 refuses it for its file-URL dependency)"
)
_NAME_RE = re.compile(r"[^A-Za-z0-9._]+")


# ---------------------------------------------------------------------------------------------
# The T0 suite (the 14 tasks of the T0 model card), packaged in data/bigbench_t0_tasks.csv.


@dataclasses.dataclass(frozen=True)
class SuiteLeaf:
    card_name: str  # the task's name on the T0 model card
    task: str
    subtask: str | None
    examples: int  # entries in task.json
    distinct_examples: int  # what BIG-bench scores (duplicates dropped)
    choices_per_example: str


@functools.cache
def t0_suite_table() -> tuple[SuiteLeaf, ...]:
    """One row per leaf of the T0 suite, as found in the bigbench 1.0.0 package."""
    text = importlib.resources.files("t0_tasks").joinpath("data", "bigbench_t0_tasks.csv")
    rows = csv.DictReader(text.read_text(encoding="utf-8").splitlines())
    return tuple(
        SuiteLeaf(
            r["t0_card_name"],
            r["task_dir"],
            r["subtask"] or None,
            int(r["examples"]),
            int(r["distinct_examples"]),
            r["choices_per_example"],
        )
        for r in rows
    )


T0_SUITE: tuple[str, ...] = tuple(dict.fromkeys(leaf.task for leaf in t0_suite_table()))


# ---------------------------------------------------------------------------------------------
# Finding tasks.


def tasks_dir_in(folder: str) -> str | None:
    """The tasks dir in `folder`: its bigbench/benchmark_tasks, its benchmark_tasks or itself."""
    for candidate in (
        os.path.join(folder, "bigbench", "benchmark_tasks"),
        os.path.join(folder, "benchmark_tasks"),
        folder,
    ):
        if os.path.isdir(candidate):
            return candidate
    return None


def locate(source: Any = None) -> tuple[str | None, str]:
    """(tasks dir or None, where it was looked for / why none was found).

    `source`: a folder, or settings with a `bigbench_dir`; None or unset -> T0_BIGBENCH_DIR,
    then the installed `bigbench` package (found, not imported).
    """
    if isinstance(source, (str, os.PathLike)):
        folder, origin = os.fspath(source), "the given folder"
    else:
        folder, origin = getattr(source, "bigbench_dir", None), "the setting bigbench_dir"
    if not folder and os.environ.get(ENV_DIR):
        folder, origin = os.environ[ENV_DIR], ENV_DIR
    if folder:
        found = tasks_dir_in(folder)
        return found, f"{origin} ({folder})" if found else f"{origin} ({folder}) does not exist"
    try:
        spec = importlib.util.find_spec("bigbench")
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        found = os.path.join(root, "benchmark_tasks")
        if os.path.isdir(found):
            return found, f"the installed bigbench package ({found})"
    return None, f"{ENV_DIR} is unset and no bigbench package is installed"


@dataclasses.dataclass(frozen=True)
class Leaf:
    """A BIG-bench task with examples: a task folder, or one subtask folder of a container."""

    tasks_dir: str
    task: str
    subtask: str | None

    @property
    def path(self) -> str:
        return os.path.join(
            self.tasks_dir, self.task, *([self.subtask] if self.subtask else []), TASK_FILE
        )

    @property
    def name(self) -> str:
        """Its seqio task name."""
        return _NAME_RE.sub("_", PREFIX + self.task + (f"_{self.subtask}" if self.subtask else ""))


def read_task_json(path: str) -> dict:
    with open(path, "rb") as f:
        return json.load(f)


def leaves(tasks_dir: str, task: str) -> list[Leaf]:
    """The leaves of `task`: itself, or its subtasks (BIG-bench's rule, see the docstring).

    Reads the task's own task.json only when it has subfolders with a task.json.
    """
    task_dir = os.path.join(tasks_dir, task)
    if not os.path.isfile(os.path.join(task_dir, TASK_FILE)):
        raise FileNotFoundError(
            f"BIG-bench task {task!r}: no {os.path.join(task_dir, TASK_FILE)}; {HOW_TO_GET}"
        )
    subtask_files = sorted(
        os.path.join(task_dir, d, TASK_FILE)
        for d in os.listdir(task_dir)
        if os.path.isfile(os.path.join(task_dir, d, TASK_FILE))
    )
    if not subtask_files or "examples" in read_task_json(os.path.join(task_dir, TASK_FILE)):
        return [Leaf(tasks_dir, task, None)]
    return [Leaf(tasks_dir, task, os.path.basename(os.path.dirname(p))) for p in subtask_files]


# ---------------------------------------------------------------------------------------------
# Formatting (bigbench.api.json_task: JsonTask.load_and_process_json, default_format_fn).


@dataclasses.dataclass(frozen=True)
class Format:
    task_prefix: str = ""
    input_prefix: str = "\nQ: "
    choice_prefix: str = "\n  choice: "
    output_prefix: str = "\nA: "
    append_choices: bool = True
    absolute_normalization: bool = False

    @classmethod
    def of(cls, task_json: Mapping) -> "Format":
        """A leaf's format from its task.json, with BIG-bench's defaults and truthiness."""
        default = cls()
        return cls(
            task_prefix=str(task_json.get("task_prefix", default.task_prefix)),
            input_prefix=task_json.get("example_input_prefix", default.input_prefix),
            choice_prefix=task_json.get("choice_prefix", default.choice_prefix),
            output_prefix=task_json.get("example_output_prefix", default.output_prefix),
            append_choices=bool(task_json.get("append_choices_to_input", True)),
            absolute_normalization=bool(task_json.get("absolute_normalization", False)),
        )


@dataclasses.dataclass(frozen=True)
class Example:
    prompt: str
    choices: tuple[str, ...]  # scored, in target_scores order
    target_scores: tuple[float, ...]  # as in the file (ints stay ints)
    target: str  # the first top-scored choice


@functools.lru_cache(maxsize=None)
def _permutation(seed: int, n: int) -> np.ndarray:
    """`RandomState(seed).permutation(a)` of any n items is `a[_permutation(seed, n)]`: the
    shuffle draws depend on n only (a fresh generator costs ~1 ms, so it is made once per n)."""
    return np.random.RandomState(seed=seed).permutation(n)


def format_example(example: Mapping, fmt: Format, seed: int = SEED) -> Example:
    """BIG-bench's zero-shot prompt and choices of one example."""
    if "input" not in example or "target_scores" not in example:
        raise ValueError(
            f"BIG-bench example {str(example)[:80]!r} has no input or target_scores; only "
            "multiple-choice tasks can be scored by rank classification"
        )
    scores = example["target_scores"]
    text = example["input"]
    if fmt.append_choices:
        shown = np.asarray(sorted(scores))[_permutation(seed, len(scores))]
        text = text + fmt.choice_prefix + fmt.choice_prefix.join(shown)
    top, low = max(scores.values()), min(scores.values())
    if "target" not in example and (
        (len(scores) == 1 and top == 0) or (len(scores) > 1 and top <= low)
    ):
        raise ValueError(f"No correct choice provided in example: {example}")
    return Example(
        prompt=fmt.task_prefix + fmt.input_prefix + text + fmt.output_prefix,
        choices=tuple(scores),
        target_scores=tuple(scores.values()),
        target=next(k for k, v in scores.items() if v == top),
    )


def distinct(examples: Sequence[Mapping]) -> list[Mapping]:
    """The examples without exact duplicates (as `json.dumps` strings), first kept."""
    seen, out = set(), []
    for ex in examples:
        key = json.dumps(ex)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def select_examples(items: Sequence, max_examples: int | None, seed: int = SEED) -> list:
    """BIG-bench's zero-shot subsample (`make_nshot_dataset`): all items when uncapped."""
    if max_examples and max_examples < len(items):
        picked = np.random.RandomState(seed=seed).choice(len(items), max_examples, replace=False)
        return [items[i] for i in picked]
    return list(items)


def _ascii(name: str) -> str:
    return name.encode("ascii", errors="replace").decode()


@dataclasses.dataclass(frozen=True)
class LeafData:
    name: str  # BIG-bench's, e.g. "conceptual_combinations:contradictions"
    format: Format
    examples: tuple[Example, ...]


@functools.lru_cache(maxsize=2)
def load_leaf(leaf: Leaf, max_examples: int | None = None) -> LeafData:
    """A leaf's formatted examples in BIG-bench's order (capped as BIG-bench caps them)."""
    data = read_task_json(leaf.path)
    if "examples" not in data:
        raise ValueError(f"BIG-bench task {leaf.path} has no examples and no subtasks")
    name = _ascii(data["name"])
    if leaf.subtask:
        parent = read_task_json(os.path.join(leaf.tasks_dir, leaf.task, TASK_FILE))
        name = f"{_ascii(parent['name'])}:{name}"
    fmt = Format.of(data)
    try:
        examples = [format_example(ex, fmt) for ex in distinct(data["examples"])]
    except ValueError as e:
        raise ValueError(f"BIG-bench task {name} ({leaf.path}): {e}") from e
    return LeafData(name, fmt, tuple(select_examples(examples, max_examples)))


# ---------------------------------------------------------------------------------------------
# Grading (bigbench.api.task_metrics.measure_multiple_choice_grade, argmax; results aggregation).


def bigbench_argmax(values: Sequence[float]) -> int:
    """BIG-bench's argmax: ties broken by a sha256 of the float64 values."""
    array = np.asarray(values, dtype=np.float64)
    max_indices = np.arange(len(array))[array == np.max(array)]
    digest = int(hashlib.sha256(array.tobytes()).hexdigest(), 16)
    return int(max_indices[digest % len(max_indices)])


def normalized_log_probs(log_probs: Sequence[float]) -> list[float]:
    from scipy.special import logsumexp

    values = np.asarray(log_probs, dtype=np.float64)
    return list(values - logsumexp(values))


def multiple_choice_grade(
    choice_log_probs: Sequence[Sequence[float]],
    target_scores: Sequence[Sequence[float]],
    absolute_normalization: bool = False,
) -> float:
    """BIG-bench's grade in [0, 1] of examples, given per example the absolute log-probabilities
    of its choices and their target scores, both in choice (target_scores) order."""
    if not choice_log_probs or len(choice_log_probs) != len(target_scores):
        raise ValueError(
            f"multiple_choice_grade needs one list of log-probs per example and as many target "
            f"score lists; got {len(choice_log_probs)} and {len(target_scores)}"
        )
    total = 0
    for log_probs, scores in zip(choice_log_probs, target_scores):
        if len(log_probs) != len(scores):
            raise ValueError(f"{len(log_probs)} log-probs for {len(scores)} choices")
        values = [float(v) for v in log_probs]
        total += scores[
            bigbench_argmax(values if absolute_normalization else normalized_log_probs(values))
        ]
    return total / len(choice_log_probs)


def container_grade(subtask_grades: Sequence[float]) -> float:
    """A container task's grade: the unweighted mean of its subtasks' (BIG-bench's aggregate)."""
    return statistics.mean(subtask_grades)


# ---------------------------------------------------------------------------------------------
# seqio.


def _row_dataset(split, shuffle_files, seed=None, *, leaf: Leaf, max_examples: int | None):
    """The seqio dataset_fn: one row per example, in BIG-bench's order."""
    del shuffle_files, seed  # rows come in BIG-bench's order; seqio shuffles downstream

    def generate():
        for ex in load_leaf(leaf, max_examples).examples:
            yield {
                "inputs": ex.prompt,
                "targets": ex.target,
                "answer_choices": list(ex.choices),
                "target_scores": [float(s) for s in ex.target_scores],
            }

    signature = {
        "inputs": tf.TensorSpec([], tf.string),
        "targets": tf.TensorSpec([], tf.string),
        "answer_choices": tf.TensorSpec([None], tf.string),
        "target_scores": tf.TensorSpec([None], tf.float32),
    }
    return tf.data.Dataset.from_generator(generate, output_signature=signature)


class LeafSource(seqio.FunctionDataSource):
    """A leaf's rows; counting them reads (and caches) the leaf."""

    def __init__(self, leaf: Leaf, max_examples: int | None):
        fn = functools.partial(_row_dataset, leaf=leaf, max_examples=max_examples)
        super().__init__(fn, splits=(SPLIT,))
        self.leaf, self.max_examples = leaf, max_examples

    def num_input_examples(self, split: str) -> int | None:
        if split != SPLIT:
            return None
        return len(load_leaf(self.leaf, self.max_examples).examples)


def expand_choices(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Rows -> one rank-classification example per choice (see the module docstring)."""

    def expand(row, ex):
        n = tf.shape(ex["answer_choices"])[0]
        scores = tf.cast(ex["target_scores"], tf.float32)
        return tf.data.Dataset.from_tensor_slices(
            {
                "idx": tf.stack(
                    [tf.fill([n], tf.cast(row, tf.int32)), tf.range(n, dtype=tf.int32)], axis=1
                ),
                "inputs": tf.fill([n], ex["inputs"]),
                "targets": ex["answer_choices"],
                "is_correct": tf.equal(scores, tf.reduce_max(scores)),
                "weight": tf.ones([n], tf.float32),
                "target_score": scores,
            }
        )

    return dataset.enumerate().flat_map(expand)


def postprocess_fn(output_or_target, example=None, is_target=False):
    """Targets -> (row, choice, target score) of the example; scores pass through."""
    if is_target:
        return (int(example["idx"][0]), int(example["idx"][1]), float(example["target_score"]))
    return output_or_target


def grade_metric(
    targets: Sequence[tuple],
    scores: Sequence[float],
    *,
    leaf: Leaf | None = None,
    max_examples: int | None = None,
):
    """seqio score metric: BIG-bench's grade, in percent, of per-choice (target, score) pairs.

    `targets` come from `postprocess_fn`; the leaf (when given) says whether BIG-bench
    normalises the log-probs (it only changes how ties are broken).
    """
    rows: dict[int, list[tuple[int, float, float]]] = {}
    for (row, choice, target_score), score in zip(targets, scores):
        rows.setdefault(row, []).append((choice, target_score, float(score)))
    if not rows:
        return {METRIC: float("nan")}
    log_probs, target_scores = [], []
    for choices in rows.values():
        choices.sort()
        log_probs.append([s for _, _, s in choices])
        target_scores.append([t for _, t, _ in choices])
    absolute = load_leaf(leaf, max_examples).format.absolute_normalization if leaf else False
    return {METRIC: 100.0 * multiple_choice_grade(log_probs, target_scores, absolute)}


# ---------------------------------------------------------------------------------------------
# Registration.


@dataclasses.dataclass
class Registered:
    tasks_dir: str | None
    tasks: dict[str, Leaf]  # seqio task name -> leaf
    mixtures: dict[str, list[str]]  # mixture -> its seqio task names
    missing: tuple[str, ...]  # requested tasks not found
    message: str | None  # one line: why (part of) the suite is unavailable

    def group_of(self, task_name: str) -> str | None:
        """`bigbench/<task>` for a subtask's seqio task (its container), else None."""
        leaf = self.tasks.get(task_name)
        return f"bigbench/{leaf.task}" if leaf and leaf.subtask else None

    def label_of(self, task_name: str) -> str | None:
        """The report name of a BIG-bench seqio task: `bigbench/<task>[:<subtask>]`."""
        leaf = self.tasks.get(task_name)
        if leaf is None:
            return None
        return f"bigbench/{leaf.task}" + (f":{leaf.subtask}" if leaf.subtask else "")


_current = Registered(None, {}, {}, (), None)


def unregister() -> None:
    """Removes every task and mixture the last `register` added."""
    global _current
    t0_task_builders.unregister(_current.tasks, _current.mixtures)
    _current = Registered(None, {}, {}, (), None)


def _leaf_caps(n_leaves: int, max_examples: int | None, task: str) -> int | None:
    if not max_examples or n_leaves == 1:
        return max_examples
    if max_examples // n_leaves < 1:
        raise ValueError(
            f"for task {task}: max_examples ({max_examples}) must be >= number of subtasks "
            f"({n_leaves})"
        )
    return max_examples // n_leaves


def register(
    vocabulary: seqio.Vocabulary,
    source: Any = None,
    *,
    tasks: Sequence[str] | None = None,
    max_examples: int | None = None,
) -> Registered:
    """(Re-)registers a seqio Task per leaf of `tasks` (default: the T0 suite), a mixture
    `bigbench_<task>` per container, and `bigbench_t0` when every T0 suite task is present.

    `source`: see `locate`. No tasks dir: nothing is registered and `message` says how to get
    one. `max_examples` caps each task as BIG-bench does (see the docstring).
    """
    global _current
    unregister()
    requested = tuple(tasks or T0_SUITE)
    tasks_dir, where = locate(source)
    if tasks_dir is None:
        message = f"BIG-bench tasks are not registered: {where}; {HOW_TO_GET}"
        _current = Registered(None, {}, {}, requested, message)
        return _current
    features = t0_task_builders.output_features(vocabulary)
    registered: dict[str, Leaf] = {}
    mixtures: dict[str, list[str]] = {}
    missing = []
    for task in requested:
        try:
            task_leaves = leaves(tasks_dir, task)
        except FileNotFoundError:
            missing.append(task)
            continue
        cap = _leaf_caps(len(task_leaves), max_examples, task)
        for leaf in task_leaves:
            _add_task(leaf, features, cap)
            registered[leaf.name] = leaf
        if task_leaves[0].subtask:
            mixtures[_NAME_RE.sub("_", PREFIX + task)] = [leaf.name for leaf in task_leaves]
    if set(T0_SUITE) <= set(requested) and not set(missing) & set(T0_SUITE):
        mixtures[MIXTURE] = [n for n, leaf in registered.items() if leaf.task in T0_SUITE]
    for name, members in mixtures.items():
        seqio.MixtureRegistry.add(name, members, default_rate=1.0)
    message = None
    if missing:
        message = (
            f"BIG-bench tasks {missing} are not in {where}"
            + (f", so {MIXTURE} is not registered" if set(missing) & set(T0_SUITE) else "")
            + f"; {HOW_TO_GET}"
        )
    _current = Registered(tasks_dir, registered, mixtures, tuple(missing), message)
    return _current


def _add_task(leaf: Leaf, features: dict, max_examples: int | None) -> None:
    seqio.TaskRegistry.add_provider(
        leaf.name,
        CachedTask(
            leaf.name,
            LeafSource(leaf, max_examples),
            output_features=features,
            preprocessors=[
                expand_choices,
                seqio.preprocessors.tokenize,
                seqio.preprocessors.append_eos,
                seqio.CacheDatasetPlaceholder(required=False),
            ],
            postprocess_fn=postprocess_fn,
            metric_fns=[functools.partial(grade_metric, leaf=leaf, max_examples=max_examples)],
        ),
    )


def current() -> Registered:
    return _current


def unavailable_message(name: str) -> str | None:
    """One line saying why BIG-bench task or mixture `name` is not registered; None when it is
    registered or is not a BIG-bench name."""
    if not name.startswith(PREFIX) or name in _current.tasks or name in _current.mixtures:
        return None
    if _current.message:
        return _current.message
    if _current.tasks_dir is None:
        return (
            f"BIG-bench tasks are not registered (t0_tasks.suites.bigbench.register); {HOW_TO_GET}"
        )
    return f"no BIG-bench task {name!r} in {_current.tasks_dir}"
