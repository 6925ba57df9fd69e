"""Wide 3x3 convolutions on the fused native Winograd F(4x4, 3x3) kernels: forward pass and both gradients.

Written as XLA operations (`fast.winograd`), Winograd's tile-domain arrays are 2.25x the layer's
activations and XLA writes and reads each of them several times; in the wide nets' training step
that cost more than the 4x fewer multiplies saved (docs/performance.md). The native kernels
(`direct_conv.cc`) keep the tile-domain arrays of a block of tiles in per-thread buffers that stay
in cache: ``JigcnnWinogradForward`` takes 32 output tiles at a time through the input transform
(V = B^T d B), the 36 tile-position GEMMs over the input channels and the output transform
(Y = A^T M A); ``JigcnnWinogradWeightGradient`` sums V^T (A dY A^T) over blocks of 64 tiles, in
fixed partial sums added in a fixed order, and XLA maps the sum back (dw = G^T dU G). Both read
zeros outside the input (and past the deltas' edge), so no padded copy is made. They serve
float32, stride-1, undilated 3x3 convolutions whose input and output channel counts are multiples
of 16 (`native.winograd_serves`).

* :func:`conv` (``ops.conv``'s route) has a custom JVP whose two tangent terms are one bilinear
  primitive, ``conv_term_p``: its transpose is :func:`input_gradient` for the input and
  :func:`weight_gradient` for the kernel, so reverse mode runs the kernels.
* :func:`input_gradient` (Eq. 1a's expansion; ``ops.conv_input_gradient``'s route) is the forward
  kernel on the deltas, offset by (2 - top, 2 - left), with the kernel turned by 180 degrees and its
  channel axes swapped: ``dx[n, y, z, k] = sum_{a, c, o} d[n, y + top - a, z + left - c, o] w[a, c, k, o]``.
* :func:`weight_gradient` (Eq. 1; ``ops.conv_weight_gradient``'s route) is the weight-gradient kernel.
* Forward mode, vmap and higher derivatives work: the term's JVP is itself (bilinear), the two
  gradients' JVPs are XLA's bilinear formulations, and under vmap the term runs XLA's convolution.

Values equal the direct correlation up to float32 rounding (Winograd's transforms amplify it:
relative errors ~1e-5 of the largest output; tests/test_fast_winograd_native.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Primitive
from jax.interpreters import ad

from jigcnn.fast import kernel_tangent, native

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

conv_term_p = Primitive("jigcnn_winograd_conv_term")


def serves(x, w, strides, dilation) -> bool:
    """Whether the fused kernel serves this convolution of `x` with the HWIO kernel `w` (see the module docstring)."""
    return tuple(strides) == (1, 1) and tuple(dilation) == (1, 1) and native.winograd_serves(x, w)


def _static(padding):
    return tuple(tuple(int(v) for v in p) for p in padding)


def _out_hw(in_hw, padding):
    (pt, pb), (pl, pr) = padding
    return in_hw[0] + pt + pb - 2, in_hw[1] + pl + pr - 2


def _xla_conv(x, w, padding):
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DIMENSION_NUMBERS)


def _kernel_conv(x, w, padding):
    """conv(x, w, padding) on the fused kernel (XLA's convolution off the CPU)."""
    return native.winograd_forward(x, w, (padding[0][0], padding[1][0]), _out_hw(x.shape[1:3], padding),
                                   functools.partial(_xla_conv, padding=padding))


def _turned(w):
    """The kernel of the input gradient: w turned by 180 degrees, input and output channels swapped."""
    return jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))


