"""Bad arguments raise ValueErrors that name the layer (or loss) and the offending argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import losses, metrics
from jigcnn.initializers import ignet
from jigcnn.layers import Activation, AvgPool, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool
from jigcnn.model import Sequential

KEY = jax.random.key(0)


def init(layer, in_shape):
    """layer.init traced with jax.eval_shape: the same checks, without compiling any random draws."""
    return jax.eval_shape(lambda k: layer.init(k, in_shape), KEY)


@pytest.mark.parametrize("arg,value", [("strides", 0), ("strides", -2), ("strides", (1, 0)),
                                       ("kernel_size", 0), ("kernel_size", (3, -1)), ("dilation", 0)])
def test_conv_non_positive_geometry(arg, value):
    with pytest.raises(ValueError, match=f"^c1: {arg} must be >= 1"):
        Conv2D(4, **{"kernel_size": 3, arg: value}, name="c1")
    with pytest.raises(ValueError, match=f"^conv: {arg} must be"):   # unnamed: the layer kind
        Conv2D(4, **{"kernel_size": 3, arg: value})


def test_conv_malformed_geometry_and_features():
    with pytest.raises(ValueError, match="c1: strides must be an int or a pair of ints"):
        Conv2D(4, 3, strides=(1, 2, 3), name="c1")
    with pytest.raises(ValueError, match="c1: kernel_size must be an int or a pair"):
        Conv2D(4, 2.5, name="c1")
    with pytest.raises(ValueError, match="c1: features must be a positive int"):
        Conv2D(0, 3, name="c1")
    with pytest.raises(ValueError, match="fc: features must be a positive int"):
        Dense(-1, name="fc")


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"big: kernel 5x5 .*larger than the padded input 4x4"):
        Conv2D(2, 5, name="big").output_shape((4, 4, 1))
    with pytest.raises(ValueError, match=r"dil: kernel 5x5 \(dilated\) is larger than the padded input 4x6"):
        init(Conv2D(2, 3, dilation=2, padding=((0, 0), (1, 1)), name="dil"), (4, 4, 1))
    assert Conv2D(2, 5, padding=1, name="ok").output_shape((4, 4, 1)) == (2, 2, 2)   # padded to 6x6: fits
    with pytest.raises(ValueError, match="conv3: kernel 3x3"):                  # auto-named inside a model
        Sequential([Conv2D(2, 3), MaxPool(2), Conv2D(2, 3)], input_shape=(6, 6, 1))


def test_padding_errors():
    with pytest.raises(ValueError, match="p: unknown padding 'full'"):
        Conv2D(2, 3, padding="full", name="p")
    with pytest.raises(ValueError, match="p: padding must be >= 0"):
        Conv2D(2, 3, padding=-1, name="p").output_shape((5, 5, 1))
    with pytest.raises(ValueError, match="p: padding must be 'valid', 'same', an int"):
        Conv2D(2, 3, padding=(1, 2, 3), name="p").output_shape((5, 5, 1))
    with pytest.raises(ValueError, match="p: pad_mode must be one of"):
        Conv2D(2, 3, pad_mode="reflect", name="p")
    with pytest.raises(ValueError, match="p: bias must be one of"):
        Conv2D(2, 3, bias="sometimes", name="p")


def test_connection_table_errors():
    with pytest.raises(ValueError, match=r"ct: connection_table must have shape \(in_channels, features\) = \(2, 4\), got \(4, 2\)"):
        init(Conv2D(4, 3, connection_table=np.ones((4, 2), bool), name="ct"), (5, 5, 2))
    with pytest.raises(ValueError, match="ct: connection_table"):   # not even 2-D
        init(Conv2D(4, 3, connection_table=np.ones(8, bool), name="ct"), (5, 5, 2))
    with pytest.raises(ValueError, match=r"ct: connection_table leaves output maps \[1\] with no input"):
        init(Conv2D(3, 3, connection_table=np.array([[1, 0, 1], [1, 0, 0]], bool), name="ct"), (5, 5, 2))
    with pytest.raises(ValueError, match="ct: give either connection_table or groups"):
        init(Conv2D(4, 3, connection_table=np.ones((2, 4), bool), groups=2, name="ct"), (5, 5, 2))
    with pytest.raises(ValueError, match="g: groups=2 must divide in_channels=3"):
        init(Conv2D(4, 3, groups=2, name="g"), (5, 5, 3))
    with pytest.raises(ValueError, match="g: groups must be a positive int"):
        Conv2D(4, 3, groups=0, name="g")


def test_unknown_names():
    with pytest.raises(ValueError, match="d: unknown activation 'swish'"):
        Dense(3, activation="swish", name="d")
    with pytest.raises(ValueError, match="c: unknown activation 'gelu'"):
        Conv2D(3, 3, activation="gelu", name="c")
    with pytest.raises(ValueError, match="a: unknown activation 'Relu'"):
        Activation("Relu", name="a")
    with pytest.raises(ValueError, match="c: unknown initializer 'xavier'"):
        Conv2D(3, 3, initializer="xavier", name="c")
    with pytest.raises(ValueError, match="d: unknown initializer 'he'"):
        Dense(3, initializer="he", name="d")
    with pytest.raises(ValueError, match="IgNetUniform: weight amplitude W must be > 0"):
        ignet(0.0, 1.0)
    with pytest.raises(ValueError, match="IgNetUniform: bias amplitude B must be >= 0"):
        ignet(1.0, -1.0)


def test_dense_on_a_non_vector_input():
    with pytest.raises(ValueError, match=r"fc: expects a vector per sample, got shape \(4, 4, 1\); put a Flatten"):
        Dense(3, name="fc").output_shape((4, 4, 1))
    with pytest.raises(ValueError, match="fc: expects a vector per sample"):
        Sequential([Dense(3, name="fc")], input_shape=(4, 4, 1))
    layer = Dense(3, name="fc")
    _, params, state = init(layer, (16,))  # shape structs: apply rejects the rank before touching them
    with pytest.raises(ValueError, match="fc: expects a batch of rank 2"):
        layer.apply(params, state, jnp.ones((16,)))


def test_maps_required_for_conv_and_pool():
    with pytest.raises(ValueError, match=r"conv2: expects per-sample input \(H, W, C\), got shape \(16,\)"):
        Sequential([Flatten(), Conv2D(2, 3)], input_shape=(4, 4, 1))
    with pytest.raises(ValueError, match=r"mp: expects per-sample input \(H, W, C\)"):
        MaxPool(2, name="mp").output_shape((4, 4))
    layer = Conv2D(2, 3, name="c")
    _, params, state = init(layer, (5, 5, 1))
    with pytest.raises(ValueError, match="c: expects a batch of rank 4"):
        layer.apply(params, state, jnp.ones((5, 5, 1)))


def test_pool_errors():
    with pytest.raises(ValueError, match="mp: window 5x5 is larger than the input 4x4"):
        MaxPool(5, name="mp").output_shape((4, 4, 1))
    with pytest.raises(ValueError, match="ap: strides must be >= 1"):
        AvgPool(2, strides=0, name="ap")
    with pytest.raises(ValueError, match="ap: window must be >= 1"):
        AvgPool((2, -1), name="ap")


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, "0.5", None])
def test_dropout_rate_outside_unit_interval(rate):
    with pytest.raises(ValueError, match=r"drop: rate \(the probability of dropping\) must be in \[0, 1\)"):
        Dropout(rate, name="drop")


def test_dropout_training_without_key():
    with pytest.raises(ValueError, match="drop: train=True with rate > 0 needs a PRNG key"):
        Dropout(0.5, name="drop").apply({}, {}, jnp.ones((2, 3)), train=True)


def test_batchnorm_arguments():
    with pytest.raises(ValueError, match="bn: momentum must be in"):
        BatchNorm(momentum=1.0, name="bn")
    with pytest.raises(ValueError, match="bn: epsilon must be > 0"):
        BatchNorm(epsilon=0.0, name="bn")


@pytest.mark.parametrize("name", ["mae", "mse", "binary_cross_entropy"])
def test_mismatched_loss_shapes(name):
    fn = losses.get_loss(name)
    with pytest.raises(ValueError, match=rf"{name}: predictions \(4, 1\) and targets \(4,\) must have the same shape"):
        fn(jnp.ones((4, 1)), jnp.ones((4,)))


def test_mismatched_classification_targets():
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: predictions \(4, 3\) and targets \(4, 5\)"):
        losses.softmax_cross_entropy(jnp.ones((4, 3)), jnp.ones((4, 5)))
    with pytest.raises(ValueError, match=r"cross_entropy: predictions \(4, 3\) and targets \(4, 5\)"):
        losses.cross_entropy(jnp.full((4, 3), 1 / 3), jnp.ones((4, 5)))
    with pytest.raises(ValueError, match=r"nll: predictions \(4, 3\) and targets \(4, 2\)"):
        losses.nll(jnp.zeros((4, 3)), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"mape: predictions \(3,\) and targets \(3, 1\)"):
        metrics.mape(jnp.ones((3,)), jnp.ones((3, 1)))


def test_activation_parameter_on_a_parameterless_activation_names_the_layer():
    from jigcnn import Dense

    with pytest.raises(ValueError, match=r"fc: activation 'relu' takes no parameter"):
        Dense(3, activation="relu", activation_param=0.1, name="fc")


def test_wrong_number_of_integer_labels_names_the_loss():
    import jax.numpy as jnp
    from jigcnn import losses, metrics

    logits = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: 3 labels for a batch of 4"):
        losses.softmax_cross_entropy(logits, jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"nll: 5 labels for a batch of 4"):
        losses.nll(logits, jnp.array([0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match=r"accuracy: 3 labels"):
        metrics.accuracy(logits, jnp.array([0, 1, 2]))
