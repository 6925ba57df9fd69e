"""jigcnn.ops, the one door to the kernels: configuration, scoping, routing, and each route against plain lax."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jigcnn import ops
from jigcnn.fast import banded

DN = ("NHWC", "HWIO", "NHWC")


def test_configurations_and_their_errors():
    assert ops.current() == ops.DEFAULT
    assert ops.resolve("reference") == ops.REFERENCE and ops.resolve("fast") == ops.DEFAULT
    assert ops.resolve({"native": False}) == ops.Kernels(native=False)
    assert ops.resolve(ops.REFERENCE, pool=True) == ops.Kernels(False, False, False, False, True, False)
    with pytest.raises(ValueError, match="'turbo'"):
        ops.resolve("turbo")
    with pytest.raises(TypeError, match=r"unknown kernel switch\(es\) \['nativ'\]"):
        ops.resolve(nativ=False)
    with pytest.raises(TypeError, match="Kernels.native must be a bool"):
        ops.Kernels(native=1)
    with pytest.raises(TypeError, match="kernels must be"):
        ops.resolve(3)


def test_using_is_scoped_nested_restored_on_error_and_per_thread():
    with ops.using("reference") as k:
        assert k == ops.REFERENCE == ops.current()
        with ops.using(pool=True):
            assert ops.current() == ops.REFERENCE.replace(pool=True)
        assert ops.current() == ops.REFERENCE
    assert ops.current() == ops.DEFAULT
    with pytest.raises(RuntimeError):
        with ops.using(native=False):
            raise RuntimeError("boom")
    assert ops.current() == ops.DEFAULT
    seen = []
    with ops.using("reference"):
        t = threading.Thread(target=lambda: seen.append(ops.current()))
        t.start()
        t.join()
    assert seen == [ops.DEFAULT]  # another thread keeps its own configuration


def test_banded_serves_only_few_channel_unit_stride_convolutions():
    assert ops.banded_serves((5, 5, 1, 6), (1, 1), (1, 1))
    assert ops.banded_serves((5, 5, 6, 16), (1, 1), (1, 1))          # 150 taps
    assert not ops.banded_serves((3, 3, 32, 32), (1, 1), (1, 1))     # 288 taps
    assert not ops.banded_serves((3, 3, 1, 4), (2, 2), (1, 1))
    assert not ops.banded_serves((3, 3, 1, 4), (1, 1), (2, 1))
    assert not ops.banded_serves((5, 5, 1, 6), (1, 1), (1, 1), ops.REFERENCE)
    with ops.using(banded_conv=False):
        assert not ops.banded_serves((5, 5, 1, 6), (1, 1), (1, 1))
    assert banded.MAX_TAPS == 160


def _primitives(f, *args):
    return {str(e.primitive) for e in jax.make_jaxpr(f)(*args).jaxpr.eqns}


def _conv_case(cin, cout, k=3, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((2, 9, 8, cin)).astype(dtype))
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout)).astype(dtype))
    b = jnp.asarray(rng.standard_normal(cout).astype(dtype))
    return x, w, b


@pytest.mark.parametrize("spec", ["default", "reference", {"native": False}, {"wide_conv": False}])
@pytest.mark.parametrize("cin,cout,strides,padding", [(1, 6, (1, 1), ((0, 0), (0, 0))),
                                                      (3, 4, (1, 1), ((1, 1), (2, 0))),
                                                      (24, 8, (1, 1), ((1, 1), (1, 1))),
                                                      (2, 3, (2, 1), ((0, 0), (0, 0)))])
def test_conv_equals_lax_under_every_configuration(spec, cin, cout, strides, padding):
    x, w, b = _conv_case(cin, cout)
    want = lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN) + b
    with ops.using(spec):
        got = jax.jit(lambda x, w, b: ops.conv(x, w, b, strides=strides, padding=padding, dilation=(1, 1)))(x, w, b)
    # float32: Winograd F(4x4, 3x3) (the 24-channel case) is off by ~3e-6 of the largest output
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5,
                               atol=2e-5 * max(1.0, float(jnp.max(jnp.abs(want)))))


def test_reference_configuration_traces_only_plain_lax():
    x, w, b = _conv_case(1, 6)

    def f(x, w, b):
        return ops.conv(x, w, b, strides=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))

    with ops.using("reference"):
        prims = _primitives(lambda *a: f(*a), x, w, b)  # a fresh function: JAX caches traces per function
    assert "conv_general_dilated" in prims
    assert not {p for p in prims if "custom" in p or "jigcnn" in p or "ffi" in p}
    with ops.using("default"):
        fast = _primitives(lambda *a: f(*a), x, w, b)
    assert "conv_general_dilated" not in fast  # the banded / native route
    xd = jnp.ones((4, 10), jnp.float32)
    kd = jnp.ones((10, 3), jnp.float32)
    with ops.using("reference"):
        assert _primitives(lambda *a: ops.dense(*a), xd, kd) == {"dot_general"}
    with ops.using("default"):
        assert "custom" in " ".join(_primitives(lambda *a: ops.dense(*a), xd, kd))


def test_switch_read_at_trace_time_and_a_traced_function_keeps_its_kernels():
    x, w, b = _conv_case(1, 6)

    def conv(x, w, b):
        return ops.conv(x, w, b, strides=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))

    with ops.using("reference"):
        f = jax.jit(conv)
        text_ref = f.lower(x, w, b).as_text()
    assert "convolution" in text_ref
    # traced now, as a new function (JAX caches traces per Python function): the default kernels
    assert "convolution" not in jax.jit(lambda *a: conv(*a)).lower(x, w, b).as_text()
    # documented: a jitted function already traced keeps the kernels it was traced with
    assert f.lower(x, w, b).as_text() == text_ref


def _plain_weight_gradient(xp, d, kernel_hw, strides, dilation):
    kh, kw = kernel_hw
    ho, wo = d.shape[1:3]
    cols = jnp.stack([xp[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)], 0)
    return jnp.einsum("tnhwc,nhwo->tco", cols, d).reshape(kh, kw, xp.shape[-1], d.shape[-1])


def _plain_input_gradient(d, k, padded_hw, strides, dilation):
    kh, kw = k.shape[:2]
    ho, wo = d.shape[1:3]
    out = jnp.zeros(d.shape[:1] + tuple(padded_hw) + (k.shape[2],), d.dtype)
    for i in range(kh):
        for j in range(kw):
            out = out.at[:, i:i + ho, j:j + wo, :].add(jnp.einsum("nhwo,co->nhwc", d, k[i, j]))
    return out


@pytest.mark.parametrize("spec", ["default", {"native": False}, "reference"])
def test_conv_gradients_of_the_door_equal_the_plain_ones(spec, x64):
    x, w, _ = _conv_case(2, 5, dtype=np.float64)
    d = jnp.asarray(np.random.default_rng(7).standard_normal((2, 7, 6, 5)))
    calls = []

    def plain_w(*a):
        calls.append("w")
        return _plain_weight_gradient(*a)

    def plain_i(*a):
        calls.append("i")
        return _plain_input_gradient(*a)

    with ops.using(spec):
        dw, db = ops.conv_weight_gradient(x, d, (3, 3), (1, 1), (1, 1), plain=plain_w,
                                          plain_bias=lambda d: d.sum((0, 1, 2)))
        dx = ops.conv_input_gradient(d, w, x.shape[1:3], (1, 1), (1, 1), plain=plain_i)
    np.testing.assert_allclose(np.asarray(dw), np.asarray(_plain_weight_gradient(x, d, (3, 3), None, None)),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(db), np.asarray(d.sum((0, 1, 2))), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dx), np.asarray(_plain_input_gradient(d, w, x.shape[1:3], None, None)),
                               rtol=1e-12, atol=1e-12)
    # the caller's own formulation runs exactly when no fast kernel serves
    assert calls == (["w", "i"] if spec == "reference" else [])


def test_dense_and_pool_routes():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((6, 12)).astype(np.float32))
    wide = jnp.asarray(rng.standard_normal((12, 40)).astype(np.float32))
    few = wide[:, :4]
    d_few = jnp.asarray(rng.standard_normal((6, 4)).astype(np.float32))
    for k in (few, wide):
        np.testing.assert_allclose(np.asarray(ops.dense(x, k)), np.asarray(x @ k), rtol=1e-6, atol=1e-6)
    calls = []
    ops.dense_weight_gradient(x, d_few, plain=lambda *a: calls.append(1))
    assert calls == []
    with ops.using(dense=False):
        ops.dense_weight_gradient(x, d_few, plain=lambda *a: calls.append(1))
    assert calls == [1]
    np.testing.assert_allclose(np.asarray(ops.dense_weight_gradient(x, d_few, plain=None)), np.asarray(x.T @ d_few),
                               rtol=1e-5, atol=1e-5)
    m = jnp.asarray(rng.standard_normal((2, 6, 6, 3)).astype(np.float32))
    want = lax.reduce_window(m, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    np.testing.assert_array_equal(np.asarray(ops.max_pool(m, (2, 2), (2, 2), (3, 3), plain=None)), np.asarray(want))
    pooled = []
    ops.max_pool(m, (3, 3), (2, 2), (2, 2), plain=lambda x: pooled.append(x.shape))
    with ops.using(pool=False):
        ops.max_pool(m, (2, 2), (2, 2), (3, 3), plain=lambda x: pooled.append(x.shape))
    assert pooled == [m.shape, m.shape]
