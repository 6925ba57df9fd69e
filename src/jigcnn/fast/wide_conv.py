"""Convolutions with tens of channels on XLA:CPU, with a cheaper weight gradient.

XLA:CPU computes a convolution's weight gradient as another convolution in which the
input's channels are the batch and its samples are the features, so it first transposes
the layer input (N, H, W, C) to put N innermost. When that input comes out of an
elementwise chain (batch norm, then ReLU: the usual case), XLA fuses the chain into the
transposing copy, and the fused, strided loop is slow: 45-50 ms per training step for
``zoo.vgg_small``'s 32x32x32 layer at batch 128, more than the gradient convolution itself.

:func:`conv` is ``lax.conv_general_dilated`` (NHWC / HWIO) with a custom JVP whose
kernel-tangent term reads the input already transposed to (H, W, C, N) -- a plain 2-D
transpose of (N, H*W*C) -- made apart by :func:`jigcnn.fast.barrier.unfused` (inside a
``lax.cond`` with two identical branches; XLA fuses nothing across a conditional), so the
chain is computed once and the copy is a plain transpose. Reverse mode transposes that
term, so the weight gradient reads the saved (H, W, C, N) array; the forward pass and the
input gradient are XLA's own. Values are those of the plain convolution
(tests/test_fast_wide_conv.py); forward mode works too.

:func:`weight_gradient` is that weight gradient on its own (the transpose of the same term), for
the hand-written backward pass: Eq. 1 written as one convolution over the samples made XLA fuse the
transposing copy with batch norm and ReLU in the same slow way (51.6 ms of a 214 ms ResNet-20 step
for its first stride-2 layer alone).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jigcnn.fast.barrier import unfused

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def transposed_input(x: jax.Array) -> jax.Array:
    """``x`` (N, H, W, C) as (H, W, C, N), materialised apart from whatever computed ``x``."""
    n, h, w, c = x.shape
    return unfused(lambda v: jnp.transpose(v.reshape(n, h * w * c)).reshape(h, w, c, n), x)


def _plain(x, w, strides, padding, dilation):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=DIMENSION_NUMBERS)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def conv(x: jax.Array, w: jax.Array, strides, padding, dilation) -> jax.Array:
    """``lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation)``, NHWC / HWIO.

    ``strides`` and ``dilation`` are pairs, ``padding`` a pair of (low, high) pairs (static).
    """
    return _plain(x, w, strides, padding, dilation)


@functools.partial(conv.defjvp, symbolic_zeros=True)
def _conv_jvp(strides, padding, dilation, primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = _plain(x, w, strides, padding, dilation)
    dy = None
    if not isinstance(dx, SymbolicZero):
        dy = _plain(dx, w, strides, padding, dilation)
    if not isinstance(dw, SymbolicZero):
        # the same convolution, reading the input as (H, W, C, N): "HWCN" names where batch and features are
        term = lax.conv_general_dilated(transposed_input(x), dw, strides, padding, rhs_dilation=dilation,
                                        dimension_numbers=("HWCN", "HWIO", "NHWC"))
        dy = term if dy is None else dy + term
    if dy is None:
        dy = jnp.zeros_like(y)
    return y, dy


def weight_gradient(xp: jax.Array, delta: jax.Array, kernel_hw, strides, dilation) -> jax.Array:
    """dL/dw (kh, kw, Cin, C) of ``conv(xp, w, strides, VALID, dilation)`` for the deltas `delta` (Eq. 1).

    The transpose, in the kernel, of the tangent term above: it reads `xp` transposed apart to (H, W, C, N).
    """
    kernel = jax.ShapeDtypeStruct((*tuple(kernel_hw), xp.shape[-1], delta.shape[-1]), jnp.result_type(xp, delta))
    xt = transposed_input(xp)

    def term(dw):
        return lax.conv_general_dilated(xt, dw, tuple(strides), ((0, 0), (0, 0)), rhs_dilation=tuple(dilation),
                                        dimension_numbers=("HWCN", "HWIO", "NHWC"))

    return jax.linear_transpose(term, kernel)(delta.astype(kernel.dtype))[0]
