"""Nothing lost, nothing silent: each fault a user can meet, driven through the real API/CLI.

Every test asserts the message a user sees and that nothing they had was changed:
  1. rendering is a pure function of (seed, task, split, row): same batches in two
     processes whatever Python's global random state; stop + resume on prompts rendered on
     the fly (a template that draws at random) equals the uninterrupted run bit for bit;
  2. a non-finite state is never saved (the updated weights are checked, not only the
     loss/gradients), the error names the last good step; an absurd learning rate is refused
     before anything starts;
  3. byte flips and truncation in a checkpoint are found at restore (train, eval/convert path)
     and named; training can fall back to the previous step, keeping the damaged one;
  4. a checkpoint without its input position is refused unless the restart is explicit;
  5. typos, partial caches, a MODEL_DIR that is a file, a vocabulary larger than the model,
     a checkpoint saved for another model or vocabulary: refused before MODEL_DIR is touched;
  6. the CLI prints one line and a documented exit code (--debug: traceback); SIGTERM ends a
     multi-phase job after the save;
  7. data accounting (data_report.json, TensorBoard, log line, `t0x tasks show`);
  8. `t0x score` never overwrites, validates ids, never writes NaN; `t0x eval` names a
     damaged task file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
import seqio

import t0_tasks
from t0_tasks import accounting, prompts, testing as task_testing
from t0x import checkpoints, cli, errors, trainer
from t0x.jobs import train as train_lib
from t0x.testing import register_counting_task
from t0x.models.t5.testing import tiny_config

REPO = Path(__file__).resolve().parent.parent
RANDOM_TASK = "social_i_qa_Check_if_a_random_answer_is_valid_or_not"
RANDOM_MIXTURE = "t0x_test_random_render"
LENGTHS = {"inputs": 160, "targets": 8}


def _random_mixture() -> str:
    """T0 tasks rendered on the fly from fixture rows, one of whose templates draws at random."""
    t0_tasks.current()
    seqio.MixtureRegistry.remove(RANDOM_MIXTURE)
    names = [RANDOM_TASK, "social_i_qa_Generate_answer"]
    seqio.MixtureRegistry.add(RANDOM_MIXTURE, [(n, 1.0) for n in names])
    return RANDOM_MIXTURE


def _job(model_dir, **overrides):
    kwargs = dict(
        model_dir=str(model_dir),
        mixture_or_task_name=register_counting_task(),
        task_feature_lengths={"inputs": 20, "targets": 16},
        train_steps=4,
        batch_size=8,
        model_config=tiny_config(num_encoder_layers=1, num_decoder_layers=1),
        seed=3,
        learning_rate=1e-2,
        log_period=1,
        save_period=1,
        log=lambda *a: None,
    )
    kwargs.update(overrides)
    return train_lib.train(**kwargs)


def _steps(model_dir) -> list[int]:
    with checkpoints.CheckpointStore(Path(model_dir) / "checkpoints", read_only=True) as store:
        return store.all_steps()


def _tree_bytes(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


# ------------------------------------------------------------------------- 1. rendering
def test_render_is_a_pure_function_of_the_seed():
    template = prompts.get_template("social_i_qa", None, "Check if a random answer is valid or not")
    rows = task_testing.load_fixture_rows("social_i_qa", None, "train")
    random.seed(1)
    first = [
        prompts.render(template, r, seed=prompts.row_seed(0, RANDOM_TASK, "train", i))
        for i, r in enumerate(rows)
    ]
    random.seed(2)  # the global state must not matter
    again = [
        prompts.render(template, r, seed=prompts.row_seed(0, RANDOM_TASK, "train", i))
        for i, r in enumerate(rows)
    ]
    assert first == again
    # the template really is random: other seeds pick other answers for some row
    others = {prompts.render(template, rows[1], seed=s).inputs for s in range(16)}
    assert len(others) > 1


_BATCH_HASH = """
import hashlib, random, sys
random.seed(int(sys.argv[1]))
sys.path.insert(0, {tests!r})
import test_reliability as t
from t0x import data
cfg = data.DataConfig(t._random_mixture(), t.LENGTHS, 4, seed=7, pack=True)
stream = data.BatchStream(cfg)
h = hashlib.sha256()
for _ in range(6):
    batch = next(stream)
    for k in sorted(batch):
        h.update(k.encode()); h.update(batch[k].tobytes())
