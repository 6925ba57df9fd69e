"""jigcnn.fast.winograd_native (the fused native Winograd F(4x4, 3x3) kernels) against lax.conv_general_dilated.

Forward pass, input gradient (offsets, crops), weight gradient, reverse and forward mode, second order, vmap, routing through
jigcnn.ops for autodiff and the hand-written path, determinism, and the kernel's own argument checks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jigcnn import Conv2D, Sequential, ops
from jigcnn.fast import native
from jigcnn.fast import winograd_native as wn

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels unavailable on this machine")

DN = ("NHWC", "HWIO", "NHWC")
TARGET = "jigcnn_direct_conv_winograd_forward"
# (N, H, W, Cin, Cout, padding): whole and partial 4x4 tiles, maps smaller than a tile, one and two output
# vectors per GEMM block (16, 48 = 32 + 16), several task blocks of 32 tiles, asymmetric and large paddings
CASES = [
    (2, 9, 7, 16, 32, ((1, 1), (1, 1))),
    (3, 6, 6, 32, 48, ((0, 0), (0, 0))),
    (2, 10, 5, 16, 16, ((0, 2), (1, 0))),
    (1, 3, 3, 16, 16, ((0, 0), (0, 0))),
    (5, 13, 11, 32, 16, ((3, 0), (2, 2))),
    (4, 16, 16, 64, 32, ((1, 1), (1, 1))),
]
# float32 against XLA's direct convolution, the largest error over the largest magnitude: measured up to
# ~1.2e-5 on these cases (Winograd's transforms amplify rounding); held to 5e-5
RTOL = 5e-5


def _plain(x, w, padding):
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN)


def _arrays(case, seed=0):
    n, h, w, cin, cout = case[:5]
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.standard_normal((n, h, w, cin)), jnp.float32),
            jnp.asarray(rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin), jnp.float32))


def _close(got, want, rtol=RTOL):
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = float(jnp.max(jnp.abs(want)))
    err = float(jnp.max(jnp.abs(got - want)))
    assert err <= rtol * scale, err / scale


@pytest.mark.parametrize("case", CASES)
def test_forward_and_vjp_equal_the_plain_convolution(case):
    x, w = _arrays(case)
    pad = case[5]
    assert wn.serves(x, w, (1, 1), (1, 1))
    y0, vjp0 = jax.vjp(lambda x, w: _plain(x, w, pad), x, w)
    y1, vjp1 = jax.jit(lambda x, w: jax.vjp(lambda x, w: wn.conv(x, w, pad), x, w))(x, w)
    _close(y1, y0)
    g = jnp.asarray(np.random.default_rng(1).standard_normal(y0.shape), jnp.float32)
    for got, want in zip(vjp1(g), vjp0(g)):
        _close(got, want)


@pytest.mark.parametrize("case", CASES)
def test_input_gradient_is_the_transposed_convolution(case):
    x, w = _arrays(case)
    pad = case[5]
    delta = jnp.asarray(np.random.default_rng(2).standard_normal(_plain(x, w, pad).shape), jnp.float32)
    want = jax.vjp(lambda v: _plain(v, w, pad), x)[1](delta)[0]
    got = jax.jit(wn.input_gradient, static_argnums=(2, 3))(delta, w, pad, x.shape[1:3])
    _close(got, want)
    with pytest.raises(ValueError, match="not the output of"):
        wn.input_gradient(delta, w, pad, (x.shape[1] + 1, x.shape[2]))


@pytest.mark.parametrize("case", CASES + [(40, 16, 16, 16, 16, ((1, 1), (1, 1)))])  # 10 blocks of 64 tiles
def test_weight_gradient_is_the_transposed_convolution_and_deterministic(case):
    x, w = _arrays(case)
    pad = case[5]
    delta = jnp.asarray(np.random.default_rng(2).standard_normal(_plain(x, w, pad).shape), jnp.float32)
    want = jax.linear_transpose(lambda v: _plain(x, v, pad), w)(delta)[0]
    f = jax.jit(wn.weight_gradient, static_argnums=2)
    got = f(x, delta, pad)
    _close(got, want)
    assert np.array_equal(np.asarray(got), np.asarray(f(x, delta, pad)))


def test_forward_mode_second_order_and_vmap():
    x, w = _arrays(CASES[0])
    pad = CASES[0][5]
    tx, tw = jnp.ones_like(x), jnp.full_like(w, 0.1)
    _close(jax.jvp(lambda x, w: wn.conv(x, w, pad), (x, w), (tx, tw))[1],
           jax.jvp(lambda x, w: _plain(x, w, pad), (x, w), (tx, tw))[1])

    def second(conv):
        f = lambda x, w: jnp.sum(jnp.tanh(conv(x, w, pad)))  # noqa: E731
        return jax.grad(lambda x: jnp.sum(jax.grad(f, argnums=1)(x, w) ** 2))(x)

    _close(second(wn.conv), second(_plain))
    _close(jax.jacfwd(lambda v: wn.conv(v, w, pad)[0, 0, 0])(x[:1]),
           jax.jacfwd(lambda v: _plain(v, w, pad)[0, 0, 0])(x[:1]))
    _close(jax.vmap(lambda v: wn.conv(v[None], w, pad))(x), jax.vmap(lambda v: _plain(v[None], w, pad))(x))
    # the input gradient's own derivatives (XLA's formulation)
    delta = jnp.ones(_plain(x, w, pad).shape, jnp.float32)
    _close(jax.grad(lambda w: jnp.sum(wn.input_gradient(delta, w, pad, x.shape[1:3]) ** 2))(w),
           jax.grad(lambda w: jnp.sum(jax.vjp(lambda v: _plain(v, w, pad), x)[1](delta)[0] ** 2))(w))
    _close(jax.grad(lambda x: jnp.sum(wn.weight_gradient(x, delta, pad) ** 2))(x),
           jax.grad(lambda x: jnp.sum(jax.linear_transpose(lambda v: _plain(x, v, pad), w)(delta)[0] ** 2))(x))


def test_deterministic_and_in_the_lowered_programs():
    x, w = _arrays(CASES[-1])
    f = jax.jit(lambda x, w: wn.conv(x, w, ((1, 1), (1, 1))))
    assert np.array_equal(np.asarray(f(x, w)), np.asarray(f(x, w)))
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(wn.conv(x, w, ((1, 1), (1, 1))) ** 2), argnums=(0, 1)))
    text = grad.lower(x, w).as_text()
    assert text.count(TARGET) == 2  # the forward pass and the input gradient
    assert text.count("jigcnn_direct_conv_winograd_weight_gradient") == 1


def _net():
    # 2 -> 32 channels: banded (18 taps); 32 -> 16: the Winograd kernel (288 taps, whole vectors); 16 -> 3: banded
    return Sequential([Conv2D(32, 3, padding="same", activation="relu"), Conv2D(16, 3, padding="same", activation="tanh"),
                       Conv2D(3, 3, padding="same")], input_shape=(9, 10, 2))


def test_ops_routes_wide_float32_3x3_convolutions_here():
    w32 = jnp.zeros((3, 3, 32, 16), jnp.float32)
    x = jnp.zeros((2, 8, 8, 32), jnp.float32)
    assert ops.winograd_native_serves(x, w32, (1, 1), (1, 1))
    assert not ops.winograd_native_serves(x, w32, (2, 2), (1, 1))  # strided
    assert not ops.winograd_native_serves(x, w32, (1, 1), (2, 2))  # dilated
    assert not ops.winograd_native_serves(jnp.zeros((2, 8, 8, 24), jnp.float32), jnp.zeros((3, 3, 24, 16)),
                                          (1, 1), (1, 1))  # 24 input channels: not whole vectors
    assert not ops.winograd_native_serves(x, jnp.zeros((3, 3, 32, 20), jnp.float32), (1, 1), (1, 1))
    assert not ops.winograd_native_serves(x, jnp.zeros((5, 5, 32, 16), jnp.float32), (1, 1), (1, 1))
    with ops.using(winograd_native=False):
        assert not ops.winograd_native_serves(x, w32, (1, 1), (1, 1))
    with ops.using(native=False):
        assert not ops.winograd_native_serves(x, w32, (1, 1), (1, 1))
    assert not ops.REFERENCE.winograd_native and ops.DEFAULT.winograd_native


def test_sixteen_input_channels_run_here_not_on_the_banded_kernels():
    """3x3 over 16 channels (144 taps) is the banded kernels' too; the Winograd kernels take it (measured faster)."""
    from jigcnn.backprop.conv import conv_input_gradient as plain_input, conv_weight_gradient as plain_weight

    x, w = jnp.zeros((2, 8, 8, 16), jnp.float32), jnp.zeros((3, 3, 16, 32), jnp.float32)
    assert ops.banded_serves(w.shape, (1, 1), (1, 1)) and ops.winograd_native_serves(x, w, (1, 1), (1, 1))
    pad = ((1, 1), (1, 1))

    def step(x, w):
        def loss(x, w):
            return jnp.sum(ops.conv(x, w, None, strides=(1, 1), padding=pad, dilation=(1, 1)) ** 2)
        delta = jnp.ones((2, 8, 8, 32), jnp.float32)
        xp = jnp.pad(x, ((0, 0), *pad, (0, 0)))
        return (jax.grad(loss, argnums=(0, 1))(x, w),
                ops.conv_weight_gradient(xp, delta, (3, 3), (1, 1), (1, 1), plain=plain_weight),
                ops.conv_input_gradient(delta, w, (10, 10), (1, 1), (1, 1), plain=plain_input,
                                        interior=((1, 1), (8, 8))))

    text = jax.jit(step).lower(x, w).as_text()
    # forward and autodiff's input gradient, the hand-written input gradient; both weight gradients
    assert text.count(TARGET) == 3 and text.count("jigcnn_direct_conv_winograd_weight_gradient") == 2
    assert "jigcnn_direct_conv_forward" not in text and "jigcnn_direct_conv_input_gradient" not in text
    with ops.using(winograd_native=False):  # a new function: jit's trace cache does not see the switch
        text = jax.jit(lambda x, w: step(x, w)).lower(x, w).as_text()
    assert TARGET not in text and "jigcnn_direct_conv_winograd_weight_gradient" not in text
    assert "jigcnn_direct_conv_forward" in text and "jigcnn_direct_conv_input_gradient" in text