def _xla_input_gradient(delta, w, padding, in_hw):
    x = jax.ShapeDtypeStruct((delta.shape[0], *in_hw, w.shape[2]), jnp.result_type(delta, w))
    return jax.linear_transpose(lambda v: _xla_conv(v, w, padding), x)(delta)[0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def input_gradient(delta, w, padding, in_hw):
    """dL/dx (N, *in_hw, Cin) of ``conv(x, w, padding)`` for the deltas `delta` (Eq. 1a): the kernel on the deltas.

    dx[n, y, z, k] = sum_{a, c, o} delta[n, y + top - a, z + left - c, o] w[a, c, k, o]: the correlation of
    the deltas, offset by (2 - top, 2 - left), with the turned kernel.
    """
    padding, in_hw = _static(padding), tuple(int(v) for v in in_hw)
    if _out_hw(in_hw, padding) != tuple(delta.shape[1:3]):
        raise ValueError(f"deltas {tuple(delta.shape[1:3])} are not the output of a {in_hw} input padded by {padding}")
    (pt, _), (pl, _) = padding
    # off the CPU: XLA's formulation (turning the kernel twice gives it back)
    return native.winograd_forward(delta, _turned(w), (2 - pt, 2 - pl), in_hw,
                                   lambda d, u: _xla_input_gradient(d, _turned(u), padding, in_hw))


@input_gradient.defjvp
def _input_gradient_jvp(padding, in_hw, primals, tangents):
    delta, w = primals
    td, tw = tangents
    xla = functools.partial(_xla_input_gradient, padding=_static(padding), in_hw=tuple(in_hw))
    return input_gradient(delta, w, padding, in_hw), xla(td, w) + xla(delta, tw)  # bilinear in (delta, w)


def _xla_weight_gradient(x, delta, padding):
    w = jax.ShapeDtypeStruct((3, 3, x.shape[-1], delta.shape[-1]), jnp.result_type(x, delta))
    return jax.linear_transpose(lambda v: _xla_conv(x, v, padding), w)(delta)[0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def weight_gradient(x, delta, padding):
    """dL/dw (3, 3, Cin, C) of ``conv(x, w, padding)`` for the deltas `delta` (Eq. 1): the kernel's tile-domain sums.

    dw[a, c, k, o] = sum_{n, i, j} x[n, i + a - top, j + c - left, k] delta[n, i, j, o] (x zero outside).
    """
    padding = _static(padding)
    return native.winograd_weight_gradient(x, delta, (padding[0][0], padding[1][0]),
                                           functools.partial(_xla_weight_gradient, padding=padding))


@weight_gradient.defjvp
def _weight_gradient_jvp(padding, primals, tangents):
    x, delta = primals
    tx, td = tangents
    xla = functools.partial(_xla_weight_gradient, padding=_static(padding))
    return weight_gradient(x, delta, padding), xla(tx, delta) + xla(x, td)  # bilinear in (x, delta)


def conv_term(x, w, padding):
    """``conv(x, w, padding)`` as a tangent term, linear in `x` or in `w`; its transposes are the two gradients."""
    return conv_term_p.bind(x, w, padding=_static(padding))


def _abstract(x, w, *, padding):
    return jax.core.ShapedArray((x.shape[0], *_out_hw(x.shape[1:3], padding), w.shape[-1]), jnp.result_type(x, w))


def _term_jvp(primals, tangents, *, padding):
    x, w = primals
    tx, tw = tangents
    out = conv_term(x, w, padding)
    dout = ad.Zero.from_primal_value(out)
    for term in ([conv_term(tx, w, padding)] if type(tx) is not ad.Zero else []) + (
            [conv_term(x, tw, padding)] if type(tw) is not ad.Zero else []):
        dout = term if type(dout) is ad.Zero else dout + term  # bilinear in (x, w)
    return out, dout


def _term_transpose(ct, x, w, *, padding):
    if ad.is_undefined_primal(x) and ad.is_undefined_primal(w):
        raise NotImplementedError("conv_term is linear in x or in w, not in both at once")
    if type(ct) is ad.Zero:
        return [None, None]
    if ad.is_undefined_primal(x):
        return [input_gradient(ct, w, padding, tuple(x.aval.shape[1:3])), None]
    return [None, weight_gradient(x, ct, padding)]


def _term_batch(args, dims, *, padding):
    return jax.vmap(functools.partial(_xla_conv, padding=padding), in_axes=dims)(*args), 0


kernel_tangent.register(conv_term_p, evaluate=_kernel_conv, abstract=_abstract, jvp=_term_jvp,
                        transpose=_term_transpose, batch=_term_batch)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def conv(x, w, padding):
    """The stride-1 correlation of NHWC `x` with the HWIO 3x3 kernel `w`, zero `padding` ((top, bottom), (left, right)).

    Equals ``lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))``.
    """
    return _kernel_conv(x, w, _static(padding))


@functools.partial(conv.defjvp, symbolic_zeros=True)
def _conv_jvp(padding, primals, tangents):
    x, w = primals
    dx, dw = tangents
    padding = _static(padding)
    y = conv(x, w, padding)
    terms = ([conv_term(dx, w, padding)] if not isinstance(dx, SymbolicZero) else []) + (
        [conv_term(x, dw, padding)] if not isinstance(dw, SymbolicZero) else [])
    dy = jnp.zeros_like(y) if not terms else terms[0] if len(terms) == 1 else terms[0] + terms[1]
    return y, dy


__all__ = ["conv", "conv_term", "conv_term_p", "input_gradient", "serves", "weight_gradient"]
