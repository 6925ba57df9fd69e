"""jigcnn.fast.pool against the plain formulation (stacked windows, gather at the first arg-max)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import ops
from jigcnn.fast import pool as fp
from jigcnn.layers import MaxPool
from jigcnn.layers.pool import window_stack


def plain_max_pool(x, window, out_hw):
    win = window_stack(x, window, window, out_hw)
    idx = jnp.argmax(win, axis=-1)
    return jnp.take_along_axis(win, idx[..., None], axis=-1)[..., 0]


CASES = [((2, 28, 28, 6), (2, 2)), ((2, 10, 10, 16), (2, 2)), ((3, 7, 9, 2), (2, 3)), ((1, 6, 6, 1), (3, 3)),
         ((2, 5, 4, 3), (1, 2))]


def _ties(shape, seed):
    # few distinct values: many ties inside windows, so the first-maximum rule is exercised
    return jnp.asarray(np.random.default_rng(seed).integers(0, 3, shape).astype(np.float32))


@pytest.mark.parametrize("shape,window", CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_values_and_routing_equal_plain(shape, window, ties):
    rng = np.random.default_rng(0)
    x = _ties(shape, 1) if ties else jnp.asarray(rng.standard_normal(shape).astype(np.float32))
    out_hw = (shape[1] // window[0], shape[2] // window[1])
    dy = jnp.asarray(rng.standard_normal((shape[0],) + out_hw + (shape[3],)).astype(np.float32))
    y, back = jax.vjp(lambda x: fp.max_pool(x, window, out_hw), x)
    y0, back0 = jax.vjp(lambda x: plain_max_pool(x, window, out_hw), x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y0))
    np.testing.assert_array_equal(np.asarray(back(dy)[0]), np.asarray(back0(dy)[0]))


def test_nan_windows_route_like_argmax():
    x = np.random.default_rng(3).standard_normal((1, 4, 4, 2)).astype(np.float32)
    x[0, 0, 1, 0] = np.nan
    x[0, 1, 0, 0] = np.nan
    x[0, 3, 3, 1] = np.nan
    x = jnp.asarray(x)
    dy = jnp.ones((1, 2, 2, 2), jnp.float32)
    g = jax.vjp(lambda x: fp.max_pool(x, (2, 2), (2, 2)), x)[1](dy)[0]
    g0 = jax.vjp(lambda x: plain_max_pool(x, (2, 2), (2, 2)), x)[1](dy)[0]
    np.testing.assert_array_equal(np.asarray(g), np.asarray(g0))
    y = fp.max_pool(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(np.isnan(np.asarray(y)), np.isnan(np.asarray(plain_max_pool(x, (2, 2), (2, 2)))))


def test_layer_uses_fast_path_only_for_tiling_windows(monkeypatch):
    calls = []
    real = fp.max_pool
    monkeypatch.setattr(fp, "max_pool", lambda *a: calls.append(a[1:]) or real(*a))
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 9, 9, 3)).astype(np.float32))
    for layer in (MaxPool(2), MaxPool(3, 2), MaxPool((2, 3))):
        k, s, out = layer.geometry(x.shape[1:])
        y, _ = layer.apply({}, {}, x)
        win = window_stack(x, k, s, out[:2])
        np.testing.assert_array_equal(np.asarray(y), np.asarray(win.max(axis=-1)))
    # only the windows that tile the map (window == stride) went through the selects
    assert calls == [((2, 2), (4, 4)), ((2, 3), (4, 3))]
    calls.clear()
    with ops.using(pool=False):
        MaxPool(2).apply({}, {}, x)
    assert calls == []
