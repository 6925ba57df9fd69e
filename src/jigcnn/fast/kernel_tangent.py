"""The kernel-tangent term of a convolution, a primitive whose transpose is the weight gradient.

In forward mode a convolution's tangent has a term ``conv(x, dw) + db`` for the kernel and bias
tangents. Reverse mode transposes that term into the weight gradient. Written with XLA
operations, JAX derives the transpose itself; here the term is one primitive,
``kernel_term_p``, with the transpose given explicitly, so reverse mode can run the native
weight-gradient kernel (`fast.native`) while forward mode, vmap and higher derivatives keep
working through the XLA formulation (`fast.banded`):

* evaluating the term runs `fast.direct.conv_forward` (native forward when it serves);
* its JVP is ``kernel_term(x, ddw, ddb) + conv(dx, dw)`` (the term is bilinear in x and dw);
* its transpose with respect to (dw, db) is `weight_gradient(x, ct)`, whose own JVP is the
  XLA formulation, so the transposed program can be differentiated again;
* under vmap it runs the XLA formulation, vectorised.

The primitive's parameters are the block width and whether the native kernels may run (the
caller's `jigcnn.ops` configuration, fixed when the program is traced). Tested in float64
against XLA's convolution (JVP, Hessians, vmap) and in float32 with the native kernels
(tests/test_fast_conv.py, tests/test_fast_native.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jigcnn.fast import banded, direct

kernel_term_p = Primitive("jigcnn_conv_kernel_term")


def kernel_term(x, dw, db, *, block: int, native: bool):
    """``conv_valid(x, dw, db)``, linear in (dw, db); its transpose is the weight gradient."""
    return kernel_term_p.bind(x, dw, db, block=block, native=native)


def _evaluate(x, dw, db, *, block: int, native: bool):
    return direct.conv_forward(x, dw, db, block, native)


def _abstract(x, dw, db, *, block: int, native: bool):
    n, h, w, _ = x.shape
    kh, kw, _, c = dw.shape
    return jax.core.ShapedArray((n, h - kh + 1, w - kw + 1, c), jnp.result_type(x, dw, db))


def _jvp(primals, tangents, *, block: int, native: bool):
    x, dw, db = primals
    tx, tdw, tdb = tangents
    out = kernel_term(x, dw, db, block=block, native=native)
    dout = ad.Zero.from_primal_value(out)
    if not (type(tdw) is ad.Zero and type(tdb) is ad.Zero):
        dout = kernel_term(x, ad.instantiate_zeros(tdw), ad.instantiate_zeros(tdb), block=block, native=native)
    if type(tx) is not ad.Zero:
        dx_term = banded.banded_conv(tx, dw, None, block, predicate_from=x)
        dout = dx_term if type(dout) is ad.Zero else dout + dx_term
    return out, dout


def _transpose(ct, x, dw, db, *, block: int, native: bool):
    if ad.is_undefined_primal(x):
        raise NotImplementedError("kernel_term is linear in the kernel and bias tangents only, not in x")
    kh, kw = (dw.aval if ad.is_undefined_primal(dw) else dw).shape[:2]
    if type(ct) is ad.Zero:
        gw = gb = None
    else:
        gw, gb = weight_gradient(x, ct, kh, kw, block, native)
    return [None, gw if ad.is_undefined_primal(dw) else None, gb if ad.is_undefined_primal(db) else None]


def _batch(args, dims, *, block: int, native: bool):
    fn = functools.partial(banded.banded_conv, t=block)
    return jax.vmap(fn, in_axes=dims)(*args), 0


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def weight_gradient(x, delta, kh: int, kw: int, block: int, native: bool):
    """(dw, db) of a convolution (native when it serves and `native`); its JVP is the XLA formulation."""
    return direct.conv_weight_gradient(x, delta, (kh, kw), block=block, with_bias=True, native=native)


@weight_gradient.defjvp
def _weight_gradient_jvp(kh, kw, block, native, primals, tangents):
    x, delta = primals
    tx, td = tangents
    gemm = functools.partial(banded.weight_gradient_gemm, kernel_hw=(kh, kw), block=block)
    out = weight_gradient(x, delta, kh, kw, block, native)
    # dw is bilinear in (x, delta); db = sum(delta) does not depend on x
    tangent_w = gemm(tx, delta, with_bias=False, predicate_from=x)
    more_w, tangent_b = gemm(x, td, with_bias=True)
    return out, (tangent_w + more_w, tangent_b)


def register(primitive, *, evaluate, abstract, jvp, transpose, batch) -> None:
    """Give a tangent-term primitive its evaluation (also its lowering), shape rule, JVP, transpose and batching rule."""
    primitive.def_impl(evaluate)
    primitive.def_abstract_eval(abstract)
    mlir.register_lowering(primitive, mlir.lower_fun(evaluate, multiple_results=False))
    ad.primitive_jvps[primitive] = jvp
    ad.primitive_transposes[primitive] = transpose
    batching.primitive_batchers[primitive] = batch


register(kernel_term_p, evaluate=_evaluate, abstract=_abstract, jvp=_jvp, transpose=_transpose, batch=_batch)

__all__ = ["kernel_term", "kernel_term_p", "register", "weight_gradient"]
