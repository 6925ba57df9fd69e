"""Each fast kernel of jigcnn.fast against the plain formulation (lax convolution, x.T @ delta).

The XLA formulations, with the native kernels off (``native=False``; those have their own tests,
test_fast_native.py). The plain references are written here, from lax / jnp only.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jigcnn import ops
from jigcnn.fast import banded, direct
from jigcnn.fast import conv as fc
from jigcnn.fast import dense as fd
from jigcnn.fast import native

# the banded GEMMs: every call here passes native=False, so the native kernels never run
conv_valid = functools.partial(fc.conv_valid, native=False)


def conv_weight_gradient(x, delta, kernel_hw, *, block=None, with_bias=False):
    return direct.conv_weight_gradient(x, delta, kernel_hw, block=block, with_bias=with_bias, native=False)


def conv_input_gradient(delta, w, in_hw, *, block=None):
    return direct.conv_input_gradient(delta, w, in_hw, block=block, native=False)


# --- the plain formulations (lax's convolution and its derivatives) ---

def lax_conv_valid(x, k):
    """lax.conv_general_dilated, valid, stride 1, NHWC/HWIO."""
    return lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def plain_weight_gradient(x, d, kernel_hw):
    """dL/dk of sum(lax_conv_valid(x, k) * d): the transpose of lax's convolution in the kernel."""
    k_like = jax.ShapeDtypeStruct((*kernel_hw, x.shape[-1], d.shape[-1]), d.dtype)
    return jax.linear_transpose(lambda k: lax_conv_valid(x, k), k_like)(d)[0]


def plain_input_gradient(d, k, in_hw):
    """dL/dx of sum(lax_conv_valid(x, k) * d) for an in_hw input: the transpose of lax's convolution in x."""
    x_like = jax.ShapeDtypeStruct((d.shape[0], *in_hw, k.shape[2]), d.dtype)
    return jax.linear_transpose(lambda x: lax_conv_valid(x, k), x_like)(d)[0]


# (N, H, W, Cin, Cout, kh, kw): IgNet Fig. 5, LeNet-5's two convs, odd sizes, non-square kernels
SHAPES = [
    (3, 58, 36, 1, 16, 5, 5),
    (2, 32, 32, 1, 6, 5, 5),
    (2, 14, 14, 6, 16, 5, 5),
    (2, 9, 11, 2, 3, 3, 2),
    (1, 7, 5, 3, 4, 1, 5),
    (2, 5, 5, 1, 2, 5, 5),
]


def _arrays(shape, seed=0, dtype=np.float32):
    n, h, w, cin, cout, kh, kw = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, cin)).astype(dtype)
    k = rng.standard_normal((kh, kw, cin, cout)).astype(dtype)
    d = rng.standard_normal((n, h - kh + 1, w - kw + 1, cout)).astype(dtype)
    return jnp.asarray(x), jnp.asarray(k), jnp.asarray(d)


def _close(a, b, tol=1e-4):
    assert a.shape == b.shape
    scale = float(jnp.max(jnp.abs(b))) or 1.0
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol * scale)


def test_native_false_lowers_no_native_call():
    """What this module checks is the XLA formulation: no native custom call in any of its programs."""
    x, k, d = _arrays(SHAPES[2])
    b = jnp.zeros(k.shape[-1], jnp.float32)
    for fn, args in [(lambda x, k: conv_valid(x, k, b), (x, k)),
                     (lambda x, d: conv_weight_gradient(x, d, (5, 5), with_bias=True), (x, d)),
                     (lambda d, k: conv_input_gradient(d, k, x.shape[1:3]), (d, k)),
                     (jax.grad(lambda x, k: jnp.sum(conv_valid(x, k, b) * d), (0, 1)), (x, k)),
                     (jax.grad(lambda x, k: jnp.sum(conv_valid(x[..., :1], k[:, :, :1], b) * d), (0, 1)), (x, k))]:
        assert "jigcnn_direct_conv" not in jax.jit(fn).lower(*args).as_text()
    if native.available():  # the control: with native=True the same forward is a native call
        assert "jigcnn_direct_conv" in jax.jit(lambda x, k: fc.conv_valid(x, k, b)).lower(x, k).as_text()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", [None, 1, 3, 4, 7])
