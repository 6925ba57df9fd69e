"""jigcnn.host_random: a jaxpr evaluated in NumPy, bit for bit the jitted program, and Sequential.init's use of it.

The suite compiles at ``--xla_backend_optimization_level=0`` (conftest.py), where XLA rounds
``u * (hi - lo) + lo`` twice instead of contracting it into a fused multiply-add; the interpreter
follows the flag (`host_random.contracts`), so in-process the values are compared exactly with
the jitted program as the suite compiles it, and a subprocess with XLA's default optimisation
compares every zoo net's draw, bit for bit, with the fused multiply-adds.
"""

import fractions
import functools
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jigcnn import BatchNorm, Conv2D, Dense, Flatten, MaxPool, PReLU, Sequential, host_random, ignet, zoo
from jigcnn import model as model_module
from jigcnn.initializers import Initializer, VarianceScaling

SEEDS = (0, 1, 7, 2**31 + 5, 2**32 - 1)
ROOT = pathlib.Path(__file__).resolve().parent.parent


def _exactly(ours, theirs):
    """The same pytree, dtypes and bits (NaNs included)."""
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for u, v in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        u, v = np.asarray(u), np.asarray(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        assert u.tobytes() == v.tobytes()


_JITTED = {}


def _both(fn, *args):
    """fn(*args) on the host and jitted, compared exactly."""
    ours = host_random.evaluate(fn, *args)
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(ours))
    _exactly(ours, _JITTED.setdefault(fn, jax.jit(fn))(*args))
    return ours


def _u(k, lo=0.5, hi=2.0):
    return jax.random.uniform(k, (2000,), minval=lo, maxval=hi)


def _v(k):
    return _u(jax.random.fold_in(k, 1))


_COLUMNS = np.linspace(0.1, 0.9, 200, dtype=np.float32)
# float arithmetic that XLA's algebraic simplifier regroups (x / c -> x * (1 / c), (x * c1) * c2 -> x * (c1 * c2),
# (x + c1) + c2 -> x + (c1 + c2), x + 0 -> x) or LLVM contracts (a * b + c); None: the host must refuse it
REWRITES = {
    "x / 3": lambda k: _u(k) / 3.0,
    "(x / 3) / 7": lambda k: (_u(k) / 3.0) / 7.0,
    "(x / 3) * 0.7": lambda k: (_u(k) / 3.0) * 0.7,
    "x / y": lambda k: _u(k) / _v(k),
    "(x * 0.3) * 0.7 * 0.9": lambda k: ((_u(k) * 0.3) * 0.7) * 0.9,
    "y = x * 0.3; (y * 0.7, y)": lambda k: (lambda y: (y * 0.7, y))(_u(k) * 0.3),
    "(x + 0.3) + 0.7": lambda k: (_u(k) + 0.3) + 0.7,
    "(x - 0.3) - 0.7": lambda k: (_u(k) - 0.3) - 0.7,
    "(x * 0.3 + 0.1) + 0.2": lambda k: (_u(k) * 0.3 + 0.1) + 0.2,
    "x * 0.3 + 0": lambda k: _u(k, -1.0, 1.0) * 0.3 + 0.0,
    "x * y + 0.1": lambda k: _u(k) * _v(k) + 0.1,
    "x * 0.3 - y": lambda k: _u(k) * 0.3 - _v(k),
    "y - x * 0.3": lambda k: _v(k) - _u(k) * 0.3,
    "x * x + y": lambda k: jnp.square(_u(k)) + _v(k),
    "(x * 0.37) * mask": lambda k: (_u(k) * 0.37) * jnp.asarray(np.arange(2000) % 3 == 0, jnp.float32),
    "(x * np.full) * 0.7": lambda k: (_u(k) * np.full((2000,), 0.3, np.float32)) * 0.7,
    "x / sqrt(y)": None, "(0.3 - x) + 0.7": None, "(x * columns) * columns": None,
}
_REFUSED = {
    "x / sqrt(y)": lambda k: _u(k) / jnp.sqrt(_v(k)),
    "(0.3 - x) + 0.7": lambda k: (0.3 - _u(k)) + 0.7,
    "(x * columns) * columns": lambda k: (_u(k).reshape(10, 200) * _COLUMNS) * (_COLUMNS + 1),
}


@pytest.mark.parametrize("name", list(REWRITES))
def test_float_arithmetic_xla_regroups_is_regrouped_alike(name):
    if REWRITES[name] is None:
        with pytest.raises(host_random.Unsupported):
            host_random.evaluate(_REFUSED[name], jax.random.key(0))
    else:
        _both(REWRITES[name], jax.random.key(0))


