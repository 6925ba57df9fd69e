"""The reference path: every layer's forward and every loss in plain lax / jnp, and `jax.grad` through them.

This is the equivalence suite's autodiff oracle. It shares no computation with the paths it
checks: no `jigcnn.ops` or `jigcnn.fast` call, no custom_jvp / custom_vjp, no custom primitive,
no FFI call, and its own activations and losses (not `jigcnn.activations` / `jigcnn.losses`).
It reads only the layers' *specs* (geometry, padding, connection masks, dropout's keep-mask
draw), so a wrong fast kernel, a wrong hand-written equation or a wrong library loss shows up
as a difference from it.

`forward(layer, params, state, x, *, train, key)` is one layer's reference forward (a layer type
without one -- a user's own -- falls back to its `apply`, which must then be plain jnp; register
a reference with `register`); `apply(model, ...)` runs a `Sequential`; `value_and_grad(model,
loss)` has the signature of `jigcnn.grad.value_and_grad`'s functions.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jigcnn.layers import Activation, AvgPool, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool, PReLU
from jigcnn.layers.graph import GlobalAvgPool, IdentityShortcut, Parallel, Residual, Serial
from jigcnn.objective import Aux

# --- activations, each from plain jnp / lax operations (derivative at a kink: the left one, 0 for relu) ---


def _sigmoid(z):
    return lax.logistic(z)


def _softmax(z):
    e = jnp.exp(z - lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _log_softmax(z):
    s = z - lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    return s - jnp.log(jnp.sum(jnp.exp(s), axis=-1, keepdims=True))


_ACTIVATIONS: dict[str, Callable] = {
    "identity": lambda z, p: z,
    "linear": lambda z, p: z,
    "sigmoid": lambda z, p: _sigmoid(z),
    "bipolar_sigmoid": lambda z, p: 2.0 * _sigmoid(z) - 1.0,
    "tanh": lambda z, p: jnp.tanh(z),
    "relu": lambda z, p: jnp.where(z > 0, z, jnp.zeros_like(z)),
    "leaky_relu": lambda z, p: jnp.where(z > 0, z, (0.01 if p is None else p) * z),
    "elu": lambda z, p: jnp.where(z > 0, z, (1.0 if p is None else p) * jnp.expm1(jnp.where(z > 0, 0.0, z))),
    "softmax": lambda z, p: _softmax(z),
    "log_softmax": lambda z, p: _log_softmax(z),
}


def activation(name: str, z, param=None):
    """f(z) for the activation called `name`, written independently of `jigcnn.activations`."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"reference: no reference form for activation {name!r}")
    return _ACTIVATIONS[name](z, None if param is None else float(param))


# --- layers ---


def _conv(layer: Conv2D, params, state, x, *, train, key):
    _, s, d, pads, _ = layer.geometry(x.shape[1:])
    kernel = params["kernel"]
    mask = layer.mask(kernel.shape[2])
    if mask is not None:
        kernel = kernel * jnp.asarray(mask, kernel.dtype)
    if layer.pad_mode == "edge":
        x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), mode="edge")
        pads = ((0, 0), (0, 0))
    z = lax.conv_general_dilated(x, kernel, s, pads, rhs_dilation=d, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    bias = params.get("bias", state.get("bias"))
    if bias is not None:
        z = z + bias
    return activation(layer.activation, z, layer.activation_param), state


def _dense(layer: Dense, params, state, x, *, train, key):
    z = jnp.dot(x, params["kernel"])
    bias = params.get("bias", state.get("bias"))
    if bias is not None:
        z = z + bias
    return activation(layer.activation, z, layer.activation_param), state


def _pool_geometry(layer, x):
    k, s, _ = layer.geometry(x.shape[1:])
    return (1, k[0], k[1], 1), (1, s[0], s[1], 1)


def _max_pool(layer: MaxPool, params, state, x, *, train, key):
    window, strides = _pool_geometry(layer, x)
    return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, "VALID"), state


def _avg_pool(layer: AvgPool, params, state, x, *, train, key):
    window, strides = _pool_geometry(layer, x)
    total = lax.reduce_window(x, 0.0, lax.add, window, strides, "VALID")
    return total / (window[1] * window[2]), state


