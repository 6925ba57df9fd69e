"""The native direct-convolution kernels (jigcnn.fast.native) against XLA's convolution."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax import lax

from jigcnn import ops, zoo
from jigcnn.fast import conv as fc
from jigcnn.fast import direct, native
from jigcnn.grad import value_and_grad

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def _native_on():
    if not native.available():
        pytest.skip(f"native kernels unavailable: {native._STATE.get('error', 'not loaded')}")


# --- the plain formulations, from lax only ---

def lax_conv(x, k, b=None):
    """What the native forward computes, with XLA's convolution."""
    y = lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y if b is None else y + b


def plain_weight_gradient(x, d, kernel_hw):
    """dL/dk of sum(lax_conv(x, k) * d): the transpose of lax's convolution in the kernel."""
    k_like = jax.ShapeDtypeStruct((*kernel_hw, x.shape[-1], d.shape[-1]), d.dtype)
    return jax.linear_transpose(lambda k: lax_conv(x, k), k_like)(d)[0]


def conv_weight_gradient(x, delta, kernel_hw, *, with_bias=False):
    return direct.conv_weight_gradient(x, delta, kernel_hw, block=None, with_bias=with_bias, native=True)


def conv_input_gradient(delta, w, in_hw):
    return direct.conv_input_gradient(delta, w, in_hw, block=None, native=True)


def _arrays(n, h, w, cout, kh, kw, cin=1, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, cin)).astype(dtype)
    k = rng.standard_normal((kh, kw, cin, cout)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    d = rng.standard_normal((n, h - kh + 1, w - kw + 1, cout)).astype(dtype)
    return tuple(jnp.asarray(a) for a in (x, k, b, d))


def _close(a, b, tol=2e-5):
    assert a.shape == b.shape and a.dtype == b.dtype
    scale = float(jnp.max(jnp.abs(b))) or 1.0
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol * scale)


def _calls(fn, *args, target="jigcnn_direct_conv"):
    """How many times the lowered program calls the native kernels."""
    return jax.jit(fn).lower(*args).as_text().count(target)