@pytest.mark.parametrize("seed", SEEDS)
def test_split_fold_in_and_bits_are_jax_randoms(seed):
    key = jax.random.key(seed)
    for num in (1, 2, 5, 33):
        _both(lambda k, n=num: jax.random.key_data(jax.random.split(k, n)), key)
    _both(lambda k: jax.random.key_data(jax.random.split(k, (2, 3))), key)
    _both(lambda k: jax.random.key_data(jax.random.fold_in(k, 12345)), key)
    for shape in [(1,), (7,), (5, 5, 1, 6), (400, 120), (3, 3, 16, 33), (0,)]:
        bits = _both(lambda k, s=shape: jax.random.bits(k, s, jnp.uint32), key)
        assert bits.shape == shape
    for dtype in (jnp.uint8, jnp.uint16):
        _both(lambda k, d=dtype: jax.random.bits(k, (9,), d), key)


def test_threefry_known_answer():
    # the Threefry-2x32 test vector of Salmon et al. (Random123), as in JAX's own tests
    a, b = host_random.threefry2x32(0x13198A2E, 0x03707344, np.uint32([0x243F6A88]), np.uint32([0x85A308D3]))
    assert (int(a[0]), int(b[0])) == (0xC4923A9C, 0x483DF7A0)


def test_raw_keys_seeds_and_key_batches():
    raw = jax.random.PRNGKey(11)
    assert raw.dtype == jnp.uint32
    _both(lambda k: jax.random.split(k, 3), raw)  # random_wrap / random_unwrap
    _both(lambda k: jax.random.uniform(k, (4, 5)), raw)
    for seed in (0, 5, -1, 2**31 - 1, -(2**31)):
        _both(lambda s: jax.random.key_data(jax.random.key(s)), np.int32(seed))  # random_seed
    _both(lambda s: jax.random.key_data(jax.random.fold_in(jax.random.key(s), 7)), np.int32(3))
    keys = jax.random.split(jax.random.key(2), 3)
    _both(lambda ks: jax.random.key_data(jax.vmap(lambda k: jax.random.split(k, 4))(ks)), keys)
    _both(lambda ks: jax.vmap(lambda k: jax.random.bits(k, (2, 3)))(ks), keys)
    _both(lambda ks: jax.random.key_data(jnp.concatenate([ks[:1], ks[2:]])), keys)
    _both(lambda ks: jax.random.key_data(lax.select(jnp.array([True, False, True]), ks, jnp.concatenate([ks[1:], ks[:1]]))), keys)


@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("shape,lo,hi", [((1,), 0.0, 1.0), ((7,), -1.0, 1.0), ((5, 5, 1, 6), -0.04, 0.04),
                                         ((400, 120), -0.3, 0.3), ((3, 3, 16, 33), -1.0 / 9, 1.0 / 9),
                                         ((2, 3), 2.5, 7.0), ((0,), -1.0, 1.0)])
def test_uniform_is_jax_random_uniform(seed, shape, lo, hi):
    ours = _both(lambda k: jax.random.uniform(k, shape, jnp.float32, lo, hi), jax.random.key(seed))
    assert ours.size == 0 or (ours.min() >= np.float32(lo) and ours.max() <= np.float32(hi))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg", "fan_geo_avg"])
def test_variance_scaling_uniform_is_jax_nn_initializers(mode):
    init = jax.nn.initializers.variance_scaling(2.0, mode, "uniform")
    for shape in [(5, 5, 1, 6), (400, 120), (3, 3, 16, 32)]:
        _both(lambda k, s=shape: init(k, s, jnp.float32), jax.random.key(5))


def test_elementwise_and_shape_primitives_are_xlas():
    def program(k):
        u = jax.random.bits(k, (4, 6))
        i = lax.bitcast_convert_type(u, jnp.int32)
        f = jax.random.uniform(jax.random.fold_in(k, 1), (4, 6), minval=-3.0, maxval=3.0)
        return dict(
            shifts=(lax.shift_right_logical(u, jnp.uint32(33)), lax.shift_left(u, jnp.uint32(32)),
                    lax.shift_right_arithmetic(i, jnp.int32(40)), lax.shift_right_logical(u, u % 40),
                    lax.shift_left(i, jnp.int32(3)), u >> 3, i >> 5),
            ints=(lax.div(i, jnp.int32(-7)), lax.rem(i, jnp.int32(-7)), i // 5, -i, i * 3 + 1, u ^ (u >> 1), ~u,
                  jnp.maximum(i, 0), jnp.minimum(u, 7), lax.clamp(-5, i % 11, 5)),
            floats=(jnp.sqrt(jnp.abs(f)), f / 3.0, jnp.floor(f), jnp.ceil(f), jnp.sign(f), lax.convert_element_type(f, jnp.int32),
                    u.astype(jnp.float32), (u & 255).astype(jnp.uint8), f > 0, jnp.where(f > 0, f, 2 * f), f.astype(bool),
                    jnp.nextafter(f, jnp.inf), jnp.clip(f, -1.0, 1.0), jnp.isfinite(f / 0.0)),
            shapes=(lax.iota(jnp.int32, 5), jnp.arange(12).reshape(3, 4).T, jnp.concatenate([f, f[:1]], 0),
                    f[1:3, ::2], f[None, :, :1].squeeze(-1), jnp.broadcast_to(f[:, :1], (4, 6))),
        )

    _both(program, jax.random.key(4))


