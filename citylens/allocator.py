"""Keep freed tensor memory in the process instead of handing it back to the OS.

A CNN batch on the CPU allocates activations of hundreds of MB (VGG11, batch 32, 224
px: 411 MB per early layer) and frees them before the next batch. glibc serves blocks
that large with a fresh ``mmap`` and returns them with ``munmap`` on free, so every
batch touches its activations' pages for the first time again and the kernel zeroes
each 4 KB page on the fault: for VGG11 Grad-CAM ~380k faults and 0.6 s of a 3.5 s batch
of 32 (``getrusage`` in a Ray Data actor); with the settings below, none.

glibc is told to serve large blocks from its heap and to keep freed heap memory, so a
worker stays at its high-water mark and later batches reuse pages already mapped. That
needs all threads on the main heap: Ray Data runs a UDF in a thread of its own, and
glibc's per-thread arenas ``mmap`` large blocks whatever the settings. Hence

- :func:`worker_runtime_env` for Ray actors (explain, segment, Ray Train workers): the
  settings as ``MALLOC_*`` environment variables, read when the process starts;
- :func:`keep_freed_memory` for a process whose main thread does the work (the
  benchmarks' single-process loops): the same through ``mallopt``, at run time.

It changes nothing but speed and when memory returns to the OS (when the worker exits).
Other C libraries ignore both.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["MALLOC_ENV", "keep_freed_memory", "worker_runtime_env"]

_KEEP = 2**31 - 1  # bytes of free heap top kept before trimming (mallopt takes an int)
# glibc's malloc.h parameter numbers, and the environment variables that set them
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(_KEEP),
}


def worker_runtime_env() -> dict:
    """Ray ``runtime_env`` for model actors: :data:`MALLOC_ENV` as ``env_vars``.

    Ray merges it with the job's own runtime environment (``working_dir`` etc. stay).
    """
    return {"env_vars": dict(MALLOC_ENV)}


def keep_freed_memory() -> bool:
    """Make this process's glibc ``malloc`` reuse freed large blocks (see module doc).

    Applies to the main thread's allocations; threads that already have an arena of
    their own keep it (use :func:`worker_runtime_env` for Ray actors).

    Returns:
        True if set; False where there is no glibc ``mallopt`` (macOS, musl, Windows),
        which changes nothing else.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _KEEP))
    return all(mallopt(param, value) == 1 for param, value in settings)
