"""The graph combinators' hand-written backward (Eq. 1a over the graph) and autodiff equal the oracle, float64 to 1e-10."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import Activation, Conv2D, Dense, IdentityShortcut, Parallel, Residual, Sequential, Serial
from jigcnn.layers.graph import GlobalAvgPool
from jigcnn.testing import check_backward, check_network


def graph_net():
    return Sequential([
        Conv2D(4, 3, padding="same", activation="tanh"),
        Residual([Conv2D(4, 3, padding="same", activation="tanh"), Conv2D(4, 3, padding="same")], activation="tanh"),
        Residual([Conv2D(6, 3, strides=2, padding="same", activation="tanh")], shortcut=IdentityShortcut(6, 2),
                 activation="relu"),
        Parallel([Conv2D(2, 1), Serial([Conv2D(3, 3, padding="same", activation="sigmoid"), Activation("tanh")])],
                 join="concat"),
        Parallel([Conv2D(3, 1), Conv2D(3, 3, padding="same")], join="sum"),
        GlobalAvgPool(), Dense(3)], input_shape=(8, 8, 2))


def test_graph_net_equals_the_oracle(x64):
    model = graph_net()
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 2), jnp.float64)
    check_network(model, "softmax_cross_entropy", x, jnp.array([0, 1, 2]), train=True)


@pytest.mark.parametrize("layer,shape", [
    (GlobalAvgPool(name="gap"), (5, 4, 3)),
    (IdentityShortcut(5, 2, name="sc"), (5, 4, 3)),
])
def test_single_layers(layer, shape, x64):
    check_backward(layer, shape)


_ACTS = ["tanh", "sigmoid", "identity", "elu"]


def random_block(rng, channels, depth):
    """A seeded random small graph on (H, W, channels) maps that keeps the shape: a conv, a residual, parallel branches or a chain."""
    act = _ACTS[rng.integers(len(_ACTS))]
    choice = rng.integers(4) if depth > 0 else 0
    if choice == 0:
        return Conv2D(channels, int(rng.choice([1, 3])), padding="same", activation=act)
    if choice == 1:
        return Residual([random_block(rng, channels, depth - 1) for _ in range(int(rng.integers(1, 3)))], activation=act)
    if choice == 2:
        if rng.integers(2):
            return Parallel([random_block(rng, channels, depth - 1) for _ in range(int(rng.integers(1, 4)))], join="sum")
        widths = [1 + int(rng.integers(2)) for _ in range(2)]
        return Serial([Parallel([Conv2D(w, 1, activation=act) for w in widths], join="concat"),
                       Conv2D(channels, 1)])
    return Serial([random_block(rng, channels, depth - 1) for _ in range(int(rng.integers(1, 3)))])


def random_graph_net(seed):
    """A net of random nested blocks between a stem conv and a global-average-pool + dense head."""
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 4))
    blocks = [random_block(rng, c, 2) for _ in range(int(rng.integers(1, 3)))]
    return Sequential([Conv2D(c, 3, padding="same", activation="tanh"), *blocks, GlobalAvgPool(), Dense(2)],
                      input_shape=(5, 5, 2))


@pytest.mark.parametrize("seed", [pytest.param(s, marks=pytest.mark.slow if s >= 8 else ()) for s in range(40)])
def test_random_nestings_equal_the_oracle(seed, x64):
    model = random_graph_net(seed)
    x = jax.random.normal(jax.random.key(seed), (2, 5, 5, 2), jnp.float64)
    check_network(model, "mse", x, jnp.zeros((2, 2), jnp.float64), train=True)
