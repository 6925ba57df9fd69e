"""Wide 3x3 convolutions on the fused native Winograd F(4x4, 3x3) kernel: forward pass and input gradient.

Written as XLA operations (`fast.winograd`), Winograd's tile-domain arrays are 2.25x the layer's
activations and XLA writes and reads each of them several times; in the wide nets' training step
that cost more than the 4x fewer multiplies saved (docs/performance.md). The native kernel
(`direct_conv.cc`, ``JigcnnWinogradForward``) takes 32 output tiles at a time through the input
transform, the 36 tile-position GEMMs over the input channels and the output transform in
per-thread buffers that stay in cache. It serves float32, stride-1, undilated 3x3 convolutions
whose input and output channel counts are multiples of 16 (`native.winograd_serves`).

* :func:`conv` (``ops.conv``'s route) runs the kernel on the unpadded input: the kernel reads zeros
  outside it, so no padded copy is made. It has a custom JVP: the input-tangent term is one
  primitive, ``input_term_p``, whose transpose is :func:`input_gradient`; the kernel-tangent term is
  `fast.wide_conv`'s (XLA's convolution reading the input as (H, W, C, N)), so reverse mode's weight
  gradient is XLA's, as on the default path.
* :func:`input_gradient` (Eq. 1a's expansion; ``ops.conv_input_gradient``'s route) is the same
  kernel on the deltas, offset by (2 - top, 2 - left), with the kernel turned by 180 degrees and its
  channel axes swapped: ``dx[n, y, z, k] = sum_{a, c, o} d[n, y + top - a, z + left - c, o] w[a, c, k, o]``.
* Forward mode, vmap and higher derivatives work: the term is bilinear in (dx, w) (its JVP is
  itself plus XLA's convolution of dx with the kernel tangent; its transpose is the input gradient
  for dx, XLA's weight gradient for w); the input gradient's JVP is XLA's bilinear formulation;
  under vmap the term runs XLA's convolution.

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

from jigcnn.fast import kernel_tangent, native, wide_conv

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

input_term_p = Primitive("jigcnn_winograd_input_term")


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


def input_term(dx, w, padding):
    """``conv(dx, w, padding)``, linear in `dx` (and in `w`); its transpose is the input gradient."""
    return input_term_p.bind(dx, w, padding=_static(padding))


def _abstract(dx, w, *, padding):
    return jax.core.ShapedArray((dx.shape[0], *_out_hw(dx.shape[1:3], padding), w.shape[-1]), jnp.result_type(dx, w))


def _term_jvp(primals, tangents, *, padding):
    dx, w = primals
    tdx, tw = tangents
    out = input_term(dx, w, padding)
    dout = ad.Zero.from_primal_value(out)
    if type(tdx) is not ad.Zero:
        dout = input_term(tdx, w, padding)
    if type(tw) is not ad.Zero:
        w_term = _xla_conv(dx, tw, padding)
        dout = w_term if type(dout) is ad.Zero else dout + w_term
    return out, dout


def _term_transpose(ct, dx, w, *, padding):
    if ad.is_undefined_primal(dx) and ad.is_undefined_primal(w):
        raise NotImplementedError("input_term is linear in dx or in w, not in both at once")
    if type(ct) is ad.Zero:
        return [None, None]
    if ad.is_undefined_primal(dx):
        return [input_gradient(ct, w, padding, tuple(dx.aval.shape[1:3])), None]
    return [None, jax.linear_transpose(lambda v: _xla_conv(dx, v, padding), w.aval)(ct)[0]]


def _term_batch(args, dims, *, padding):
    return jax.vmap(functools.partial(_xla_conv, padding=padding), in_axes=dims)(*args), 0


kernel_tangent.register(input_term_p, evaluate=_kernel_conv, abstract=_abstract, jvp=_term_jvp,
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
    dy = None
    if not isinstance(dx, SymbolicZero):
        dy = input_term(dx, w, padding)
    if not isinstance(dw, SymbolicZero):
        # the kernel-tangent term as fast.wide_conv writes it, so the weight gradient reads (H, W, C, N)
        term = lax.conv_general_dilated(wide_conv.transposed_input(x), dw, (1, 1), padding,
                                        dimension_numbers=("HWCN", "HWIO", "NHWC"))
        dy = term if dy is None else dy + term
    if dy is None:
        dy = jnp.zeros_like(y)
    return y, dy


__all__ = ["conv", "input_gradient", "input_term", "input_term_p", "serves"]
