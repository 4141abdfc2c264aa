"""Keep freed host memory in the process when XLA runs on the CPU (no page faults per step).

Vocabulary:
  temporaries  the one buffer XLA:CPU allocates for an executable's intermediate values each
               time it runs (3.7 GB for a T5 1.1 small training step at batch 8 x 640
               tokens), with malloc, from one of its worker threads, and frees at the end.
  page faults  glibc serves an allocation that large with a fresh `mmap` and hands it back
               with `munmap`, so on every step the kernel maps and zero-fills each page again:
               1.04M minor faults and ~2.7 s of system time per step of that config
               (BENCHMARKS.md), a third of the step's CPU time.

`keep_freed_memory()` tells glibc (through `mallopt`) to keep freed memory for reuse: one
malloc arena for all threads (M_ARENA_MAX = 1: a worker thread's arena could not hold the
temporaries and would fall back to mmap), no mmap-backed chunks (M_MMAP_MAX = 0) and no
trimming of the heap (M_TRIM_THRESHOLD = max). Once the heap has reached its high-water mark
(the temporaries of the few steps whose buffers XLA has not freed yet, as it frees them
asynchronously) steps reuse its pages: zero page faults. The process keeps its peak heap
until it exits, which is what a training or evaluation job holds anyway.

Invariants:
  - Applied only where it helps and where it is safe: Linux with glibc, a JAX that will run on
    the CPU (JAX_PLATFORMS names only "cpu", or no TPU/GPU device file exists), and no malloc
    setting of the user's (GLIBC_TUNABLES with malloc, MALLOC_*_ variables) or
    T0X_KEEP_HOST_MEMORY=0. Accelerator hosts keep glibc's defaults: their input pipelines
    are multi-threaded and their temporaries live on the device.
  - Call it before JAX starts its CPU backend (the `t0x` command and bench/ do so first):
    threads created before it keep their own arenas.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
from typing import Mapping

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # <malloc.h>
ACCELERATOR_DEVICES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*")


def runs_on_cpu(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether JAX will pick its CPU backend (without starting any backend)."""
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return {p.strip() for p in platforms.split(",")} == {"cpu"}
    return not any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICES)


def user_chose_malloc_settings(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("T0X_KEEP_HOST_MEMORY", "1") == "0":
        return True
    if "malloc" in environ.get("GLIBC_TUNABLES", ""):
        return True
    return any(k.startswith("MALLOC_") and k.endswith("_") for k in environ)


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> bool:
    """Apply the module doc's malloc settings where they apply; True when applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if user_chose_malloc_settings(environ) or not runs_on_cpu(environ):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # -1 as M_TRIM_THRESHOLD is SIZE_MAX to glibc (the value is widened to size_t)
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
    return all(mallopt(option, value) == 1 for option, value in settings)
