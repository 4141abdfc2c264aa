"""seqio Tasks from promptsource templates, as T0 built them.

Vocabulary:
  TaskSpec     what t0_tasks knows about one registered task: its dataset, template, split
               mapping (task split -> source split), whether the template is an original-task
               prompt, its answer choices, and the name of its `_score_eval` twin (or None).
  twin         `<task>_score_eval`: the same rows expanded to one (inputs, choice) example per
               answer choice with `idx` = [row, choice], `is_correct`, `weight`, scored by rank
               classification. Only templates with answer choices have a twin.

Every task's preprocessing is: render (in the data source) -> [twin: rank-classification
expansion] -> seqio tokenize (keeps `*_pretokenized`) -> append EOS to `targets` only ->
`CacheDatasetPlaceholder` [-> task: `accounting.count_truncation`], so `seqio_cache_tasks`
can cache them and P3 caches read back through the same task.

Rendering is a pure function of (seqio seed, task, split, row index): each row renders under
`prompts.row_seed(...)` (templates that draw at random draw the same way in every process and
on every resume). `accounting.COUNTS.get(task, split)` gives the rows rendered, dropped and
with empty targets (a twin reads its task's source, so its counts are under the task's name);
rows with an empty target are dropped from training splits and kept as `<NO LABEL>` elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools

import seqio
import tensorflow as tf

from t0_tasks import accounting, metrics, prompts, sources
from t0_tasks.catalog import Dataset
from t0_tasks.p3 import CachedTask
from t0_tasks.settings import Settings

ANLI_ROUNDS = ("r1", "r2", "r3")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    dataset: Dataset
    template_name: str
    split_map: tuple[tuple[str, str], ...]
    original_task: bool
    fixed_choices: tuple[str, ...] | None
    score_eval_name: str | None

    @property
    def splits(self) -> list[str]:
        return [task_split for task_split, _ in self.split_map]

    def source_split(self, split: str) -> str:
        return dict(self.split_map)[split]


def vocabulary(settings: Settings) -> seqio.Vocabulary:
    """The run's vocabulary (see t0_tasks.vocabularies)."""
    from t0_tasks import vocabularies

    return vocabularies.vocabulary(settings.vocab_path, settings.extra_ids)


