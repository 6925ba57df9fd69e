"""The dense layer's weight gradient for few outputs as a fused multiply-reduce.

``dW = x.T @ delta`` contracts over the batch: a (D, N) x (N, F) product whose transposed
left operand XLA's CPU dot handles badly when F is small (IgNet's Fig. 5 net: D = 27,648,
F = 10, measured ~4x slower than needed). Written as ``sum_n x[n, :, None] * delta[n, None, :]``
XLA fuses the product into one reduction that reads `x` once.
"""

from __future__ import annotations

import os

import jax.numpy as jnp

# use the reduction when the layer has at most this many outputs (and fast kernels are on)
MAX_FEATURES = 16
ENABLED = os.environ.get("JIGCNN_FAST_DENSE", "1") not in ("0", "false", "no", "off")


def eligible(features: int) -> bool:
    """Whether the multiply-reduce form serves a dense layer with `features` outputs."""
    return ENABLED and features <= MAX_FEATURES


def weight_gradient(x, delta):
    """dL/dW = x.T @ delta for x (N, D) and delta (N, F): the reduction for few outputs, else the dot."""
    if eligible(delta.shape[-1]):
        return jnp.sum(x[:, :, None] * delta[:, None, :], axis=0)
    return x.T @ delta


def weight_gradient_reference(x, delta):
    """The plain formulation."""
    return x.T @ delta


__all__ = ["MAX_FEATURES", "ENABLED", "eligible", "weight_gradient", "weight_gradient_reference"]