def _round_to_float32(x: fractions.Fraction) -> np.float32:
    """The float32 nearest to the exact x (ties to even)."""
    guess = np.float32(float(x))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    return min(candidates, key=lambda c: (abs(fractions.Fraction(float(c)) - x), int(c.view(np.uint32)) & 1))


def test_fused_multiply_add_rounds_once():
    eps = 2.0**-12
    # (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 sits on a float32 midpoint: a tiny c decides the rounding, which
    # a float64 sum (rounded first to 53 bits) loses
    a = np.float32([1 + eps, 1 + eps, 1 + eps, 3.0, 1e30, 0.1])
    b = np.float32([1 + eps, 1 + eps, -(1 + eps), 7.0, 1e10, 0.3])
    c = np.float32([2.0**-80, -(2.0**-80), 2.0**-80, -21.0, -np.inf, 0.03])
    rng = np.random.default_rng(0)
    a = np.concatenate([a, rng.standard_normal(2000).astype(np.float32)])
    b = np.concatenate([b, rng.standard_normal(2000).astype(np.float32) * np.float32(2.0) ** rng.integers(-30, 30, 2000)])
    c = np.concatenate([c, rng.standard_normal(2000).astype(np.float32) * np.float32(2.0) ** rng.integers(-60, 10, 2000)])
    ours = host_random._fma(a, b, c)
    assert ours.dtype == np.float32
    assert ours[0] == np.float32(1 + 2 * eps) + np.float32(2.0**-23) and ours[1] == np.float32(1 + 2 * eps)
    assert np.isneginf(ours[4])
    for x, y, z, got in zip(a, b, c, ours):
        if np.isfinite(z):
            exact = fractions.Fraction(float(x)) * fractions.Fraction(float(y)) + fractions.Fraction(float(z))
            assert got == _round_to_float32(exact), (x, y, z)


def test_the_interpreter_follows_xlas_contraction_flag():
    cpu = dict(backend="cpu", machine="x86_64", cpu_flags=frozenset({"avx2", "fma"}))
    assert host_random._contracts(flags="", **cpu) is True
    assert host_random._contracts(flags="--xla_backend_optimization_level=0", **cpu) is False
    assert host_random._contracts(flags="--xla_backend_optimization_level=2", **cpu) is True
    assert host_random._contracts(flags="--xla_cpu_enable_fast_math=true", **cpu) is None
    assert host_random._contracts(flags="", backend="cpu", machine="x86_64", cpu_flags=frozenset({"sse2"})) is False
    assert host_random._contracts(flags="", backend="cpu", machine="aarch64", cpu_flags=None) is True
    assert host_random._contracts(flags="", backend="tpu", machine="x86_64", cpu_flags=None) is None
    opt0 = "xla_backend_optimization_level=0" in os.environ.get("XLA_FLAGS", "")
    assert host_random.contracts() is (not opt0 if jax.default_backend() == "cpu" else True)


def test_what_the_host_refuses():
    key = jax.random.key(0)
    cases = {
        "he_normal (erf_inv)": lambda k: jax.nn.initializers.he_normal()(k, (3, 4)),
        "float16": lambda k: jax.random.uniform(k, (3,), jnp.float16),
        "exp": lambda k: jnp.exp(jax.random.uniform(k, (3,))),
        "a key output": lambda k: jax.random.split(k),
        "a reduction": lambda k: jnp.sum(jax.random.uniform(k, (3,))),
    }
    for name, fn in cases.items():
        with pytest.raises(host_random.Unsupported):
            host_random.evaluate(fn, key)
        jax.jit(fn)(key)  # (what the jit does instead)
    with pytest.raises(host_random.Unsupported, match="rbg"):
        host_random.evaluate(lambda k: jax.random.bits(k, (3,)), jax.random.key(0, impl="rbg"))
    seen = []

    def inside(k):
        with pytest.raises(host_random.Unsupported, match="traced"):
            host_random.evaluate(lambda kk: jax.random.bits(kk, (3,)), k)
        seen.append(True)
        return k

    jax.jit(inside)(key)
    assert seen == [True]


