"""Every layer's forward pass against a direct NumPy loop, initialiser statistics, and
finite-difference checks of the autodiff path in float64."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jigcnn import activations
from jigcnn.initializers import IgNetUniform, get_initializer, ignet
from jigcnn.layers import Activation, AvgPool, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool, PReLU

KEY = jax.random.key(0)


# ----------------------------------------------------------------------------- numpy references

def np_conv(x, kernel, bias=None, strides=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), fill="zeros"):
    """Direct loop over output positions: out[n, i, j, o] = sum_{a, b, c} xp[n, i*sy + a*dy, j*sx + b*dx, c] k[a, b, c, o]."""
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), mode="constant" if fill == "zeros" else "edge")
    n, h, w, _ = xp.shape
    kh, kw, _, co = kernel.shape
    (sy, sx), (dy, dx) = strides, dilation
    ho, wo = (h - (kh - 1) * dy - 1) // sy + 1, (w - (kw - 1) * dx - 1) // sx + 1
    out = np.zeros((n, ho, wo, co))
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for b in range(kw):
                    out[:, i, j, :] += xp[:, i * sy + a * dy, j * sx + b * dx, :] @ kernel[a, b]
    return out if bias is None else out + bias


def np_pool(x, window, strides, reduce):
    n, h, w, c = x.shape
    (kh, kw), (sy, sx) = window, strides
    ho, wo = (h - kh) // sy + 1, (w - kw) // sx + 1
    out = np.zeros((n, ho, wo, c))
    for i in range(ho):
        for j in range(wo):
            out[:, i, j, :] = reduce(x[:, i * sy: i * sy + kh, j * sx: j * sx + kw, :], axis=(1, 2))
    return out


def np_maxpool_routing(x, window, strides, g):
    """d sum(g * maxpool(x)) / dx: each window's upstream gradient goes to its (first) arg-max."""
    n, h, w, c = x.shape
    (kh, kw), (sy, sx) = window, strides
    dx = np.zeros_like(x)
    for b in range(n):
        for ch in range(c):
            for i in range(g.shape[1]):
                for j in range(g.shape[2]):
                    win = x[b, i * sy: i * sy + kh, j * sx: j * sx + kw, ch]
                    a, bb = np.unravel_index(np.argmax(win), win.shape)
                    dx[b, i * sy + a, j * sx + bb, ch] += g[b, i, j, ch]
    return dx


