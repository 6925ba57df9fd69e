"""jigcnn.fast.wide_conv against lax.conv_general_dilated (values, both modes, jit, vmap); fast.barrier."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jigcnn import ops
from jigcnn.fast import wide_conv as wc
from jigcnn.layers import Conv2D

# (N, H, W, Cin, Cout, kh, kw, strides, padding, dilation)
CASES = [
    (3, 8, 8, 5, 6, 3, 3, (1, 1), ((1, 1), (1, 1)), (1, 1)),
    (2, 9, 7, 4, 5, 3, 2, (2, 1), ((0, 2), (1, 0)), (1, 2)),
    (2, 6, 6, 3, 4, 5, 5, (1, 1), ((0, 0), (0, 0)), (1, 1)),
    (1, 5, 11, 2, 3, 1, 3, (1, 2), ((2, 2), (0, 0)), (1, 1)),
]


def _plain(x, w, strides, padding, dilation):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _arrays(case, seed=0):
    n, h, w, cin, cout, kh, kw = case[:7]
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal((n, h, w, cin))), jnp.asarray(rng.standard_normal((kh, kw, cin, cout)))


def _close(a, b):
    assert a.shape == b.shape
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("case", CASES)
def test_values_and_vjp_equal_plain_convolution(case, x64):
    x, w = _arrays(case)
    geom = case[7:]
    y0, vjp0 = jax.vjp(lambda x, w: _plain(x, w, *geom), x, w)
    y1, vjp1 = jax.jit(lambda x, w: jax.vjp(lambda x, w: wc.conv(x, w, *geom), x, w))(x, w)
    _close(y1, y0)
    g = jnp.asarray(np.random.default_rng(1).standard_normal(y0.shape))
    for got, want in zip(vjp1(g), vjp0(g)):
        _close(got, want)


@pytest.mark.parametrize("case", CASES)
def test_jvp_equals_plain_convolution(case, x64):
    x, w = _arrays(case)
    geom = case[7:]
    rng = np.random.default_rng(2)
    tx, tw = jnp.asarray(rng.standard_normal(x.shape)), jnp.asarray(rng.standard_normal(w.shape))
    for tangents in [(tx, tw), (tx, jnp.zeros_like(w)), (jnp.zeros_like(x), tw)]:
        want = jax.jvp(lambda x, w: _plain(x, w, *geom), (x, w), tangents)[1]
        got = jax.jit(lambda x, w, a, b: jax.jvp(lambda x, w: wc.conv(x, w, *geom), (x, w), (a, b))[1])(
            x, w, *tangents)
        _close(got, want)


def test_gradient_of_one_argument_and_second_order(x64):
    x, w = _arrays(CASES[0])
    geom = CASES[0][7:]

    def loss(conv, x, w):
        return jnp.sum(jnp.tanh(conv(x, w, *geom)) ** 2)

    _close(jax.grad(loss, 1)(wc.conv, x, w), jax.grad(loss, 1)(_plain, x, w))
    _close(jax.grad(loss, 2)(wc.conv, x, w), jax.grad(loss, 2)(_plain, x, w))
    _close(jax.hessian(loss, 2)(wc.conv, x[:1], w), jax.hessian(loss, 2)(_plain, x[:1], w))


def test_vmapped_gradient_equals_plain(x64):
    """Under vmap the conditional's predicate is batched (both branches run): the value is the same."""
    x, w = _arrays(CASES[0])
    geom = CASES[0][7:]

    def per_sample(conv):
        return jax.vmap(jax.grad(lambda w, xi: jnp.sum(conv(xi[None], w, *geom) ** 2)), (None, 0))(w, x)

    _close(per_sample(wc.conv), per_sample(_plain))


def test_transposed_input_is_the_transpose_and_stays_a_conditional():
    x = jnp.asarray(np.random.default_rng(3).standard_normal((4, 3, 5, 2)).astype(np.float32))
    f = jax.jit(wc.transposed_input)
    np.testing.assert_array_equal(np.asarray(f(x)), np.transpose(np.asarray(x), (1, 2, 3, 0)))
    np.testing.assert_array_equal(np.asarray(f(-x)), np.transpose(np.asarray(-x), (1, 2, 3, 0)))
    # the speed-up rests on XLA keeping the conditional (a fusion boundary); flag a compiler that folds it
    assert "conditional(" in f.lower(x).compile().as_text()


def _traces_wide_conv(monkeypatch, x_shape, **switches):
    """Whether a Conv2D's forward on `x_shape` traces through fast.wide_conv under ops.using(**switches)."""
    layer = Conv2D(features=6, kernel_size=(3, 3), padding="same")
    _, params, state = layer.init(jax.random.key(0), x_shape[1:])
    calls = []
    real = wc.conv
    monkeypatch.setattr(wc, "conv", lambda *a: calls.append(1) or real(*a))
    with ops.using(**{"winograd": False, **switches}):  # 3x3 stride 1: Winograd's unless switched off
        jax.make_jaxpr(lambda p, x: layer.apply(p, state, x)[0])(params, jnp.zeros(x_shape, jnp.float32))
    monkeypatch.setattr(wc, "conv", real)
    return bool(calls)