@pytest.mark.parametrize("cin,cout", [(32, 16), (5, 7)])  # the Winograd kernel; XLA's plain formulation
def test_ops_input_gradient_interior_is_the_window_of_the_padded_one(cin, cout):
    from jigcnn.backprop.conv import conv_input_gradient as plain

    rng = np.random.default_rng(5)
    delta = jnp.asarray(rng.standard_normal((2, 7, 9, cout)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, cin, cout)), jnp.float32)
    full = ops.conv_input_gradient(delta, w, (9, 11), (1, 1), (1, 1), plain=plain)
    for interior in (((1, 1), (7, 9)), ((0, 2), (9, 8)), ((2, 0), (5, 11))):
        (t, l), (h, wd) = interior
        got = ops.conv_input_gradient(delta, w, (9, 11), (1, 1), (1, 1), plain=plain, interior=interior)
        _close(got, full[:, t:t + h, l:l + wd])
    with pytest.raises(ValueError, match="not a window of the padded input"):
        ops.conv_input_gradient(delta, w, (9, 11), (1, 1), (1, 1), plain=plain, interior=((1, 1), (9, 11)))


@pytest.mark.parametrize("cin,cout", [(32, 16), (5, 7)])  # the Winograd kernel; XLA's plain formulation
def test_ops_weight_gradient_of_the_unpadded_input_is_that_of_the_padded_one(cin, cout):
    from jigcnn.backprop.conv import conv_weight_gradient as plain

    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.standard_normal((2, 7, 9, cin)), jnp.float32)
    for pads in (((1, 1), (1, 1)), ((2, 0), (0, 2)), ((0, 0), (1, 1))):
        xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
        delta = jnp.asarray(rng.standard_normal((2, xp.shape[1] - 2, xp.shape[2] - 2, cout)), jnp.float32)
        full, _ = ops.conv_weight_gradient(xp, delta, (3, 3), (1, 1), (1, 1), plain=plain)
        got, _ = ops.conv_weight_gradient(xp, delta, (3, 3), (1, 1), (1, 1), plain=plain, unpadded=(x, pads))
        _close(got, full)
        _close(got, plain(xp, delta, (3, 3), (1, 1), (1, 1)))
    for bad in (((1, 1), (1, 0)), ((1, 1),), ((-1, 3), (1, 1))):
        with pytest.raises(ValueError, match="is not the padded input"):
            ops.conv_weight_gradient(xp, delta, (3, 3), (1, 1), (1, 1), plain=plain, unpadded=(x, bad))