def test_conv_valid_equals_lax(shape, block):
    x, k, _ = _arrays(shape)
    _close(jax.jit(lambda x, k: conv_valid(x, k, block=block))(x, k), lax_conv_valid(x, k))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", [None, 1, 3, 4, 7])
def test_conv_weight_gradient_equals_plain(shape, block):
    x, k, d = _arrays(shape)
    kh, kw = k.shape[:2]
    got = jax.jit(lambda x, d: conv_weight_gradient(x, d, (kh, kw), block=block))(x, d)
    _close(got, plain_weight_gradient(x, d, (kh, kw)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", [None, 7])  # 7: Wo not a multiple of the block (zero columns)
def test_window_blocks_transposed_is_the_transpose(shape, block):
    x, _, _ = _arrays(shape)
    n, h, w, cin, cout, kh, kw = shape
    ho, wo = h - kh + 1, w - kw + 1
    t = banded.block_width(wo, kw, block)
    xb, nb = banded.window_blocks(x, kh, kw, ho, wo, t)
    xbt, nbt = banded.window_blocks_transposed(x, kh, kw, ho, wo, t)
    assert nbt == nb
    np.testing.assert_array_equal(np.asarray(xbt), np.asarray(xb).T)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", [None, 3, 4])
def test_conv_valid_with_bias_equals_lax_plus_bias(shape, block):
    x, k, _ = _arrays(shape)
    b = jnp.asarray(np.random.default_rng(2).standard_normal(k.shape[-1]).astype(np.float32))
    _close(jax.jit(lambda x, k, b: conv_valid(x, k, b, block=block))(x, k, b), lax_conv_valid(x, k) + b)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", [None, 3, 4])
def test_conv_weight_gradient_with_bias(shape, block):
    x, k, d = _arrays(shape)
    kh, kw = k.shape[:2]
    dw, db = jax.jit(lambda x, d: conv_weight_gradient(x, d, (kh, kw), block=block, with_bias=True))(x, d)
    _close(dw, plain_weight_gradient(x, d, (kh, kw)))
    _close(db, jnp.sum(d, axis=(0, 1, 2)))


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_autodiff_of_conv_valid_with_bias(shape):
    x, k, d = _arrays(shape)
    b = jnp.asarray(np.random.default_rng(2).standard_normal(k.shape[-1]).astype(np.float32))
    got = jax.grad(lambda x, k, b: jnp.sum(conv_valid(x, k, b) * d), argnums=(0, 1, 2))(x, k, b)
    ref = jax.grad(lambda x, k, b: jnp.sum((lax_conv_valid(x, k) + b) * d), argnums=(0, 1, 2))(x, k, b)
    for g, r in zip(got, ref):
        _close(g, r)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", [None, 1, 3, 4, 7])
def test_conv_input_gradient_equals_plain(shape, block):
    x, k, d = _arrays(shape)
    got = jax.jit(lambda d, k: conv_input_gradient(d, k, x.shape[1:3], block=block))(d, k)
    _close(got, plain_input_gradient(d, k, x.shape[1:3]))


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_autodiff_of_conv_valid_equals_autodiff_of_lax(shape):
    x, k, d = _arrays(shape)
    gx, gk = jax.grad(lambda x, k: jnp.sum(conv_valid(x, k) * d), argnums=(0, 1))(x, k)
    rx, rk = jax.grad(lambda x, k: jnp.sum(lax_conv_valid(x, k) * d), argnums=(0, 1))(x, k)
    _close(gx, rx)
    _close(gk, rk)


# single input channel: conv_valid's custom JVP (kernel-tangent term on transposed windows)
ONE_CHANNEL = [s for s in SHAPES if s[3] == 1]


def _lax_conv(x, k, b=None):
    y = lax_conv_valid(x, k)
    return y if b is None else y + b


# by default: the tiny shape, LeNet's first conv with blocks that do not divide its 28 columns, and
# IgNet's; the other combinations with -m slow
JVP_CASES = [(ONE_CHANNEL[2], None), (ONE_CHANNEL[1], 3), (ONE_CHANNEL[0], None)] + [
    pytest.param(shape, block, marks=pytest.mark.slow)
    for shape, block in [(ONE_CHANNEL[0], 3), (ONE_CHANNEL[1], None), (ONE_CHANNEL[2], 3)]]


@pytest.mark.parametrize("shape,block", JVP_CASES)
@pytest.mark.parametrize("with_bias,tangents", [(False, "all"), (False, "x"), (False, "kernel"),
                                                 (True, "all"), (True, "x"), (True, "kernel"), (True, "bias")])
def test_single_channel_jvp_equals_lax(x64, shape, block, with_bias, tangents):
    x, k, _ = _arrays(shape, dtype=np.float64)
    b = jnp.asarray(np.random.default_rng(2).standard_normal(k.shape[-1]))
    dx, dk, _ = _arrays(shape, seed=3, dtype=np.float64)
    db = jnp.asarray(np.random.default_rng(4).standard_normal(k.shape[-1]))
    keep = {"all": (1, 1, 1), "x": (1, 0, 0), "kernel": (0, 1, 0), "bias": (0, 0, 1)}[tangents]
    dx, dk, db = (v if on else jnp.zeros_like(v) for v, on in zip((dx, dk, db), keep))
    if with_bias:
        got = jax.jit(lambda *a: jax.jvp(lambda x, k, b: conv_valid(x, k, b, block=block), a[:3], a[3:]))(
            x, k, b, dx, dk, db)
        ref = jax.jvp(_lax_conv, (x, k, b), (dx, dk, db))
    else:
        got = jax.jit(lambda *a: jax.jvp(lambda x, k: conv_valid(x, k, block=block), a[:2], a[2:]))(x, k, dx, dk)
        ref = jax.jvp(_lax_conv, (x, k), (dx, dk))
    for g, r in zip(got, ref):
        _close(g, r, tol=1e-12)


@pytest.mark.parametrize("shape", [(2, 9, 8, 1, 3, 3, 3)])
def test_single_channel_second_order_and_vmap(x64, shape):
    x, k, d = _arrays(shape, dtype=np.float64)
    b = jnp.asarray(np.random.default_rng(2).standard_normal(k.shape[-1]))

    def loss(conv):
        return lambda x, k, b: jnp.sum(jnp.tanh(conv(x, k, b)) * d)

    fast = loss(lambda x, k, b: conv_valid(x, k, b))
    hess = jax.jit(jax.hessian(fast, argnums=(0, 1, 2)))(x, k, b)
    ref = jax.jit(jax.hessian(loss(_lax_conv), argnums=(0, 1, 2)))(x, k, b)
    for g, r in zip(jax.tree.leaves(hess), jax.tree.leaves(ref)):
        _close(g, r, tol=1e-10)
    per_sample = jax.vmap(jax.grad(lambda x, k: jnp.sum(conv_valid(x[None], k) ** 2), argnums=1),
                          in_axes=(0, None))(x, k)
    want = jax.vmap(jax.grad(lambda x, k: jnp.sum(_lax_conv(x[None], k) ** 2), argnums=1), in_axes=(0, None))(x, k)
    _close(per_sample, want, tol=1e-12)


def test_float64(x64):
    x, k, d = _arrays(SHAPES[2], dtype=np.float64)
    assert conv_valid(x, k).dtype == jnp.float64
    _close(conv_valid(x, k), lax_conv_valid(x, k), tol=1e-12)
    _close(conv_weight_gradient(x, d, (5, 5)), plain_weight_gradient(x, d, (5, 5)), tol=1e-12)


def test_eligibility():
    assert ops.banded_serves((5, 5, 1, 16), (1, 1), (1, 1))
    assert ops.banded_serves((5, 5, 6, 16), (1, 1), (1, 1))
    assert not ops.banded_serves((5, 5, 1, 16), (2, 2), (1, 1))
    assert not ops.banded_serves((5, 5, 1, 16), (1, 1), (2, 1))
    assert not ops.banded_serves((3, 3, 64, 64), (1, 1), (1, 1))
    # switched off: by the configuration in force, or passed explicitly
    with ops.using(banded_conv=False):
        assert not ops.banded_serves((5, 5, 1, 16), (1, 1), (1, 1))
        assert ops.banded_serves((5, 5, 1, 16), (1, 1), (1, 1), ops.DEFAULT)
    assert not ops.banded_serves((5, 5, 1, 16), (1, 1), (1, 1), ops.REFERENCE)
    assert ops.banded_serves((5, 5, 1, 16), (1, 1), (1, 1), ops.Kernels(native=False))


@pytest.mark.parametrize("n,dim,features", [(4, 27648, 10), (3, 50, 16), (5, 40, 84)])
def test_dense_weight_gradient_equals_plain(n, dim, features):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((n, dim)).astype(np.float32))
    d = jnp.asarray(rng.standard_normal((n, features)).astype(np.float32))
    _close(jax.jit(fd.weight_gradient)(x, d), x.T @ d)


@pytest.mark.parametrize("n,dim,features", [(4, 300, 10), (3, 50, 16), (5, 40, 84)])
def test_dense_matmul_derivatives_equal_plain(x64, n, dim, features):
    rng = np.random.default_rng(2)
    x, dx = (jnp.asarray(rng.standard_normal((n, dim))) for _ in range(2))
    k, dk = (jnp.asarray(rng.standard_normal((dim, features))) for _ in range(2))
    # ops.dense takes the custom-JVP product for few outputs only, and not with dense=False (a fresh
    # function each time: make_jaxpr, like jit, keeps one trace per function and shapes)
    def product_is_custom():
        return "custom_jvp_call" in str(jax.make_jaxpr(lambda x, k: ops.dense(x, k))(x, k))

    assert product_is_custom() == (features <= fd.MAX_FEATURES)
    with ops.using(dense=False):
        assert not product_is_custom()
    _close(fd.matmul(x, k), x @ k, tol=1e-12)
    for tangents in ((dx, dk), (dx, jnp.zeros_like(dk)), (jnp.zeros_like(dx), dk)):
        got = jax.jit(lambda *a: jax.jvp(fd.matmul, a[:2], a[2:]))(x, k, *tangents)
        for g, r in zip(got, jax.jvp(jnp.matmul, (x, k), tangents)):
            _close(g, r, tol=1e-12)

    def loss(mm):
        return lambda x, k: jnp.sum(jnp.tanh(mm(x, k)) ** 2)

    grads = jax.jit(jax.grad(loss(fd.matmul), argnums=(0, 1)))(x, k)
    for g, r in zip(grads, jax.grad(loss(jnp.matmul), argnums=(0, 1))(x, k)):
        _close(g, r, tol=1e-12)
    hvp = jax.jit(lambda v: jax.jvp(jax.grad(loss(fd.matmul), argnums=1), (x, k), (dx, v))[1])(dk)
    want = jax.jvp(jax.grad(loss(jnp.matmul), argnums=1), (x, k), (dx, dk))[1]
    _close(hvp, want, tol=1e-10)


@pytest.mark.parametrize("order", ["jacrev-jacrev", "jacfwd-jacfwd", "jacrev-jacfwd"])
def test_single_channel_kernel_term_second_order(x64, order):
    """The kernel-tangent primitive (fast.kernel_tangent) under every nesting of forward and reverse mode."""
    x, k, d = _arrays((2, 7, 8, 1, 3, 3, 3), dtype=np.float64)
    b = jnp.asarray(np.random.default_rng(2).standard_normal(k.shape[-1]))
    outer, inner = (getattr(jax, name) for name in order.split("-"))
    args = (0, 1, 2)

    def second(conv):
        return jax.jit(outer(inner(lambda x, k, b: jnp.sum(jnp.tanh(conv(x, k, b)) * d), args), args))

    got = second(lambda x, k, b: conv_valid(x, k, b))(x, k, b)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(second(_lax_conv)(x, k, b))):
        _close(g, r, tol=1e-10)


@pytest.mark.parametrize("argnums", [1, 2, (0, 2)])
def test_single_channel_partial_gradients(x64, argnums):
    """Gradients with respect to part of (x, kernel, bias): the others stay constants in the transpose."""
    x, k, d = _arrays((2, 7, 8, 1, 3, 3, 3), dtype=np.float64)
    b = jnp.asarray(np.random.default_rng(2).standard_normal(k.shape[-1]))
    got = jax.jit(jax.grad(lambda x, k, b: jnp.sum(conv_valid(x, k, b) * d), argnums))(x, k, b)
    want = jax.grad(lambda x, k, b: jnp.sum(_lax_conv(x, k, b) * d), argnums)(x, k, b)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        _close(g, r, tol=1e-12)
