"""JAX's persistent compilation cache for jigcnn's experiments (tests enable theirs in tests/conftest.py).

``enable()`` points ``jax_compilation_cache_dir`` at ``$JIGCNN_JAX_CACHE`` or
``~/.cache/jigcnn/jax`` so a second process skips XLA compilation of the same
programs (a jitted train step is then loaded from disk in milliseconds).
"""

from __future__ import annotations

import os
import pathlib

DEFAULT_DIR = pathlib.Path("~/.cache/jigcnn/jax")
ENV_VAR = "JIGCNN_JAX_CACHE"


def cache_dir(path=None) -> pathlib.Path:
    """The cache folder: `path`, else $JIGCNN_JAX_CACHE, else ~/.cache/jigcnn/jax."""
    if path is None:
        path = os.environ.get(ENV_VAR) or DEFAULT_DIR
    return pathlib.Path(path).expanduser()


def enable(path=None, *, min_compile_time_secs: float = 0.0, min_entry_size_bytes: int = 0) -> pathlib.Path:
    """Turn on the persistent compilation cache in `path` (see `cache_dir`); returns the folder.

    Every compilation taking at least `min_compile_time_secs` is stored (0: all of them,
    which is what makes the first step of a small net fast in the next process).
    """
    import jax

    d = cache_dir(path)
    d.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(d))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
    return d


def disable() -> None:
    """Turn the persistent cache off again (for this process)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", None)


__all__ = ["DEFAULT_DIR", "ENV_VAR", "cache_dir", "enable", "disable"]
