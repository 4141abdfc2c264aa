"""xP3 / xP3mt — BigScience's multilingual prompted data (mT0, BLOOMZ) — as seqio Tasks.

Vocabulary:
  row             one non-blank line of an xP3 file: a JSON object with string fields `inputs`
                  and `targets` (already rendered; used verbatim). Other fields are kept aside.
  release layout  `<root>/<lang>/merged_<lang>.jsonl`, one file per language (deduplicated,
                  shuffled, no provenance), ~95 GB in all. `<root>` is a local folder, any
                  `tf.io.gfile` path (gs://...), or the hub (`hf://datasets/bigscience/xP3`).
  build layout    `<root>/<lang>/xp3_<dataset>_<subset>_<split>_<template>.jsonl`, the files
                  before merging ("/" and " " replaced by "_"): one (dataset, prompt) per file.
  xP3x rows       rows that also carry `language`, `dataset`, `config`, `split`, `template`.
  language task   `xp3_<lang>` (`xp3mt_<lang>` for xP3mt): every row of the language, read
                  from its release file(s), else from its build-layout files.
  prompt task     one (dataset, prompt): a build-layout file, named from its stem with every
                  run of characters outside [A-Za-z0-9._] replaced by "_" (P3's rule;
                  `xp3mt_...` for xP3mt), or an xP3x group (`register_xp3x`).
  weight          a language's share of xP3, BigScience's BLOOMZ sampling weights
                  (`data/xp3_language_weights.csv`, code upsampled ~1.3x; published sum
                  1.0137, normalised here over the languages of the mixture).

Mixtures (rates are normalised weights, summing to 1):
  xp3    one language task per language present, rate = the language's normalised weight.
  xp3mt  xP3 + xP3mt: a language keeps its xP3 weight, shared between `xp3_<lang>` and
         `xp3mt_<lang>` in proportion to their files' bytes (the weights are byte shares, so
         this samples the union as one per-language pool, as BigScience's per-language data
         folders were; equal halves when sizes are unknown, e.g. on the hub).
  `xp3_mixture(name, languages, include_mt)` builds the same over any language subset.
  Languages without a weight get tasks but no mixture share (logged). Prompt tasks are in no
  mixture: they hold the same rows as the language tasks.

Invariants:
  * rows stream line by line (a local file or tf.io.gfile; the hub through `datasets`' JSON
    loader with streaming=True); no file is ever read whole;
  * host i of n (seqio ShardInfo) reads a disjoint part and together the hosts read every row
    exactly once: by file when a task has at least n files, else by row (row k, counted over
    the task's files in order, goes to host k mod n);
  * a bad row fails with `XP3FormatError("<file>:<line>: <problem>; <fix>")`;
  * `register(...)` registers nothing at import and reads no row: it lists folders (and stats
    files for xp3mt shares). Sizes (`num_input_examples`) are counted only when asked, for
    local files, cached per (file, mtime, size); None elsewhere.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import importlib.resources
import json
import logging
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

import seqio
import tensorflow as tf

from t0_tasks import tasks
from t0_tasks.p3 import CachedTask

ENV_XP3_DIR = "T0_XP3_DIR"
ENV_XP3MT_DIR = "T0_XP3MT_DIR"
HUB_XP3 = "hf://datasets/bigscience/xP3"
HUB_XP3MT = "hf://datasets/bigscience/xP3mt"
SPLIT = "train"
XP3, XP3MT = "xp3", "xp3mt"  # task prefixes and mixture names
PROVENANCE_FIELDS = ("language", "dataset", "config", "split", "template")
WEIGHTS_FILE = "xp3_language_weights.csv"

_NAME_RE = re.compile(r"[^A-Za-z0-9._]+")
_ROW_FIX = (
    'each line of an xP3 file must be one JSON object with string fields "inputs" and '
    '"targets"; fix or remove that line'
)
log = logging.getLogger(__name__)


def sanitise(raw: str) -> str:
    """P3's task-name rule: every run of characters outside [A-Za-z0-9._] becomes "_"."""
    return _NAME_RE.sub("_", raw)


# ---------------------------------------------------------------- language weights


@functools.cache
def published_weights() -> dict[str, float]:
    """BigScience's per-language weights of xP3, as published (they sum to 1.0137)."""
    path = importlib.resources.files("t0_tasks") / "data" / WEIGHTS_FILE
    with path.open(encoding="utf-8", newline="") as f:
        return {row["language"]: float(row["weight"]) for row in csv.DictReader(f)}