def test_float64_is_not_served(x64):
    x, w = jnp.zeros((2, 8, 8, 32), jnp.float64), jnp.zeros((3, 3, 32, 16), jnp.float64)
    assert not ops.winograd_native_serves(x, w, (1, 1), (1, 1))
    assert ops.winograd_native_serves(x.astype(jnp.float32), w.astype(jnp.float32), (1, 1), (1, 1))


@pytest.mark.parametrize("grad_method", ["autodiff", "manual"])
def test_both_gradients_run_the_kernel_and_match_the_reference_kernels(grad_method):
    """A net with one such conv: its gradients by `grad_method` lower to the kernel and agree with every kernel off."""
    from jigcnn.grad import value_and_grad

    model = _net()
    params, state = model.init(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(3).random((4, 9, 10, 2)), jnp.float32)
    y = jnp.asarray(np.random.default_rng(4).random((4, 9, 10, 3)), jnp.float32)
    out = {}
    for name in ("default", "reference"):
        with ops.using(name):
            fn = jax.jit(lambda p, s: value_and_grad(model, "mse", grad_method)(p, s, x, y))
            text = fn.lower(params, state).as_text()
            out[name] = fn(params, state)
        assert (TARGET in text) == (name == "default"), name
        assert ("jigcnn_direct_conv_winograd_weight_gradient" in text) == (name == "default"), name
    for a, b in zip(jax.tree_util.tree_leaves(out["default"]), jax.tree_util.tree_leaves(out["reference"])):
        _close(a, b, 1e-4)