def rand(shape, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def layout(layer, in_shape, dtype=np.float32):
    """(params, state) of `layer` as shape structs, without drawing anything."""
    _, params, state = jax.eval_shape(lambda k: layer.init(k, in_shape, dtype), KEY)
    return params, state


def conv_params(layer, in_shape, seed=1):
    """Random kernel and (nonzero) bias placed where the layer keeps them (numpy draws: no compile per shape)."""
    params, state = layout(layer, in_shape)
    params = {k: jnp.asarray(rand(v.shape, seed + i)) for i, (k, v) in enumerate(sorted(params.items()))}
    state = {k: jnp.asarray(rand(v.shape, seed + 5)) for k, v in state.items()}
    return params, state


# ----------------------------------------------------------------------------- convolution

# (kernel, strides, padding, expected explicit pads, dilation, fill) on a 7x8x2 input
CONV_CASES = [
    ((3, 3), (1, 1), "valid", ((0, 0), (0, 0)), (1, 1), "zeros"),
    ((3, 3), (1, 1), "same", ((1, 1), (1, 1)), (1, 1), "zeros"),
    ((3, 3), (2, 2), "same", ((1, 1), (0, 1)), (1, 1), "zeros"),     # 7 -> 4: total 2; 8 -> 4: total 1
    ((4, 2), (1, 1), "same", ((1, 2), (0, 1)), (1, 1), "zeros"),     # even kernel: extra row at the bottom
    ((3, 2), (3, 3), "valid", ((0, 0), (0, 0)), (1, 1), "zeros"),    # stride 3 divides neither 7 - 3 nor 8 - 2
    ((3, 2), (3, 2), "same", ((1, 1), (0, 0)), (1, 1), "zeros"),     # 7 -> 3: total 2; 8 -> 4: total 0
    ((2, 3), (2, 3), 1, ((1, 1), (1, 1)), (1, 1), "zeros"),
    ((3, 3), (1, 2), (2, 1), ((2, 2), (1, 1)), (1, 1), "zeros"),
    ((3, 2), (1, 1), ((0, 2), (1, 0)), ((0, 2), (1, 0)), (1, 1), "zeros"),  # explicit asymmetric
    ((3, 3), (1, 1), "valid", ((0, 0), (0, 0)), (2, 2), "zeros"),    # dilation
    ((2, 3), (2, 1), "same", ((1, 1), (2, 2)), (2, 2), "zeros"),     # dilated "same": effective 3x5
    ((3, 3), (1, 1), "same", ((1, 1), (1, 1)), (1, 1), "edge"),
    ((3, 2), (2, 1), ((2, 0), (1, 3)), ((2, 0), (1, 3)), (1, 1), "edge"),
    ((5, 5), (1, 1), 2, ((2, 2), (2, 2)), (1, 1), "edge"),
]


def _same_pads(n, k, s):
    """TensorFlow 'same': ceil(n / s) outputs, the odd padding pixel at the end (hand-checked cases above)."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return (total // 2, total - total // 2)


def test_same_padding_cases_table_is_consistent():
    """The hand-written pads in CONV_CASES follow the TF rule (a check on the test table itself)."""
    for kernel, strides, padding, pads, dilation, _ in CONV_CASES:
        if padding == "same":
            keff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
            assert pads == (_same_pads(7, keff[0], strides[0]), _same_pads(8, keff[1], strides[1]))


@pytest.mark.parametrize("kernel,strides,padding,pads,dilation,fill", CONV_CASES)
def test_conv_forward_matches_numpy_loop(kernel, strides, padding, pads, dilation, fill):
    in_shape = (7, 8, 2)
    layer = Conv2D(3, kernel, strides=strides, padding=padding, dilation=dilation, pad_mode=fill, name="c")
    params, state = conv_params(layer, in_shape)
    x = rand((2, *in_shape), seed=3)
    y, new_state = jax.jit(lambda p, s, v: layer.apply(p, s, v))(params, state, jnp.asarray(x))
    ref = np_conv(x, np.asarray(params["kernel"], np.float64), np.asarray(params["bias"], np.float64),
                  strides, pads, dilation, fill)
    assert y.shape == ref.shape == (2, *layer.output_shape(in_shape))
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)
    assert new_state == state
    if padding == "same" and strides == (1, 1):
        assert y.shape[1:3] == in_shape[:2]
    if padding == "same":
        assert y.shape[1:3] == (math.ceil(7 / strides[0]), math.ceil(8 / strides[1]))


def test_edge_fill_differs_from_zero_fill_only_at_the_border():
    x = rand((1, 6, 6, 1), seed=4, low=1.0, high=2.0)
    zeros = Conv2D(1, 3, padding="same", bias="none", name="z")
    edge = Conv2D(1, 3, padding="same", bias="none", pad_mode="edge", name="e")
    params = {"kernel": jnp.ones((3, 3, 1, 1))}
    yz, _ = zeros.apply(params, {}, jnp.asarray(x))
    ye, _ = edge.apply(params, {}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(yz)[:, 1:-1, 1:-1], np.asarray(ye)[:, 1:-1, 1:-1], rtol=1e-6)
    # a corner sees 4 real pixels with zero fill, and 9 (repeated) pixels with edge fill
    np.testing.assert_allclose(float(yz[0, 0, 0, 0]), x[0, :2, :2, 0].sum(), rtol=1e-6)
    corner = x[0, [0, 0, 1], :][:, [0, 0, 1], 0].sum()
    np.testing.assert_allclose(float(ye[0, 0, 0, 0]), corner, rtol=1e-6)


def test_conv_fused_activation():
    layer = Conv2D(4, 3, activation="relu", name="c")
    params, state = conv_params(layer, (5, 5, 2))
    x = rand((2, 5, 5, 2), seed=5)
    y, _ = layer.apply(params, state, jnp.asarray(x))
    ref = np_conv(x, np.asarray(params["kernel"]), np.asarray(params["bias"]))
    np.testing.assert_allclose(np.asarray(y), np.maximum(ref, 0), rtol=1e-5, atol=1e-6)
    assert (np.asarray(y) == 0).any() and (np.asarray(y) > 0).any()


def test_connection_table_forward_and_unconnected_weights_have_no_effect():
    table = np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1]], bool)  # (cin=3, cout=4)
    layer = Conv2D(4, 3, connection_table=table, name="ct")
    _, p0, _ = layer.init(KEY, (6, 6, 3))
    # init leaves the unconnected entries at zero
    assert np.all(np.asarray(p0["kernel"])[:, :, ~table] == 0)
    assert np.all(np.asarray(p0["kernel"])[:, :, table] != 0)
    params, state = conv_params(layer, (6, 6, 3))          # kernel dense: unconnected entries nonzero
    x = rand((2, 6, 6, 3), seed=6)
    y, _ = layer.apply(params, state, jnp.asarray(x))
    k = np.asarray(params["kernel"], np.float64) * table
    np.testing.assert_allclose(np.asarray(y), np_conv(x, k, np.asarray(params["bias"])), rtol=1e-5, atol=1e-5)
    # output map o is a sum over its connected inputs only
    o = 1
    ref_o = sum(np_conv(x[..., [i]], k[:, :, [i], :][..., [o]]) for i in np.flatnonzero(table[:, o]))[..., 0]
    np.testing.assert_allclose(np.asarray(y)[..., o] - float(params["bias"][o]), ref_o, rtol=1e-5, atol=1e-5)
    perturbed = dict(params, kernel=params["kernel"] + 100.0 * jnp.asarray(~table, jnp.float32))
    y2, _ = layer.apply(perturbed, state, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y2))
    # gradients of unconnected weights are zero, so they never learn
    g = jax.grad(lambda p: jnp.sum(layer.apply(p, state, jnp.asarray(x))[0] ** 2))(params)
    assert np.all(np.asarray(g["kernel"])[:, :, ~table] == 0)
    assert layer.trainable_count(params) == 9 * int(table.sum()) + 4


def test_groups_equal_separate_convolutions_per_group():
    layer = Conv2D(6, (3, 2), groups=2, name="g")
    params, state = conv_params(layer, (5, 6, 4))
    x = rand((2, 5, 6, 4), seed=7)
    y, _ = layer.apply(params, state, jnp.asarray(x))
    k = np.asarray(params["kernel"], np.float64)
    b = np.asarray(params["bias"], np.float64)
    ref = np.concatenate([np_conv(x[..., :2], k[:, :, :2, :3], b[:3]), np_conv(x[..., 2:], k[:, :, 2:, 3:], b[3:])], -1)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)
    assert layer.trainable_count(params) == 6 * 2 * 6 + 6


@pytest.mark.parametrize("mode,where", [("learn", "params"), (True, "params"), ("frozen", "state"),
                                        ("none", None), (False, None), (None, None)])
@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_bias_modes_place_the_bias(kind, mode, where):
    if kind == "conv":
        layer, in_shape, x = Conv2D(3, 2, bias=mode, name="c"), (4, 4, 2), rand((2, 4, 4, 2))
    else:
        layer, in_shape, x = Dense(3, bias=mode, name="d"), (5,), rand((2, 5))
    params, state = conv_params(layer, in_shape)
    assert ("bias" in params) == (where == "params")
    assert ("bias" in state) == (where == "state")
    n_kernel = int(np.prod(params["kernel"].shape))
    assert layer.trainable_count(params) == n_kernel + (3 if where == "params" else 0)
    apply = jax.jit(lambda p, s: layer.apply(p, s, jnp.asarray(x))[0])
    y, y_nobias = apply(params, state), apply({"kernel": params["kernel"]}, {})
    if where is None:
        np.testing.assert_array_equal(np.asarray(y), np.asarray(y_nobias))
    else:
        bias = np.asarray((params if where == "params" else state)["bias"])
        np.testing.assert_allclose(np.asarray(y - y_nobias), np.broadcast_to(bias, y.shape), rtol=1e-5, atol=1e-5)


def test_dense_matches_numpy():
    layer = Dense(4, activation="tanh", name="d")
    params = {"kernel": jnp.asarray(rand((6, 4), 1)), "bias": jnp.asarray(rand((4,), 2))}
    x = rand((3, 6), 3)
    y, _ = layer.apply(params, {}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), np.tanh(x @ np.asarray(params["kernel"]) + np.asarray(params["bias"])),
                               rtol=1e-5, atol=1e-6)


def test_flatten_is_row_major():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    y, _ = Flatten().apply({}, {}, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y), x.reshape(2, -1))
    assert Flatten().output_shape((3, 4, 5)) == (60,)


# ----------------------------------------------------------------------------- pooling

POOL_CASES = [((2, 2), None), ((3, 3), (2, 2)), ((2, 3), (1, 2)), ((3, 2), (3, 1))]


@pytest.mark.parametrize("window,strides", POOL_CASES)
def test_pools_match_numpy(window, strides):
    x = rand((2, 7, 7, 3), seed=8)
    s = window if strides is None else strides
    for layer, reduce in ((MaxPool(window, strides), np.max), (AvgPool(window, strides), np.mean)):
        y, _ = layer.apply({}, {}, jnp.asarray(x))
        ref = np_pool(x, window, s, reduce)
        assert layer.output_shape((7, 7, 3)) == ref.shape[1:]
        np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("window,strides", [((3, 3), (2, 2)), ((2, 2), (2, 2)), ((2, 3), (1, 1))])
def test_maxpool_routes_gradient_to_the_argmax(window, strides):
    rng = np.random.default_rng(9)
    x = rng.permutation(2 * 7 * 6 * 2).reshape(2, 7, 6, 2).astype(np.float32)  # distinct values: no ties
    layer = MaxPool(window, strides)
    out_shape = layer.output_shape((7, 6, 2))
    g = rng.normal(size=(2, *out_shape)).astype(np.float32)
    dx = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply({}, {}, v)[0] * g)))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(dx), np_maxpool_routing(x, window, strides, g), rtol=1e-6, atol=1e-6)


def test_maxpool_tie_goes_to_the_first_maximum():
    x = jnp.ones((1, 2, 2, 1))
    dx = jax.grad(lambda v: jnp.sum(MaxPool(2).apply({}, {}, v)[0]))(x)
    np.testing.assert_array_equal(np.asarray(dx)[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_avgpool_gradient_shares_equally():
    x = jnp.asarray(rand((1, 4, 4, 1)))
    dx = jax.grad(lambda v: jnp.sum(AvgPool(2).apply({}, {}, v)[0]))(x)
    np.testing.assert_allclose(np.asarray(dx), 0.25, rtol=1e-6)
    # overlapping windows: a pixel collects 1/9 from each window it belongs to
    dx = jax.grad(lambda v: jnp.sum(AvgPool(3, 1).apply({}, {}, v)[0]))(x)
    counts = np.array([1, 2, 2, 1])
    np.testing.assert_allclose(np.asarray(dx)[0, :, :, 0], np.outer(counts, counts) / 9, rtol=1e-6)


# ----------------------------------------------------------------------------- batch norm, dropout, PReLU

def test_batchnorm_fast_variance_must_be_a_bool():
    with pytest.raises(ValueError, match="fast_variance must be a bool"):
        BatchNorm(fast_variance="yes")


@pytest.mark.parametrize("fast_variance", [False, True])
@pytest.mark.parametrize("in_shape", [(4, 5, 3), (6,)])
def test_batchnorm_train_eval_and_running_stats(in_shape, fast_variance):
    layer = BatchNorm(momentum=0.9, epsilon=1e-3, fast_variance=fast_variance)
    _, params, state = layer.init(KEY, in_shape)
    c = in_shape[-1]
    assert set(params) == {"scale", "offset"} and set(state) == {"mean", "var"}
    params = {"scale": jnp.asarray(rand((c,), 1, 0.5, 2.0)), "offset": jnp.asarray(rand((c,), 2))}
    x = rand((8, *in_shape), 3, -2.0, 5.0)
    axes = tuple(range(x.ndim - 1))
    mean, var = x.astype(np.float64).mean(axes), x.astype(np.float64).var(axes)
    scale, offset = np.asarray(params["scale"]), np.asarray(params["offset"])
    y, new_state = layer.apply(params, state, jnp.asarray(x), train=True)
    np.testing.assert_allclose(np.asarray(y), (x - mean) / np.sqrt(var + 1e-3) * scale + offset, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new_state["mean"]), 0.9 * 0 + 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(new_state["var"]), 0.9 * 1 + 0.1 * var, rtol=1e-5)
    # evaluation uses the running statistics and leaves them alone
    y_eval, eval_state = layer.apply(params, new_state, jnp.asarray(x), train=False)
    rm, rv = np.asarray(new_state["mean"]), np.asarray(new_state["var"])
    np.testing.assert_allclose(np.asarray(y_eval), (x - rm) / np.sqrt(rv + 1e-3) * scale + offset, rtol=1e-4, atol=1e-5)
    assert eval_state is new_state or all(np.array_equal(eval_state[k], new_state[k]) for k in new_state)
    # the training output is normalised per channel
    z = (np.asarray(y) - offset) / scale
    np.testing.assert_allclose(z.mean(axes), 0, atol=1e-4)


def test_dropout_rate_is_the_drop_probability():
    rate, n = 0.3, 200_000
    layer = Dropout(rate)
    x = jnp.ones((n,)).reshape(1000, 200)
    y, _ = layer.apply({}, {}, x, train=True, key=jax.random.key(7))
    y = np.asarray(y)
    dropped = np.mean(y == 0)
    assert abs(dropped - rate) < 5 * math.sqrt(rate * (1 - rate) / n)
    np.testing.assert_allclose(y[y != 0], 1 / (1 - rate), rtol=1e-6)          # kept units scaled up
    assert abs(y.mean() - 1.0) < 5 * math.sqrt(rate / (1 - rate) / n)          # expectation preserved
    y_eval, _ = layer.apply({}, {}, x, train=False)
    assert y_eval is x or np.array_equal(np.asarray(y_eval), np.asarray(x))
    y_same, _ = layer.apply({}, {}, x, train=True, key=jax.random.key(7))
    np.testing.assert_array_equal(np.asarray(y_same), y)
    y_other, _ = layer.apply({}, {}, x, train=True, key=jax.random.key(8))
    assert not np.array_equal(np.asarray(y_other), y)
    with pytest.raises(ValueError, match="dropout.*key"):
        layer.apply({}, {}, x, train=True)
    y0, _ = Dropout(0.0).apply({}, {}, x, train=True)  # rate 0 needs no key
    np.testing.assert_array_equal(np.asarray(y0), np.asarray(x))


def test_prelu_matches_numpy():
    layer = PReLU(init_slope=0.25)
    _, params, _ = layer.init(KEY, (3, 3, 2))
    np.testing.assert_array_equal(np.asarray(params["alpha"]), [0.25, 0.25])
    params = {"alpha": jnp.asarray([0.1, -0.5])}
    x = rand((2, 3, 3, 2), 4)
    y, _ = layer.apply(params, {}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), np.where(x > 0, x, np.array([0.1, -0.5]) * x), rtol=1e-6)


# ----------------------------------------------------------------------------- activations

def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


NP_ACTIVATIONS = {
    ("identity", None): lambda z: z,
    ("linear", None): lambda z: z,
    ("sigmoid", None): lambda z: 1 / (1 + np.exp(-z)),
    ("bipolar_sigmoid", None): lambda z: 2 / (1 + np.exp(-z)) - 1,
    ("tanh", None): np.tanh,
    ("relu", None): lambda z: np.maximum(z, 0),
    ("leaky_relu", None): lambda z: np.where(z > 0, z, 0.01 * z),
    ("leaky_relu", 0.2): lambda z: np.where(z > 0, z, 0.2 * z),
    ("elu", None): lambda z: np.where(z > 0, z, np.exp(z) - 1),
    ("elu", 0.5): lambda z: np.where(z > 0, z, 0.5 * (np.exp(z) - 1)),
    ("softmax", None): _np_softmax,
    ("log_softmax", None): lambda z: np.log(_np_softmax(z)),
}


@pytest.mark.parametrize("name,param", list(NP_ACTIVATIONS))
def test_activations_match_numpy(name, param):
    z = np.linspace(-6, 6, 24).reshape(2, 12).astype(np.float32)
    ref = NP_ACTIVATIONS[(name, param)](z.astype(np.float64))
    np.testing.assert_allclose(np.asarray(activations.get_activation(name, param)(jnp.asarray(z))), ref, rtol=1e-5, atol=1e-6)
    y, _ = Activation(name, param).apply({}, {}, jnp.asarray(z))
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-6)


def test_activation_registry_is_covered():
    assert set(activations.ACTIVATION_NAMES) == {n for n, _ in NP_ACTIVATIONS}


def test_bipolar_sigmoid_is_tanh_half():
    z = jnp.linspace(-5, 5, 11)
    np.testing.assert_allclose(np.asarray(activations.bipolar_sigmoid(z)), np.tanh(np.asarray(z) / 2), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- initialisers

def test_eq3_conv_init_ranges_and_uniformity():
    W, B = 3.0, 0.2
    layer = Conv2D(64, (3, 5), initializer=ignet(W, B), name="c")
    _, params, _ = layer.init(KEY, (8, 8, 16))
    k = np.asarray(params["kernel"]).ravel()
    limit = W / (3 * 5)                                            # W / (v h): spatial extents only
    assert np.all(np.abs(k) <= limit)
    assert np.abs(k).max() > 0.99 * limit
    n = k.size                                                     # 15360 draws
    assert abs(k.mean()) < 5 * limit / math.sqrt(3 * n)
    assert abs(k.var() / (limit ** 2 / 3) - 1) < 0.05              # uniform variance limit^2 / 3
    counts, _ = np.histogram(k, bins=10, range=(-limit, limit))
    expected = n / 10
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected))
    b = np.asarray(params["bias"])
    assert np.all(np.abs(b) <= B) and np.abs(b).max() > 0.5 * B and len(np.unique(b)) == 64


def test_eq3_dense_uses_input_length_and_zero_bias_amplitude():
    layer = Dense(50, initializer=ignet(10.0, 0.0), name="d")
    _, params, _ = layer.init(KEY, (200,))
    k = np.asarray(params["kernel"])
    assert np.all(np.abs(k) <= 10.0 / 200) and np.abs(k).max() > 0.99 * 10.0 / 200
    np.testing.assert_array_equal(np.asarray(params["bias"]), 0.0)
    assert IgNetUniform() == get_initializer("ignet")


@pytest.mark.parametrize("name,variance", [
    ("glorot_uniform", lambda fi, fo: 2 / (fi + fo)),
    ("glorot_normal", lambda fi, fo: 2 / (fi + fo)),
    ("he_uniform", lambda fi, fo: 2 / fi),
    ("he_normal", lambda fi, fo: 2 / fi),
    ("lecun_uniform", lambda fi, fo: 1 / fi),
    ("lecun_normal", lambda fi, fo: 1 / fi),
])
def test_variance_scaling_initialisers(name, variance):
    _, p, _ = Dense(200, initializer=name).init(KEY, (300,))
    assert abs(np.asarray(p["kernel"]).var() / variance(300, 200) - 1) < 0.04
    np.testing.assert_array_equal(np.asarray(p["bias"]), 0.0)
    # conv fans count the receptive field: fan_in = kh*kw*cin, fan_out = kh*kw*cout
    _, p, _ = Conv2D(64, (3, 5), initializer=name).init(KEY, (8, 8, 32))
    assert abs(np.asarray(p["kernel"]).var() / variance(15 * 32, 15 * 64) - 1) < 0.04


# ----------------------------------------------------------------------------- finite differences, float64

def r64(shape, seed, low=-1.0, high=1.0):
    return jnp.asarray(np.random.default_rng(seed).uniform(low, high, shape))


def away_from_zero(shape, seed):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 1.0, shape))


def check_layer_grads(layer, params, state, x, **kw):
    """d(output)/d(params) and d(output)/d(input) against finite differences (order 1, reverse mode)."""
    def f(p, v):
        return layer.apply(p, state, v, **kw)[0]
    check_grads(jax.jit(f), (params, x), order=1, modes=["rev"])


@pytest.mark.parametrize("kwargs", [
    {"padding": "same", "strides": 2},
    {"padding": ((0, 1), (2, 0)), "dilation": (1, 2), "pad_mode": "edge"},
    {"connection_table": np.array([[1, 0, 1], [1, 1, 0]], bool), "activation": "tanh"},
    {"groups": 1, "bias": "frozen", "activation": "bipolar_sigmoid", "kernel_size": (2, 3)},
])
def test_conv_grads(x64, kwargs):
    kwargs = {"kernel_size": 3, **kwargs}
    layer = Conv2D(3, **kwargs, name="c")
    params, state = layout(layer, (5, 4, 2), jnp.float64)
    params = {k: r64(v.shape, i) for i, (k, v) in enumerate(params.items())}
    state = {k: r64(v.shape, 9) for k, v in state.items()}
    check_layer_grads(layer, params, state, r64((2, 5, 4, 2), 5))


def test_dense_grads(x64):
    layer = Dense(3, activation="sigmoid")
    check_layer_grads(layer, {"kernel": r64((4, 3), 1), "bias": r64((3,), 2)}, {}, r64((2, 4), 3))


def test_pool_flatten_grads(x64):
    x = jnp.asarray(np.random.default_rng(0).permutation(2 * 5 * 5 * 2).reshape(2, 5, 5, 2) * 0.1)  # gaps >> eps
    for layer in (MaxPool(2), MaxPool(3, 2), AvgPool(2), AvgPool((3, 2), (1, 2)), Flatten()):
        check_grads(jax.jit(lambda v, lyr=layer: lyr.apply({}, {}, v)[0]), (x,), order=1, modes=["rev"])


def test_batchnorm_grads(x64):
    layer = BatchNorm()
    params = {"scale": r64((3,), 1, 0.5, 1.5), "offset": r64((3,), 2)}
    state = {"mean": r64((3,), 3), "var": r64((3,), 4, 0.5, 1.5)}
    x = r64((4, 2, 2, 3), 5)
    check_layer_grads(layer, params, state, x, train=True)
    check_layer_grads(layer, params, state, x, train=False)


def test_dropout_prelu_activation_grads(x64):
    x = away_from_zero((3, 4), 6)
    check_grads(jax.jit(lambda v: Dropout(0.4).apply({}, {}, v, train=True, key=jax.random.key(1))[0]), (x,),
                order=1, modes=["rev"])
    check_layer_grads(PReLU(), {"alpha": r64((4,), 7)}, {}, x)
    every = jax.jit(lambda v: [Activation(n, p).apply({}, {}, v)[0] for n, p in NP_ACTIVATIONS])
    check_grads(every, (x,), order=1, modes=["rev"])
