"""Eqs. 4, 5, 5a: measured maxima never exceed the bounds on random identity nets with Eq. 3 init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import zoo
from jigcnn.backprop import manual_value_and_grad
from jigcnn.diagnostics import amplitudes_of, bounds, loss_derivative_bound, paper_bounds
from jigcnn.initializers import ignet
from jigcnn.layers import Conv2D, Dense, Flatten
from jigcnn.model import Sequential

RTOL = 1e-5


def _extremal(model, params, state, rng):
    """Every weight at +-W/(v h) and every bias at +-B (random signs): the draws' worst case."""
    amps = amplitudes_of(model)
    params = jax.tree.map(np.asarray, params)
    state = jax.tree.map(np.asarray, state)
    for layer in model.layers:
        if layer.name not in amps:
            continue
        W, B = amps[layer.name]
        k = params[layer.name]["kernel"]
        extent = k.shape[0] * k.shape[1] if k.ndim == 4 else k.shape[0]
        sign = rng.choice([-1.0, 1.0], k.shape)
        params[layer.name]["kernel"] = (sign * W / extent * (k != 0)).astype(np.float32)
        for tree in (params, state):
            if "bias" in tree.get(layer.name, {}):
                b = tree[layer.name]["bias"]
                tree[layer.name]["bias"] = (rng.choice([-1.0, 1.0], b.shape) * B).astype(np.float32)
    return params, state


def random_net(rng, *, single_channel=False):
    """A tiny identity net: 1-3 convs (random channels, kernels, strides, dilation, padding), flatten, dense."""
    h, w = rng.integers(5, 10, 2)
    cin = 1 if single_channel else int(rng.integers(1, 4))
    n_conv = int(rng.integers(1, 4))
    layers = []
    c = cin
    for i in range(n_conv):
        features = 1 if single_channel and (n_conv > 1) else int(rng.integers(1, 4))
        if single_channel:
            W = float(rng.uniform(1.0, 2.5))
            B = float(rng.uniform(0.0, 1.0)) if rng.random() < 0.5 else 0.0
        else:
            W = float(rng.uniform(0.2, 3.0))
            B = float(rng.uniform(0.0, 1.0)) if rng.random() < 0.5 else 0.0
        table = None
        if not single_channel and c > 1 and features > 1 and rng.random() < 0.4:
            table = rng.random((c, features)) < 0.6
            table[rng.integers(0, c, features), np.arange(features)] = True
        layers.append(Conv2D(
            features, tuple(int(v) for v in rng.integers(1, 4, 2)), strides=int(rng.integers(1, 3)),
            dilation=int(rng.choice([1, 1, 2])), padding=str(rng.choice(["valid", "same"])) if rng.random() < 0.7 else 1,
            pad_mode="edge" if (rng.random() < 0.3 and not (single_channel and i > 0)) else "zeros",
            bias=str(rng.choice(["frozen", "learn", "none"])), connection_table=table,
            initializer=ignet(W, B), name=f"conv{i + 1}"))
        c = features
    loss = str(rng.choice(["mae", "mse", "softmax_cross_entropy"])) if not single_channel else "mae"
    outputs = 1 if single_channel else int(rng.integers(1, 4)) + (loss == "softmax_cross_entropy")
    layers += [Flatten(), Dense(outputs, bias=str(rng.choice(["frozen", "none"])),
                                initializer=ignet(float(rng.uniform(0.3, 3.0)), float(rng.uniform(0, 0.5))), name="fc")]
    try:
        model = Sequential(layers, input_shape=(int(h), int(w), cin))
    except ValueError:  # kernel larger than the (strided) map: draw again
        return random_net(rng, single_channel=single_channel)
    return model, loss