def test_a_multiply_add_xla_may_contract_either_way_is_refused(monkeypatch):
    def two_products(k):
        u, v = jax.random.uniform(k, (2, 5))
        return u * 0.3 + v * 0.7

    monkeypatch.setattr(host_random, "contracts", lambda: True)
    with pytest.raises(host_random.Unsupported, match="fused multiply-add"):
        host_random.evaluate(two_products, jax.random.key(0))
    monkeypatch.setattr(host_random, "contracts", lambda: None)  # not known whether XLA contracts here
    with pytest.raises(host_random.Unsupported, match="fused multiply-add"):
        host_random.evaluate(lambda k: jax.random.uniform(k, (3,), minval=0.1, maxval=0.7), jax.random.key(0))
    monkeypatch.undo()
    if host_random.contracts() is False:  # the suite's -O0: each product rounded, then the sum
        _both(two_products, jax.random.key(0))


def test_no_host_draw_with_the_original_bit_layout():
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    try:
        with pytest.raises(host_random.Unsupported, match="partitionable"):
            host_random.evaluate(lambda k: jax.random.bits(k, (3,)), jax.random.key(0))
    finally:
        jax.config.update("jax_threefry_partitionable", before)


def test_too_many_random_values(monkeypatch):
    monkeypatch.setattr(host_random, "MAX_ELEMENTS", 10)
    with pytest.raises(host_random.TooLarge):
        host_random.evaluate(lambda k: jax.random.uniform(k, (11,)), jax.random.key(0))
    assert host_random.evaluate(lambda k: jax.random.uniform(k, (10,)), jax.random.key(0)).shape == (10,)


