"""The dense layer's weight gradient for few outputs as a fused multiply-reduce.

``dW = x.T @ delta`` contracts over the batch: a (D, N) x (N, F) product whose transposed
left operand XLA's CPU dot handles badly when F is small (IgNet's Fig. 5 net: D = 27,648,
F = 10, measured ~4x slower than needed). Written as ``sum_n x[n, :, None] * delta[n, None, :]``
XLA fuses the product into one reduction that reads `x` once. The hand-written backward calls
:func:`weight_gradient`; for autodiff, :func:`matmul` is ``x @ kernel`` with a custom JVP whose
kernel-tangent term is that multiply-reduce, so reverse mode transposes it into the same
reduction (IgNet's autodiff step at batch 256: 40 -> 31 ms).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

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


def matmul(x, kernel):
    """``x @ kernel`` for x (N, D); with few outputs, differentiating it gives `weight_gradient`'s reduction."""
    if x.ndim == 2 and eligible(kernel.shape[-1]):
        return _few_outputs_matmul(x, kernel)
    return x @ kernel


@jax.custom_jvp
def _few_outputs_matmul(x, kernel):
    return x @ kernel


@functools.partial(_few_outputs_matmul.defjvp, symbolic_zeros=True)
def _few_outputs_matmul_jvp(primals, tangents):
    x, kernel = primals
    dx, dkernel = tangents
    y = x @ kernel
    dy = jnp.zeros_like(y)
    if not isinstance(dx, SymbolicZero):
        dy = dy + dx @ kernel
    if not isinstance(dkernel, SymbolicZero):
        # x @ dkernel as a multiply-reduce over D: its transpose sums x * delta over the batch
        dy = dy + jnp.sum(x[:, :, None] * dkernel[None], axis=1)
    return y, dy


def weight_gradient_reference(x, delta):
    """The plain formulation."""
    return x.T @ delta


__all__ = ["MAX_FEATURES", "ENABLED", "eligible", "matmul", "weight_gradient", "weight_gradient_reference"]
