"""Each layer's hand-written backward equals jax.vjp of its forward (float64 and float32)."""

import numpy as np
import pytest

from jigcnn.layers import Activation, AvgPool, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool, PReLU
from jigcnn.activations import ACTIVATION_NAMES
from jigcnn.initializers import ignet
from jigcnn.testing import check_backward

import jax

CONV_CASES = [
    dict(features=3, kernel_size=3),
    dict(features=2, kernel_size=(2, 5), strides=(2, 3), padding="same"),
    dict(features=4, kernel_size=3, padding=((1, 2), (0, 3)), pad_mode="edge"),
    dict(features=2, kernel_size=3, padding=2, pad_mode="edge", strides=2),
    dict(features=3, kernel_size=(3, 2), dilation=(2, 1), padding="same"),
    dict(features=4, kernel_size=1, bias="none"),
    dict(features=4, kernel_size=3, bias="frozen", initializer=ignet(1.0, 0.5)),
    dict(features=4, kernel_size=2, groups=2),
    dict(features=3, kernel_size=3, connection_table=np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1], [0, 0, 1]], bool)),
    dict(features=2, kernel_size=7, padding=3),  # kernel larger than the input, padded
    dict(features=2, kernel_size=3, strides=3, activation="tanh"),  # stride not dividing
    dict(features=2, kernel_size=(6, 5), activation="sigmoid"),  # 1x1 output
]


def _conv_id(case):
    return ",".join(f"{k}={v}" for k, v in case.items() if k != "connection_table")


# float32 on the first 4 conv cases in the default run; all of them with -m slow
CONV_PARAMS = [pytest.param(case, dtype, id=f"{_conv_id(case)}-{dtype.__name__}",
                            marks=pytest.mark.slow if dtype is np.float32 and i >= 4 else ())
               for i, case in enumerate(CONV_CASES) for dtype in (np.float64, np.float32)]


@pytest.mark.parametrize("case,dtype", CONV_PARAMS)
def test_conv(case, dtype, x64):
    check_backward(Conv2D(**case, name="conv"), (6, 5, 4), dtype=dtype, batch=3)


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_conv_activations(activation, x64):
    check_backward(Conv2D(3, 2, activation=activation, name="conv"), (4, 4, 2))


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_dense_and_standalone_activations(activation, x64):
    check_backward(Dense(5, activation=activation, name="dense"), (7,))
    check_backward(Activation(activation, name="act"), (3, 4, 5))


@pytest.mark.parametrize("param", [0.2, 1.7])
def test_parametrised_activations(param, x64):
    check_backward(Activation("leaky_relu", param, name="act"), (3, 3, 2))
    check_backward(Activation("elu", param, name="act"), (3, 3, 2))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pool", [MaxPool, AvgPool])
@pytest.mark.parametrize("window,strides", [(2, None), (3, 2), ((2, 3), (1, 2)), (3, 3), (2, 1)])
def test_pools(pool, window, strides, dtype, x64):
    check_backward(pool(window, strides, name="pool"), (7, 8, 3), dtype=dtype, batch=2)


def test_max_pool_ties_route_to_one_element(x64):
    x = np.zeros((1, 4, 4, 1))
    errors = check_backward(MaxPool(2, name="pool"), (4, 4, 1), x=jax.numpy.asarray(x))
    assert max(jax.tree_util.tree_leaves(errors)) == 0.0


@pytest.mark.parametrize("fast_variance", [False, True])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 5), (6,)])
def test_batch_norm(train, shape, fast_variance, x64):
    check_backward(BatchNorm(name="bn", fast_variance=fast_variance), shape, batch=4, train=train)


def test_dropout_flatten_prelu(x64):
    check_backward(Dropout(0.4, name="drop"), (5, 4, 3), train=True, key=jax.random.key(7))
    check_backward(Dropout(0.4, name="drop"), (5, 4, 3), train=False)
    check_backward(Flatten(name="flat"), (3, 4, 2))
    check_backward(PReLU(name="prelu"), (3, 4, 2))