# (N, H, W, Cout, kh, kw, Cin): IgNet's first conv, LeNet-5's, two groups of 16 maps with a partial
# one, a non-square kernel, rows shorter than one 8-position tile, few maps on rows of exactly 16
# columns; with several input channels LeNet-5's second conv, few maps, a partial group and a
# non-square kernel, 3x3; few maps (vectorised over columns): rows of three column vectors with a
# 5x5 kernel over two channels, one map with a 7x4 kernel (accumulators in memory), 15 maps (two
# blocks of maps in the forward pass) on rows shorter than one vector
SHAPES = [(3, 58, 36, 16, 5, 5, 1), (2, 32, 32, 6, 5, 5, 1), (2, 9, 14, 20, 3, 3, 1), (3, 7, 9, 33, 4, 2, 1),
          (2, 6, 6, 16, 2, 2, 1), (2, 12, 20, 3, 3, 5, 1),
          (2, 14, 14, 16, 5, 5, 6), (2, 10, 12, 6, 3, 3, 3), (2, 9, 11, 33, 4, 2, 2), (3, 8, 8, 16, 3, 3, 3),
          (2, 12, 40, 5, 5, 5, 2), (3, 9, 21, 1, 7, 4, 1), (2, 11, 13, 15, 3, 3, 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_equals_lax(shape, with_bias):
    x, k, b, _ = _arrays(*shape)
    b = b if with_bias else None
    fn = lambda x, k: fc.conv_valid(x, k, b)  # noqa: E731
    assert _calls(fn, x, k) == 1
    _close(jax.jit(fn)(x, k), lax_conv(x, k, b))


@pytest.mark.parametrize("shape", SHAPES)
def test_weight_gradient_kernel_equals_plain(shape):
    """The kernel itself, for any number of maps (the library routes fewer than 16 or multiples of 16 to it)."""
    x, k, _, d = _arrays(*shape, seed=1)
    kh, kw = k.shape[:2]
    dw, db = jax.jit(lambda x, d: native._ffi_weight_gradient(x, d, kh, kw))(x, d)
    _close(dw, plain_weight_gradient(x, d, (kh, kw)))
    _close(db, d.sum(axis=(0, 1, 2)))


@pytest.mark.parametrize("shape", [s for s in SHAPES if s[3] < 16 or s[3] % 16 == 0])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_weight_gradient_uses_native(shape, with_bias):
    x, k, _, d = _arrays(*shape, seed=2)
    kh, kw = k.shape[:2]
    fn = lambda x, d: conv_weight_gradient(x, d, (kh, kw), with_bias=with_bias)  # noqa: E731
    assert _calls(fn, x, d) == 1
    got = jax.jit(fn)(x, d)
    want = plain_weight_gradient(x, d, (kh, kw))
    if with_bias:
        _close(got[0], want)
        _close(got[1], d.sum(axis=(0, 1, 2)))
    else:
        _close(got, want)


@pytest.mark.parametrize("shape", SHAPES)
def test_input_gradient_equals_plain(shape):
    x, k, _, d = _arrays(*shape, seed=9)
    want = jax.vjp(lambda x: lax_conv(x, k), x)[1](d)[0]
    _close(jax.jit(native._ffi_input_gradient)(d, k), want)
    fn = lambda d, k: conv_input_gradient(d, k, x.shape[1:3])  # noqa: E731
    assert _calls(fn, d, k) == 1
    _close(jax.jit(fn)(d, k), want)


def test_autodiff_input_gradient_is_native():
    """Reverse mode through a hidden conv: native forward, input gradient and weight gradient."""
    x, k, b, d = _arrays(2, 14, 14, 16, 5, 5, 6, seed=10)
    loss = lambda x, k, b: jnp.sum(jnp.tanh(fc.conv_valid(x, k, b)) * d)  # noqa: E731
    grad = jax.grad(loss, argnums=(0, 1, 2))
    assert _calls(grad, x, k, b) == 3
    want = jax.grad(lambda x, k, b: jnp.sum(jnp.tanh(lax_conv(x, k, b)) * d), argnums=(0, 1, 2))
    for g, w in zip(jax.jit(grad)(x, k, b), want(x, k, b)):
        _close(g, w)


def test_eligibility():
    x, k, b, d = _arrays(2, 12, 12, 16, 5, 5)
    assert native.serves("forward", x, k, b) and native.serves("weight", x, d, kernel_hw=(5, 5))
    assert native.serves("forward", x, k)
    assert native.serves("weight", x, d[..., :6], kernel_hw=(5, 5))  # few maps: vectorised over columns
    d20 = jnp.concatenate([d, d[..., :4]], axis=-1)
    assert not native.serves("weight", x, d20, kernel_hw=(5, 5))  # a part-empty last group of 16: XLA's GEMM
    xl = jnp.zeros((1, 20, 20, 1))
    assert not native.serves("weight", xl, jnp.zeros((1, 8, 8, 16)), kernel_hw=(13, 13))  # 169 taps > MAX_TAPS
    assert not native.serves("weight", x, d, kernel_hw=(3, 3))  # shapes that do not fit the kernel
    x3 = jnp.concatenate([x, x], axis=-1)
    assert not native.serves("forward", x3, k)  # the kernel's input channels do not match
    k3 = jnp.concatenate([k, k], axis=2)
    assert native.serves("forward", x3, k3) and _calls(lambda x, k: fc.conv_valid(x, k), x3, k3) == 1
    assert not native.serves("forward", x, k.astype(jnp.bfloat16))
    assert not native.serves("forward", x, k, b.astype(jnp.bfloat16))  # the bias's dtype counts too
    assert native.serves("input", d, k) and not native.serves("input", d[..., :6], k)
    assert not native.serves("input", d, k.astype(jnp.bfloat16))
    with pytest.raises(ValueError, match="kind must be one of"):
        native.serves("backward", x, k)


def test_float64_takes_the_xla_formulation(x64):
    x, k, b, d = _arrays(2, 12, 12, 16, 5, 5, dtype=np.float64)
    assert not native.serves("forward", x, k, b)
    assert not native.serves("weight", x, d, kernel_hw=(5, 5)) and not native.serves("input", d, k)
    assert _calls(lambda x, k: fc.conv_valid(x, k, b), x, k) == 0
    assert _calls(lambda x, d: conv_weight_gradient(x, d, (5, 5)), x, d) == 0
    assert _calls(lambda d, k: conv_input_gradient(d, k, (12, 12)), d, k) == 0


def _ops_conv(b):
    """A fresh function each call, traced under the configuration in force (jit keeps one trace per function)."""
    return lambda x, k: ops.conv(x, k, b, strides=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))


def test_switched_off():
    x, k, b, d = _arrays(2, 12, 12, 16, 5, 5)
    assert _calls(_ops_conv(b), x, k) == 1
    with ops.using(native=False):
        assert native.available()  # loaded, but the configuration says no
        assert _calls(_ops_conv(b), x, k) == 0
        grad = jax.grad(lambda x, k, b: jnp.sum(_ops_conv(b)(x, k)), argnums=(0, 1, 2))
        assert _calls(grad, x, k, b) == 0
    with ops.using("reference"):
        assert _calls(_ops_conv(b), x, k) == 0
    # below jigcnn.ops, the switch is the argument
    assert _calls(lambda x, k: fc.conv_valid(x, k, b, native=False), x, k) == 0
    assert _calls(lambda x, d: direct.conv_weight_gradient(x, d, (5, 5), block=None, with_bias=True,
                                                           native=False), x, d) == 0
    assert _calls(lambda d, k: direct.conv_input_gradient(d, k, (12, 12), block=None, native=False), d, k) == 0
    assert _calls(_ops_conv(b), x, k) == 1


def test_serves_false_takes_the_xla_formulation(monkeypatch):
    """Where no native kernel serves (kernels not loaded, say), every path takes the banded GEMM."""
    x, k, b, d = _arrays(2, 12, 12, 16, 5, 5)
    monkeypatch.setattr(native, "serves", lambda *a, **kw: False)
    grad = jax.grad(lambda x, k, b: jnp.sum(jnp.tanh(fc.conv_valid(x, k, b)) * d), argnums=(0, 1, 2))
    assert _calls(grad, x, k, b) == 0
    assert _calls(lambda x, d: conv_weight_gradient(x, d, (5, 5), with_bias=True), x, d) == 0
    assert _calls(lambda d, k: conv_input_gradient(d, k, (12, 12)), d, k) == 0
    want = jax.grad(lambda x, k, b: jnp.sum(jnp.tanh(lax_conv(x, k, b)) * d), argnums=(0, 1, 2))(x, k, b)
    for g, w in zip(jax.jit(grad)(x, k, b), want):
        _close(g, w)


@pytest.mark.parametrize("maps", [16, 6])
def test_deterministic_and_independent_of_batch_split(maps):
    """40 samples are summed in three fixed chunks: bit-identical on every call (map vectors or, with few maps, column vectors)."""
    x, k, _, d = _arrays(40, 20, 20, maps, 5, 5, seed=3)
    wg = jax.jit(lambda x, d: native._ffi_weight_gradient(x, d, 5, 5))
    first = wg(x, d)
    for _ in range(3):
        again = wg(x, d)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("cin", [1, 6])
def test_autodiff_jvp_and_vmap_through_native_forward(cin):
    """The custom JVP keeps forward mode and reverse mode working when the primal is native."""
    x, k, b, d = _arrays(2, 16, 14, 16, 5, 5, cin, seed=4)
    ref = lambda x, k, b: lax_conv(x, k, b)  # noqa: E731
    fast = lambda x, k, b: fc.conv_valid(x, k, b)  # noqa: E731
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(jnp.tanh(fast(*a)) * d), argnums=(0, 1, 2)))(x, k, b)
    want = jax.grad(lambda *a: jnp.sum(jnp.tanh(ref(*a)) * d), argnums=(0, 1, 2))(x, k, b)
    for g, w in zip(grads, want):
        _close(g, w)
    tangents = _arrays(2, 16, 14, 16, 5, 5, cin, seed=5)[:3]
    for g, w in zip(jax.jit(lambda *a: jax.jvp(fast, a[:3], a[3:]))(x, k, b, *tangents),
                    jax.jvp(ref, (x, k, b), tangents)):
        _close(g, w)
    per_sample = jax.jit(jax.vmap(lambda x: fast(x[None], k, b)[0]))(x)
    _close(per_sample, ref(x, k, b))


