"""jigcnn.prng: flat draws give jax.random's values bit for bit; jigcnn's initialisers give jax.nn's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import initializers, prng
from jigcnn.layers import Dropout

SHAPES = [(2, 3), (4, 5, 3), (3, 7, 5, 2), (1, 1, 6), (3, 0, 2), (9,)]


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


@pytest.fixture(params=[True, False], ids=["partitionable", "original"])
def threefry_mode(request):
    """Both of jax's threefry counter layouts."""
    with jax.threefry_partitionable(request.param):
        yield request.param


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_draws_equal_jax_random(shape, dtype, threefry_mode):
    with jax.enable_x64(dtype == jnp.float64):
        for make_key in (jax.random.key, jax.random.PRNGKey):
            key = make_key(7)
            _same(prng.uniform(key, shape, dtype, -0.3, 2.0), jax.random.uniform(key, shape, dtype, -0.3, 2.0))
            _same(prng.normal(key, shape, dtype), jax.random.normal(key, shape, dtype))
            _same(prng.truncated_normal(key, -2, 2, shape, dtype), jax.random.truncated_normal(key, -2, 2, shape, dtype))
            _same(prng.bernoulli(key, 0.3, shape), jax.random.bernoulli(key, 0.3, shape))
            _same(prng.randint(key, shape, -3, 40), jax.random.randint(key, shape, -3, 40))
            # the defaults are jax.random's too (float64 / int64 under x64)
            _same(prng.uniform(key, shape), jax.random.uniform(key, shape))
            _same(prng.normal(key, shape), jax.random.normal(key, shape))


def test_draws_equal_jax_random_under_jit_and_vmap():
    keys = jax.random.split(jax.random.key(3), 4)
    shape = (5, 4, 3)
    ours = jax.jit(jax.vmap(lambda k: prng.bernoulli(k, 0.6, shape)))(keys)
    theirs = jax.vmap(lambda k: jax.random.bernoulli(k, 0.6, shape))(keys)
    _same(ours, theirs)
    # a p per element is not flattened, and still equal
    p = jax.random.uniform(jax.random.key(1), shape)
    _same(prng.bernoulli(keys[0], p, shape), jax.random.bernoulli(keys[0], p, shape))


def test_flat_draw_is_not_a_different_layout():
    """The check above can fail: a column-major reshape of the flat draw is not jax's draw."""
    key = jax.random.key(0)
    flat = jax.random.uniform(key, (24,))
    assert not np.array_equal(np.asarray(flat.reshape((2, 3, 4), order="F")), np.asarray(jax.random.uniform(key, (2, 3, 4))))


def test_other_key_implementations_draw_as_given():
    key = jax.random.key(5, impl="rbg")
    _same(prng.uniform(key, (3, 4, 2)), jax.random.uniform(key, (3, 4, 2)))
    _same(prng.bernoulli(key, 0.5, (3, 4, 2)), jax.random.bernoulli(key, 0.5, (3, 4, 2)))


def test_flat_draw_lowers_one_axis_iota():
    """What makes the flat draw cheaper to compile: its counters come from a single rank-1 iota."""
    shape = (8, 6, 6, 4)
    ours = jax.jit(lambda k: prng.bernoulli(k, 0.5, shape)).lower(jax.random.key(0)).as_text()
    theirs = jax.jit(lambda k: jax.random.bernoulli(k, 0.5, shape)).lower(jax.random.key(0)).as_text()
    assert "iota" in ours and "tensor<1152xui32>" in ours
    assert ours.count("iota") < theirs.count("iota")


@pytest.mark.parametrize("name", ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal",
                                  "lecun_uniform", "lecun_normal"])
@pytest.mark.parametrize("shape", [(3, 3, 16, 32), (400, 120), (5, 5, 1, 6), (1, 1, 16, 64)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_variance_scaling_equals_jax_nn(name, shape, dtype):
    rule = initializers.get_initializer(name)
    jax_init = jax.nn.initializers.variance_scaling(rule.scale, rule.mode, rule.distribution)
    with jax.enable_x64(dtype == jnp.float64):
        key = jax.random.key(11)
        _same(rule.kernel(key, shape, None, dtype), jax_init(key, shape, dtype))


def test_variance_scaling_checks_its_arguments():
    with pytest.raises(ValueError, match="mode"):
        initializers.VarianceScaling(2.0, "fan_geo", "normal")
    with pytest.raises(ValueError, match="distribution"):
        initializers.VarianceScaling(2.0, "fan_in", "laplace")
    with pytest.raises(ValueError, match="at least 2 axes"):
        initializers.VarianceScaling().kernel(jax.random.key(0), (5,), None)


def test_ignet_uniform_equals_jax_random():
    rule = initializers.ignet(W=2.0, B=0.5)
    key = jax.random.key(2)
    _same(rule.kernel(key, (5, 5, 1, 6), 25), jax.random.uniform(key, (5, 5, 1, 6), jnp.float32, -2.0 / 25, 2.0 / 25))
    _same(rule.bias(key, (6,)), jax.random.uniform(key, (6,), jnp.float32, -0.5, 0.5))


def test_dropout_mask_equals_jax_random():
    layer = Dropout(0.25)
    key = jax.random.key(4)
    _same(layer.keep_mask(key, (16, 8, 8, 32)), jax.random.bernoulli(key, 0.75, (16, 8, 8, 32)))
