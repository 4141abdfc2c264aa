"""Generative tasks: decoded by the model, scored by seqio's Evaluator with the task's metrics.

Vocabulary:
  predict        `predict(encoder_input_tokens [B, L], decode_length) -> tokens [B, T]`: the
                 model family's decoding (t0x.jobs.infer.make_predict_fn), EOS kept.
  decode length  the task's longest target, at least MIN_DECODE_LENGTH (an answer may be longer
                 than the target, e.g. WinoBias "It refers to the developer" vs "The
                 developer"), at most the job's target length.
  primary metric the task result's `score` (t0x.eval.suites.primary_metric): `accuracy` when
                 the task computes it, else its first metric, unless the suite names one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from t0x.eval.suites import GENERATE_METRICS, primary_metric

MIN_DECODE_LENGTH = 32


def generate_task(
    task,
    split: str,
    predict: Callable,
    batch_size: int,
    max_examples: int | None,
    feature_lengths: dict,
    use_cached: bool,
    metric: str | None = None,
) -> dict:
    """Decodes a generative task and scores it with its seqio metrics (seqio's Evaluator).

    `metric`: the primary metric; None: `accuracy` if computed, else the task's first."""
    import seqio

    start = time.perf_counter()
    evaluator = seqio.Evaluator(
        mixture_or_task_name=task.name,
        feature_converter=seqio.EncDecFeatureConverter(pack=False),
        eval_split=split,
        use_cached=use_cached,
        num_examples=max_examples,
        async_compute_metrics=False,
    )
    shapes = evaluator.model_feature_shapes
    # at least MIN_DECODE_LENGTH: an answer may be longer than the task's longest target
    # (WinoBias: "It refers to the developer" vs the target "The developer")
    decode_length = min(
        max(shapes["decoder_target_tokens"][0], MIN_DECODE_LENGTH), feature_lengths["targets"]
    )
    max_input = feature_lengths["inputs"]

    def predict_fn(ds, model_feature_shapes=None):
        del model_feature_shapes
        out = []
        for indices, batch in ds.batch(batch_size).as_numpy_iterator():
            enc = batch["encoder_input_tokens"][:, :max_input]
            if len(indices) < batch_size:  # fixed shapes: pad rows repeat the first one
                enc = np.concatenate([enc, np.repeat(enc[:1], batch_size - len(indices), 0)])
            tokens = predict(enc, decode_length)
            out.extend((int(i), [int(t) for t in tokens[r]]) for r, i in enumerate(indices))
        return out

    metrics_future, outputs = evaluator.evaluate(compute_metrics=True, predict_fn=predict_fn)
    metrics = {
        k: _as_float(v) for k, v in (metrics_future.result() or {}).get(task.name, {}).items()
    }
    evaluator.close()
    if not metrics:
        raise ValueError(f"task {task.name}: seqio computed no metrics; does it define metric_fns?")
    primary = primary_metric(task.name, metrics, metric, GENERATE_METRICS)
    vocab = task.output_features["targets"].vocabulary
    tokens = next(iter(outputs.get(task.name, {}).values()), [])
    return {
        "kind": "generate",
        "metric": primary,
        "score": metrics[primary],
        "metrics": metrics,
        "num_examples": len(tokens),
        "seconds": time.perf_counter() - start,
        "predictions": [vocab.decode(list(t)) for t in tokens],
    }


def _as_float(value):
    value = getattr(value, "value", value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
