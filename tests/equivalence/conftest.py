"""The gradient-equivalence suite: every test here carries the `equivalence` marker."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/equivalence" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.equivalence)