def measure(model, loss, params, state, x, t):
    """Measured max |In| per layer, max |dL/dw| per layer and max |output| (hand-written backprop)."""
    vg = manual_value_and_grad(model, loss)

    @jax.jit  # one compilation is much cheaper than running the tiny ops eagerly
    def maxima(params, state, x, t):
        (_, aux), grads = vg(params, state, x, t, train=False)
        inputs = {n: jnp.max(jnp.abs(r["input"])) for n, r in aux.intermediates.items()}
        wgrads = {n: jnp.max(jnp.abs(g["kernel"])) for n, g in grads.items()}
        return inputs, wgrads, jnp.max(jnp.abs(aux.outputs))

    inputs, wgrads, out = jax.device_get(maxima(params, state, x, t))
    return ({k: float(v) for k, v in inputs.items()}, {k: float(v) for k, v in wgrads.items()}, float(out))


def _batch(rng, model, loss, n):
    x = rng.uniform(0, 1, (n,) + model.input_shape).astype(np.float32)
    if rng.random() < 0.3:
        x = (x > 0.5).astype(np.float32)  # corners of [0, 1] reach the bounds more often
    k = model.shapes()[-1][0]
    if loss == "softmax_cross_entropy":
        return x, rng.integers(0, k, n)
    return x, rng.uniform(-1, 1, (n, k)).astype(np.float32)


def _check(b, inputs, wgrads, out):
    for name, v in inputs.items():
        assert v <= b[name].input * (1 + RTOL) + 1e-7, (name, "input", v, b[name].input)
    for name, v in wgrads.items():
        assert v <= b[name].weight_grad * (1 + RTOL) + 1e-9, (name, "dL/dw", v, b[name].weight_grad)
    assert out <= b.output * (1 + RTOL) + 1e-7


@pytest.mark.parametrize("seed", range(16))
def test_multichannel_bounds_hold_on_random_nets(seed):
    rng = np.random.default_rng(seed)
    model, loss = random_net(rng)
    params, state = model.init(jax.random.key(seed))
    if seed % 2:
        params, state = _extremal(model, params, state, rng)
    n = int(rng.integers(1, 4))
    x, t = _batch(rng, model, loss, n)
    b = bounds(model, n, loss, target_bound=1.0)
    _check(b, *measure(model, loss, params, state, x, t))


@pytest.mark.parametrize("seed", range(6))
def test_paper_single_channel_form_holds_on_single_channel_nets(seed):
    rng = np.random.default_rng(100 + seed)
    model, loss = random_net(rng, single_channel=True)
    params, state = model.init(jax.random.key(seed))
    if seed % 2:
        params, state = _extremal(model, params, state, rng)
    n = int(rng.integers(1, 4))
    x, t = _batch(rng, model, loss, n)
    b = paper_bounds(model, n, loss)
    _check(b, *measure(model, loss, params, state, x, t))
    general = bounds(model, n, loss)
    for name in ("fc",):
        assert general[name].input <= b[name].input * (1 + RTOL)  # the recursion is never looser than Eq. 4 here


def test_input_bound_is_attained_by_the_extremal_net():
    """All weights +W/(vh), biases +B, inputs 1, valid padding: max|In| equals the bound exactly."""
    model = Sequential([Conv2D(3, 3, bias="frozen", initializer=ignet(1.5, 0.25), name="c1"),
                        Conv2D(2, 2, bias="frozen", initializer=ignet(0.5, 0.5), name="c2"),
                        Flatten(), Dense(1, bias="frozen", initializer=ignet(2.0, 0.1), name="fc")],
                       input_shape=(6, 5, 2))
    params, state = model.init(jax.random.key(0))
    params = jax.tree.map(lambda a: jnp.full_like(a, jnp.max(jnp.abs(a))), params)
    state = jax.tree.map(lambda a: jnp.full_like(a, jnp.max(jnp.abs(a))), state)
    # draws are strictly inside the range: put them on its edge
    amps = amplitudes_of(model)
    for name, ext in (("c1", 9), ("c2", 4), ("fc", model.shapes()[3][0])):
        params[name]["kernel"] = jnp.full_like(params[name]["kernel"], amps[name][0] / ext)
        state[name]["bias"] = jnp.full_like(state[name]["bias"], amps[name][1])
    x = jnp.ones((2,) + model.input_shape)
    inputs, _, out = measure(model, "mae", params, state, x, jnp.zeros((2, 1)))
    b = bounds(model, 2, "mae")
    for name in ("c1", "c2", "fc"):
        assert inputs[name] == pytest.approx(b[name].input, rel=1e-5)
    assert out == pytest.approx(b.output, rel=1e-5)
    assert b["c2"].input == pytest.approx(2 * 1.5 + 0.25)  # c_in W A + B
    assert b["fc"].input == pytest.approx(3 * 0.5 * 3.25 + 0.5)


