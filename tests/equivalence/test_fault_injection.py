"""A test of the tests: a small error injected into any fast kernel makes the equivalence checks fail.

Each kernel below (forward, weight gradient, input gradient; in float64, and in float32 where
the native kernels run) is replaced in turn by itself with its output scaled by 1 + EPS, and the
equivalence checks of the nets that run it must then fail. If both sides of a check were ever
routed through one kernel again, the check would stay green under the injection and this test
would go red. A coverage test keeps the list complete: every public function of `jigcnn.fast`'s
modules and of `jigcnn.ops` must be injected here or named as not computing arrays.
"""

from __future__ import annotations

import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import Conv2D, MaxPool, Sequential, Serial, ops, zoo
from jigcnn.testing import check_network

from test_network_equivalence import exact_fig5_inputs, fig5_net

# the injected relative error: 1e-6 where the check is exact (float64 to 1e-10; the exact-arithmetic
# float32 Fig. 5 case), 1e-3 for float32 checks held to their 1e-4 tolerance


def _eps(dtype, rtol):
    return 1e-6 if dtype is np.float64 or rtol == 0.0 else 1e-3


def _fig5(dtype):
    if dtype is np.float32:  # exact arithmetic: a 1e-6 error is visible in float32
        model, params, state, x, t = exact_fig5_inputs()
        return model, "mae", x, t, params, state, 0.0
    model = fig5_net(1)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.random((3, *model.input_shape)), dtype)
    return model, "mae", x, jnp.asarray(rng.random((3, 1)), dtype), None, None, None


def _fig5_classes(dtype):
    model = fig5_net(10, "softmax")
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.random((3, *model.input_shape)), dtype)
    return model, "cross_entropy", x, jnp.asarray(rng.integers(0, 10, 3)), None, None, None


def _fig7(dtype):
    model = zoo.ignet_deep(7, 1, B=0.05)
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.random((2, *model.input_shape)), dtype)
    return model, "mae", x, jnp.asarray(rng.random((2, 1)), dtype), None, None, None


def _lenet5(dtype):
    model = zoo.lenet5(head_activation=None)
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.random((2, *model.input_shape)), dtype)
    return model, "softmax_cross_entropy", x, jnp.asarray(rng.integers(0, 10, 2)), None, None, None


def _strided(dtype):
    # a stride-2 convolution runs the wide-conv kernel (XLA's conv, its own weight-gradient layout)
    model = Sequential([Conv2D(4, 3, strides=2, activation="tanh"), MaxPool(2), Conv2D(2, 3, padding="same")],
                       input_shape=(13, 12, 3))
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.random((2, *model.input_shape)), dtype)
    return model, "mse", x, jnp.asarray(rng.random((2, *model.shapes()[-1])), dtype), None, None, None


def _winograd(dtype):
    # a 3x3 conv with 20 input channels (180 taps > the banded kernels' 160) runs Winograd F(4x4, 3x3)
    model = Sequential([Conv2D(20, 3, padding="same", activation="tanh"), Conv2D(3, 3, padding="same")],
                       input_shape=(7, 9, 2))
    rng = np.random.default_rng(10)
    x = jnp.asarray(rng.random((2, *model.input_shape)), dtype)
    return model, "mse", x, jnp.asarray(rng.random((2, *model.shapes()[-1])), dtype), None, None, None


def _winograd_native(dtype):
    # 32 -> 16 channels, 3x3 (288 taps, whole 16-lane vectors): the fused native Winograd kernel in float32
    model = Sequential([Conv2D(32, 3, padding="same", activation="tanh"), Conv2D(16, 3, padding="same", activation="tanh"),
                        Conv2D(2, 3)], input_shape=(9, 10, 2))
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.random((2, *model.input_shape)), dtype)
    return model, "mse", x, jnp.asarray(rng.random((2, *model.shapes()[-1])), dtype), None, None, None


# kernel switches a net's checks run under (Winograd as XLA operations is opt-in)
NET_KERNELS = {"winograd": {"winograd": True}}
NETS = {"fig5": _fig5, "fig5_classes": _fig5_classes, "fig7": _fig7, "lenet5": _lenet5, "strided": _strided,
        "winograd": _winograd, "winograd_native": _winograd_native}
F64, F32 = np.float64, np.float32

