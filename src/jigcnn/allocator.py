"""Keep freed memory inside the process (glibc malloc) so a jitted step does not page-fault on every call.

XLA:CPU allocates a step's outputs and temporaries afresh on every call. Under glibc's
defaults, blocks above the mmap threshold come from fresh ``mmap`` pages and go back to the
kernel when freed, and XLA's worker threads allocate from their own arenas, whose heaps shrink
when freed; either way each step touches tens of MB of new pages and pays a page fault per
4 KiB page. On IgNet's Fig. 5 net at batch 256 that was a third of the step
(docs/performance.md). :func:`retain_freed_memory` tells glibc never to serve a block through
``mmap`` and never to trim a heap, so freed memory stays in the process for the next
allocation: its resident memory then stays at its peak, which is what a training process wants
(PyTorch's and JAX's GPU allocators do the same with device memory). Threads keep their own
arenas: limiting glibc to one arena as well cost LeNet-5's small steps 10-20% (lock contention).

It changes the whole process, so jigcnn never does it on import: the experiments and the bench
call it at start (``JIGCNN_RETAIN_MEMORY=0`` opts out), and a user's own script may.
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
# glibc's defaults, for `restore_defaults`
_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}
_RETAIN = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}
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
    """Configure glibc malloc to keep freed memory (no mmap-ed blocks, no trimming); True if applied.

    Call it once, early; it takes effect for later allocations. With ``respect_env`` (the
    default), ``JIGCNN_RETAIN_MEMORY=0`` turns it into a no-op that returns False.
    """
    if respect_env and os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    _state["retaining"] = _apply(_RETAIN)
    return _state["retaining"]


def restore_defaults() -> bool:
    """Put glibc's default mmap limit and trim threshold back; True if applied.

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