def language_weights(languages: Iterable[str] | None = None) -> dict[str, float]:
    """Each language's share of xP3, renormalised to sum to 1 over `languages` (default all)."""
    table = published_weights()
    langs = list(table) if languages is None else list(dict.fromkeys(languages))
    unknown = [lang for lang in langs if lang not in table]
    if unknown:
        raise KeyError(
            f"no xP3 weight for language(s) {unknown}; t0_tasks/data/{WEIGHTS_FILE} has "
            f"{sorted(table)}"
        )
    if not langs:
        raise ValueError("give at least one language to weight")
    total = sum(table[lang] for lang in langs)
    return {lang: table[lang] / total for lang in langs}


# ---------------------------------------------------------------- reading rows


class XP3FormatError(ValueError):
    """A row of an xP3 file is malformed; the message names the file and the line."""


def _row_problem(row, required: Sequence[str] = ("inputs", "targets")) -> str | None:
    if not isinstance(row, dict):
        return f"not a JSON object (found {type(row).__name__})"
    missing = [key for key in required if key not in row]
    if missing:
        return f"missing field(s) {missing}"
    for key in required:
        if not isinstance(row[key], str):
            return f"field {key!r} is {type(row[key]).__name__}, not a string"
    return None


def parse_row(line: bytes | str, where: str) -> dict:
    """One line -> its row, or XP3FormatError naming `where` (`<file>:<line>`)."""
    try:
        row = json.loads(line)
    except UnicodeDecodeError as e:
        problem = f"not UTF-8 ({e.reason} at byte {e.start})"
    except json.JSONDecodeError as e:
        problem = f"invalid JSON ({e.msg} at column {e.colno})"
    else:
        problem = _row_problem(row)
        if problem is None:
            return row
    raise XP3FormatError(f"{where}: {problem}; {_ROW_FIX}")


class RowCounter:
    """Deals rows to shards: the k-th row read through it (over every file) goes to k mod n."""

    def __init__(self, index: int = 0, num_shards: int = 1):
        if not 0 <= index < num_shards:
            raise ValueError(f"shard index {index} is not in [0, {num_shards})")
        self.index, self.num_shards, self.rows = index, num_shards, 0

    def take(self) -> bool:
        mine = self.rows % self.num_shards == self.index
        self.rows += 1
        return mine


def read_rows(
    lines: Iterable[bytes | str],
    name: str,
    counter: RowCounter | None = None,
    keep: Callable[[dict], bool] | None = None,
) -> Iterator[dict]:
    """The rows of one file given as lines (a file object, a generator), one at a time.

    Blank lines are skipped. With `counter`, only this shard's rows are yielded (the others
    are not even parsed); with `keep`, only the rows it accepts are rows at all.
    """
    counter = counter or RowCounter()
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if keep is None and not counter.take():
            continue
        row = parse_row(line, f"{name}:{line_no}")
        if keep is not None and not (keep(row) and counter.take()):
            continue
        yield row


def is_url(path: str) -> bool:
    """Read through `datasets`' JSON loader (the hub: hf://, https://huggingface.co/...)."""
    return path.startswith(("hf://", "http://", "https://"))


def _is_local(path: str) -> bool:
    return "://" not in path


def open_lines(path: str):
    """A binary, line-iterable handle on a local file or any tf.io.gfile path (gs://...)."""
    return open(path, "rb") if _is_local(path) else tf.io.gfile.GFile(path, "rb")


def _hub_rows(url: str, counter: RowCounter, keep) -> Iterator[dict]:
    import datasets  # heavy; only when the hub is really used

    data = datasets.load_dataset("json", data_files={SPLIT: [url]}, split=SPLIT, streaming=True)
    for row_no, row in enumerate(data, 1):
        if keep is None and not counter.take():
            continue
        problem = _row_problem(row)
        if problem:
            raise XP3FormatError(f"{url}: row {row_no}: {problem}; {_ROW_FIX}")
        if keep is not None and not (keep(row) and counter.take()):
            continue
        yield row


def iter_rows(
    files: Sequence[str], shard_index: int = 0, num_shards: int = 1, keep=None
) -> Iterator[dict]:
    """The rows of `files` in order (this shard's, see RowCounter), streamed."""
    counter = RowCounter(shard_index, num_shards)
    for path in files:
        if is_url(path):
            yield from _hub_rows(path, counter, keep)
            continue
        with open_lines(path) as f:
            yield from read_rows(f, path, counter, keep)


def count_rows(path: str) -> int:
    """Rows in a local file, counted once per (path, mtime, size) in this process."""
    st = os.stat(path)
    return _count_rows(os.path.abspath(path), st.st_mtime_ns, st.st_size)


