"""Hand-written activation derivatives N' (the factor N'_beta of Eqs. 1-2a)."""

from __future__ import annotations

import jax.numpy as jnp

from jigcnn.activations import activation_param, canonical_name, softmax


def derivative(name: str, z, y, param=None):
    """Elementwise N'(z) of activation `name`, given z and y = f(z).

    For softmax this is the Jacobian's diagonal s (1 - s) (what the diagnostic reports);
    `delta` below applies the full Jacobian.
    """
    name = canonical_name(name)
    if name == "identity":
        return jnp.ones_like(z)
    if name == "sigmoid":
        return y * (1 - y)
    if name == "bipolar_sigmoid":
        return 0.5 * (1 - y * y)
    if name == "tanh":
        return 1 - y * y
    if name == "relu":
        return (z > 0).astype(z.dtype)
    if name == "leaky_relu":
        return jnp.where(z > 0, 1.0, activation_param(name, param)).astype(z.dtype)
    if name == "elu":
        return jnp.where(z > 0, 1.0, y + activation_param(name, param)).astype(z.dtype)
    if name == "softmax":
        return y * (1 - y)
    if name == "log_softmax":
        return 1 - softmax(z)
    raise ValueError(f"no hand-written derivative for activation {name!r}")


def delta(name: str, z, y, dy, param=None):
    """dL/dz from dL/dy: elementwise N' * dy, or the softmax / log-softmax Jacobian product."""
    name = canonical_name(name)
    if name == "identity":
        return dy
    if name == "softmax":
        return y * (dy - jnp.sum(dy * y, axis=-1, keepdims=True))
    if name == "log_softmax":
        return dy - softmax(z) * jnp.sum(dy, axis=-1, keepdims=True)
    return dy * derivative(name, z, y, param)
