"""jigcnn.fast.winograd (Winograd F(4x4, 3x3) / F(2x2, 3x3)) against lax.conv_general_dilated; routing through jigcnn.ops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jigcnn import ops
from jigcnn.fast import winograd as wg
from jigcnn.layers import Conv2D

DN = ("NHWC", "HWIO", "NHWC")
# (N, H, W, Cin, Cout, padding): odd sizes, asymmetric and large paddings, maps smaller than a tile
CASES = [
    (2, 9, 7, 5, 6, ((1, 1), (1, 1))),
    (1, 8, 8, 3, 4, ((0, 0), (2, 1))),
    (3, 11, 13, 4, 2, ((3, 0), (0, 2))),
    (2, 3, 3, 2, 2, ((0, 0), (0, 0))),
    (1, 4, 17, 20, 3, ((1, 1), (1, 1))),
]
# float32: the largest error relative to the output's largest magnitude measured here was 2.4e-6 (F(4x4, 3x3))
F32_RTOL = 2e-5


def _plain(x, w, padding):
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN)


def _arrays(case, dtype, seed=0):
    n, h, w, cin, cout = case[:5]
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, h, w, cin)), dtype)
    k = jnp.asarray(rng.standard_normal((3, 3, cin, cout)), dtype)
    return x, k


def _close(got, want, rtol):
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = float(jnp.max(jnp.abs(want)))
    assert float(jnp.max(jnp.abs(got - want))) <= rtol * scale, (float(jnp.max(jnp.abs(got - want))) / scale)


@pytest.mark.parametrize("m", [4, 2])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_values_and_vjp_equal_plain_convolution(case, dtype, m, x64):
    rtol = 1e-10 if dtype is np.float64 else F32_RTOL
    x, k = _arrays(case, dtype)
    pad = case[5]
    y0, vjp0 = jax.vjp(lambda x, k: _plain(x, k, pad), x, k)
    y1, vjp1 = jax.jit(lambda x, k: jax.vjp(lambda x, k: wg.conv(x, k, pad, m), x, k))(x, k)
    _close(y1, y0, rtol)
    g = jnp.asarray(np.random.default_rng(1).standard_normal(y0.shape), dtype)
    for got, want in zip(vjp1(g), vjp0(g)):
        _close(got, want, rtol)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_hand_written_drop_ins_equal_plain_gradients(case, dtype, x64):
    """weight_gradient (Eq. 1) and input_gradient (Eq. 1a) on the padded input, as jigcnn.backprop calls them."""
    rtol = 1e-10 if dtype is np.float64 else F32_RTOL
    x, k = _arrays(case, dtype)
    xp = jnp.pad(x, ((0, 0), *case[5], (0, 0)))
    y, vjp = jax.vjp(lambda xp, k: _plain(xp, k, ((0, 0), (0, 0))), xp, k)
    g = jnp.asarray(np.random.default_rng(2).standard_normal(y.shape), dtype)
    dxp, dk = vjp(g)
    _close(jax.jit(wg.weight_gradient)(xp, g), dk, rtol)
    _close(jax.jit(wg.input_gradient, static_argnums=2)(g, k, xp.shape[1:3]), dxp, rtol)


def test_vmap_and_second_use_of_the_vjp(x64):
    x, k = _arrays(CASES[3], np.float64)
    pad = CASES[3][5]

    def per_sample(conv):
        return jax.vmap(jax.grad(lambda k, xi: jnp.sum(jnp.tanh(conv(xi[None], k, pad)) ** 2)), (None, 0))(k, x)

    _close(per_sample(wg.conv), per_sample(_plain), 1e-10)
    xs = jnp.stack([x, 2 * x])
    _close(jax.vmap(lambda a: wg.conv(a, k, pad))(xs), jax.vmap(lambda a: _plain(a, k, pad))(xs), 1e-10)


def test_serves_only_stride_one_undilated_3x3_float():
    assert wg.serves((3, 3, 32, 32), (1, 1), (1, 1), np.float32)
    assert wg.serves((3, 3, 32, 32), (1, 1), (1, 1), np.float64)
    assert not wg.serves((3, 3, 32, 32), (2, 2), (1, 1), np.float32)
    assert not wg.serves((3, 3, 32, 32), (1, 1), (2, 2), np.float32)
    assert not wg.serves((5, 5, 32, 32), (1, 1), (1, 1), np.float32)
    assert not wg.serves((3, 3, 32, 32), (1, 1), (1, 1), jnp.bfloat16)


def _traces_winograd(monkeypatch, x_shape, kernel_size=(3, 3), strides=1, **switches):
    layer = Conv2D(features=6, kernel_size=kernel_size, strides=strides, padding="same")
    _, params, state = layer.init(jax.random.key(0), x_shape[1:])
    calls = []
    real = wg.conv
    monkeypatch.setattr(wg, "conv", lambda *a: calls.append(1) or real(*a))
    with ops.using(**switches):
        jax.make_jaxpr(lambda p, x: layer.apply(p, state, x)[0])(params, jnp.zeros(x_shape, jnp.float32))
    monkeypatch.setattr(wg, "conv", real)
    return bool(calls)


def test_the_door_routes_wide_3x3_convolutions_only_when_switched_on(monkeypatch):
    cpu = jax.default_backend() == "cpu"
    assert _traces_winograd(monkeypatch, (2, 5, 5, 20), winograd=True) == cpu  # 3*3*20 = 180 taps > 160
    assert not _traces_winograd(monkeypatch, (2, 5, 5, 20))  # off by default (slower in the wide nets' step)
    assert not _traces_winograd(monkeypatch, (2, 5, 5, 17), winograd=True)  # 153 taps: the banded kernels
    assert not _traces_winograd(monkeypatch, (2, 5, 5, 20), strides=2, winograd=True)
    assert not _traces_winograd(monkeypatch, (2, 5, 5, 20), kernel_size=(5, 5), winograd=True)
    assert not _traces_winograd(monkeypatch, (0, 5, 5, 20), winograd=True)  # an empty batch: plain lax
    assert not ops.REFERENCE.winograd and not ops.DEFAULT.winograd


def test_the_door_routes_the_hand_written_gradients(monkeypatch, x64):
    calls = []
    for name in ("weight_gradient", "input_gradient"):
        real = getattr(wg, name)
        monkeypatch.setattr(wg, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    x, k = _arrays((2, 6, 6, 20, 4), np.float64)
    d = jnp.ones((2, 4, 4, 4))
    fail = lambda *a: pytest.fail("plain called")  # noqa: E731
    if jax.default_backend() == "cpu":
        with ops.using(winograd=True):
            ops.conv_weight_gradient(x, d, (3, 3), (1, 1), (1, 1), plain=fail)
            ops.conv_input_gradient(d, k, (6, 6), (1, 1), (1, 1), plain=fail)
        assert calls == ["weight_gradient", "input_gradient"]
    with ops.using(winograd=False, wide_conv=False):
        ops.conv_weight_gradient(x, d, (3, 3), (1, 1), (1, 1), plain=lambda *a: 0)
        ops.conv_input_gradient(d, k, (6, 6), (1, 1), (1, 1), plain=lambda *a: 0)
    assert len(calls) <= 2


def test_conv2d_layer_gradient_with_and_without_winograd(x64):
    layer = Conv2D(features=6, kernel_size=(3, 3), padding="same", activation="relu")
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((3, 7, 6, 20)))
    _, params, state = layer.init(jax.random.key(0), x.shape[1:], dtype=np.float64)

    def grads():
        return jax.jit(jax.grad(lambda p, x: jnp.sum(layer.apply(p, state, x)[0] ** 2), (0, 1)))(params, x)

    with ops.using(winograd=True):
        on = grads()
    with ops.using(winograd=False):
        off = grads()
    for a, b in zip(jax.tree.leaves(on), jax.tree.leaves(off)):
        _close(a, b, 1e-10)
