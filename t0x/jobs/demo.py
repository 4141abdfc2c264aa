"""`make demo` / `t0x demo`: train a tiny T0 on local data, then evaluate it zero-shot.

`t0x demo --multilingual` does the same for mT0: a tiny T5 on the xP3 fixture folder
(tests/fixtures/xp3, the release layout: several languages, a non-Latin script and code) with
mT0's settings (no packing, loss averaged per sequence), evaluated on the multilingual suite
(XCOPA, XNLI, XStoryCloze, XWinograd fixture rows; per language median and max over prompts).

Everything is offline: rows come from the fixture copies of the T0 datasets in
`tests/fixtures/` (real schemas, a few rows each), rendered by t0_tasks with
promptsource's templates; the vocabulary is a small SentencePiece model trained on those
rows (T5's ids: pad 0, EOS 1, UNK 2, plus 100 sentinel ids). The recipe is gin/demo.gin.
Outputs under `out_dir`: `vocab/`, `model/` (checkpoints, TensorBoard, metrics.jsonl,
config.gin) and `eval/` (results.json, results.md, results.png).
"""

from __future__ import annotations

import json
from pathlib import Path

SPM_PIECES = 1000
EXTRA_IDS = 100
DEMO_MIXTURE = "t0x_demo_train"
# T0 training datasets whose original-task prompt trains the demo model (a spread of
# families; each renders on its fixture rows).
DEMO_DATASETS = (
    ("glue", "mrpc"),
    ("paws", "labeled_final"),
    ("imdb", None),
    ("rotten_tomatoes", None),
    ("ag_news", None),
    ("trec", None),
    ("cos_e", "v1.11"),
    ("social_i_qa", None),
    ("sciq", None),
    ("quartz", None),
    ("dream", None),
    ("common_gen", None),
    ("samsum", None),
    ("wiki_qa", None),
)


def register_demo_mixture() -> str:
    """t0_train_one_og_prompt restricted to DEMO_DATASETS, with T0's rates."""
    import seqio
    import t0_tasks

    reg = t0_tasks.current()
    members = [
        (task, rate)
        for task, rate in reg.mixtures["t0_train_one_og_prompt"]
        if reg.specs[task].dataset.key in DEMO_DATASETS
    ]
    seqio.MixtureRegistry.remove(DEMO_MIXTURE)
    seqio.MixtureRegistry.add(DEMO_MIXTURE, members)
    return DEMO_MIXTURE


def _training_text(fixtures_dir: Path, path: Path) -> None:
    lines = []
    for jsonl in sorted(fixtures_dir.rglob("*.jsonl")):
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            if line.strip():
                lines.extend(_strings(json.loads(line)))
    path.write_text("\n".join(s.replace("\n", " ") for s in lines if s.strip()), encoding="utf-8")


def _strings(value):
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def build_vocab(fixtures_dir: Path, out_dir: Path) -> Path:
    """A SentencePiece model with T5's special ids, trained on the fixture text (cached)."""
    import sentencepiece as spm

    model = out_dir / "spiece.model"
    if model.exists():
        return model
    out_dir.mkdir(parents=True, exist_ok=True)
    text = out_dir / "corpus.txt"
    _training_text(fixtures_dir, text)
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(out_dir / "spiece"),
        vocab_size=SPM_PIECES,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=2,
    )
    return model


def _configure(out: Path, corpus: Path | None = None, **extra) -> Path:
    """The fixture data and a SentencePiece vocabulary trained on `corpus` (default: the
    fixture rows of the T0 datasets), for t0_tasks."""
    import t0_tasks
    from t0_tasks import testing

    vocab = build_vocab(corpus or testing.FIXTURES_DIR, out / "vocab")
    t0_tasks.configure(
        data_dir=str(testing.FIXTURES_DIR),
        story_cloze_dir=str(testing.STORY_CLOZE_FIXTURES_DIR),
        vocab_path=str(vocab),
        extra_ids=EXTRA_IDS,
        **extra,
    )
    return vocab


