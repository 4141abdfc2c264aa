"""The checkpoint sweep (`evaluate(..., all_steps=True)`, `t0x eval --checkpoint_dir RUN_DIR`):
every saved step of a t0x run evaluated into its own folder, resumed after an interruption,
summarised in sweep.json/.md/.png with the best step named.

The run dir holds a tiny T5's checkpoint store with three steps of different random params;
each step is evaluated on two RTE prompts of the `t0_heldout` suite, three rows each.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from pathlib import Path

import jax
import numpy as np
import pytest

from t0x import cli, models
from t0x.checkpoints import CheckpointStore
from t0x.errors import CheckpointNotFoundError, ConfigError
from t0x.eval import sweep
from t0x.jobs import evaluate as ev
from t0x.models.t5 import testing

TASKS = ["super_glue_rte_GPT_3_style_score_eval", "super_glue_rte_does_it_follow_that_score_eval"]
STEPS = (100, 200, 300)
SWEEP = {"suites": ["t0_heldout"], "tasks": TASKS, "max_examples": 4, "batch_size": 8}


def _random_params(model, seed: int):
    """Random params of the model's shapes (numpy; much faster than jitting its init)."""
    rng = np.random.default_rng(seed)
    abstract, _ = model.abstract_params_with_axes()

    def draw(x):
        if len(x.shape) == 1:  # layer-norm scales
            return (1.0 + 0.2 * rng.standard_normal(x.shape)).astype(np.float32)
        return (3 * rng.standard_normal(x.shape) / np.sqrt(x.shape[0])).astype(np.float32)

    return jax.tree.map(draw, abstract)


def _save_steps(run_dir: Path, steps) -> None:
    config = testing.tiny_config()
    model = models.get("t5").make_model(config)
    meta = {"family": "t5", "config": dataclasses.asdict(config)}
    with CheckpointStore(run_dir / "checkpoints", async_save=False) as store:
        for step in steps:
            seed = 400 - step  # seeds picked so that the last step scores best, alone
            store.save(step, {"params": _random_params(model, seed)}, meta, force=True)


@pytest.fixture
def run_dir(tmp_path):
    path = tmp_path / "run"
    _save_steps(path, STEPS)
    return path


def _step_score(step_dir: Path) -> float:
    """The suite score recomputed from the step's task files: the median over RTE's prompts
    (RTE is the only dataset)."""
    files = (step_dir / "t0_heldout" / "tasks").glob("*.json")
    return statistics.median(json.loads(p.read_text())["score"] for p in files)


def _counting_rank_task(monkeypatch, fail_at: int | None = None) -> list[str]:
    calls, real = [], ev.rank_task

    def rank_task(task, *args, **kwargs):
        calls.append(task.name)
        if fail_at is not None and len(calls) == fail_at:
            raise RuntimeError("interrupted")
        return real(task, *args, **kwargs)

    monkeypatch.setattr(ev, "rank_task", rank_task)
    return calls


def test_sweep_evaluates_every_step_and_names_the_best(run_dir, tmp_path):
    out = tmp_path / "sweep"
    summary = ev.evaluate(str(run_dir), str(out), all_steps=True, log=lambda s: None, **SWEEP)
    assert [e["step"] for e in summary["steps"]] == list(STEPS)
    scores = {}
    for entry in summary["steps"]:
        step_dir = out / f"step_{entry['step']}"
        results = json.loads((step_dir / "results.json").read_text())
        assert results["run"]["checkpoint"] == str(run_dir / "checkpoints" / str(entry["step"]))
        assert results["run"]["step"] == entry["step"]
        scores[entry["step"]] = _step_score(step_dir)
        assert entry["scores"] == {"t0_heldout": pytest.approx(scores[entry["step"]])}
    best = max(STEPS, key=lambda s: (scores[s], -s))  # ties: the earliest step
    assert best == 300 and sorted(scores.values())[-2] < scores[300]  # the seeds make it so
    assert summary["best"]["step"] == best and summary["select_by"] == "t0_heldout"
    assert summary["best"]["score"] == pytest.approx(scores[best])
    assert json.loads((out / "sweep.json").read_text())["best"]["step"] == best
    md = (out / "sweep.md").read_text()
    assert f"Best step: **{best}**" in md and md.count("\n| ") == 1 + len(STEPS)
    assert (out / "sweep.png").stat().st_size > 0


