"""Hand-written loss derivatives dLoss/dN for the output layer (the last factor of Eq. 1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jigcnn.activations import softmax
from jigcnn.losses import one_hot_targets


def output_gradient(name: str, outputs, targets):
    """dLoss/d(outputs) of the named mean loss."""
    n = outputs.shape[0]
    if name == "mae":
        return jnp.sign(outputs - targets) / outputs.size
    if name == "mse":
        return 2.0 * (outputs - targets) / outputs.size
    if name == "softmax_cross_entropy":
        return softmax_cross_entropy_delta(softmax(outputs), targets)
    if name == "cross_entropy":
        t = one_hot_targets(targets, outputs.shape[-1], outputs.dtype)
        tiny = jnp.finfo(outputs.dtype).tiny
        return jnp.where(outputs > tiny, -t / jnp.maximum(outputs, tiny), 0.0) / n
    if name == "nll":
        return -one_hot_targets(targets, outputs.shape[-1], outputs.dtype) / n
    if name == "binary_cross_entropy":
        return (jax.nn.sigmoid(outputs) - targets.astype(outputs.dtype)) / outputs.size
    raise ValueError(f"no hand-written gradient for loss {name!r}")


def softmax_cross_entropy_delta(probs, targets):
    """The combined softmax + cross-entropy gradient dLoss/dz = (s sum(t) - t) / N (paper's footnote 2).

    For targets whose rows sum to 1 (integer labels, one-hot, soft targets) it is the paper's
    (s - t) / N; the general form also holds for rows that do not sum to 1.
    """
    t = one_hot_targets(targets, probs.shape[-1], probs.dtype)
    if jnp.ndim(targets) == 1:  # integer labels: every row sums to 1
        return (probs - t) / probs.shape[0]
    return (probs * jnp.sum(t, axis=-1, keepdims=True) - t) / probs.shape[0]