stream.close()
print("HASH", h.hexdigest(), flush=True)
"""


def test_two_processes_build_identical_batches():
    script = _BATCH_HASH.format(tests=str(REPO / "tests"))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    hashes = []
    for global_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script, global_seed],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        hashes.append([l for l in out.stdout.splitlines() if l.startswith("HASH")][0])
    assert hashes[0] == hashes[1]


def test_resume_on_rendered_prompts_is_bit_exact(tmp_path):
    mixture = _random_mixture()
    common = dict(
        mixture_or_task_name=mixture,
        task_feature_lengths=LENGTHS,
        batch_size=8,
        save_period=2,
        train_steps=4,
    )
    random.seed(11)
    full = _job(tmp_path / "a", **common)
    random.seed(12)
    _job(tmp_path / "b", stop_after_steps=2, **common)
    random.seed(13)  # a fresh process would have another global random state
    resumed = _job(tmp_path / "b", **common)
    assert full.step == resumed.step == 4
    a, b = (
        [
            json.loads(line)["loss"]
            for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        ]
        for d in ("a", "b")
    )
    assert a == b and len(a) == 4
    pa = checkpoints.restore_params(tmp_path / "a" / "checkpoints")
    pb = checkpoints.restore_params(tmp_path / "b" / "checkpoints")
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------ 2. non-finite
def test_absurd_learning_rate_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(errors.ConfigError, match=r"LEARNING_RATE=1e\+30 is outside"):
        _job(tmp_path / "run", learning_rate=1e30)
    assert not (tmp_path / "run").exists()


def _nan_at(count: int) -> optax.GradientTransformation:
    """Finite loss and gradients, but the update at step `count` (0-based) is NaN."""

    def update(updates, state, params=None):
        del params
        poison = jax.numpy.where(state == count, jax.numpy.nan, 0.0)
        return jax.tree.map(lambda u: u + poison, updates), state + 1

    return optax.GradientTransformation(lambda p: jax.numpy.zeros((), jax.numpy.int32), update)


def test_non_finite_weights_are_never_saved(tmp_path, monkeypatch):
    real = trainer.adafactor
    monkeypatch.setitem(
        trainer.OPTIMIZERS, "adafactor", lambda lr, **kw: optax.chain(real(lr, **kw), _nan_at(2))
    )
    with pytest.raises(errors.NonFiniteLossError, match=r"step 3.*last good checkpoint: step 2"):
        _job(tmp_path, train_steps=6, log_period=3, save_period=1)
    assert _steps(tmp_path) == [1, 2]
    with checkpoints.CheckpointStore(tmp_path / "checkpoints", read_only=True) as store:
        state, _ = store.restore(2)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state) if x.dtype.kind == "f")


# ------------------------------------------------------------------------ 3. checksums
def _array_files(step_dir: Path) -> list[Path]:
    """The OCDBT data files of a step (the per-process ones and the merged root's)."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, f"no array data files under {step_dir}"
    return files


def _flip(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    for i in range(len(blob) // 2, len(blob) // 2 + 4):
        blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))


@pytest.fixture(scope="module")
def _three_steps(tmp_path_factory):
    """A run saved at steps 1, 2, 3 (trained once; tests work on copies)."""
    run = tmp_path_factory.mktemp("three_steps")
    _job(run, train_steps=3)
    return run


@pytest.fixture
def three_steps(_three_steps, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(_three_steps, run)
    return run


def _rot_array(step_dir: Path, path: tuple[str, ...]) -> None:
    """Bit rot that still decodes: the step's files then hold other values for one array than
    were saved (one element's bits flipped), everything else intact, meta untouched."""
    import shutil

    import orbax.checkpoint as ocp

    with checkpoints.CheckpointStore(step_dir.parent, read_only=True) as store:
        state, _ = store.restore(int(step_dir.name))
    leaf = state
    for key in path[:-1]:
        leaf = leaf[key]
    bits = leaf[path[-1]].view(np.uint32).copy()
    bits.flat[bits.size // 2] ^= 0x7F800000  # exponent bits: a huge or non-finite value
    leaf[path[-1]] = bits.view(np.float32)
    tmp = step_dir.parent / "rewritten"
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as writer:
        writer.save(tmp, args=ocp.args.PyTreeSave(state))
    shutil.rmtree(step_dir / "state")
    tmp.rename(step_dir / "state")


def test_flipped_bytes_are_found_named_and_can_be_fallen_back_from(three_steps):
    tmp_path = three_steps
    _rot_array(tmp_path / "checkpoints" / "3", ("params", "token_embedder", "embedding"))
    before = _tree_bytes(tmp_path / "checkpoints")
    with pytest.raises(errors.CheckpointDamagedError) as err:
        _job(tmp_path, train_steps=4)
    msg = str(err.value)
    assert f"{tmp_path}/checkpoints/3 is damaged: array params/token_embedder/embedding" in msg
    assert "does not match the checksum" in msg and "FALLBACK_ON_DAMAGED_CHECKPOINT" in msg
    assert _tree_bytes(tmp_path / "checkpoints") == before  # nothing touched
    # the eval / convert path (params only) verifies too
    with pytest.raises(errors.CheckpointDamagedError, match="checkpoints/3 is damaged"):
        checkpoints.restore_params(tmp_path / "checkpoints")
    logs = []
    result = _job(tmp_path, train_steps=4, fallback_on_damaged_checkpoint=True, log=logs.append)
    assert result.step == 4
    assert any("warning:" in l and "3.damaged-0" in l for l in logs), logs
    assert (tmp_path / "checkpoints" / "3.damaged-0").is_dir()  # kept, not deleted
    assert _steps(tmp_path) == [1, 2, 3, 4]


def test_scrambled_files_are_named(three_steps):
    tmp_path = three_steps
    for f in _array_files(tmp_path / "checkpoints" / "3"):
        _flip(f)
    with pytest.raises(
        errors.CheckpointDamagedError,
        match=r"checkpoints/3 is damaged: its (metadata|files) cannot be read",
    ):
        _job(tmp_path, train_steps=4)


def test_truncated_file_names_the_step_and_array(three_steps):
    tmp_path = three_steps
    for victim in _array_files(tmp_path / "checkpoints" / "3"):
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(errors.CheckpointDamagedError) as err:
        checkpoints.restore_params(tmp_path / "checkpoints")
    msg = str(err.value)
    assert msg.count("\n") == 0 and len(msg) < 700
    assert f"{tmp_path}/checkpoints/3 is damaged: its " in msg and "cannot be read" in msg
    assert "Error reading" in msg  # tensorstore's words, naming the array key


# -------------------------------------------------------------------- 4. input position
def test_missing_input_position_is_refused_unless_restart_is_explicit(three_steps):
    tmp_path = three_steps
    meta_path = tmp_path / "checkpoints" / "3" / "meta" / "metadata"
    meta = json.loads(meta_path.read_text())
    del meta["batches_consumed"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        errors.CheckpointMismatchError,
        match=r"checkpoints/3 records no valid input position.*RESTART_INPUT_STREAM=True",
    ):
        _job(tmp_path, train_steps=4)
    logs = []
    assert _job(tmp_path, train_steps=4, restart_input_stream=True, log=logs.append).step == 4
    assert any("warning:" in l and "input stream restarts" in l for l in logs)
    assert checkpoints.read_meta(tmp_path / "checkpoints")["batches_consumed"] == 1


# ----------------------------------------------------------------- 5. checks before start
def test_unknown_mixture_suggests_and_leaves_no_model_dir(tmp_path):
    with pytest.raises(
        KeyError, match=r"unknown task or mixture 't0_trian'.*Did you mean: t0_train"
    ):
        _job(tmp_path / "run", mixture_or_task_name="t0_trian")
    assert not (tmp_path / "run").exists()


def test_model_dir_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("mine")
    with pytest.raises(errors.ConfigError, match="is a file, not a directory"):
        _job(f)
    assert f.read_text() == "mine"


def test_vocabulary_larger_than_the_embedding(tmp_path):
    with pytest.raises(
        errors.ConfigError, match=r"has 126 ids but the model's embedding has vocab_size=64"
    ):
        _job(
            tmp_path / "run",
            model_config=tiny_config(vocab_size=64, num_encoder_layers=1, num_decoder_layers=1),
        )
    assert not (tmp_path / "run").exists()


def test_resume_with_another_model_or_vocabulary_names_both_values(three_steps):
    tmp_path = three_steps
    before = _tree_bytes(tmp_path)
    other = tiny_config(vocab_size=256, num_encoder_layers=1, num_decoder_layers=1)
    with pytest.raises(
        errors.CheckpointMismatchError, match=r"vocab_size: checkpoint 128, this run 256"
    ):
        _job(tmp_path, train_steps=4, model_config=other)
    meta_path = tmp_path / "checkpoints" / "3" / "meta" / "metadata"
    meta = json.loads(meta_path.read_text())
    meta["vocabulary"]["sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        errors.CheckpointMismatchError, match=r"trained with vocabulary .* point T0_VOCAB"
    ):
        _job(tmp_path, train_steps=4)
    meta_path.write_text(before[str(meta_path.relative_to(tmp_path))].decode())
    assert _tree_bytes(tmp_path) == before


def test_cached_run_without_caches(tmp_path):
    name = "super_glue_rte_GPT_3_style"
    with pytest.raises(
        errors.DataError, match=rf"task {name} has no cache .*--gin.USE_CACHED_TASKS=False"
    ):
        _job(tmp_path / "run", mixture_or_task_name=name, use_cached=True)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ 6. CLI
def _cli(args, capsys):
    code = cli.main(args)
    return code, capsys.readouterr().err


def test_cli_errors_are_one_line_with_documented_exit_codes(tmp_path, capsys):
    gin = ["--gin_file=gin/demo.gin", f"--gin.MODEL_DIR='{tmp_path / 'run'}'"]
    code, err = _cli(["train", *gin, "--gin.MIXTURE_OR_TASK_NAME='t0_trian'"], capsys)
    assert code == 3 and err.count("\n") == 1 and "Did you mean: t0_train" in err
    assert "Traceback" not in err
    code, err = _cli(["train", *gin, "--gin.LEARNING_RATE=1e30", "--debug"], capsys)
    assert code == 2 and "Traceback" in err and "LEARNING_RATE=1e+30" in err
    code, err = _cli(
        ["convert", "--from", "t0x", "--to", "hf", str(tmp_path / "nope"), str(tmp_path / "x")],
        capsys,
    )
    assert code in (2, 4) and err.count("\n") == 1
    assert "exit codes" in cli.build_parser().format_help()


def test_sigterm_ends_the_demo_after_saving(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "t0x.cli",
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "--steps",
            "100000",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step "):
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 143, out[-3000:]
    assert "stopped by SIGTERM after saving" in out
    assert not (tmp_path / "demo" / "eval").exists()  # evaluation did not start
    assert _steps(tmp_path / "demo" / "model")


# ------------------------------------------------------------------- 7. data accounting
def test_data_report_counts_drops_empty_targets_and_truncation(tmp_path, capsys):
    mixture = _random_mixture()
    logs = []
    accounting.COUNTS.clear()
    _job(
        tmp_path,
        mixture_or_task_name=mixture,
        task_feature_lengths={"inputs": 64, "targets": 2},
        batch_size=8,
        train_steps=2,
        log=logs.append,
    )
    report = json.loads((tmp_path / "data_report.json").read_text())
    totals = report["totals"]
    assert report["step"] == 2 and report["mixture"] == mixture
    assert totals["rendered"] > 0 and totals["examples"] > 0
    assert totals["truncated_inputs"] > 0 and totals["truncated_targets"] > 0
    assert set(report["tasks"]) == {t.name for t in seqio.get_mixture_or_task(mixture).tasks}
    assert any(l.startswith("data: ") and "truncated" in l for l in logs), logs
    events = list((tmp_path / "train").rglob("events.out.tfevents*"))
    assert events and b"data/truncated_inputs_fraction" in events[0].read_bytes()


def test_empty_training_targets_are_dropped_and_counted(tmp_path):
    from t0_tasks import custom

    rows = [{"text": f"row {i}", "label": "" if i % 2 else "yes"} for i in range(6)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(
        "templates:\n  a: !Template\n    answer_choices: null\n    id: a\n    name: echo\n"
        "    reference: ''\n    jinja: '{{text}} ||| {{label}}'\n"
        "    metadata: !TemplateMetadata\n      choices_in_prompt: false\n"
        "      metrics: [Other]\n      original_task: true\n"
    )
    reg = custom.register_dataset(
        "t0x_empty",
        data_files={
            "train": str(tmp_path / "train.jsonl"),
            "validation": str(tmp_path / "validation.jsonl"),
        },
        templates_yaml=str(tmp_path / "t.yaml"),
    )
    task = seqio.get_mixture_or_task(reg.tasks[0])
    accounting.COUNTS.clear()
    train = list(task.get_dataset(None, "train", shuffle=False).as_numpy_iterator())
    valid = list(task.get_dataset(None, "validation", shuffle=False).as_numpy_iterator())
    assert len(train) == 3 and len(valid) == 6
    assert sum(e["targets_pretokenized"] == b"<NO LABEL>" for e in valid) == 3
    assert accounting.COUNTS.get(reg.tasks[0], "train")["empty_target"] == 3
    assert accounting.COUNTS.get(reg.tasks[0], "train")["rendered"] == 6


def test_tasks_stats_counts_rows(capsys):
    _random_mixture()
    assert cli.main(["tasks", "stats", RANDOM_MIXTURE, "--count-rows"]) == 0
    out = capsys.readouterr().out
    assert "rendered" in out.splitlines()[0] and "empty" in out.splitlines()[0]
    rows = len(task_testing.load_fixture_rows("social_i_qa", None, "train"))
    line = next(l for l in out.splitlines() if l.startswith(RANDOM_TASK))
    assert line.split()[-3:] == [str(rows), "0", "0"]


def test_tasks_show_prints_the_accounting(capsys):
    assert cli.main(["tasks", "show", "super_glue_rte_GPT_3_style", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "rows read: " in out and "dropped by the template" in out


# ------------------------------------------------------------------------ 8. score, eval
def test_score_refuses_to_overwrite_and_validates_ids(tmp_path, capsys):
    from t0x.models.t5 import hf
    from t0x.models.t5.testing import random_hf_t5

    cfg = tiny_config()
    ckpt = tmp_path / "hf"
    random_hf_t5(cfg, seed=1).save_pretrained(ckpt)
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    dst.write_text("precious\n")
    src.write_text(json.dumps({"inputs": [5, 6], "targets": [7, 1]}) + "\n")
    args = ["score", "--checkpoint", str(ckpt), "--input", str(src), "--output", str(dst)]
    code, err = _cli(args, capsys)
    assert code == 2 and "exists" in err and "--overwrite" in err
    assert dst.read_text() == "precious\n"
    src.write_text(
        json.dumps({"inputs": [5, 6], "targets": [7, 1]})
        + "\n"
        + json.dumps({"inputs": [5, 999], "targets": [7, 1]})
        + "\n"
    )
    code, err = _cli(args + ["--overwrite"], capsys)
    assert code == 3 and f"{src}:2" in err and "999" in err and "vocab_size=128" in err
    assert dst.read_text() == "precious\n"  # nothing written on failure
    src.write_text(json.dumps({"inputs": [5, 6], "targets": [7, 1]}) + "\n")
    code, err = _cli(args + ["--overwrite"], capsys)
    assert code == 0
    line = json.loads(dst.read_text())
    assert isinstance(line["log_likelihood"], float) and np.isfinite(line["log_likelihood"])
    del hf


def test_eval_names_a_damaged_task_file_and_recomputes_only_when_told(tmp_path):
    from t0x.jobs import evaluate as ev

    tasks = ["super_glue_rte_GPT_3_style_score_eval"]
    calls = []

    def scorer(enc, dec_tgt, weights):
        calls.append(enc.shape)
        return (dec_tgt * weights).sum(-1) % 7

    def run(**kw):
        return ev.evaluate_tasks(
            tasks,
            str(tmp_path),
            scorer,
            batch_size=2,
            run_key={"checkpoint": "x"},
            log=lambda s: None,
            **kw,
        )

    first = run()
    task_file = tmp_path / "tasks" / f"{tasks[0]}.json"
    task_file.write_text(task_file.read_text()[:40])  # cut short, as by a full disk
    damaged = task_file.read_text()
    calls.clear()
    with pytest.raises(
        errors.DataError, match=rf"{task_file} is damaged .*RECOMPUTE_DAMAGED_TASKS=True"
    ):
        run()
    assert calls == [] and task_file.read_text() == damaged
    again = run(recompute_damaged=True)
    assert calls and again[0]["score"] == first[0]["score"]
    assert (tmp_path / "tasks" / f"{tasks[0]}.json.damaged").read_text() == damaged