def _batch_norm(layer: BatchNorm, params, state, x, *, train, key):
    axes = tuple(range(x.ndim - 1))
    if train:
        mean = jnp.mean(x, axis=axes)
        if layer.fast_variance:
            var = jnp.maximum(jnp.mean(x * x, axis=axes) - mean * mean, 0.0)
        else:
            var = jnp.mean((x - mean) ** 2, axis=axes)
        m = layer.momentum
        new_state = {"mean": m * state["mean"] + (1 - m) * mean, "var": m * state["var"] + (1 - m) * var}
    else:
        mean, var, new_state = state["mean"], state["var"], state
    y = (x - mean) / jnp.sqrt(var + layer.epsilon) * params["scale"] + params["offset"]
    return y, new_state


def _dropout(layer: Dropout, params, state, x, *, train, key):
    if not train or layer.rate == 0.0:
        return x, state
    keep = layer.keep_mask(key, x.shape)  # the same draw as the layer's: the mask is a spec, not a kernel
    return jnp.where(keep, x / (1.0 - layer.rate), 0.0).astype(x.dtype), state


def _flatten(layer: Flatten, params, state, x, *, train, key):
    return jnp.reshape(x, (x.shape[0], -1)), state


def _activation(layer: Activation, params, state, x, *, train, key):
    return activation(layer.fn, x, layer.param), state


def _prelu(layer: PReLU, params, state, x, *, train, key):
    return jnp.where(x > 0, x, params["alpha"] * x), state


def _global_avg_pool(layer: GlobalAvgPool, params, state, x, *, train, key):
    return jnp.sum(x, axis=(1, 2)) / (x.shape[1] * x.shape[2]), state


def _identity_shortcut(layer: IdentityShortcut, params, state, x, *, train, key):
    sy, sx = (layer.strides, layer.strides) if isinstance(layer.strides, int) else tuple(layer.strides)
    sub = lax.slice(x, (0, 0, 0, 0), x.shape, (1, sy, sx, 1))
    zero = jnp.zeros((), x.dtype)
    return lax.pad(sub, zero, ((0, 0, 0), (0, 0, 0), (0, 0, 0), (0, layer.features - x.shape[-1], 0))), state


# --- graph combinators: plain composition of the inner layers' reference forwards (never the block's apply) ---


def _inner(layer, params, state, x, new_state, *, train, key):
    y, s = forward(layer, params.get(layer.name, {}), state.get(layer.name, {}), x, train=train, key=key)
    if s:
        new_state[layer.name] = s
    return y


def _serial(layer: Serial, params, state, x, *, train, key):
    new_state = {}
    for inner, k in zip(layer.layers, layer.child_keys(key)):
        x = _inner(inner, params, state, x, new_state, train=train, key=k)
    return x, new_state


def _residual(layer: Residual, params, state, x, *, train, key):
    new_state, keys = {}, layer.child_keys(key)
    h = x
    for inner, k in zip(layer.body, keys):
        h = _inner(inner, params, state, h, new_state, train=train, key=k)
    s = x if layer.shortcut is None else _inner(layer.shortcut, params, state, x, new_state, train=train, key=keys[-1])
    return activation(layer.activation, h + s), new_state


def _parallel(layer: Parallel, params, state, x, *, train, key):
    new_state = {}
    outs = [_inner(b, params, state, x, new_state, train=train, key=k)
            for b, k in zip(layer.branches, layer.child_keys(key))]
    if layer.join == "sum":
        return sum(outs[1:], outs[0]), new_state
    return lax.concatenate(outs, outs[0].ndim - 1), new_state


_FORWARDS: dict[type, Callable] = {
    Conv2D: _conv, Dense: _dense, MaxPool: _max_pool, AvgPool: _avg_pool, BatchNorm: _batch_norm,
    Dropout: _dropout, Flatten: _flatten, Activation: _activation, PReLU: _prelu,
    GlobalAvgPool: _global_avg_pool, IdentityShortcut: _identity_shortcut,
    Serial: _serial, Residual: _residual, Parallel: _parallel,
}