# (module, function, dtypes the paper's nets run it in, nets whose check must fail)
KERNELS = [
    ("jigcnn.fast.banded", "banded_conv", (F64,), ("fig5", "fig7")),
    ("jigcnn.fast.banded", "weight_gradient_gemm", (F64,), ("fig5", "fig7")),
    ("jigcnn.fast.banded", "input_gradient_gemm", (F64,), ("fig7", "lenet5")),
    ("jigcnn.fast.native", "forward", (F32,), ("fig5",)),
    ("jigcnn.fast.native", "weight_gradient", (F32,), ("fig5",)),
    ("jigcnn.fast.native", "input_gradient", (F32,), ("fig7", "lenet5")),
    ("jigcnn.fast.direct", "conv_forward", (F64, F32), ("fig5",)),
    ("jigcnn.fast.direct", "conv_weight_gradient", (F64, F32), ("fig5",)),
    ("jigcnn.fast.direct", "conv_input_gradient", (F64, F32), ("fig7", "lenet5")),
    ("jigcnn.fast.kernel_tangent", "weight_gradient", (F64, F32), ("fig5",)),
    # several channels take the tangent primitives only with the native kernels (float32)
    ("jigcnn.fast.input_tangent", "input_gradient", (F32,), ("fig7", "lenet5")),
    ("jigcnn.fast.conv", "conv_valid", (F64, F32), ("fig5",)),
    ("jigcnn.fast.dense", "matmul", (F64, F32), ("fig5", "fig5_classes")),
    ("jigcnn.fast.dense", "weight_gradient", (F64, F32), ("fig5", "fig5_classes")),
    ("jigcnn.fast.pool", "max_pool", (F64,), ("lenet5",)),
    ("jigcnn.fast.wide_conv", "conv", (F64,), ("strided",)),
    ("jigcnn.fast.wide_conv", "weight_gradient", (F64,), ("strided",)),  # the hand-written path's
    ("jigcnn.fast.winograd", "conv", (F64, F32), ("winograd",)),
    # Winograd runs the same code in float32; float32 is injected through its forward (above) and one gradient
    ("jigcnn.fast.winograd", "tile_products", (F64,), ("winograd",)),
    ("jigcnn.fast.winograd", "tile_weight_gradient", (F64,), ("winograd",)),
    ("jigcnn.fast.winograd", "tile_input_gradient", (F64,), ("winograd",)),
    ("jigcnn.fast.winograd", "weight_gradient", (F64, F32), ("winograd",)),
    ("jigcnn.fast.winograd", "input_gradient", (F64,), ("winograd",)),
    # the fused native Winograd kernels (float32 only): the forward FFI entry (forward pass and input gradient),
    # the weight-gradient one, the kernel transform and its transpose, and the module's three functions
    ("jigcnn.fast.native", "winograd_forward", (F32,), ("winograd_native",)),
    ("jigcnn.fast.winograd", "kernel_transform", (F32,), ("winograd_native",)),
    ("jigcnn.fast.winograd_native", "conv", (F32,), ("winograd_native",)),
    ("jigcnn.fast.winograd_native", "input_gradient", (F32,), ("winograd_native",)),
    ("jigcnn.fast.native", "winograd_weight_gradient", (F32,), ("winograd_native",)),
    ("jigcnn.fast.winograd", "kernel_transform_transposed", (F32,), ("winograd_native",)),
    ("jigcnn.fast.winograd_native", "weight_gradient", (F32,), ("winograd_native",)),
    ("jigcnn.ops", "conv", (F64, F32), ("fig5",)),
    ("jigcnn.ops", "conv_weight_gradient", (F64, F32), ("fig5",)),
    ("jigcnn.ops", "conv_input_gradient", (F64, F32), ("fig7", "lenet5")),
    ("jigcnn.ops", "dense", (F64, F32), ("fig5",)),
    ("jigcnn.ops", "dense_weight_gradient", (F64, F32), ("fig5",)),
    ("jigcnn.ops", "max_pool", (F64,), ("lenet5",)),
]

# public functions that decide, configure or build, and compute no array a check could see
NOT_KERNELS = {
    "jigcnn.fast.banded": {"block_width", "window_blocks", "window_blocks_transposed", "banded_kernel"},
    "jigcnn.fast.native": {"available", "build", "cache_dir", "library_path", "serves", "winograd_serves"},
    "jigcnn.fast.winograd_native": {"serves", "conv_term"},  # the primitive's bind; its rules are injected above
    "jigcnn.fast.kernel_tangent": {"kernel_term", "register"},  # the primitive's bind; its rules are injected above
    "jigcnn.fast.input_tangent": {"input_term"},
    "jigcnn.fast.wide_conv": {"transposed_input"},
    "jigcnn.fast.winograd": {"serves", "combine"},  # the transforms' coefficient sums (injected through conv and the gradients)
    "jigcnn.fast.pool": {"slots"},  # the strided views max_pool reads (injected through max_pool)
    "jigcnn.fast.barrier": {"unfused"},
    "jigcnn.ops": {"banded_serves", "winograd_serves", "winograd_native_serves", "current", "resolve", "using"},
}
FAST_MODULES = ["jigcnn.fast.banded", "jigcnn.fast.native", "jigcnn.fast.direct", "jigcnn.fast.kernel_tangent",
                "jigcnn.fast.input_tangent", "jigcnn.fast.conv", "jigcnn.fast.dense", "jigcnn.fast.pool",
                "jigcnn.fast.wide_conv", "jigcnn.fast.winograd", "jigcnn.fast.winograd_native", "jigcnn.fast.barrier",
                "jigcnn.ops"]