def _print_outputs(out: Path, paths: dict, result) -> None:
    print("[demo] done. Outputs:")
    for name, path in paths.items():
        print(f"  {name:12s} {path}")
    print(
        f"  table        {out / 'eval' / 'results.md'}\n  plot         {out / 'eval' / 'results.png'}"
    )
    if result.history:
        first, last = result.history[0], result.history[-1]
        print(
            f"[demo] loss per target token {first.get('cross_ent_per_token', 0):.3f} -> "
            f"{last.get('cross_ent_per_token', 0):.3f} over {last['step']} steps"
        )
    else:
        print("[demo] the model was already trained (`make clean-demo` starts over)")


MT0_DEMO_SETTINGS = [
    "MIXTURE_OR_TASK_NAME = 'xp3'",
    "TASK_FEATURE_LENGTHS = {'inputs': 128, 'targets': 64}",
    "PACK = False",
    "LOSS_NORMALIZING_FACTOR = 'AVERAGE_PER_SEQUENCE'",
    "TRAIN_STEPS = 200",
]


def run_multilingual_demo(out_dir: str = "runs/demo_mt0", steps: int | None = None) -> dict:
    """Trains (or resumes) a tiny mT0 on the xP3 fixtures and evaluates it on the
    multilingual suite; returns the output paths."""
    from t0_tasks import testing
    from t0x import gin_config
    from t0x.jobs import evaluate, train

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    out = Path(out_dir).resolve()
    fixtures = testing.FIXTURES_DIR.parent  # T0 datasets, xP3 and the multilingual rows
    vocab = _configure(out, corpus=fixtures, xp3_dir=str(fixtures / "xp3"))
    vocab_size = -(-(SPM_PIECES + EXTRA_IDS) // 128) * 128
    bindings = [f"MODEL_DIR = '{out / 'model'}'", f"VOCAB_SIZE = {vocab_size}"]
    bindings += MT0_DEMO_SETTINGS + ([f"TRAIN_STEPS = {steps}"] if steps else [])
    gin_config.parse([str(gin_config.GIN_DIR / "demo.gin")], bindings)
    print(f"[demo] training a tiny mT0 on xp3 (fixture languages) -> {out / 'model'}")
    result = train.train()
    if result.preempted:
        print("[demo] stopped by SIGTERM after saving; rerun to resume")
        return {"model_dir": str(out / "model"), "preempted": True}
    print(f"[demo] evaluating zero-shot on the multilingual suite -> {out / 'eval'}")
    evaluate.evaluate(
        checkpoint_path=str(out / "model" / "checkpoints"),
        output_dir=str(out / "eval"),
        suites=["multilingual"],
        vocab_path=str(vocab),
    )
    paths = {"vocab": str(vocab), "model_dir": str(out / "model"), "eval": str(out / "eval")}
    _print_outputs(out, paths, result)
    return paths


def run_demo(out_dir: str = "runs/demo", steps: int | None = None) -> dict:
    """Trains (or resumes) the demo model and evaluates it; returns the output paths."""
    from t0x import gin_config
    from t0x.jobs import evaluate
    from t0x.jobs import train

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # seqio/orbax advice meant for big runs
    out = Path(out_dir).resolve()
    vocab = _configure(out)
    register_demo_mixture()
    vocab_size = -(-(SPM_PIECES + EXTRA_IDS) // 128) * 128
    bindings = [f"MODEL_DIR = '{out / 'model'}'", f"VOCAB_SIZE = {vocab_size}"]
    if steps:
        bindings.append(f"TRAIN_STEPS = {steps}")
    gin_config.parse([str(gin_config.GIN_DIR / "demo.gin")], bindings)
    print(
        f"[demo] training a tiny T5 on {DEMO_MIXTURE} (T0 prompts, fixture rows) -> {out / 'model'}"
    )
    result = train.train()
    if result.preempted:  # SIGTERM: the checkpoint is saved; do not start the next phase
        print("[demo] stopped by SIGTERM after saving; `make demo` again resumes")
        return {"model_dir": str(out / "model"), "preempted": True}
    print(f"[demo] evaluating zero-shot on the held-out T0 tasks -> {out / 'eval'}")
    evaluate.evaluate(
        checkpoint_path=str(out / "model" / "checkpoints"),
        output_dir=str(out / "eval"),
        mixture_or_task_name="t0_eval_score_eval",
        vocab_path=str(vocab),
    )
    paths = {
        "vocab": str(vocab),
        "model_dir": str(out / "model"),
        "tensorboard": str(out / "model" / "train"),
        "eval": str(out / "eval"),
    }
    _print_outputs(out, paths, result)
    return paths
