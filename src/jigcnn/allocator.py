"""Keep freed memory inside the process (glibc malloc) so a jitted step does not page-fault on every call.

XLA:CPU allocates a step's outputs and temporaries afresh on every call. Under glibc's
defaults, blocks above the mmap threshold come from fresh ``mmap`` pages and go back to the
kernel when freed, and XLA's worker threads allocate from their own arenas, whose heaps shrink
when freed; either way each step touches tens of MB of new pages and pays a page fault per
4 KiB page. On IgNet's Fig. 5 net at batch 256 that was a third of the step
(docs/performance.md). :func:`retain_freed_memory` makes every thread allocate from the main
heap (one arena), never through ``mmap``, and never trims it, so freed memory stays in the
process for the next allocation: its resident memory then stays at its peak, which is what a
training process wants (PyTorch's and JAX's GPU allocators do the same with device memory).
The one arena matters: a thread's own arena grows in heaps of at most 64 MiB, and glibc serves
a larger block through ``mmap`` whatever ``M_MMAP_MAX`` says (two IgNet programs alternating:
3.8M page faults, a 2x slower step). Its price is lock contention between XLA's threads:
LeNet-5's 4 ms steps at batch 32 ran 10-25% slower.

It changes the whole process, so jigcnn never does it on import: the experiments and the bench
call it at start, ``jigcnn.train.fit`` when it begins (``retain_memory=False`` skips it), and a
user's own script may (``JIGCNN_RETAIN_MEMORY=0`` opts out of all of these).
Elsewhere than glibc (macOS, Windows, musl) it does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

ENV_VAR = "JIGCNN_RETAIN_MEMORY"
# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# glibc's defaults, for `restore_defaults` (arena_max 0: glibc's own rule, 8 per core)
_DEFAULTS = {M_ARENA_MAX: 0, M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}
_RETAIN = {M_ARENA_MAX: 1, M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}
_state = {"retaining": False}


@functools.lru_cache(maxsize=None)
def _libc():
    """glibc's ``mallopt`` through ctypes, or None off glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version  # only glibc has it
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc


def available() -> bool:
    """Whether this process runs on glibc, so the allocator can be configured."""
    return _libc() is not None


def _apply(settings: dict[int, int]) -> bool:
    libc = _libc()
    if libc is None:
        return False
    # mallopt returns 1 on success; every setting is tried even if one fails
    return all([libc.mallopt(param, value) == 1 for param, value in settings.items()])


def retain_freed_memory(*, respect_env: bool = True) -> bool:
    """Configure glibc malloc to keep freed memory (one arena, no mmap, no trimming); True if applied.

    Call it once, early, before the first jitted computation: threads that already allocated
    keep their arena, and once several arenas exist glibc may hand a new thread one of them
    (called after six IgNet steps it gave 27-38 ms steps, against 25-27 ms called first and
    58 ms never). With ``respect_env`` (the default), ``JIGCNN_RETAIN_MEMORY=0`` turns it into
    a no-op that returns False.
    """
    if respect_env and os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    _state["retaining"] = _apply(_RETAIN)
    return _state["retaining"]


def restore_defaults() -> bool:
    """Put glibc's default mmap limit, trim threshold and arena limit back; True if applied.

    glibc's dynamic mmap threshold stays off (any mallopt of these settings turns it off).
    """
    restored = _apply(_DEFAULTS)
    if restored:
        _state["retaining"] = False
    return restored


def retaining() -> bool:
    """Whether :func:`retain_freed_memory` is in effect in this process (results record it)."""
    return _state["retaining"]


__all__ = ["ENV_VAR", "available", "restore_defaults", "retain_freed_memory", "retaining"]
