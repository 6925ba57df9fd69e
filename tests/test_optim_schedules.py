"""jigcnn.optim.onecycle_schedule / onecycle_sgd against the one-cycle formula and one SGD step by hand."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn.optim import onecycle_schedule, onecycle_sgd


def test_onecycle_schedule_rises_to_the_peak_then_falls_to_the_floor():
    peak, total = 0.1, 100
    s = onecycle_schedule(peak, total, pct_start=0.25, div_factor=10.0, final_div_factor=100.0)
    assert float(s(0)) == pytest.approx(peak / 10)
    assert float(s(25)) == pytest.approx(peak)
    assert float(s(total)) == pytest.approx(peak / 10 / 100, rel=1e-4)
    # cosine annealing between the anchors: half way up is the mean of start and peak
    for t in (5, 12, 20):
        want = peak / 10 + (peak - peak / 10) * (1 - math.cos(math.pi * t / 25)) / 2
        assert float(s(t)) == pytest.approx(want, rel=1e-4)
    lrs = [float(s(t)) for t in range(total + 1)]
    assert lrs.index(max(lrs)) == 25


def test_onecycle_sgd_decays_kernels_not_biases_in_its_first_step():
    peak, total, wd, mom = 0.5, 10, 0.01, 0.9
    tx = onecycle_sgd(peak, total, momentum=mom, weight_decay=wd)
    params = {"conv1": {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full((2,), 3.0)}}
    zero = {"conv1": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros((2,))}}
    upd, _ = tx.update(zero, tx.init(params), params)
    lr0 = peak / 10
    # gradient wd * w; Nesterov's first step moves by lr * (g + momentum * g)
    np.testing.assert_allclose(np.asarray(upd["conv1"]["kernel"]), -lr0 * (1 + mom) * wd * 3.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(upd["conv1"]["bias"]), 0.0)


def test_onecycle_rejects_bad_arguments():
    with pytest.raises(ValueError, match="total_steps must be an int >= 1, got 0"):
        onecycle_sgd(0.1, 0)
    with pytest.raises(ValueError, match="peak_lr must be > 0, got -1"):
        onecycle_schedule(-1, 10)
    with pytest.raises(ValueError, match="momentum must be in"):
        onecycle_sgd(0.1, 10, momentum=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        onecycle_sgd(0.1, 10, weight_decay=-1)


def test_step_schedule_and_step_sgd():
    from jigcnn.optim import step_schedule, step_sgd

    s = step_schedule(0.1, 100)
    assert [float(s(i)) for i in (0, 49, 50, 74, 75, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="total_steps"):
            step_schedule(0.1, bad)
    with pytest.raises(ValueError, match="boundaries"):
        step_schedule(0.1, 10, boundaries=(1.5,))
    with pytest.raises(ValueError, match="momentum"):
        step_sgd(0.1, 10, momentum=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        step_sgd(0.1, 10, weight_decay=-1e-4)