def _nets():
    table = np.array([[1, 0, 1], [0, 1, 1]], bool)
    return {
        "lenet5": zoo.lenet5(),
        "ignet_fig5": zoo.ignet_fig5(),
        "ignet_deep": zoo.ignet_deep(3),
        "annt_lenet (connection table)": zoo.annt_lenet(),
        "thesis_cifar_cnn": zoo.thesis_cifar_cnn(),
        "thesis_fashion_cnn": zoo.thesis_fashion_cnn(),
        "thesis_mlp": zoo.thesis_mlp(),
        "tutorial_cifar_net": zoo.tutorial_cifar_net(),
        "keras_drawings_net": zoo.keras_drawings_net(),
        "vgg_small (batch norm)": zoo.vgg_small(),
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


@pytest.mark.parametrize("name", ["lenet5", "ignet_fig5", "annt_lenet (connection table)", "vgg_small (batch norm)",
                                  "biases, batch norm, prelu", "connection table"])
def test_init_on_the_host_draws_what_the_compiled_draw_does(name, monkeypatch):
    net = _nets()[name]
    _no_compiled_init(monkeypatch)
    for seed in (0, 3):
        key = jax.random.key(seed)
        host = net.init(key)
        assert all(isinstance(u, jax.Array) for u in jax.tree.leaves(host))
        _exactly(host, _compiled_draw(net, key))


_BIT_FOR_BIT = textwrap.dedent("""
    import functools, sys
    import jax, jax.numpy as jnp, numpy as np
    from jigcnn import host_random
    from jigcnn import model as model_module
    sys.path.insert(0, "tests")
    from test_host_random import _nets

    assert host_random.contracts() is True, host_random.contracts()
    names = sys.argv[1].split("|") if len(sys.argv) > 1 else list(_nets())
    minimum = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    sensitive = 0
    for name, net in _nets().items():
        if name not in names:
            continue
        draw = functools.partial(model_module._draw, net.layers, net.shapes()[0], "float32")
        for seed in (0, 2**32 - 1):
            key = jax.random.key(seed)
            host, compiled = host_random.evaluate(draw, key), jax.jit(draw)(key)
            for u, v in zip(jax.tree.leaves(host), jax.tree.leaves(compiled)):
                assert u.dtype == v.dtype and np.array_equal(u, np.asarray(v)), name
        host_random.contracts = lambda: False  # rounding twice, as at -O0: the test can tell
        twice = host_random.evaluate(draw, key)
        host_random.contracts = lambda: True
        told = any(not np.array_equal(u, np.asarray(v)) for u, v in zip(jax.tree.leaves(twice), jax.tree.leaves(compiled)))
        sensitive += told
        print("SENSITIVE" if told else "insensitive", name)
    from test_host_random import REWRITES
    for name, fn in REWRITES.items():
        if fn is not None:
            for u, v in zip(jax.tree.leaves(host_random.evaluate(fn, key)), jax.tree.leaves(jax.jit(fn)(key))):
                assert np.array_equal(u, np.asarray(v)), name
    for mode in ("fan_in", "fan_avg"):
        init = functools.partial(jax.nn.initializers.variance_scaling(2.0, mode, "uniform"), shape=(5, 5, 6, 16))
        assert np.array_equal(host_random.evaluate(init, key), np.asarray(jax.jit(init)(key))), mode
    assert sensitive >= minimum, sensitive
    print("BIT-FOR-BIT", sensitive)
""")


def _bit_for_bit(tmp_path, *argv):
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path), JAX_PLATFORMS="cpu")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_backend_optimization_level")]
    env["XLA_FLAGS"] = " ".join(flags)
    out = subprocess.run([sys.executable, "-c", _BIT_FOR_BIT, *argv], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0 and "BIT-FOR-BIT" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def test_bit_for_bit_with_xlas_default_optimisation_on_two_nets(tmp_path):
    """The default run: two nets, at least one of which a host evaluation that rounds twice gets wrong."""
    _bit_for_bit(tmp_path, "lenet5|ignet_fig5", "1")  # ignet_fig5 is sensitive, lenet5 is not


@pytest.mark.slow
def test_bit_for_bit_with_xlas_default_optimisation(tmp_path):
    _bit_for_bit(tmp_path)


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
    assert not _used_compiled_init(zoo.lenet5(), jax.random.PRNGKey(0))[0]  # a raw key

    normal = Sequential([Dense(3, initializer="he_normal")], input_shape=(4,))
    used, drawn = _used_compiled_init(normal, key)
    assert used
    _exactly(drawn, _compiled_draw(normal, key))

    assert _used_compiled_init(zoo.lenet5(), key, dtype=jnp.float16)[0]
    assert _used_compiled_init(zoo.lenet5(), jax.random.key(0, impl="rbg"))[0]

    class OwnInit(Dense):  # its own init, with a normal draw: the host cannot
        def init(self, key, in_shape, dtype=np.float32):
            return (self.features,), {"kernel": jax.random.normal(key, (in_shape[0], self.features), dtype)}, {}

    assert _used_compiled_init(Sequential([OwnInit(2)], input_shape=(3,)), key)[0]


def test_a_new_layer_or_initializer_draws_on_the_host_without_knowing_it(monkeypatch):
    class Halves(Initializer):  # plain jax.random / jnp: nothing about the host
        def kernel(self, key, shape, extent, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, 0.25, 0.75) * 2.0

        def bias(self, key, shape, dtype=jnp.float32):
            return jnp.full(shape, 0.5, dtype) + jax.random.bits(key, shape).astype(dtype) * 0

    class Scale(Dense):  # its own init
        def init(self, key, in_shape, dtype=np.float32):
            k1, k2 = jax.random.split(key)
            return (in_shape[0],), {"a": jax.random.uniform(k1, in_shape, dtype, -0.1, 0.1),
                                    "t": jax.random.key_data(k2).astype(dtype)}, {}

    net = Sequential([Scale(1), Dense(2, initializer=Halves())], input_shape=(3,))
    _no_compiled_init(monkeypatch)
    key = jax.random.key(8)
    _exactly(net.init(key), _compiled_draw(net, key))


def test_a_traced_key_takes_the_compiled_draw():
    net = zoo.ignet_fig5()
    key = jax.random.key(4)
    _exactly(jax.jit(lambda k: net.init(k))(key), net.init(key))


def test_a_net_too_big_for_the_host_is_drawn_compiled_with_the_same_values(monkeypatch):
    net = zoo.ignet_fig5()
    key = jax.random.key(9)
    small = net.init(key)
    monkeypatch.setattr(host_random, "MAX_ELEMENTS", 1000)
    used, big = _used_compiled_init(net, key)
    assert used
    _exactly(small, big)


def test_the_host_draw_lives_in_two_files():
    """Layers and initialisers know nothing of it: only host_random.py and model.py name it."""
    src = ROOT / "src" / "jigcnn"
    for path in src.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"host_drawable|draws_on_host|HostKey|host_key", text), path
        if path.name not in ("host_random.py", "model.py"):
            assert "host_random" not in text, path