def test_the_kernel_checks_its_arguments():
    from jigcnn.fast.winograd import kernel_transform

    x = jnp.zeros((2, 8, 8, 32), jnp.float32)
    w = jnp.zeros((3, 3, 32, 16), jnp.float32)
    call = lambda x, u, out: jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(out, jnp.float32))(  # noqa: E731
        x, u, pad_top=np.int64(1), pad_left=np.int64(1))
    with pytest.raises(Exception, match="u must be \\(36, Cin, C\\)"):
        call(x, jnp.zeros((35, 32, 16), jnp.float32), (2, 8, 8, 16))
    with pytest.raises(Exception, match="multiples of 16"):
        call(jnp.zeros((2, 8, 8, 24), jnp.float32), jnp.zeros((36, 24, 16), jnp.float32), (2, 8, 8, 16))
    with pytest.raises(Exception, match="input channels differ"):
        call(x, jnp.zeros((36, 16, 16), jnp.float32), (2, 8, 8, 16))
    with pytest.raises(Exception, match="y must be"):
        call(x, kernel_transform(w), (3, 8, 8, 16))
    wg = lambda x, d, out: jax.ffi.ffi_call("jigcnn_direct_conv_winograd_weight_gradient",  # noqa: E731
                                            jax.ShapeDtypeStruct(out, jnp.float32))(
        x, d, pad_top=np.int64(1), pad_left=np.int64(1))
    with pytest.raises(Exception, match="du must be \\(36, Cin, C\\)"):
        wg(x, jnp.zeros((2, 8, 8, 16), jnp.float32), (36, 32, 32))
    with pytest.raises(Exception, match="multiples of 16"):
        wg(jnp.zeros((2, 8, 8, 24), jnp.float32), jnp.zeros((2, 8, 8, 16), jnp.float32), (36, 24, 16))