def test_paper_eq4_needs_unit_partial_products_when_biases_are_nonzero():
    """Eq. 4 fails for small amplitudes with a bias: In^3 = W^2 In^2 + B^2 exceeds (W^1+B^1)(W^2+B^2)."""
    model = Sequential([Dense(1, bias="none", initializer=ignet(0.1), name="d1"),
                        Dense(1, bias="frozen", initializer=ignet(0.1, 0.5), name="d2")], input_shape=(1,))
    params = {"d1": {"kernel": jnp.full((1, 1), 0.1)}, "d2": {"kernel": jnp.full((1, 1), 0.1)}}
    state = {"d2": {"bias": jnp.full((1,), 0.5)}}
    _, _, out = measure(model, "mae", params, state, jnp.ones((1, 1)), jnp.zeros((1, 1)))
    assert out == pytest.approx(0.51, rel=1e-6)
    assert paper_bounds(model, 1, "mae").output == pytest.approx(0.06)
    assert bounds(model, 1, "mae").output == pytest.approx(0.51)


def test_gamma_and_fig5_numbers():
    model = zoo.ignet_fig5(1, filters=16, kernel=(5, 5), input_shape=(58, 36, 1), W=(1.0, 10.0))
    b = bounds(model, 32, "mae")
    assert b["conv1"].gamma == 54 * 32 and b["fc"].gamma == 1
    assert b["fc"].weight_grad == pytest.approx(1.0) and b["conv1"].weight_grad == pytest.approx(0.625)  # docs/bounds.md
    assert b.dloss == pytest.approx(1 / 32)
    # Eq. 5 for the FC layer: max|dL/dN| * N * gamma * (B^1 + W^1)
    assert paper_bounds(model, 32, "mae")["fc"].weight_grad == pytest.approx(1 / 32 * 32 * 1 * 1.0)
    # Eq. 5a for the conv layer: max|dL/dN| * N * gamma * W^2
    assert paper_bounds(model, 32, "mae")["conv1"].weight_grad == pytest.approx(54 * 32 * 10.0)
    # strided, padded: gamma counts only the taps that land inside the input
    conv = Sequential([Conv2D(1, 3, strides=2, padding="same", initializer=ignet(1.0), name="c"), Flatten(),
                       Dense(1, initializer=ignet(1.0), name="fc")], input_shape=(5, 5, 1))
    assert bounds(conv, 1, "mae")["c"].gamma == 3 * 3  # centre tap: all 3x3 outputs


def test_loss_derivative_bounds_and_errors():
    assert loss_derivative_bound("mae", 4, 2) == pytest.approx(1 / 8)
    assert loss_derivative_bound("mse", 4, 2, output_bound=3.0, target_bound=1.0) == pytest.approx(1.0)
    assert loss_derivative_bound("softmax_cross_entropy", 4, 10) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no derivative bound"):
        loss_derivative_bound("nll", 4, 10)
    multi = Sequential([Conv2D(2, 3, initializer=ignet(1.0), name="c1"), Conv2D(2, 3, initializer=ignet(1.0), name="c2"),
                        Flatten(), Dense(1, initializer=ignet(1.0), name="fc")], input_shape=(7, 7, 1))
    with pytest.raises(ValueError, match="single-channel"):
        paper_bounds(multi, 1, "mae")
    glorot = Sequential([Flatten(), Dense(1)], input_shape=(2, 2, 1))
    with pytest.raises(ValueError, match="not Eq. 3"):
        bounds(glorot, 1, "mae")
    assert bounds(glorot, 1, "mae", amplitudes={"dense2": (1.0, 0.0)}).output == pytest.approx(1.0)