def test_sweep_resumes_after_an_interruption(run_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    calls = _counting_rank_task(monkeypatch, fail_at=4)  # step 200's second task
    with pytest.raises(RuntimeError, match="interrupted"):
        ev.evaluate(str(run_dir), str(out), all_steps=True, log=lambda s: None, **SWEEP)
    assert (out / "step_100" / sweep.STEP_MARKER).is_file()
    assert not (out / "step_200" / sweep.STEP_MARKER).exists()
    assert len(list((out / "step_200" / "t0_heldout" / "tasks").glob("*.json"))) == 1

    calls = _counting_rank_task(monkeypatch)
    lines = []
    ev.evaluate(str(run_dir), str(out), all_steps=True, log=lines.append, **SWEEP)
    assert calls == [TASKS[1], *TASKS]  # step 200's missing task, then step 300
    assert "step 100 (1/3): already evaluated" in "\n".join(lines)

    shutil.rmtree(out / "step_300")  # a deleted step is evaluated again, alone
    calls = _counting_rank_task(monkeypatch)
    again = ev.evaluate(str(run_dir), str(out), all_steps=True, log=lambda s: None, **SWEEP)
    assert calls == TASKS and [e["step"] for e in again["steps"]] == list(STEPS)

    _save_steps(run_dir, [400])  # training went on: the CLI sweep adds the new step only
    calls = _counting_rank_task(monkeypatch)
    argv = ["eval", "--checkpoint_dir", str(run_dir), "--suite", "t0_heldout"]
    argv += [f"--gin.EVAL_OUTPUT_DIR='{out}'", f"--gin.EVAL_TASKS={TASKS!r}"]
    argv += ["--gin.MAX_EVAL_EXAMPLES=4", "--gin.EVAL_BATCH_SIZE=8"]
    assert cli.main(argv) == 0
    assert calls == TASKS
    summary = json.loads((out / "sweep.json").read_text())
    assert [e["step"] for e in summary["steps"]] == [*STEPS, 400]
    scores = {e["step"]: e["scores"]["t0_heldout"] for e in summary["steps"]}
    assert summary["best"]["step"] == max(scores, key=lambda s: (scores[s], -s))
    assert f"best step: {summary['best']['step']}" in capsys.readouterr().out


def test_best_step_rule_and_summary_files(tmp_path):
    entries = [
        {"step": s, "checkpoint": f"/r/{s}", "output_dir": f"/o/step_{s}", "scores": sc}
        for s, sc in (
            (10, {"a": 40.0, "b": 9.0}),
            (20, {"a": 60.0, "b": None}),
            (30, {"a": 60.0, "b": 5.0}),
        )
    ]
    assert sweep.best_step(entries) == ("a", entries[1])  # a tie goes to the earlier step
    assert sweep.best_step(entries, "b") == ("b", entries[0])  # None scores are skipped
    with pytest.raises(ConfigError, match="select_by='c'"):
        sweep.best_step(entries, "c")
    assert sweep.scores_of({"score": 51.0, "datasets": {}}) == {"mixture": 51.0}
    summary = {"run_dir": "/r", "select_by": "a", "steps": entries}
    summary["best"] = {**entries[1], "score": 60.0}
    md = sweep.markdown(summary)
    assert "Best step: **20**" in md and "| 20 | 60.00 | – | best |" in md
    sweep.plot(summary, str(tmp_path / "sweep.png"))
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_sweep_errors_are_one_line(tmp_path, run_dir, capsys):
    with pytest.raises(CheckpointNotFoundError, match="no saved t0x steps"):
        sweep.store_dir(str(tmp_path))
    assert sweep.store_dir(str(run_dir)) == str(run_dir / "checkpoints")
    assert sweep.store_dir(str(run_dir / "checkpoints")) == str(run_dir / "checkpoints")
    with pytest.raises(ConfigError, match="select_by='multilingual'"):
        ev.evaluate(
            str(run_dir),
            str(tmp_path / "o"),
            all_steps=True,
            select_by="multilingual",
            suites=["t0_heldout"],
        )
    code = cli.main(
        ["eval", "--checkpoint_dir", str(tmp_path / "nothing"), "--suite", "t0_heldout"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and "no saved t0x steps" in err[0]
