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
