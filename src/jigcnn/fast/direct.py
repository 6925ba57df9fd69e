"""A few-channel convolution's three computations, each by the native kernel where it serves, else the banded GEMM.

`native` (a bool, from the caller's kernel configuration, `jigcnn.ops`) says whether the native
kernels may run; they serve float32 on the CPU (`fast.native.serves`), and a program lowered for
another platform takes the banded GEMM (`jax.lax.platform_dependent`). Plain functions: the
derivative rules are `fast.conv`'s and the tangent primitives'.
"""

from __future__ import annotations

import functools

from jigcnn.fast import banded, native as native_kernels


def conv_forward(x, w, bias, t: int, native: bool):
    """Valid, stride-1 convolution of `x` (N, H, W, Cin) with `w` (KH, KW, Cin, C) plus `bias`; block width `t`."""
    if native and native_kernels.serves("forward", x, w, bias):
        return native_kernels.forward(x, w, bias, functools.partial(banded.banded_conv, t=t))
    return banded.banded_conv(x, w, bias, t)


def conv_weight_gradient(x, delta, kernel_hw, *, block, with_bias: bool, native: bool):
    """dL/dw (and dL/db with `with_bias`) of that convolution of the padded input `x` for the deltas `delta`."""
    if native and native_kernels.serves("weight", x, delta, kernel_hw=kernel_hw):
        fallback = functools.partial(banded.weight_gradient_gemm, kernel_hw=kernel_hw, block=block, with_bias=True)
        dw, db = native_kernels.weight_gradient(x, delta, kernel_hw, fallback)
        return (dw, db) if with_bias else dw
    return banded.weight_gradient_gemm(x, delta, kernel_hw=kernel_hw, block=block, with_bias=with_bias)


def conv_input_gradient(delta, w, in_hw, *, block, native: bool):
    """dL/dx (N, H, W, Cin) of that convolution of an H x W input for the deltas `delta`."""
    kh, kw = w.shape[:2]
    full = tuple(in_hw) == (delta.shape[1] + kh - 1, delta.shape[2] + kw - 1)
    if native and full and native_kernels.serves("input", delta, w):
        fallback = functools.partial(banded.input_gradient_gemm, in_hw=tuple(in_hw), block=block)
        return native_kernels.input_gradient(delta, w, fallback)
    return banded.input_gradient_gemm(delta, w, in_hw=in_hw, block=block)


__all__ = ["conv_forward", "conv_input_gradient", "conv_weight_gradient"]
