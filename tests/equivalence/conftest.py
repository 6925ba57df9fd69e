"""The gradient-equivalence suite: every test here carries the `equivalence` marker."""

import jax
import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/equivalence" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.equivalence)


@pytest.fixture
def x64():
    """Float64 for the duration of one test."""
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)
