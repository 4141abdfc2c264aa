"""Every task of every training mixture yields training rows on the fixtures.

seqio ends a whole mixture's stream when one of its tasks runs dry
(`stop_on_empty_dataset`), so a task without rows on the fixtures would silently end every
fixture-based training run (and T5X's) early. Rows come from seqio's own source of each
task, the rendering the training pipeline reads.
"""

import pytest
import seqio

import t0_tasks
from t0_tasks import testing
from t0_tasks.sources import DataNotFoundError

TRAINING_MIXTURES = (
    "t0_train",
    "t0+_train",
    "t0++_train",
    "t0_train_one_og_prompt",
    "t0_train_all_og_prompts",
)


def _training_tasks() -> list[str]:
    t0_tasks.current()
    names = set()
    for mixture in TRAINING_MIXTURES:
        names |= {t.name for t in seqio.get_subtasks(seqio.get_mixture_or_task(mixture))}
    return sorted(names)


def test_every_training_task_yields_a_training_example():
    empty = []
    for name in _training_tasks():
        source = seqio.get_mixture_or_task(name).source
        first = next(iter(source.get_dataset("train", shuffle=False).take(1)), None)
        if first is None or not first["targets"].numpy().strip():
            empty.append(name)
    assert not empty, f"tasks without a training example on the fixtures: {empty}"


def test_cache_writer_refuses_an_empty_split(tmp_path):
    import tensorflow as tf

    def rows(split, shuffle_files, seed=None):
        texts = ["a b", "c d"] if split == "train" else []
        return tf.data.Dataset.from_tensor_slices(
            {"inputs": tf.constant(texts, tf.string), "targets": tf.constant(texts, tf.string)}
        )

    name = "t0x_test_cache_empty_split"
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(rows, splits=["train", "test"]),
        output_features={},
    )
    assert (testing.write_seqio_cache(name, "train", tmp_path) / "COMPLETED").exists()
    with pytest.raises(DataNotFoundError, match="no 'test' rows"):
        testing.write_seqio_cache(name, "test", tmp_path)
    assert not (tmp_path / name / "info.test.json").exists()
