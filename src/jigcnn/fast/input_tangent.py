"""The input-tangent term of a convolution, a primitive whose transpose is the input gradient.

The companion of `fast.kernel_tangent`: in forward mode a convolution's tangent has a term
``conv(dx, w)`` for the input tangent, which reverse mode transposes into the input gradient
(the deltas carried back to the layer below). As one primitive, ``input_term_p``, with that
transpose given explicitly, reverse mode runs the native input-gradient kernel (`fast.native`)
while forward mode, vmap and higher derivatives keep working through the XLA formulation:

* evaluating the term runs `fast.direct.conv_forward` (native forward when it serves);
* it is bilinear in (dx, w): its JVP is ``input_term(tdx, w) + conv(dx, tw)``, and its transpose
  is the input gradient for dx and the weight gradient for w;
* the input gradient's own JVP is the bilinear XLA formulation, so the transposed program can be
  differentiated again;
* under vmap it runs the XLA formulation, vectorised.

Tested in float64 against XLA's convolution (tests/test_fast_conv.py) and in float32 with the
native kernels (tests/test_fast_native.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad

from jigcnn.fast import banded, direct, kernel_tangent

input_term_p = Primitive("jigcnn_conv_input_term")


def input_term(dx, w, *, block: int, native: bool):
    """``conv_valid(dx, w)``, linear in `dx` (and in `w`); its transpose is the input gradient."""
    return input_term_p.bind(dx, w, block=block, native=native)


def _evaluate(dx, w, *, block: int, native: bool):
    return direct.conv_forward(dx, w, None, block, native)


def _abstract(dx, w, *, block: int, native: bool):
    n, h, wd, _ = dx.shape
    kh, kw, _, c = w.shape
    return jax.core.ShapedArray((n, h - kh + 1, wd - kw + 1, c), jnp.result_type(dx, w))


def _jvp(primals, tangents, *, block: int, native: bool):
    dx, w = primals
    tdx, tw = tangents
    out = input_term(dx, w, block=block, native=native)
    dout = ad.Zero.from_primal_value(out)
    if type(tdx) is not ad.Zero:
        dout = input_term(tdx, w, block=block, native=native)
    if type(tw) is not ad.Zero:
        w_term = banded.banded_conv(dx, tw, None, block)
        dout = w_term if type(dout) is ad.Zero else dout + w_term
    return out, dout


def _transpose(ct, dx, w, *, block: int, native: bool):
    if ad.is_undefined_primal(dx) and ad.is_undefined_primal(w):
        raise NotImplementedError("input_term is linear in dx or in w, not in both at once")
    if type(ct) is ad.Zero:
        return [None, None]
    if ad.is_undefined_primal(dx):
        return [input_gradient(ct, w, tuple(dx.aval.shape[1:3]), block, native), None]
    kh, kw = w.aval.shape[:2]
    return [None, kernel_tangent.weight_gradient(dx, ct, kh, kw, block, native)[0]]


def _batch(args, dims, *, block: int, native: bool):
    fn = functools.partial(banded.banded_conv, bias=None, t=block)
    return jax.vmap(fn, in_axes=dims)(*args), 0


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def input_gradient(delta, w, in_hw: tuple, block: int, native: bool):
    """dL/dx of a convolution (native when it serves and `native`); its JVP is the XLA formulation."""
    return direct.conv_input_gradient(delta, w, in_hw, block=block, native=native)


@input_gradient.defjvp
def _input_gradient_jvp(in_hw, block, native, primals, tangents):
    delta, w = primals
    td, tw = tangents
    gemm = functools.partial(banded.input_gradient_gemm, in_hw=in_hw, block=block, apart=False)
    # bilinear in (delta, w)
    return input_gradient(delta, w, in_hw, block, native), gemm(td, w) + gemm(delta, tw)


kernel_tangent.register(input_term_p, evaluate=_evaluate, abstract=_abstract, jvp=_jvp, transpose=_transpose,
                        batch=_batch)

__all__ = ["input_gradient", "input_term", "input_term_p"]
