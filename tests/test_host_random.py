"""jigcnn.host_random: JAX's threefry2x32 in NumPy, bit for bit, and Sequential.init's choice of the host draw.

The suite compiles at ``--xla_backend_optimization_level=0`` (conftest.py), where XLA rounds
``u * (hi - lo) + lo`` twice instead of contracting it into a fused multiply-add: in-process, the
random bits are compared exactly and the floats within one rounding step of the range; a
subprocess with XLA's default optimisation checks the floats bit for bit.
"""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import BatchNorm, Conv2D, Dense, Flatten, MaxPool, PReLU, Sequential, host_random, ignet, zoo
from jigcnn import model as model_module
from jigcnn.initializers import VarianceScaling

SEEDS = (0, 1, 7, 2**31 + 5, 2**32 - 1)


@pytest.mark.parametrize("seed", SEEDS)
def test_split_is_jax_random_split(seed):
    key = jax.random.key(seed)
    for num in (1, 2, 5, 33):
        ours = np.stack([k.words for k in host_random.split(host_random.host_key(key), num)])
        np.testing.assert_array_equal(ours, np.asarray(jax.random.key_data(jax.random.split(key, num))))


SHAPES = [((1,), 0.0, 1.0), ((7,), -1.0, 1.0), ((5, 5, 1, 6), -0.04, 0.04), ((400, 120), -0.3, 0.3),
          ((3, 3, 16, 33), -1.0 / 9, 1.0 / 9), ((2, 3), 2.5, 7.0), ((0,), -1.0, 1.0)]


def _within_one_rounding(ours, theirs):
    """Equal up to one float32 rounding step of the values' magnitude (a multiply-add rounded once or twice)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    scale = float(np.max(np.abs(theirs))) if theirs.size else 1.0
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2 * np.finfo(np.float32).eps * (scale or 1.0))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(1,), (7,), (5, 5, 1, 6), (400, 120), (3, 3, 16, 33), (0,)])
def test_bits_are_jax_random_bits(seed, shape):
    key = jax.random.key(seed)
    ours = host_random.bits(host_random.host_key(key), shape)
    assert ours.dtype == np.uint32 and ours.shape == shape
    np.testing.assert_array_equal(ours, np.asarray(jax.random.bits(key, shape, jnp.uint32)))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape,lo,hi", SHAPES)
def test_uniform_is_jax_random_uniform(seed, shape, lo, hi):
    key = jax.random.key(seed)
    ours = host_random.uniform(host_random.host_key(key), shape, np.float32, lo, hi)
    assert ours.dtype == np.float32 and ours.shape == shape
    assert ours.size == 0 or (ours.min() >= np.float32(lo) and ours.max() <= np.float32(hi))
    _within_one_rounding(ours, jax.random.uniform(key, shape, jnp.float32, lo, hi))


_BIT_FOR_BIT = textwrap.dedent("""
    import functools, sys
    import jax, jax.numpy as jnp, numpy as np
    from jigcnn import host_random, zoo
    from jigcnn import model as model_module
    from jigcnn.initializers import VarianceScaling
    sys.path.insert(0, "tests")
    from test_host_random import SEEDS, SHAPES, _nets

    for seed in SEEDS[:2]:
        key = jax.random.key(seed)
        hkey = host_random.host_key(key)
        for shape, lo, hi in SHAPES[1:5]:  # jax.random.uniform is itself a jitted program
            ours = host_random.uniform(hkey, shape, np.float32, lo, hi)
            assert np.array_equal(ours, np.asarray(jax.random.uniform(key, shape, jnp.float32, lo, hi))), shape
    for mode in ("fan_in", "fan_avg"):  # (the modes differ in a Python float only: all four in-process)
        ours = VarianceScaling(2.0, mode, "uniform").kernel(hkey, (5, 5, 6, 16), 0, np.float32)
        theirs = jax.nn.initializers.variance_scaling(2.0, mode, "uniform")(key, (5, 5, 6, 16), jnp.float32)
        assert np.array_equal(ours, np.asarray(theirs)), mode
    for name in ("biases, batch norm, prelu",):  # he and Eq. 3 uniforms, frozen biases, drawn in one program
        net = _nets()[name]
        key = jax.random.key(3)
        host = net.init(key)
        compiled = jax.jit(functools.partial(model_module._draw, net.layers, net.shapes()[0], "float32"))(key)
        for u, v in zip(jax.tree.leaves(host), jax.tree.leaves(compiled)):
            assert np.array_equal(np.asarray(u), np.asarray(v)), name
    print("BIT-FOR-BIT")
