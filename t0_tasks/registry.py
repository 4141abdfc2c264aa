"""Registering the T0 catalog with seqio (what `import t0_tasks` does).

`register(settings)` is idempotent: it removes whatever it registered before, then adds one
Task (plus `_score_eval` twin) per template of every catalog dataset and T0's eight
mixtures. Nothing is read from disk or network but promptsource's bundled templates.
The result, a `Registry`, is what the CLI and the statistics read.
"""

from __future__ import annotations

import dataclasses

import seqio

from t0_tasks import catalog, mixtures, tasks, xp3
from t0_tasks.settings import Settings
from t0_tasks.suites import bias_fairness, bigbench, multilingual


@dataclasses.dataclass
class Registry:
    settings: Settings
    specs: dict[str, tasks.TaskSpec]  # task name -> spec (twins not listed)
    mixtures: dict[str, list[tuple[str, int]]]  # mixture -> [(task, rate)]

    def spec_of(self, task_name: str) -> tasks.TaskSpec:
        """The spec of a task or of its score_eval twin."""
        base = task_name.removesuffix("_score_eval")
        if base in self.specs and (base == task_name or self.specs[base].score_eval_name):
            return self.specs[base]
        raise KeyError(task_name)

    def task_names(self) -> list[str]:
        names = []
        for spec in self.specs.values():
            names.append(spec.name)
            if spec.score_eval_name:
                names.append(spec.score_eval_name)
        names += list(self.extra_tasks)
        return names

    extra_tasks: tuple[str, ...] = ()  # suites' own tasks (xP3, BIG-bench, WinoBias twins)


_current: Registry | None = None
_cache_dir_added: str | None = None


def _forget(registry: Registry) -> None:
    bias_fairness.forget()
    bigbench.unregister()
    xp3.forget()
    tasks.unregister(registry.task_names(), registry.mixtures)


def _set_p3_dir(p3_dir: str | None) -> None:
    global _cache_dir_added
    dirs = [d for d in seqio.utils.get_global_cache_dirs() if d != _cache_dir_added]
    if p3_dir:
        dirs.append(p3_dir)
    seqio.set_global_cache_dirs(dirs)
    _cache_dir_added = p3_dir


def register(settings: Settings | None = None) -> Registry:
    """(Re-)registers every T0 task and mixture under `settings` (default: from the env)."""
    global _current
    settings = settings or Settings.from_env()
    if _current is not None:
        _forget(_current)
    _set_p3_dir(settings.p3_dir)
    vocab = tasks.vocabulary(settings)
    specs = {}
    for ds in catalog.t0_catalog():
        for spec in tasks.dataset_specs(ds):
            tasks.register_spec(spec, settings, vocab)
            specs[spec.name] = spec
    mixes = mixtures.build_mixtures(list(specs.values()), catalog.t0_exclusions())
    for name, members in mixes.items():
        seqio.MixtureRegistry.add(name, members)
    suite = multilingual.register(settings, vocab)  # adds its own mixtures
    specs.update(suite.specs)
    mixes.update(suite.mixtures)
    extra = []
    fairness = bias_fairness.register(settings, vocab)
    mixes.update(fairness.mixtures)
    extra += list(fairness.generate_tasks)
    big = bigbench.register(vocab, settings)
    mixes.update({name: [(t, 1.0) for t in members] for name, members in big.mixtures.items()})
    extra += list(big.tasks)
    corpus = xp3.register(settings.xp3_dir, settings.xp3mt_dir, vocab)
    mixes.update(corpus.mixtures)
    extra += list(corpus.tasks)
    _current = Registry(settings=settings, specs=specs, mixtures=mixes)
    _current.extra_tasks = tuple(extra)
    return _current


def current() -> Registry:
    if _current is None:
        return register()
    return _current


def task_vocabulary() -> seqio.Vocabulary:
    """The vocabulary every registered task tokenizes with. A recipe binds T5X's model to it
    (`VOCABULARY = @t0_tasks.task_vocabulary()`), so model and tasks agree by construction;
    for the default file it equals what T5X's own model files build (seqio's `__eq__`)."""
    return tasks.vocabulary(current().settings)


def configure(**changes) -> Registry:
    """Changes settings (data_dir, p3_dir, vocab_path, ...) and re-registers everything."""
    return register(current().settings.replace(**changes))