@pytest.mark.parametrize("net,kernels", [("ignet_fig5", 2), ("lenet5", 5)])
def test_hand_written_gradients_with_native_kernels_equal_autodiff(net, kernels):
    """In float32: hand-written (native forward and weight gradient of each conv, input gradient of the hidden one) against jax.grad."""
    model = getattr(zoo, net)(head_activation=None)
    params, state = model.init(jax.random.key(0))
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.random((4, *model.shapes()[0])).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, 4).astype(np.int32))

    def grads(method):
        fn = value_and_grad(model, "softmax_cross_entropy", method)
        return jax.jit(lambda p, x, y: fn(p, state, x, y, train=True, key=jax.random.key(1)))(params, x, y)

    manual_fn = value_and_grad(model, "softmax_cross_entropy", "manual")
    lowered = jax.jit(lambda p: manual_fn(p, state, x, y, train=True, key=jax.random.key(1))).lower(params)
    assert lowered.as_text().count("jigcnn_direct_conv") == kernels
    (loss_m, _), g_m = grads("manual")
    (loss_a, _), g_a = grads("autodiff")
    np.testing.assert_allclose(float(loss_m), float(loss_a), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_m), jax.tree.leaves(g_a)):
        _close(a, b, tol=1e-4)


def test_build_is_cached_and_named_by_its_inputs():
    path = native.build()
    assert path.exists() and native.build() == path
    assert path == native.library_path(os.environ.get("CXX") or "c++")
    assert native.library_path("g++-9") != native.library_path("c++")


