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

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jigcnn.fast.barrier import unfused

# jigcnn.ops uses this form for dense layers with at most this many outputs
MAX_FEATURES = 16


def _transposed(v, predicate_from=None):
    """``v.T`` materialised apart (fused into a dot's operand or result, the transpose was 2-5x slower)."""
    return unfused(jnp.transpose, v, predicate_from=predicate_from)


def weight_gradient(x, delta):
    """dL/dW = x.T @ delta for x (N, D) and delta (N, F), computed as ``(delta.T @ x).T``.

    ``delta.T`` (F, N) and the (F, D) result are transposed apart, so the product is a plain one
    on `x` as it lies (XLA:CPU's dot of ``x.T @ delta`` contracts both operands over their rows
    and ran ~3x slower for IgNet's 27,648 x 10 layer). For few outputs only (`jigcnn.ops` decides).
    """
    return _transposed(_transposed(delta) @ x)


@jax.custom_jvp
def matmul(x, kernel):
    """``x @ kernel`` for x (N, D); differentiating it with respect to the kernel gives `weight_gradient`'s product."""
    return x @ kernel


@functools.partial(matmul.defjvp, symbolic_zeros=True)
def _matmul_jvp(primals, tangents):
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


__all__ = ["MAX_FEATURES", "matmul", "weight_gradient"]
