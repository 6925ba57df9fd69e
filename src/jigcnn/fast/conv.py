"""A few-channel convolution with derivative rules that reach jigcnn's own kernels.

`conv_valid` is a valid, stride-1, undilated convolution computed by `fast.direct` (the native
kernel on the CPU in float32, the banded GEMM of `fast.banded` otherwise). Its custom JVP
splits the tangent into an input term and a kernel term, each one primitive
(`fast.input_tangent`, `fast.kernel_tangent`) whose transpose is the input gradient and the
weight gradient, so reverse mode runs the same kernels as the hand-written backward does.

Which computation runs where is decided by `jigcnn.ops` (the only caller); nothing here reads
a switch. Tested against ``lax.conv_general_dilated`` (tests/test_fast_conv.py,
tests/test_fast_native.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jigcnn.fast import banded, direct, native as native_kernels


def conv_valid(x, w, bias=None, *, block: int | None = None, native: bool = True):
    """Valid, stride-1 convolution of the NHWC `x` with the HWIO `w` (plus `bias`), differentiable.

    Equal to ``lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO",
    "NHWC")) + bias``. The bias rides in the GEMM (a column of ones in the windows, a bias row
    in the kernel), which saves a pass over the output (measured ~20% of IgNet's step at batch 256).
    With `native`, the native kernels compute it where they serve (float32 on the CPU).
    A single input channel, or the native kernels, take the direct form whose derivatives are the
    tangent primitives'; several channels without them the banded GEMM, differentiated by JAX.
    """
    t = banded.block_width(x.shape[2] - w.shape[1] + 1, w.shape[1], block)
    bias = None if bias is None else jnp.asarray(bias)
    if x.shape[-1] == 1 or (native and native_kernels.serves("forward", x, w, bias)):
        return _direct_conv(x, w, bias, t, bool(native))
    return banded.banded_conv(x, w, bias, t)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _direct_conv(x, w, bias, t: int, native: bool):
    """`fast.direct.conv_forward`, whose kernel-tangent term reverse mode turns into the weight gradient."""
    return direct.conv_forward(x, w, bias, t, native)


@functools.partial(_direct_conv.defjvp, symbolic_zeros=True)
def _direct_conv_jvp(t, native, primals, tangents):
    x, w, bias = primals
    dx, dw, dbias = tangents
    y = _direct_conv(x, w, bias, t, native)
    dy = jnp.zeros_like(y)
    if not isinstance(dx, SymbolicZero):
        # one primitive whose transpose is the input gradient (the native kernel on the CPU)
        from jigcnn.fast import input_tangent

        dy = dy + input_tangent.input_term(dx, w, block=t, native=native)
    no_dw = isinstance(dw, SymbolicZero)
    no_db = bias is None or isinstance(dbias, SymbolicZero)
    if no_dw and no_db:
        return y, dy
    # one primitive whose transpose is the weight gradient (the native kernel on the CPU; the
    # transposed-window product otherwise, ~2x faster than XLA's xb.T @ delta)
    from jigcnn.fast import kernel_tangent

    dw = jnp.zeros_like(w) if no_dw else dw
    db = jnp.zeros((w.shape[-1],), w.dtype) if no_db else dbias
    return y, dy + kernel_tangent.kernel_term(x, dw, db, block=t, native=native)


__all__ = ["conv_valid"]
