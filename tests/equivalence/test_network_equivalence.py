"""Whole networks: the hand-written gradients (paper Eqs. 1-2a chained; with the fast kernels and with the
reference kernels) and autodiff through the fast path each equal the reference oracle (jax.grad of
jigcnn.reference, float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import Activation, AvgPool, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool, PReLU, Sequential, zoo
from jigcnn.testing import check_network

RTOL = {np.float64: 1e-10, np.float32: 1e-4}


def fig5_net(outputs, head=None):
    """IgNet Fig. 5 (zoo): one conv + one fully connected layer, identity, frozen nonzero biases."""
    return zoo.ignet_fig5(outputs, W=(1.0, 10.0), B=(0.1, 0.1), head_activation=head)


def fig7_net():
    """The 7-layer identity net of Fig. 7 (zoo): six convs + one fully connected layer."""
    return zoo.ignet_deep(7, 1, B=0.05)


def lenet5():
    return zoo.lenet5(head_activation=None)


def batchnorm_net():
    # no conv bias in front of batch norm: its gradient is zero in exact arithmetic and both
    # paths return only rounding noise there, which no relative error can compare
    return Sequential([
        Conv2D(8, 3, padding="same", bias="none"), BatchNorm(), Activation("relu"),
        Conv2D(8, 3, padding="same", bias="none"), BatchNorm(), PReLU(), MaxPool(2), Dropout(0.25),
        Flatten(), Dense(16, activation="elu"), BatchNorm(), Dense(5, activation="log_softmax"),
    ], input_shape=(12, 10, 3))


def table_net():
    table = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 0, 1], [0, 0, 1, 1, 1]], bool)
    return Sequential([
        Conv2D(3, 5, activation="tanh"), AvgPool(2),
        Conv2D(5, 3, connection_table=table, activation="sigmoid"), AvgPool(2),
        Flatten(), Dense(4, activation="softmax"),
    ], input_shape=(20, 20, 1))


def strided_padded_net():
    return Sequential([
        Conv2D(3, (4, 3), strides=(3, 2), padding=((2, 1), (0, 3)), pad_mode="edge", activation="leaky_relu"),
        Conv2D(4, 3, strides=2, padding="same", dilation=(1, 2), activation="bipolar_sigmoid"),
        MaxPool(3, 2), Conv2D(2, 2, padding=1, bias="frozen"),
    ], input_shape=(23, 29, 2))


def _targets(loss, shape, rng, dtype):
    if loss in ("mae", "mse", "binary_cross_entropy"):
        return jnp.asarray(rng.random(shape), dtype)
    return jnp.asarray(rng.integers(0, shape[-1], shape[0]))


CASES = [
    ("fig5_regression_mae", lambda: fig5_net(1), "mae"),
    ("fig5_classification_softmax_ce", lambda: fig5_net(10, "softmax"), "cross_entropy"),
    ("fig7_regression_mae", fig7_net, "mae"),
    ("lenet5_softmax_ce", lenet5, "softmax_cross_entropy"),
    ("batchnorm_dropout_nll", batchnorm_net, "nll"),
    ("connection_table_ce", table_net, "cross_entropy"),
    ("strided_edge_padding_matrix_output_mse", strided_padded_net, "mse"),
    ("strided_matrix_output_bce", strided_padded_net, "binary_cross_entropy"),
]


# float32 on every net but the two Fig. 5 ones runs with -m slow, to keep the default run short
NETWORK_CASES = [
    pytest.param(name, build, loss, dtype, id=f"{name}-{dtype.__name__}",
                 marks=pytest.mark.slow if dtype is np.float32 and not name.startswith("fig5") else ())
    for name, build, loss in CASES for dtype in (np.float64, np.float32)]


@pytest.mark.parametrize("name,build,loss,dtype", NETWORK_CASES)
def test_network(name, build, loss, dtype, x64):
    model = build()
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    x = jnp.asarray(rng.random((3, *model.input_shape)), dtype)
    targets = _targets(loss, (3, *model.shapes()[-1]), rng, dtype)
    check_network(model, loss, x, targets, train=True, key=jax.random.key(1), rtol=RTOL[dtype])


def test_fig5_intermediates_are_the_papers_quantities(x64):
    """Aux.intermediates carry, per layer, the input map, N', the deltas and dL/dw (Fig. 4's columns)."""
    from jigcnn.backprop import manual_value_and_grad

    model = fig5_net(1)
    params, state = model.init(jax.random.key(0), dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).random((4, 58, 36, 1)))
    (_, aux), grads = manual_value_and_grad(model, "mae")(params, state, x, jnp.ones((4, 1)))
    rec = aux.intermediates
    assert set(rec) == {"conv1", "fc"}
    assert rec["conv1"]["input"].shape == x.shape
    assert rec["conv1"]["delta"].shape == (4, 54, 32, 16)
    np.testing.assert_array_equal(rec["conv1"]["act_deriv"], 1.0)  # identity activations
    np.testing.assert_array_equal(rec["fc"]["weight_grad"], grads["fc"]["kernel"])
    assert "bias" not in grads["conv1"] and "bias" in state["conv1"]  # the paper's biases did not learn


def exact_fig5_inputs(outputs: int = 1, batch: int = 4, seed: int = 0):
    """Fig. 5 parameters and inputs on coarse dyadic grids, so every product and sum is exact in float32.

    x in {0, 1/4, 1/2, 3/4}, conv weights in {-2..2}/16, biases in {-1..1}/8, fc weights in
    {-2..2}/64: the conv outputs lie on a 2^-6 grid below 2.5, the fc outputs on a 2^-12 grid below
    2^12, and with MAE (sign / N = +-1/4) every gradient is a sum of terms on a 2^-10 grid below 2^14
    -- all exactly representable in float32 whatever the order of summation. The float32 kernels
    (native ones included) must then agree with the float64 oracle exactly: a relative error of
    1e-6 in any kernel is visible.
    """
    model = fig5_net(outputs)
    params, state = model.init(jax.random.key(seed), dtype=jnp.float32)
    rng = np.random.default_rng(seed)
    grid = lambda a, lo, hi, den: jnp.asarray(rng.integers(lo, hi + 1, np.shape(a)) / den, jnp.float32)  # noqa: E731
    params = {"conv1": {"kernel": grid(params["conv1"]["kernel"], -2, 2, 16)},
              "fc": {"kernel": grid(params["fc"]["kernel"], -2, 2, 64)}}
    state = {"conv1": {"bias": grid(state["conv1"]["bias"], -1, 1, 8)}, "fc": {"bias": grid(state["fc"]["bias"], -1, 1, 8)}}
    x = jnp.asarray(rng.integers(0, 4, (batch, *model.input_shape)) / 4, jnp.float32)
    targets = jnp.asarray(rng.integers(-64, 65, (batch, outputs)) / 64, jnp.float32)
    return model, params, state, x, targets


def test_fig5_float32_exact_arithmetic(x64):
    """On exactly representable data the float32 paths (native kernels included) equal the oracle bit for bit."""
    model, params, state, x, targets = exact_fig5_inputs()
    errors = check_network(model, "mae", x, targets, params=params, state=state, train=True, rtol=0.0)
    assert set(errors) == {"manual", "manual_reference", "autodiff"}