def output_features(vocab: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    return {
        "inputs": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
        "targets": seqio.Feature(vocab, add_eos=True, dtype=tf.int32),
    }


def _seed_value(seed) -> int:
    """seqio hands the dataset_fn a Python int, a scalar tensor, or None (unseeded: 0)."""
    if seed is None:
        return 0
    return int(seed.numpy() if hasattr(seed, "numpy") else seed)


def _rendered_dataset(
    split,
    shuffle_files,
    seed=None,
    *,
    spec: TaskSpec,
    settings: Settings,
    template,
    row_source=None,
):
    """The seqio dataset_fn: rows of the source split, rendered with the template."""
    del shuffle_files  # rows come in source order; seqio shuffles downstream
    ds = spec.dataset
    with_choices = prompts.has_answer_choices(template)
    read = row_source or functools.partial(sources.iter_rows, settings)
    base_seed = _seed_value(seed)
    drop_empty_targets = split == "train"
    prefix = settings.target_prefix

    def generate():
        counts = accounting.COUNTS
        counts.add(spec.name, split, passes=1)
        source_split = spec.source_split(split)
        for i, row in enumerate(read(ds.name, ds.subset, source_split)):
            try:
                rendering = prompts.render(
                    template, row, seed=prompts.row_seed(base_seed, spec.name, split, i)
                )
            except Exception as e:  # jinja errors of every kind: name the task, row and cause
                raise prompts.TemplateRenderError(
                    f"task {spec.name}: template {spec.template_name!r} failed on row {i} of "
                    f"{ds.label} split {source_split!r}: {type(e).__name__}: {e}. The row "
                    f"does not match the dataset's schema (keys: {sorted(row)})"
                ) from e
            if rendering is None:
                counts.add(spec.name, split, dropped=1)
                continue
            counts.add(spec.name, split, rendered=1, empty_target=int(rendering.empty_target))
            if rendering.empty_target and drop_empty_targets:
                continue
            example = {"inputs": rendering.inputs, "targets": prefix + rendering.targets}
            if with_choices:
                example["answer_choices"] = [prefix + c for c in rendering.answer_choices or ()]
            yield example

    signature = {"inputs": tf.TensorSpec([], tf.string), "targets": tf.TensorSpec([], tf.string)}
    if with_choices:
        signature["answer_choices"] = tf.TensorSpec([None], tf.string)
    return tf.data.Dataset.from_generator(generate, output_signature=signature)


class RenderedSource(seqio.FunctionDataSource):
    """A FunctionDataSource whose split sizes come from the local copy when there is one
    (counted on first use), else from the catalog."""

    def __init__(self, dataset_fn, spec: TaskSpec, settings: Settings):
        super().__init__(dataset_fn, splits=spec.splits)
        self._spec, self._settings = spec, settings

    def num_input_examples(self, split: str) -> int | None:
        ds, source_split = self._spec.dataset, self._spec.source_split(split)
        local = sources.local_split_size(self._settings, ds.name, ds.subset, source_split)
        return local if local is not None else ds.split_size(source_split)


def _rank_classification_preprocessor():
    from t5.data import preprocessors as t5_preprocessors

    return functools.partial(
        t5_preprocessors.rank_classification,
        inputs_fn=lambda ex: tf.fill((tf.shape(ex["answer_choices"])[0],), ex["inputs"]),
        targets_fn=lambda ex: ex["answer_choices"],
        is_correct_fn=lambda ex: tf.equal(
            tf.strings.strip(ex["answer_choices"]), tf.strings.strip(ex["targets"])
        ),
        weight_fn=lambda ex: 1.0,
    )


def unregister(task_names, mixture_names=()) -> None:
    """Removes tasks and mixtures from seqio's registries (absent names are ignored), so a
    module can re-register them under new settings."""
    for name in mixture_names:
        seqio.MixtureRegistry.remove(name)
    for name in task_names:
        seqio.TaskRegistry.remove(name)


def register_spec(
    spec: TaskSpec, settings: Settings, vocab: seqio.Vocabulary, template=None, row_source=None
) -> None:
    """Adds `spec`'s task (and its score_eval twin) to seqio's TaskRegistry.

    `template` defaults to promptsource's template of that name; `row_source(dataset, subset,
    split)` to `sources.iter_rows` under `settings`.
    """
    ds = spec.dataset
    if template is None:
        template = prompts.get_template(ds.name, ds.subset, spec.template_name)
    source = RenderedSource(
        functools.partial(
            _rendered_dataset,
            spec=spec,
            settings=settings,
            template=template,
            row_source=row_source,
        ),
        spec,
        settings,
    )
    tail = [
        seqio.preprocessors.tokenize,
        seqio.preprocessors.append_eos,
        seqio.CacheDatasetPlaceholder(required=False),
    ]
    fixed = list(spec.fixed_choices) if spec.fixed_choices else None
    features = output_features(vocab)
    count = functools.partial(accounting.count_truncation, task=spec.name)
    seqio.TaskRegistry.add_provider(
        spec.name,
        CachedTask(
            spec.name,
            source,
            output_features=features,
            preprocessors=[*tail, count],
            postprocess_fn=metrics.postprocess_fn(fixed),
            metric_fns=metrics.metric_fns(ds.name, ds.subset, prompts.metric_names(template)),
        ),
    )
    if spec.score_eval_name:
        seqio.TaskRegistry.add_provider(
            spec.score_eval_name,
            CachedTask(
                spec.score_eval_name,
                source,
                output_features=features,
                preprocessors=[_rank_classification_preprocessor(), *tail],
                postprocess_fn=metrics.score_eval_postprocess_fn(),
                metric_fns=metrics.score_eval_metric_fns(fixed),
            ),
        )


def dataset_specs(ds: Dataset, templates: dict | None = None) -> list[TaskSpec]:
    """One TaskSpec per template of `ds` (one per template and round for ANLI).

    `templates` (name -> promptsource Template) defaults to promptsource's for `ds`.
    """
    if templates is None:
        templates = {
            name: prompts.get_template(ds.name, ds.subset, name)
            for name in prompts.template_names(ds.name, ds.subset)
        }
    if ds.name == "anli":
        variants = [
            (f"_{r}", (("train", f"train_{r}"), ("validation", f"dev_{r}"), ("test", f"test_{r}")))
            for r in ANLI_ROUNDS
        ]
    else:
        variants = [("", tuple((s, s) for s, _ in ds.splits))]
    specs = []
    for suffix, split_map in variants:
        for template_name, template in templates.items():
            name = prompts.task_name(ds.name, ds.subset, template_name, suffix)
            fixed = prompts.fixed_choices(template)
            specs.append(
                TaskSpec(
                    name=name,
                    dataset=ds,
                    template_name=template_name,
                    split_map=split_map,
                    original_task=prompts.is_original_task(template),
                    fixed_choices=tuple(fixed) if fixed else None,
                    score_eval_name=(
                        name + prompts.SCORE_EVAL_SUFFIX
                        if prompts.has_answer_choices(template)
                        else None
                    ),
                )
            )
    return specs
