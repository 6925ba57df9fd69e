"""Automatic Eq. 3 calibration and the paper's Fig. 4 experiment (second layer's W raised 10x)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import zoo
from jigcnn.diagnostics import bounds, calibrate_init, diagnose, scale_kernels

SHAPE = (12, 10, 1)


def _fig5(W):
    return zoo.ignet_fig5(1, filters=4, kernel=(3, 3), input_shape=SHAPE, W=W)


def _batch(lo, hi, n=8):
    x = jax.random.uniform(jax.random.key(1), (n,) + SHAPE)
    return x, jax.random.uniform(jax.random.key(2), (n, 1), minval=lo, maxval=hi)


def _fig4_factor(x, t):
    """dL/dw MAV of conv1 with W^2 = 10 over the same with W^2 = 1 (same draws, as Eq. 3 is linear in W)."""
    small, big = _fig5((1.0, 1.0)), _fig5((1.0, 10.0))
    ps, ss = small.init(jax.random.key(0))
    pb, sb = big.init(jax.random.key(0))
    # Eq. 3 draws lo + u (hi - lo): 10x the range gives 10x the values up to a rounding step of the range
    scale = float(np.max(np.abs(pb["fc"]["kernel"])))
    np.testing.assert_allclose(pb["fc"]["kernel"], 10 * ps["fc"]["kernel"], rtol=0,
                               atol=4 * np.finfo(np.float32).eps * scale)
    ds, db = diagnose(small, ps, ss, x, t, "mae"), diagnose(big, pb, sb, x, t, "mae")
    return db["conv1"].weight_grad_mav / ds["conv1"].weight_grad_mav, ds, db


def test_fig4_second_layer_w_10x_raises_first_layer_derivative_10x():
    """Paper Fig. 4a -> 4b on the Fig. 5 net, regression (ages 4..10 as targets), MAE.

    dL/dw1 = sum In * w2 * sign(y - t) / N is linear in w2 while the signs stay put; with
    targets above every output the factor is 10, and it stays near 10 while only a few signs flip.
    """
    factor, small, big = _fig4_factor(*_batch(4.0, 10.0))
    assert 7.0 <= factor <= 13.0
    assert big["fc"].weight_grad_mav == pytest.approx(small["fc"].weight_grad_mav, rel=1e-5)  # Eq. 5: no W^2 in it
    # targets beyond the Eq. 4 bound on the outputs: no sign can flip, the factor is exactly 10
    assert bounds(_fig5((1.0, 10.0)), 8, "mae").output < 20.0
    exact, _, _ = _fig4_factor(*_batch(20.0, 30.0))
    assert exact == pytest.approx(10.0, rel=1e-4)


def test_fig4_factor_drops_when_outputs_straddle_the_targets():
    """Targets near zero: raising W^2 flips output signs under MAE, so the factor is no longer 10 (Eq. 1a assumes fixed dL/dN)."""
    factor, _, _ = _fig4_factor(*_batch(-0.05, 0.05))
    assert abs(factor - 10.0) > 0.5  # the sign pattern of dL/dN changed with the outputs


def test_calibration_from_too_small_init_lands_in_band():
    model = _fig5((0.01, 0.01))
    params, state = model.init(jax.random.key(0))
    x, t = _batch(4.0, 10.0)
    cal = calibrate_init(model, params, state, x, t, "mae", target=(0.01, 0.1), max_iters=10)
    assert cal.converged and cal.passes <= 11
    assert not any(cal.trajectory[0]["in_band"].values())
    mav = diagnose(model, cal.params, state, x, t, "mae").weight_grad_mavs()
    assert all(0.01 <= v <= 0.1 for v in mav.values()), mav
    for name in ("conv1", "fc"):
        np.testing.assert_allclose(cal.params[name]["kernel"], params[name]["kernel"] * cal.scales[name], rtol=1e-6)
        assert cal.amplitudes[name] == pytest.approx(0.01 * cal.scales[name])
    assert cal.trajectory[-1]["weight_grad_mav"] == pytest.approx(mav, rel=1e-5)


@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
def test_calibration_deeper_nets(loss):
    cls = loss != "mse"
    model = zoo.ignet_deep(3, 3 if cls else 1, filters=2, input_shape=SHAPE, W=(0.05, 0.05, 0.05))
    params, state = model.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (8,) + SHAPE)
    t = jnp.arange(8) % 3 if cls else jax.random.uniform(jax.random.key(2), (8, 1))
    cal = calibrate_init(model, params, state, x, t, loss, target=(0.01, 0.1), max_iters=10)
    assert cal.converged, cal.trajectory[-1]
    assert set(cal.amplitudes) == {"conv1", "conv2", "fc"}


def test_calibration_reports_failure_and_validates():
    model = _fig5((1.0, 1.0))
    params, state = model.init(jax.random.key(0))
    x, t = _batch(4.0, 10.0)
    cal = calibrate_init(model, params, state, x, t, "mae", max_iters=0)
    assert cal.passes == 1
    with pytest.raises(ValueError, match="0 < lo < hi"):
        calibrate_init(model, params, state, x, t, "mae", target=(0.1, 0.01))
    with pytest.raises(ValueError, match="no kernel"):
        calibrate_init(model, params, state, x, t, "mae", layers=["flatten"])
    assert scale_kernels(params, {"fc": 2.0})["conv1"] is params["conv1"]


def test_calibrated_init_learns_faster_than_too_small():
    """Plain SGD, MAE, the Fig. 5 net: from the calibrated amplitudes the loss falls within 100 steps,
    from the too-small ones (dL/dw MAVs 1e-6..1e-4) it has hardly moved (the experiments issue does it at scale)."""
    import optax

    from jigcnn.backprop import manual_value_and_grad

    model = _fig5((0.01, 0.01))
    p0, state = model.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (64,) + SHAPE)
    t = 4.0 + 12.0 * jnp.mean(x[:, :6], axis=(1, 2, 3))[:, None]
    cal = calibrate_init(model, p0, state, x[:16], t[:16], "mae")
    assert cal.converged
    vg, opt = manual_value_and_grad(model, "mae"), optax.sgd(0.003)

    @jax.jit
    def run(params):
        def step(carry, i):
            p, s = carry
            xb, tb = (jax.lax.dynamic_slice_in_dim(a, (i % 4) * 16, 16) for a in (x, t))
            (loss, _), g = vg(p, state, xb, tb, train=True)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss
        return jax.lax.scan(step, (params, opt.init(params)), jnp.arange(100))[1]

    small, calibrated = run(p0), run(cal.params)
    assert float(calibrated[0]) == pytest.approx(float(small[0]), rel=0.01)  # same starting loss
    assert float(jnp.min(calibrated)) < 0.2 * float(jnp.min(small)), (float(jnp.min(calibrated)), float(jnp.min(small)))