""")


def test_bit_for_bit_with_xlas_default_optimisation(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path), JAX_PLATFORMS="cpu")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_backend_optimization_level")]
    env["XLA_FLAGS"] = " ".join(flags)
    out = subprocess.run([sys.executable, "-c", _BIT_FOR_BIT], cwd=root, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "BIT-FOR-BIT" in out.stdout, out.stderr[-3000:]


def test_raw_uint32_keys_and_what_is_not_a_host_key():
    raw = jax.random.PRNGKey(11)
    assert raw.dtype == jnp.uint32
    np.testing.assert_array_equal(host_random.host_key(raw).words, np.asarray(raw))
    np.testing.assert_array_equal(host_random.host_key(jax.random.key(11)).words, np.asarray(raw))
    assert host_random.host_key(jax.random.key(0, impl="rbg")) is None
    assert host_random.host_key(jax.random.split(jax.random.key(0), 3)) is None  # a batch of keys
    assert host_random.host_key(np.zeros(3, np.uint32)) is None
    assert host_random.host_key(None) is None
    seen = []
    jax.jit(lambda k: seen.append(host_random.host_key(k)) or k)(jax.random.key(0))
    assert seen == [None]  # traced


def test_no_host_key_when_jax_draws_the_original_bit_layout():
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    try:
        assert host_random.host_key(jax.random.key(0)) is None
    finally:
        jax.config.update("jax_threefry_partitionable", before)


def test_uniform_refuses_other_dtypes_and_too_many_values(monkeypatch):
    key = host_random.host_key(jax.random.key(0))
    with pytest.raises(TypeError, match="float32 only"):
        host_random.uniform(key, (3,), np.float64, 0.0, 1.0)
    monkeypatch.setattr(host_random, "MAX_ELEMENTS", 10)
    with pytest.raises(host_random.TooLarge):
        host_random.uniform(key, (11,), np.float32, 0.0, 1.0)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg", "fan_geo_avg"])
@pytest.mark.parametrize("shape", [(5, 5, 1, 6), (400, 120), (3, 3, 16, 32)])
def test_variance_scaling_uniform_on_the_host_is_jax_nn_initializers(mode, shape):
    init = VarianceScaling(2.0, mode, "uniform")
    key = jax.random.key(5)
    ours = init.kernel(host_random.host_key(key), shape, 0, np.float32)
    theirs = jax.nn.initializers.variance_scaling(2.0, mode, "uniform")(key, shape, jnp.float32)
    assert isinstance(ours, np.ndarray)
    _within_one_rounding(ours, theirs)


def _nets():
    table = np.array([[1, 0, 1], [0, 1, 1]], bool)
    return {
        "lenet5": zoo.lenet5(head_activation=None),
        "ignet_fig5": zoo.ignet_fig5(),
        "annt_lenet (connection table)": zoo.annt_lenet(head_activation=None),
        "biases, batch norm, prelu": Sequential([
            Conv2D(4, 3, padding="same", bias="frozen", initializer=ignet(1.0, 0.5)),
            BatchNorm(), PReLU(), MaxPool(2), Flatten(),
            Dense(3, initializer="he_uniform"), Dense(2, initializer=ignet(2.0, 0.1)),
        ], input_shape=(6, 6, 2)),
        "connection table": Sequential([Conv2D(3, 2, connection_table=table)], input_shape=(4, 4, 2)),
    }


def _compiled_draw(net, key, dtype="float32"):
    return jax.jit(functools.partial(model_module._draw, net.layers, net.shapes()[0], dtype))(key)


def _no_compiled_init(monkeypatch):
    def refuse(*args):
        raise AssertionError("Sequential.init compiled its draw")

    monkeypatch.setattr(model_module, "_jitted_init", refuse)


@pytest.mark.parametrize("name", list(_nets()))
def test_init_on_the_host_draws_what_the_compiled_draw_does(name, monkeypatch):
    net = _nets()[name]
    _no_compiled_init(monkeypatch)
    for seed in (0, 3):
        key = jax.random.key(seed)
        host = net.init(key)
        compiled = _compiled_draw(net, key)
        assert jax.tree.structure(host) == jax.tree.structure(compiled)
        for u, v in zip(jax.tree.leaves(host), jax.tree.leaves(compiled)):
            assert isinstance(u, jax.Array)
            _within_one_rounding(u, v)


def _used_compiled_init(net, *args, **kw):
    calls = []
    real = model_module._jitted_init

    def spy(*spec):
        calls.append(spec)
        return real(*spec)

    model_module._jitted_init = spy
    try:
        out = net.init(*args, **kw)
    finally:
        model_module._jitted_init = real
    return bool(calls), out


def test_init_compiles_the_draw_when_the_host_cannot():
    key = jax.random.key(0)
    assert not _used_compiled_init(zoo.lenet5(), key)[0]

    normal = Sequential([Dense(3, initializer="he_normal")], input_shape=(4,))
    used, (params, _) = _used_compiled_init(normal, key)
    assert used
    _within_one_rounding(params["dense1"]["kernel"], _compiled_draw(normal, key)[0]["dense1"]["kernel"])

    assert _used_compiled_init(zoo.lenet5(), key, dtype=jnp.float16)[0]  # float32 only
    assert _used_compiled_init(zoo.lenet5(), jax.random.key(0, impl="rbg"))[0]

    class OwnInit(Dense):  # redefines init: may draw with jax.random, so the host does not try
        def init(self, key, in_shape, dtype=np.float32):
            return (self.features,), {"kernel": jax.random.normal(key, (in_shape[0], self.features), dtype)}, {}

    assert _used_compiled_init(Sequential([OwnInit(2)], input_shape=(3,)), key)[0]

    class OwnUniform(VarianceScaling):  # redefines kernel
        def kernel(self, key, shape, extent, dtype=jnp.float32):
            return jnp.ones(shape, dtype)

    assert _used_compiled_init(Sequential([Dense(2, initializer=OwnUniform())], input_shape=(3,)), key)[0]


def test_a_traced_key_takes_the_compiled_draw():
    net = zoo.lenet5(head_activation=None)
    key = jax.random.key(4)
    traced = jax.jit(lambda k: net.init(k))(key)
    for u, v in zip(jax.tree.leaves(traced), jax.tree.leaves(net.init(key))):
        _within_one_rounding(u, v)


def test_a_net_too_big_for_the_host_is_drawn_compiled_with_the_same_values(monkeypatch):
    net = zoo.lenet5(head_activation=None)
    key = jax.random.key(9)
    small = net.init(key)
    monkeypatch.setattr(host_random, "MAX_ELEMENTS", 1000)
    used, big = _used_compiled_init(net, key)
    assert used
    for u, v in zip(jax.tree.leaves(small), jax.tree.leaves(big)):
        _within_one_rounding(u, v)
