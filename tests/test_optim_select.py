"""Selecting which arrays a transform touches; property checks of the mask sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jigcnn.optim import (
    all_of,
    any_of,
    biases_only,
    dropconnect,
    freezeconnect,
    kernels_only,
    layer_names,
    layers,
    path_names,
    resolve_rates,
    resolve_where,
)

PARAMS = {
    "conv1": {"kernel": jnp.zeros((3, 3, 1, 2)), "bias": jnp.zeros((2,))},
    "bn1": {"scale": jnp.ones((2,)), "offset": jnp.zeros((2,))},
    "dense2": {"kernel": jnp.zeros((4, 3))},
    "prelu2": {"alpha": jnp.zeros((3,))},
}


def test_path_names_and_predicates():
    paths = {}
    jax.tree_util.tree_map_with_path(lambda p, x: paths.setdefault(path_names(p), x), PARAMS)
    assert ("conv1", "kernel") in paths and ("bn1", "offset") in paths
    sel = resolve_where(kernels_only, PARAMS)
    assert sel == {
        "conv1": {"kernel": True, "bias": False},
        "bn1": {"scale": False, "offset": False},
        "dense2": {"kernel": True},
        "prelu2": {"alpha": False},
    }
    assert resolve_where(biases_only, PARAMS)["conv1"] == {"kernel": False, "bias": True}
    sel = resolve_where(all_of(layers("conv1", "dense2"), kernels_only), PARAMS)
    assert sel["conv1"]["kernel"] and sel["dense2"]["kernel"] and not sel["conv1"]["bias"]
    sel = resolve_where(any_of(layers("bn1"), biases_only), PARAMS)
    assert sel["bn1"] == {"scale": True, "offset": True} and sel["conv1"]["bias"] and not sel["dense2"]["kernel"]
    assert layer_names(PARAMS) == ["conv1", "bn1", "dense2", "prelu2"]


def test_prefix_trees_and_errors():
    rates = resolve_rates({"conv1": 0.5, "bn1": None, "dense2": {"kernel": 0.25}, "prelu2": 0.1}, kernels_only, PARAMS)
    assert rates == {
        "conv1": {"kernel": 0.5, "bias": 0.0},
        "bn1": {"scale": 0.0, "offset": 0.0},
        "dense2": {"kernel": 0.25},
        "prelu2": {"alpha": 0.0},  # not a kernel: unselected
    }
    assert resolve_where(False, PARAMS)["dense2"] == {"kernel": False}
    with pytest.raises(ValueError, match="does not match the params structure"):
        resolve_where({"conv1": True}, PARAMS)
    with pytest.raises(TypeError, match="booleans or None"):
        resolve_where({"conv1": 1, "bn1": True, "dense2": True, "prelu2": True}, PARAMS)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        resolve_rates({"conv1": 0.5, "bn1": 2.0, "dense2": 0.1, "prelu2": None}, None, PARAMS)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(rate=st.floats(0.02, 0.98), seed=st.integers(0, 2**31 - 1), drop=st.booleans())
def test_mask_fraction_property(rate, seed, drop):
    params = {"d": {"kernel": jnp.zeros((100, 100))}}
    transform = dropconnect if drop else freezeconnect
    state = transform(rate, key=jax.random.key(seed), resample="never").init(params)
    frac = 1.0 - float(np.asarray(state.mask["d"]["kernel"]).mean())
    assert abs(frac - rate) < 5 * np.sqrt(rate * (1 - rate) / 1e4)


def test_learning_rates_must_be_positive_finite_numbers_or_schedules():
    from jigcnn.errors import UserError
    from jigcnn.optim.select import check_learning_rate

    for bad, match in [(-1, r"lr must be a finite number > 0, got -1 \(a negative learning rate trains uphill\)"),
                       (0.0, r"got 0\.0"), (float("nan"), "got nan"), ("fast", r"must be a number > 0.*'fast'"),
                       (True, "got True")]:
        with pytest.raises(UserError, match=match):
            check_learning_rate(bad, "lr", "opt")
    check_learning_rate(1e-3)
    check_learning_rate(optax.linear_schedule(0.1, 0.0, 10))