@functools.cache
def _count_rows(path: str, mtime_ns: int, size: int) -> int:
    del mtime_ns, size  # cache key: a changed file is counted again
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _file_bytes(path: str) -> int | None:
    if is_url(path):
        return None
    return os.path.getsize(path) if _is_local(path) else tf.io.gfile.stat(path).length


# ---------------------------------------------------------------- seqio source and task


class XP3Source(seqio.DataSource):
    """The rows of some xP3 files as `inputs`/`targets` strings (split "train").

    Supports any ShardInfo (see the module invariants); `shuffle` shuffles the order of this
    host's files when it reads whole files (seqio's shuffle buffer does the rest).
    """

    def __init__(self, files: Sequence[str], keep=None, num_examples: int | None = None):
        if not files:
            raise ValueError("an XP3Source needs at least one file")
        super().__init__(splits=(SPLIT,))
        self.files, self._keep, self._num_examples = tuple(files), keep, num_examples

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def _check(self, split: str) -> None:
        if split != SPLIT:
            raise ValueError(f"xP3 tasks have only the split {SPLIT!r}, not {split!r}")

    def list_shards(self, split: str) -> Sequence[str]:
        self._check(split)
        return list(self.files)

    def host_files(self, shard_info: seqio.ShardInfo | None) -> tuple[list[str], int, int]:
        """(files this host reads, row-shard index, row-shard count) for `shard_info`."""
        files, n = list(self.files), shard_info.num_shards if shard_info else 1
        if n == 1:
            return files, 0, 1
        if len(files) >= n:
            return files[shard_info.index :: n], 0, 1
        return files, shard_info.index, n

    def get_dataset(
        self,
        split: str = SPLIT,
        shuffle: bool = True,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        *,
        sequence_length=None,
        use_cached: bool = False,
        num_epochs: int | None = 1,
    ) -> tf.data.Dataset:
        del sequence_length, use_cached, num_epochs
        self._check(split)
        files, index, n = self.host_files(shard_info)
        if shuffle and n == 1 and len(files) > 1:  # row sharding needs one file order
            random.Random(seed if isinstance(seed, int) else None).shuffle(files)
        keep = self._keep

        def generate():
            for row in iter_rows(files, index, n, keep):
                yield {"inputs": row["inputs"], "targets": row["targets"]}

        spec = tf.TensorSpec([], tf.string)
        return tf.data.Dataset.from_generator(
            generate, output_signature={"inputs": spec, "targets": spec}
        )

    def num_input_examples(self, split: str) -> int | None:
        self._check(split)
        if self._num_examples is not None or self._keep is not None:
            return self._num_examples
        if not all(_is_local(f) for f in self.files):
            return None
        return sum(count_rows(f) for f in self.files)


class XP3Task(CachedTask):
    """A Task over xP3 files. It never caches its source in memory: seqio would first ask
    the source's size, i.e. count a multi-GB file, on every `get_dataset`."""

    def get_dataset(
        self,
        sequence_length=None,
        split: str = SPLIT,
        use_cached: bool = False,
        shuffle: bool = True,
        shuffle_buffer_size: int | None = None,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        num_epochs: int | None = 1,
        trim_output_features: bool = True,
        try_in_mem_cache: bool = True,
    ) -> tf.data.Dataset:
        del try_in_mem_cache
        return super().get_dataset(
            sequence_length=sequence_length,
            split=split,
            use_cached=use_cached,
            shuffle=shuffle,
            shuffle_buffer_size=shuffle_buffer_size,
            seed=seed,
            shard_info=shard_info,
            num_epochs=num_epochs,
            trim_output_features=trim_output_features,
            try_in_mem_cache=False,
        )


def _add_task(name: str, source: XP3Source, vocabulary: seqio.Vocabulary) -> str:
    seqio.TaskRegistry.add_provider(
        name,
        XP3Task(
            name,
            source,
            output_features=tasks.output_features(vocabulary),
            preprocessors=[
                seqio.preprocessors.tokenize,
                seqio.preprocessors.append_eos,
                seqio.CacheDatasetPlaceholder(required=False),
            ],
        ),
    )
    return name


# ---------------------------------------------------------------- discovery


@dataclasses.dataclass(frozen=True)
class LanguageFiles:
    language: str
    merged: tuple[str, ...]  # release layout
    build: tuple[str, ...]  # build layout: one (dataset, prompt) per file

    @property
    def files(self) -> tuple[str, ...]:
        """What the language task reads: the release file(s), else the build files."""
        return self.merged or self.build


