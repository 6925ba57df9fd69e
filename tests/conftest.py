"""Shared pytest fixtures: the shared data directory and the persistent compilation cache."""

import os
import pathlib

import jax
import pytest

_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _find_shared_data():
    env = os.environ.get("JIGCNN_DATA")
    if env and pathlib.Path(env).is_dir():
        return pathlib.Path(env)
    here = pathlib.Path(__file__).resolve().parent.parent
    for cand in (here.parent / "shared" / "data", here.parent.parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data_dir():
    """The real data sets (../shared/data or $JIGCNN_DATA); skips the test when absent."""
    d = _find_shared_data()
    if d is None:
        pytest.skip("real data sets not found: set JIGCNN_DATA or put shared/data beside the repository")
    return d