def test_failed_build_names_the_compiler_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="compiling direct_conv.cc failed"):
        native.build(compiler="false")
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == []
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler: 'no-such-compiler-xyz'"):
        native.build(compiler="no-such-compiler-xyz")


def test_concurrent_builds_compile_once(tmp_path, monkeypatch):
    """Processes or threads starting together (test workers) wait for one compilation instead of each running it."""
    import threading
    import time

    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    calls = []

    def fake_compiler(cmd, **kw):
        calls.append(cmd)
        time.sleep(0.3)
        pathlib.Path(cmd[cmd.index("-o") + 1]).write_bytes(b"library")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(native.subprocess, "run", fake_compiler)
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(native.build())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(paths)) == 1 and paths[0].read_bytes() == b"library"


def test_without_a_compiler_the_xla_formulation_runs(tmp_path):
    code = ("import warnings, jax, jax.numpy as jnp\n"
            "from jigcnn.fast import conv as fc, native\n"
            "x = jnp.ones((2, 9, 9, 1)); k = jnp.ones((3, 3, 1, 16))\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    y = fc.conv_valid(x, k)\n"
            "assert float(y[0, 0, 0, 0]) == 9.0 and not native.available()\n"
            "print([str(m.message) for m in w])\n")
    env = dict(os.environ, CXX="no-such-compiler-xyz", JIGCNN_NATIVE_CACHE=str(tmp_path),
               PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "native kernels unavailable, using the XLA formulation: no C++ compiler" in out.stdout


@pytest.mark.parametrize("order,cin", [("jacfwd-jacrev", 1), ("jacrev-jacrev", 1), ("jacrev-jacrev", 3)])
def test_second_order_through_native_kernels(order, cin):
    """The reverse pass runs the native weight gradient; differentiating it again takes its XLA JVP.

    (Forward over forward never runs the weight gradient: test_fast_conv.py covers it.)
    """
    x, k, b, _ = _arrays(1, 6, 7, 16, 3, 3, cin, seed=7)
    d = jnp.asarray(np.random.default_rng(8).standard_normal((1, 4, 5, 16)).astype(np.float32))
    outer, inner = (getattr(jax, name) for name in order.split("-"))
    args = (0, 1, 2)

    def second(conv):
        return jax.jit(outer(inner(lambda x, k, b: jnp.sum(jnp.tanh(conv(x, k, b)) * d), args), args))

    fast = lambda x, k, b: fc.conv_valid(x, k, b)  # noqa: E731
    assert _calls(jax.grad(lambda x, k, b: jnp.sum(jnp.tanh(fast(x, k, b)) * d), 1), x, k, b) == 2
    for g, r in zip(jax.tree.leaves(second(fast)(x, k, b)), jax.tree.leaves(second(lax_conv)(x, k, b))):
        _close(g, r, tol=1e-4)


def test_native_off_traces_the_xla_formulation_and_restores():
    """(A fresh function each time: jit keeps one trace per function, made under the state of its first call.)"""
    x, k, b, _ = _arrays(2, 12, 12, 16, 5, 5)

    def calls():
        return _calls(_ops_conv(b), x, k)

    with ops.using(native=False):
        assert not ops.current().native and calls() == 0
        with ops.using():  # an inner block that changes nothing keeps them off
            assert calls() == 0
        with ops.using(pool=False):  # nor does one that changes another switch
            assert not ops.current().native and calls() == 0
        with ops.using(native=True):  # an explicit inner switch turns them back on, for its block only
            assert calls() == 1
        assert calls() == 0
    with ops.using(native=True):
        assert calls() == 1
    assert ops.current() == ops.DEFAULT and native.available() and calls() == 1


def test_lowering_for_another_platform_takes_the_xla_formulation():
    """`lax.platform_dependent`: a program lowered for CUDA (possible without a GPU) has no CPU custom call."""
    x, k, b, _ = _arrays(2, 12, 12, 16, 5, 5)
    f = jax.jit(jax.grad(lambda x, k, b: jnp.sum(jnp.tanh(fc.conv_valid(x, k, b))), argnums=(1, 2)))
    traced = f.trace(x, k, b)
    assert traced.lower(lowering_platforms=("cpu",)).as_text().count("jigcnn_direct_conv") == 2
    assert traced.lower(lowering_platforms=("cuda",)).as_text().count("jigcnn_direct_conv") == 0