def test_the_door_routes_wide_convolutions_only_when_switched_on(monkeypatch):
    assert _traces_wide_conv(monkeypatch, (2, 4, 4, 20)) == (jax.default_backend() == "cpu")
    assert not _traces_wide_conv(monkeypatch, (0, 4, 4, 20))  # an empty batch: plain lax
    assert not _traces_wide_conv(monkeypatch, (2, 4, 4, 20), wide_conv=False)
    assert not _traces_wide_conv(monkeypatch, (2, 4, 4, 3))  # few channels: the banded kernels, not wide_conv


def test_conv2d_layer_gradient_unchanged_by_the_wide_path(x64):
    """A Conv2D too wide for jigcnn.fast.conv: the same loss gradient with and without wide_conv."""
    layer = Conv2D(features=6, kernel_size=(3, 3), padding="same", activation="relu")
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((3, 6, 6, 20)))
    _, params, state = layer.init(jax.random.key(0), x.shape[1:], dtype=np.float64)

    def grads():
        return jax.jit(jax.grad(lambda p, x: jnp.sum(layer.apply(p, state, x)[0] ** 2), (0, 1)))(params, x)

    if jax.default_backend() != "cpu":
        pytest.skip("wide_conv serves CPU only")
    with ops.using(wide_conv=True, winograd=False):
        with_wide = grads()
    with ops.using(wide_conv=False, winograd=False):
        without = grads()
    for a, b in zip(jax.tree.leaves(with_wide), jax.tree.leaves(without)):
        _close(a, b)


def test_unfused_gives_fn_of_x_in_every_mode():
    from jigcnn.fast.barrier import unfused

    def fn(v):
        return jnp.cumsum(v[::-1], axis=0) * 2.0

    x = jnp.asarray(np.random.default_rng(5).standard_normal((6, 3)).astype(np.float32))
    want = np.asarray(fn(x))
    for v in (x, -x):  # either branch of the conditional
        np.testing.assert_array_equal(np.asarray(jax.jit(lambda a: unfused(fn, a))(v)), np.asarray(fn(v)))
    np.testing.assert_array_equal(np.asarray(jax.vmap(lambda a: unfused(fn, a))(x[None])[0]), want)
    g = jax.grad(lambda a: jnp.sum(unfused(fn, a) ** 2))(x)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(lambda a: jnp.sum(fn(a) ** 2))(x)), rtol=1e-6)
    assert unfused(fn, jnp.zeros((0, 3))).shape == (0, 3)
    assert "conditional(" in jax.jit(lambda a: unfused(fn, a)).lower(x).compile().as_text()


def test_unfused_with_a_primal_predicate_can_be_transposed():
    from jigcnn.fast.barrier import unfused

    rng = np.random.default_rng(6)
    primal = jnp.asarray(rng.standard_normal(4).astype(np.float32))
    t = jnp.asarray(rng.standard_normal((3, 5)).astype(np.float32))
    ct = jnp.asarray(rng.standard_normal((5, 3)).astype(np.float32))
    for p in (primal, -primal):  # either branch
        def linear(v, p=p):
            return unfused(jnp.transpose, v, predicate_from=p)

        np.testing.assert_array_equal(np.asarray(jax.jit(linear)(t)), np.asarray(t.T))
        (back,) = jax.linear_transpose(linear, t)(ct)  # the predicate reads p, not the linear v
        np.testing.assert_array_equal(np.asarray(back), np.asarray(ct.T))
    assert unfused(jnp.transpose, t, predicate_from=jnp.zeros((0,))).shape == (5, 3)


@pytest.mark.parametrize("case", CASES + [(2, 9, 9, 3, 4, 3, 3, (2, 2), ((0, 0), (0, 0)), (1, 1)),
                                          (2, 10, 10, 3, 4, 3, 3, (3, 3), ((0, 1), (0, 1)), (1, 1))])
def test_weight_gradient_is_the_plain_one(case, x64):
    """`weight_gradient` (the hand-written path's, through ops) equals lax's VJP in the kernel; rows no window reaches count nothing."""
    x, w = _arrays(case)
    strides, padding, dilation = case[7:]
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    y, vjp = jax.vjp(lambda w: _plain(xp, w, strides, ((0, 0), (0, 0)), dilation), w)
    delta = jnp.asarray(np.random.default_rng(3).standard_normal(y.shape))
    got = jax.jit(wc.weight_gradient, static_argnums=(2, 3, 4))(xp, delta, w.shape[:2], strides, dilation)
    _close(got, vjp(delta)[0])


def test_ops_weight_gradient_takes_the_wide_layout_for_strided_convolutions():
    from jigcnn.backprop.conv import conv_weight_gradient as plain

    xp, delta = jnp.zeros((2, 9, 9, 16), jnp.float32), jnp.zeros((2, 4, 4, 32), jnp.float32)

    def text(**switches):
        with ops.using(**switches):
            return jax.jit(lambda xp, d: ops.conv_weight_gradient(xp, d, (3, 3), (2, 2), (1, 1), plain=plain)[0]
                           ).lower(xp, delta).as_text()
    assert "stablehlo.case" not in text(wide_conv=False)  # the plain Eq. 1 convolution, no barrier
    assert "stablehlo.case" in text()  # the input transposed apart (fast.barrier: a conditional)
