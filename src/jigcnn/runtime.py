"""Process-wide settings are the program's choice: one explicit call applies them, and no library function does.

`configure_process` is what jigcnn's own programs call first (the experiments through
`experiments.common.run_program`, ``python -m jigcnn.train``, the bench): glibc keeps freed
memory (`jigcnn.allocator`: a jitted step stops page-faulting its temporaries) and JAX's
persistent compilation cache is on (`jigcnn.compile_cache`: a second process loads its programs
instead of compiling them). A user's script may call it too; `fit`, `cross_validate` and every
other library function leave the process as they found it.

XLA compiler options are not process-wide here: the train-step builders pass them per
computation (``compiler_options="auto"``, `jigcnn.xla_options`), so they never change other
programs in the process.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple


class ProcessSettings(NamedTuple):
    """What `configure_process` applied."""

    retains_freed_memory: bool  # glibc malloc keeps freed memory (False off glibc, or when not asked)
    compilation_cache: pathlib.Path | None  # the persistent compilation cache's folder, or None


def configure_process(*, retain_memory: bool = True, compilation_cache: bool | str | pathlib.Path = True,
                      keep_existing_cache: bool = True) -> ProcessSettings:
    """Apply the process-wide settings a training program wants; call it once, first, before any computation.

    ``retain_memory``: `jigcnn.allocator.retain_freed_memory` (glibc only; it must run before the
    first jitted computation to take effect for XLA's threads). ``compilation_cache``: True for
    the default folder (`jigcnn.compile_cache.cache_dir`), a path for another, False for none;
    with ``keep_existing_cache`` a cache the caller already set up (e.g. a test suite's) is kept.
    """
    import jax

    from jigcnn import allocator, compile_cache

    retained = allocator.retain_freed_memory() if retain_memory else False
    folder = None
    if compilation_cache is not False:
        existing = jax.config.jax_compilation_cache_dir
        if keep_existing_cache and existing:
            folder = pathlib.Path(existing)
        else:
            folder = compile_cache.enable(None if compilation_cache is True else compilation_cache)
    return ProcessSettings(retained, folder)


__all__ = ["ProcessSettings", "configure_process"]
