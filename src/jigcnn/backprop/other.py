"""Hand-written backward passes of pooling, batch norm, dropout, flatten and activation layers."""

from __future__ import annotations

import jax.numpy as jnp

from jigcnn.activations import get_activation
from jigcnn.backprop.activations import delta as activation_delta
from jigcnn.backprop.activations import derivative


def window_scatter(g_win, x_shape, window, strides):
    """Transpose of `window_stack`: add each window slot's gradient back onto the input positions."""
    (kh, kw), (sy, sx) = window, strides
    n, ho, wo, c, _ = g_win.shape
    h, w = x_shape[1:3]
    if (sy, sx) == (kh, kw):
        blocks = g_win.reshape(n, ho, wo, c, kh, kw).transpose(0, 1, 4, 2, 5, 3).reshape(n, ho * kh, wo * kw, c)
        return jnp.pad(blocks, ((0, 0), (0, h - ho * kh), (0, w - wo * kw), (0, 0)))
    dx = jnp.zeros(x_shape, g_win.dtype)
    for a in range(kh):
        for b in range(kw):
            dx = dx.at[:, a: a + sy * (ho - 1) + 1: sy, b: b + sx * (wo - 1) + 1: sx, :].add(g_win[..., a * kw + b])
    return dx


def pool_forward(layer, params, state, x, *, train, key):
    """Forward pass keeping the input (and, for max pooling, the arg-max of each window)."""
    y, _ = layer.apply(params, state, x)
    idx = layer.argmax(x) if hasattr(layer, "argmax") else None
    return y, state, (x, idx)


def max_pool_backward(layer, params, state, cache, dy, *, delta=None):
    """Max pooling: each window's gradient is routed to its (first) arg-max."""
    x, idx = cache
    k, s, _ = layer.geometry(x.shape[1:])
    onehot = idx[..., None] == jnp.arange(k[0] * k[1])
    return window_scatter(jnp.where(onehot, dy[..., None], 0.0).astype(dy.dtype), x.shape, k, s), {}, {}


def avg_pool_backward(layer, params, state, cache, dy, *, delta=None):
    """Average pooling: every window element gets 1/(window size) of the window's gradient."""
    x, _ = cache
    k, s, _ = layer.geometry(x.shape[1:])
    size = k[0] * k[1]
    g_win = jnp.broadcast_to((dy / size)[..., None], dy.shape + (size,))
    return window_scatter(g_win, x.shape, k, s), {}, {}


def batch_norm_forward(layer, params, state, x, *, train, key):
    """Forward pass keeping the input, the statistics it was normalised with and the inverse standard deviation."""
    y, new_state = layer.apply(params, state, x, train=train)
    mean, var = layer.batch_statistics(x) if train else (state["mean"], state["var"])
    # x itself (the previous layer's output, kept anyway) rather than a normalised copy: the
    # backward pass recomputes x-hat inside its fused passes instead of reading one more array
    return y, new_state, (x, mean, 1.0 / jnp.sqrt(var + layer.epsilon), train)


def batch_norm_backward(layer, params, state, cache, dy, *, delta=None):
    """Batch norm: gradients of scale and offset, and the input gradient through the batch statistics."""
    x, mean, inv_std, train = cache
    axes = tuple(range(dy.ndim - 1))
    xhat = (x - mean) * inv_std
    grads = {"scale": jnp.sum(dy * xhat, axis=axes), "offset": jnp.sum(dy, axis=axes)}
    gain = params["scale"] * inv_std
    if not train:
        return dy * gain, grads, {}
    # dL/dx = scale/sigma * (dy - mean(dy) - x-hat * mean(dy * x-hat)): the two sums are the
    # offset's and the scale's gradients, so no further pass over the batch is needed
    m = dy.size // dy.shape[-1]
    return gain * (dy - grads["offset"] / m - xhat * (grads["scale"] / m)), grads, {}


def dropout_forward(layer, params, state, x, *, train, key):
    """Forward pass keeping the keep-mask (None when inactive)."""
    if not train or layer.rate == 0.0:
        return x, state, None
    keep = layer.keep_mask(key, x.shape)
    return jnp.where(keep, x / (1.0 - layer.rate), 0.0).astype(x.dtype), state, keep


def dropout_backward(layer, params, state, cache, dy, *, delta=None):
    """Dropout: the gradient flows through kept units only, scaled like the forward pass."""
    if cache is None:
        return dy, {}, {}
    return jnp.where(cache, dy / (1.0 - layer.rate), 0.0).astype(dy.dtype), {}, {}


def flatten_forward(layer, params, state, x, *, train, key):
    """Forward pass keeping the input shape."""
    return x.reshape(x.shape[0], -1), state, x.shape


def flatten_backward(layer, params, state, cache, dy, *, delta=None):
    """Flatten: reshape the gradient back."""
    return dy.reshape(cache), {}, {}


def activation_forward(layer, params, state, x, *, train, key):
    """Forward pass keeping z and f(z)."""
    y = get_activation(layer.fn, layer.param)(x)
    return y, state, (x, y)


def activation_backward(layer, params, state, cache, dy, *, delta=None):
    """A standalone activation: dL/dz = N'(z) * dL/dy (or the softmax Jacobian product)."""
    z, y = cache
    dz = delta if delta is not None else activation_delta(layer.fn, z, y, dy, layer.param)
    return dz, {}, {"input": z, "act_deriv": derivative(layer.fn, z, y, layer.param), "delta": dz}


def prelu_forward(layer, params, state, x, *, train, key):
    """Forward pass keeping the input."""
    y, _ = layer.apply(params, state, x)
    return y, state, x


def prelu_backward(layer, params, state, cache, dy, *, delta=None):
    """PReLU: slope gradient sum(x * dy) over negative inputs; input gradient 1 or alpha."""
    x = cache
    neg = x <= 0
    axes = tuple(range(x.ndim - 1))
    dalpha = jnp.sum(jnp.where(neg, x * dy, 0.0), axis=axes)
    return jnp.where(neg, params["alpha"] * dy, dy), {"alpha": dalpha}, {}