def discover(root: str) -> dict[str, LanguageFiles]:
    """Language -> its files under `root` (for the hub: every weighted language)."""
    root = root.rstrip("/")
    if is_url(root):
        return {
            lang: LanguageFiles(lang, (f"{root}/{lang}/merged_{lang}.jsonl",), ())
            for lang in published_weights()
        }
    if not tf.io.gfile.isdir(root):
        raise FileNotFoundError(
            f"xP3 folder {root} does not exist; point {ENV_XP3_DIR} / {ENV_XP3MT_DIR} at a copy "
            f"holding <lang>/merged_<lang>.jsonl, or at {HUB_XP3}"
        )
    found: dict[str, dict[str, list[str]]] = {}
    for path in sorted(tf.io.gfile.glob(f"{root}/*/*.jsonl")):
        lang, base = path.split("/")[-2], path.split("/")[-1]
        kind = "merged" if base.startswith("merged") else "build" if base.startswith("xp3") else ""
        if not kind:
            log.warning("xP3: ignoring %s (neither merged_<lang>.jsonl nor xp3_*.jsonl)", path)
            continue
        found.setdefault(lang, {"merged": [], "build": []})[kind].append(path)
    if not found:
        raise FileNotFoundError(
            f"no <lang>/*.jsonl files under {root}: expected xP3's release layout "
            "<lang>/merged_<lang>.jsonl or its build layout <lang>/xp3_<dataset>_..._<template>.jsonl"
        )
    return {
        lang: LanguageFiles(lang, tuple(f["merged"]), tuple(f["build"]))
        for lang, f in sorted(found.items())
    }


def prompt_task_name(kind: str, path: str) -> str:
    """`xp3_<dataset>_<subset>_<split>_<template>` of a build-layout file (`xp3mt_...`)."""
    stem = path.split("/")[-1].removesuffix(".jsonl")
    return sanitise(f"{kind}_{stem.removeprefix('xp3_')}" if kind != XP3 else stem)


# ---------------------------------------------------------------- registration


@dataclasses.dataclass
class XP3Registration:
    """What `register` (and later `xp3_mixture` / `register_xp3x`) added to seqio."""

    language_tasks: dict[str, dict[str, str]]  # "xp3"/"xp3mt" -> {language: task}
    prompt_tasks: list[str]
    mixtures: dict[str, list[tuple[str, float]]]  # mixture -> [(task, rate)]
    file_bytes: dict[str, int | None]  # task -> bytes of its files (xp3mt shares only)

    @property
    def tasks(self) -> list[str]:
        langs = [t for by_lang in self.language_tasks.values() for t in by_lang.values()]
        return langs + self.prompt_tasks

    @property
    def names(self) -> list[str]:
        return self.tasks + list(self.mixtures)


_current: XP3Registration | None = None


def current() -> XP3Registration:
    global _current
    if _current is None:
        _current = XP3Registration({}, [], {}, {})
    return _current


def forget() -> None:
    """Removes every task and mixture this module registered."""
    global _current
    if _current is None:
        return
    tasks.unregister(_current.tasks, _current.mixtures)
    _current = None


def register(
    xp3_dir: str | None, xp3mt_dir: str | None, vocabulary: seqio.Vocabulary
) -> XP3Registration:
    """(Re-)registers the language and prompt tasks found under the folders, and the `xp3` /
    `xp3mt` mixtures; a folder that is None is skipped. Reads no row."""
    forget()
    reg = current()
    prompt_names: dict[str, str] = {}
    for kind, root in ((XP3, xp3_dir), (XP3MT, xp3mt_dir)):
        if not root:
            continue
        reg.language_tasks[kind] = {}
        for lang, files in discover(root).items():
            name = _add_task(sanitise(f"{kind}_{lang}"), XP3Source(files.files), vocabulary)
            reg.language_tasks[kind][lang] = name
            for path in files.build:
                task = prompt_task_name(kind, path)
                if task in prompt_names:
                    raise ValueError(
                        f"xP3 files {prompt_names[task]} and {path} both make task {task!r}; "
                        "rename one of them"
                    )
                prompt_names[task] = path
                reg.prompt_tasks.append(_add_task(task, XP3Source([path]), vocabulary))
    if xp3_dir and xp3mt_dir:
        for kind in (XP3, XP3MT):
            for lang, task in reg.language_tasks[kind].items():
                sizes = [_file_bytes(f) for f in seqio.get_mixture_or_task(task).source.files]
                reg.file_bytes[task] = None if None in sizes else sum(sizes)
    if xp3_dir:
        _add_mixture(XP3, _weighted_languages(reg.language_tasks[XP3]), include_mt=False)
    if xp3mt_dir:
        langs = {**reg.language_tasks.get(XP3, {}), **reg.language_tasks[XP3MT]}
        _add_mixture(XP3MT, _weighted_languages(langs), include_mt=True)
    return reg


