"""The dense layer's weight gradient for few outputs as a plain product on the input as it lies.

``dW = x.T @ delta`` contracts over the batch: a (D, N) x (N, F) product whose transposed
left operand XLA's CPU dot handles badly when F is small (IgNet's Fig. 5 net: D = 27,648,
F = 10, measured ~3-4x slower than needed). Computed as ``(delta.T @ x).T``, with both small
transposes made apart (:func:`jigcnn.fast.barrier.unfused`), the product reads `x` once in its
own layout. The hand-written backward calls :func:`weight_gradient`; for autodiff,
:func:`matmul` is ``x @ kernel`` with a custom JVP whose kernel-tangent term is written so
that reverse mode transposes it into the same product (IgNet's autodiff step at batch 256:
40 -> 31 ms with the earlier multiply-reduce form, which this replaced at a further 1.0-1.1x).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jigcnn.fast.barrier import unfused

# use the transposed product when the layer has at most this many outputs (and fast kernels are on)
MAX_FEATURES = 16
ENABLED = os.environ.get("JIGCNN_FAST_DENSE", "1") not in ("0", "false", "no", "off")


def eligible(features: int) -> bool:
    """Whether the transposed-product form serves a dense layer with `features` outputs."""
    return ENABLED and features <= MAX_FEATURES


def _transposed(v, predicate_from=None):
    """``v.T`` materialised apart (fused into a dot's operand or result, the transpose was 2-5x slower)."""
    return unfused(jnp.transpose, v, predicate_from=predicate_from)


def weight_gradient(x, delta):
    """dL/dW = x.T @ delta for x (N, D) and delta (N, F): for few outputs ``(delta.T @ x).T``, else the dot.

    With few outputs ``delta.T`` (F, N) and the (F, D) result are transposed apart, so the
    product is a plain one on `x` as it lies (XLA:CPU's dot of ``x.T @ delta`` contracts both
    operands over their rows and ran ~3x slower for IgNet's 27,648 x 10 layer).
    """
    if eligible(delta.shape[-1]):
        return _transposed(_transposed(delta) @ x)
    return x.T @ delta


def matmul(x, kernel):
    """``x @ kernel`` for x (N, D); with few outputs, differentiating it gives `weight_gradient`'s product."""
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
        # x @ dkernel as (dkernel.T @ x.T).T with both transposes apart: reverse mode turns it into
        # weight_gradient's (delta.T @ x).T (the predicates read the primal x: a tangent may not decide)
        product = lax.dot_general(_transposed(dkernel, x), x, (((1,), (1,)), ((), ())))
        dy = dy + _transposed(product, x)
    return y, dy


def weight_gradient_reference(x, delta):
    """The plain formulation."""
    return x.T @ delta


__all__ = ["MAX_FEATURES", "ENABLED", "eligible", "matmul", "weight_gradient", "weight_gradient_reference"]
