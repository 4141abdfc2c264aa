"""Multi-host training: two `jax.distributed` processes on loopback train as one job.

Two worker processes (2 simulated CPU devices each, T0X_COORDINATOR / T0X_NUM_PROCESSES /
T0X_PROCESS_ID, so `t0x.train.train` starts `jax.distributed` itself; CPU collectives are
gloo, JAX's default) run 3 steps of the same job on a data=2 x model=2 mesh spanning both.
Each host reads its own shard of the task (seqio ShardInfo), so the global batch is the
concatenation of the two hosts' batches, which no single-process run reads. The workers
record what the loop really consumed: each host's batches and the assembled global batches.
The test then checks that
  * the hosts read disjoint examples, and the global batch is [host 0 rows; host 1 rows];
  * one process with 4 devices and the same mesh, init and global batches, stepping
    `Trainer.train_step` directly, gets the workers' per-step losses;
  * the checkpoint both workers wrote together holds that process's final params.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

pytestmark = pytest.mark.slow

NUM_PARTITIONS = 2
LENGTHS = {"inputs": 20, "targets": 16}
BATCH, STEPS, SEED, LR = 8, 3, 5, 1e-2
TIMEOUT_S = 120


def _config():
    from t0x.models.t5.testing import tiny_config

    return tiny_config(num_encoder_layers=1, num_decoder_layers=1)


# ------------------------------------------------------------------ the worker process
def _worker(out_dir: Path) -> None:
    from jax.experimental import multihost_utils

    from t0x import data, partitioning
    from t0x.jobs import train as train_lib
    from t0x.testing import register_counting_task

    host_batches, global_batches = [], []
    stream_next, to_global = data.BatchStream.__next__, partitioning.to_global_batch

    def recording_next(self):
        batch = stream_next(self)
        host_batches.append(batch)
        return batch

    def recording_to_global(host, mesh):
        arrays = to_global(host, mesh)
        global_batches.append(
            {
                k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
                for k, v in arrays.items()
            }
        )
        return arrays

    data.BatchStream.__next__ = recording_next
    partitioning.to_global_batch = recording_to_global
    result = train_lib.train(
        model_dir=str(out_dir / "job"),
        mixture_or_task_name=register_counting_task(),
        task_feature_lengths=LENGTHS,
        train_steps=STEPS,
        batch_size=BATCH,
        model_config=_config(),
        num_partitions=NUM_PARTITIONS,
        seed=SEED,
        learning_rate=LR,
        log_period=1,
        save_period=1000,
    )
    i = jax.process_index()
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    for name, batches in (("host", host_batches), ("global", global_batches)):
        np.savez(
            out_dir / f"{name}{i}.npz",
            **{f"{s}/{k}": v for s, b in enumerate(batches) for k, v in b.items()},
        )
    (out_dir / f"result{i}.json").write_text(
        json.dumps({"step": result.step, "history": result.history})
    )


# ------------------------------------------------------------------ the test
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load(path: Path) -> list[dict]:
    with np.load(path) as f:
        steps: dict[int, dict] = {}
        for key in f.files:
            s, k = key.split("/", 1)
            steps.setdefault(int(s), {})[k] = f[key]
    return [steps[s] for s in sorted(steps)]


def _examples(batch) -> set[bytes]:
    """The packed examples of a batch, by their input tokens."""
    out = set()
    for tokens, seg in zip(batch["encoder_input_tokens"], batch["encoder_segment_ids"]):
        out.update(tokens[seg == s].tobytes() for s in set(seg[seg > 0].tolist()))
    return out


def _run_workers(out_dir: Path) -> None:
    port = _free_port()
    procs = []
    for i in range(2):
        env = dict(
            os.environ,
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
            JAX_PLATFORMS="cpu",
            T0X_COORDINATOR=f"127.0.0.1:{port}",
            T0X_NUM_PROCESSES="2",
            T0X_PROCESS_ID=str(i),
            TF_CPP_MIN_LOG_LEVEL="3",
        )
        log = open(out_dir / f"worker{i}.log", "w")
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, __file__, "--worker", str(out_dir)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    try:
        for p, _ in procs:
            p.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    for i, (p, _) in enumerate(procs):
        if p.returncode != 0:
            tail = (out_dir / f"worker{i}.log").read_text()[-3000:]
            pytest.fail(f"worker {i} exited with {p.returncode} (timeout {TIMEOUT_S} s):\n{tail}")


def test_two_processes_train_like_one(tmp_path):
    from t0x import checkpoints, partitioning, trainer
    from t0x.models.t5.model import EncoderDecoderModel

    # (checked here, not in a decorator: importing this file must not start a JAX backend,
    # because the workers import it and start jax.distributed afterwards)
    if jax.device_count() < 4:
        pytest.skip(
            "the single-process reference needs 4 devices: set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=8"
        )

    _run_workers(tmp_path)
    hosts = [_load(tmp_path / f"host{i}.npz") for i in range(2)]
    globals_ = _load(tmp_path / "global0.npz")
    assert len(hosts[0]) == len(hosts[1]) == len(globals_) == STEPS

    for step in range(STEPS):
        h0, h1, g = hosts[0][step], hosts[1][step], globals_[step]
        assert h0["encoder_input_tokens"].shape[0] == BATCH // 2
        assert not np.array_equal(h0["encoder_input_tokens"], h1["encoder_input_tokens"])
        for k in g:  # the global batch is host 0's rows, then host 1's
            np.testing.assert_array_equal(g[k], np.concatenate([h0[k], h1[k]]), err_msg=k)
        for k, v in _load(tmp_path / "global1.npz")[step].items():
            np.testing.assert_array_equal(v, g[k], err_msg=k)
    # disjoint shards: in their first batches (well within one epoch) no example is on both
    first = [_examples(h[0]) for h in hosts]
    assert len(first[0]) > BATCH // 2 and not first[0] & first[1]

    results = [json.loads((tmp_path / f"result{i}.json").read_text()) for i in range(2)]
    assert results[0]["step"] == results[1]["step"] == STEPS
    worker_losses = [h["loss"] for h in results[0]["history"]]
    assert [h["step"] for h in results[0]["history"]] == list(range(1, STEPS + 1))

    # one process, 4 devices, the same mesh shape, init, optimizer and global batches
    mesh = partitioning.create_mesh(NUM_PARTITIONS, devices=jax.devices()[:4])
    model = EncoderDecoderModel(_config(), z_loss=1e-4)
    tr = trainer.Trainer(model, trainer.adafactor(LR), mesh)
    state = tr.init_state(jax.random.key(SEED))
    rng = jax.random.key(SEED + 1)
    losses = []
    for g in globals_:
        state, metrics = tr.train_step(state, partitioning.to_global_batch(g, mesh), rng)
        losses.append(float(jax.device_get(metrics["loss"])))
    np.testing.assert_allclose(worker_losses, losses, rtol=1e-5)

    saved = checkpoints.restore_params(tmp_path / "job" / "checkpoints")
    ref = jax.device_get(state.params)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(ref)[0], jax.tree.leaves(saved)):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]))
    else:
        sys.exit(f"usage: {sys.argv[0]} --worker OUT_DIR (run by tests/test_multihost.py)")