def register(layer_type: type, forward: Callable) -> None:
    """Register the reference forward ``forward(layer, params, state, x, *, train, key) -> (y, new_state)`` of a layer type."""
    _FORWARDS[layer_type] = forward


def has_reference(layer) -> bool:
    """Whether `layer`'s type (or a base class) has a registered reference forward."""
    return any(cls in _FORWARDS for cls in type(layer).__mro__)


def forward(layer, params, state, x, *, train: bool = False, key=None):
    """The reference forward of one layer: (y, new_state); a type without one runs its own `apply`."""
    for cls in type(layer).__mro__:
        if cls in _FORWARDS:
            return _FORWARDS[cls](layer, params, state, x, train=train, key=key)
    return layer.apply(params, state, x, train=train, key=key)


def apply(model, params, state, x, *, train: bool = False, key=None):
    """Run a `Sequential` through the reference forwards; the same keys per layer as `model.apply`."""
    new_state = {}
    for layer, k in zip(model.layers, model.layer_keys(key)):
        x, s = forward(layer, params.get(layer.name, {}), state.get(layer.name, {}), x, train=train, key=k)
        if s:
            new_state[layer.name] = s
    return x, new_state


# --- losses (means over the batch, as jigcnn.losses; written independently of it) ---


def _one_hot(labels, k, dtype):
    if labels.ndim == 1:
        return (labels[:, None] == jnp.arange(k)[None, :]).astype(dtype)
    return labels.astype(dtype)


def _mae(pred, t):
    r = pred - t
    return jnp.mean(jnp.sign(r) * r)  # derivative sign(r): 0 at r = 0, as the hand-written one


def _mse(pred, t):
    return jnp.mean((pred - t) ** 2)


def _softmax_ce(z, labels):
    return -jnp.mean(jnp.sum(_one_hot(labels, z.shape[-1], z.dtype) * _log_softmax(z), axis=-1))


def _ce(p, labels):
    tiny = jnp.finfo(p.dtype).tiny
    return -jnp.mean(jnp.sum(_one_hot(labels, p.shape[-1], p.dtype) * jnp.log(jnp.maximum(p, tiny)), axis=-1))


def _nll(lp, labels):
    return -jnp.mean(jnp.sum(_one_hot(labels, lp.shape[-1], lp.dtype) * lp, axis=-1))


def _bce(z, t):
    # softplus(z) - z t, with softplus(z) = max(z, 0) + log(1 + e^-|z|) written so that every
    # branch point has the derivative sigmoid(z)
    positive = jnp.where(z > 0, z, jnp.zeros_like(z))
    minus_abs = jnp.where(z > 0, -z, z)
    return jnp.mean(positive + jnp.log1p(jnp.exp(minus_abs)) - z * t.astype(z.dtype))


LOSSES: dict[str, Callable] = {"mae": _mae, "mse": _mse, "softmax_cross_entropy": _softmax_ce,
                               "cross_entropy": _ce, "nll": _nll, "binary_cross_entropy": _bce}


def loss_function(loss) -> Callable:
    """The reference form of a loss given by name or as one of jigcnn.losses' functions; another callable is its own."""
    from jigcnn.objective import resolve_loss

    name, fn = resolve_loss(loss)
    return LOSSES.get(name, fn) if name is not None else fn


def value_and_grad(model, loss) -> Callable:
    """``f(params, state, x, targets, *, train, key) -> ((loss, Aux), grads)``: `jax.value_and_grad` of the reference path."""
    loss_fn = loss_function(loss)

    def objective(params, state, x, targets, train, key):
        outputs, new_state = apply(model, params, state, x, train=train, key=key)
        return loss_fn(outputs, targets), Aux(new_state, outputs, None)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def reference_value_and_grad(params, state, x, targets, *, train: bool = True, key=None):
        return grad_fn(params, state, x, targets, train, key)

    return reference_value_and_grad


__all__ = ["LOSSES", "activation", "apply", "forward", "has_reference", "loss_function", "register",
           "value_and_grad"]
