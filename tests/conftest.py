"""Shared pytest fixtures: the shared data directory, the persistent compilation cache, and fast compiles.

Tests compile hundreds of small programs and run each once or twice, so most of the suite's
time was XLA:CPU's LLVM optimisation (a 12-layer equivalence net: 2.7 s to compile, 0.9 s at
LLVM -O0). The suite therefore compiles with ``--xla_backend_optimization_level=0``: the same
HLO, fused the same way, with unoptimised machine code (it may round differently where -O2
would contract a multiply-add; every comparison is between programs built alike). Set
``JIGCNN_TEST_FULL_XLA_OPT=1`` to test with XLA's default optimisation instead.
"""

import os
import pathlib

if os.environ.get("JIGCNN_TEST_FULL_XLA_OPT") != "1" and "xla_backend_optimization_level" not in os.environ.get(
        "XLA_FLAGS", ""):
    # before the first computation (the backend reads XLA_FLAGS once); inherited by subprocesses
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

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


@pytest.fixture
def x64():
    """Float64 for the duration of one test (the previous setting restored after it)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture(scope="session")
def shared_data_dir():
    """The real data sets (../shared/data or $JIGCNN_DATA); skips the test when absent."""
    d = _find_shared_data()
    if d is None:
        pytest.skip("real data sets not found: set JIGCNN_DATA or put shared/data beside the repository")
    return d