def _perturbed(fn, eps):
    def scaled(*args, **kwargs):
        out = fn(*args, **kwargs)
        return jax.tree_util.tree_map(
            lambda a: a * jnp.asarray(1 + eps, a.dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a,
            out)
    return scaled


def _public_functions(module):
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and callable(value) and not inspect.isclass(value)
            and getattr(value, "__module__", module.__name__) == module.__name__}


def test_every_fast_kernel_is_injected():
    """Every public function of jigcnn.fast.* and jigcnn.ops is in KERNELS or NOT_KERNELS."""
    injected = {(m, f) for m, f, _, _ in KERNELS}
    missing = []
    for name in FAST_MODULES:
        module = importlib.import_module(name)
        for fn in sorted(_public_functions(module)):
            if (name, fn) not in injected and fn not in NOT_KERNELS.get(name, set()):
                missing.append(f"{name}.{fn}")
    assert not missing, f"kernels without a fault-injection case: {missing}"
    for m, f, _, _ in KERNELS:
        assert callable(getattr(importlib.import_module(m), f)), f"{m}.{f} does not exist"


def _native_or_skip(dtypes):
    from jigcnn.fast import native

    if F32 in dtypes and not native.available():
        pytest.skip("native kernels unavailable on this machine")


CASES = [pytest.param(m, f, d, nets, id=f"{m.removeprefix('jigcnn.')}.{f}-{d.__name__}")
         for m, f, dtypes, nets in KERNELS for d in dtypes]


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_the_injection_nets_pass_unperturbed(net, dtype, x64):
    """The control: without an injected error every net used below passes its check."""
    _native_or_skip((dtype,))
    model, loss, x, t, params, state, rtol = NETS[net](dtype)
    with ops.using(**NET_KERNELS.get(net, {})):
        check_network(model, loss, x, t, params=params, state=state, train=True, key=jax.random.key(1), rtol=rtol)


@pytest.mark.parametrize("module_name,function,dtype,nets", CASES)
def test_injected_error_fails_the_equivalence_checks(module_name, function, dtype, nets, monkeypatch, x64):
    """With `function` off by a small relative error, the check of each named net fails."""
    _native_or_skip((dtype,))
    module = importlib.import_module(module_name)
    original = getattr(module, function)
    try:
        for net in nets:
            model, loss, x, t, params, state, rtol = NETS[net](dtype)
            monkeypatch.setattr(module, function, _perturbed(original, _eps(dtype, rtol)))
            jax.clear_caches()
            with pytest.raises(AssertionError, match="differs from the reference oracle"), \
                    ops.using(**NET_KERNELS.get(net, {})):
                check_network(model, loss, x, t, params=params, state=state, train=True, key=jax.random.key(1),
                              rtol=rtol)
    finally:
        monkeypatch.undo()
        jax.clear_caches()


# --- the graph combinators' hand-written backward (jigcnn.backprop.graph): each rule off by 1e-6 must fail ---

GRAPH_RULES = ["Serial", "Residual", "Parallel", "IdentityShortcut", "GlobalAvgPool"]
GRAPH_CHAIN_RULES = ["fork", "sum_join", "concat_split"]


def _graph_case():
    from test_graph_equivalence import graph_net

    model = Sequential([Serial([graph_net().layers[0]], name="outer"), *graph_net().layers[1:]],
                       input_shape=(8, 8, 2))
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 2), jnp.float64)
    return model, x, jnp.array([0, 1, 2])


@pytest.mark.parametrize("rule", GRAPH_RULES)
def test_perturbed_combinator_backward_fails_the_graph_check(rule, monkeypatch, x64):
    """A combinator's registered backward with its outputs scaled by 1 + 1e-6: the graph equivalence check fails."""
    import jigcnn.layers.graph as layers_graph
    from jigcnn.backprop import registry

    model, x, t = _graph_case()
    check_network(model, "softmax_cross_entropy", x, t, train=True)  # the control
    cls = getattr(layers_graph, rule)
    fwd, bwd = registry._RULES[cls]
    monkeypatch.setitem(registry._RULES, cls, registry.Rule(fwd, _perturbed(bwd, 1e-6)))
    jax.clear_caches()
    try:
        with pytest.raises(AssertionError, match="differs from the reference oracle"):
            check_network(model, "softmax_cross_entropy", x, t, train=True)
    finally:
        monkeypatch.undo()
        jax.clear_caches()


@pytest.mark.parametrize("function", GRAPH_CHAIN_RULES)
def test_perturbed_graph_chain_rule_fails_the_graph_check(function, monkeypatch, x64):
    """Eq. 1a's graph rules (fork, sum, concatenation) scaled by 1 + 1e-6: the graph equivalence check fails."""
    from jigcnn.backprop import graph

    model, x, t = _graph_case()
    monkeypatch.setattr(graph, function, _perturbed(getattr(graph, function), 1e-6))
    jax.clear_caches()
    try:
        with pytest.raises(AssertionError, match="differs from the reference oracle"):
            check_network(model, "softmax_cross_entropy", x, t, train=True, modes=("manual", "manual_reference"))
    finally:
        monkeypatch.undo()
        jax.clear_caches()