def _weighted_languages(tasks_by_lang: dict[str, str]) -> list[str]:
    table = published_weights()
    unweighted = sorted(lang for lang in tasks_by_lang if lang not in table)
    if unweighted:
        log.warning("xP3: no weight for language(s) %s; they are in no mixture", unweighted)
    return [lang for lang in tasks_by_lang if lang in table]


def mixture_members(languages: Sequence[str], include_mt: bool = False) -> list[tuple[str, float]]:
    """[(task, rate)] over `languages`: normalised weights, shared with xP3mt if asked."""
    reg = current()
    kinds = (XP3, XP3MT) if include_mt else (XP3,)
    have = {kind: reg.language_tasks.get(kind, {}) for kind in kinds}
    missing = [lang for lang in languages if not any(lang in have[k] for k in kinds)]
    if missing:
        present = sorted({lang for k in kinds for lang in have[k]})
        raise KeyError(
            f"no {'/'.join(kinds)} task for language(s) {missing}; registered: {present}. "
            f"Point {ENV_XP3_DIR}{' / ' + ENV_XP3MT_DIR if include_mt else ''} at a copy "
            "holding them"
        )
    members = []
    for lang, weight in language_weights(languages).items():
        names = [have[k][lang] for k in kinds if lang in have[k]]
        sizes = [reg.file_bytes.get(name) for name in names]
        if len(names) > 1 and None not in sizes and sum(sizes) > 0:
            shares = [size / sum(sizes) for size in sizes]
        else:
            shares = [1 / len(names)] * len(names)
        members += [(name, weight * share) for name, share in zip(names, shares)]
    return members


def _add_mixture(name: str, languages: Sequence[str], include_mt: bool) -> list:
    members = mixture_members(languages, include_mt)
    reg = current()
    if name in reg.mixtures:
        seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, members)
    reg.mixtures[name] = members
    return members


def xp3_mixture(
    name: str, languages: Sequence[str], include_mt: bool = False
) -> list[tuple[str, float]]:
    """Registers mixture `name` over `languages` (weights renormalised to sum to 1; with
    `include_mt`, each language's weight shared with its xP3mt task) and returns its members."""
    if not languages:
        raise ValueError(f"mixture {name!r}: give at least one language")
    return _add_mixture(name, list(dict.fromkeys(languages)), include_mt)


# ---------------------------------------------------------------- xP3x provenance


class _GroupFilter:
    def __init__(self, key: tuple[str, ...]):
        self.key = key

    def __call__(self, row: dict) -> bool:
        return _group_key(row) == self.key


def _group_key(row: dict) -> tuple[str, ...]:
    return tuple("" if row.get(f) is None else str(row[f]) for f in PROVENANCE_FIELDS)


def scan_groups(files: Sequence[str]) -> dict[tuple[str, ...], dict[str, int]]:
    """(language, dataset, config, split, template) -> {file: rows}, reading every row once."""
    groups: dict[tuple[str, ...], dict[str, int]] = {}
    for path in files:
        if is_url(path):
            raise ValueError(f"xP3x files are read from a folder or gs://, not {path}")
        with open_lines(path) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = parse_row(line, f"{path}:{line_no}")
                missing = [k for k in PROVENANCE_FIELDS if k not in row]
                if missing:
                    raise XP3FormatError(
                        f"{path}:{line_no}: missing provenance field(s) {missing}; xP3x rows "
                        f"carry {list(PROVENANCE_FIELDS)} (use register() for xP3's own files)"
                    )
                counts = groups.setdefault(_group_key(row), collections.Counter())
                counts[path] += 1
    return groups


def register_xp3x(
    files: Sequence[str], vocabulary: seqio.Vocabulary, prefix: str = "xp3x"
) -> list[str]:
    """One task per (language, dataset, config, split, template) in xP3x-style rows:
    `<prefix>_<language>_<dataset>_<config>_<split>_<template>` (sanitised, empty parts left
    out). Scans the files once now (an explicit, possibly long step) for groups and sizes."""
    reg = current()
    names = []
    for key, counts in sorted(scan_groups(files).items()):
        name = sanitise("_".join([prefix, *(part for part in key if part)]))
        if name in names:
            raise ValueError(f"two xP3x groups make task {name!r}: {key}; use another prefix")
        group_files = [f for f in files if f in counts]
        source = XP3Source(group_files, _GroupFilter(key), num_examples=sum(counts.values()))
        names.append(_add_task(name, source, vocabulary))
    reg.prompt_tasks.extend(names)
    return names
