"""Freed host memory is kept for reuse on XLA:CPU: no page faults per step (OS accounting)."""

import os
import subprocess
import sys
import textwrap

import pytest

from t0x import host_memory

# Runs a jitted function whose temporaries (~400 MB) XLA:CPU allocates and frees on every
# call, 12 times, and prints the minor page faults (the kernel's count) of each call.
PROBE = textwrap.dedent(
    """
    import resource, sys
    from t0x import host_memory
    kept = host_memory.keep_freed_memory() if sys.argv[1] == "keep" else False
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x: jnp.sum(jnp.sin(jnp.outer(x, x) + 1.0) * jnp.cos(jnp.outer(x, x))))
    x = jnp.linspace(0.0, 1.0, 7000)
    faults = []
    for _ in range(12):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(kept, *faults)
    """
)


def _probe(mode: str) -> tuple[bool, list[int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    env.pop("GLIBC_TUNABLES", None)
    env.pop("T0X_KEEP_HOST_MEMORY", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", [int(n) for n in out[1:]]


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's malloc only",
)
def test_a_kept_heap_serves_each_step_without_page_faults():
    kept, with_kept = _probe("keep")
    _, with_default = _probe("default")
    assert kept
    # glibc's default maps the ~400 MB of temporaries afresh on every call (~96k 4 KiB pages)
    assert min(with_default) > 20_000, with_default
    # kept: the heap grows to its high-water mark (one set of temporaries per call whose
    # buffers XLA has not freed yet: a few), then calls reuse its pages
    fault_free = [n for n in with_kept if n < min(with_default) / 100]
    assert len(fault_free) >= 3 and with_kept[-1] < min(with_default) / 100, with_kept


def test_only_cpu_runs_without_user_malloc_settings_are_changed():
    assert host_memory.runs_on_cpu({"JAX_PLATFORMS": "cpu"})
    assert not host_memory.runs_on_cpu({"JAX_PLATFORMS": "tpu,cpu"})
    assert not host_memory.runs_on_cpu({"JAX_PLATFORMS": "cuda"})
    assert host_memory.user_chose_malloc_settings({"MALLOC_ARENA_MAX_": "2"})
    assert host_memory.user_chose_malloc_settings({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert host_memory.user_chose_malloc_settings({"T0X_KEEP_HOST_MEMORY": "0"})
    assert not host_memory.user_chose_malloc_settings({"GLIBC_TUNABLES": "glibc.pthread.x=1"})
    # nothing is applied for an accelerator or where the user chose: the calls return False
    assert not host_memory.keep_freed_memory({"JAX_PLATFORMS": "tpu"})
    assert not host_memory.keep_freed_memory({"JAX_PLATFORMS": "cpu", "MALLOC_TOP_PAD_": "1"})
