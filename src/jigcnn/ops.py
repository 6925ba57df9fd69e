"""The one door to the kernels: which implementation computes each convolution, dense product and pooling.

Layers (`jigcnn.layers`), the hand-written backward (`jigcnn.backprop`) and training
(`jigcnn.train`) call the functions here; only this module imports `jigcnn.fast`. Each function
decides per call, from the shapes and the current :class:`Kernels` configuration, whether one
of jigcnn's own kernels serves (few-channel convolutions as banded GEMMs or native C++
kernels, the wide-conv weight-gradient layout, the dense transposed product, max pooling as
selects) or the plain formulation runs. For the gradients of the hand-written backward the
plain formulation is the caller's own (``plain=``: the paper's equation as `jigcnn.backprop`
writes it), so a fast kernel is a drop-in, never inlined into a backward rule.

The configuration is explicit and scoped: ``with ops.using(native=False): ...`` or
``with ops.using("reference"): ...`` (every fast kernel off). It is read when a function is
*traced*: a program compiled after the switch honours it; a jitted function already traced
keeps the kernels it was traced with, and since JAX caches traces per Python function, so
does ``jax.jit(f)`` of the same ``f`` wrapped again (trace a fresh function, for example
``lambda *a: f(*a)``, to change kernels; jigcnn's train-step builders build a new function per
configuration and key their caches by it). Nothing is read from the environment.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jigcnn.fast import banded, direct, wide_conv, winograd, winograd_native
from jigcnn.fast import conv as fast_conv
from jigcnn.fast import dense as fast_dense
from jigcnn.fast import pool as fast_pool

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass(frozen=True)
class Kernels:
    """Which of jigcnn's own kernels may run; with every field False only plain lax/jnp formulations run.

    banded_conv: few-channel, stride-1 convolutions (kh*kw*Cin <= 160) as banded GEMMs (`fast.banded`).
    native: their C++ kernels (`fast.native`; float32 on the CPU), within `banded_conv`.
    wide_conv: other convolutions on the CPU with the cheaper weight-gradient layout (`fast.wide_conv`).
    winograd_native: wider stride-1 undilated 3x3 convolutions on the CPU, float32, channel counts multiples of 16,
        forward pass and both gradients on the fused native Winograd F(4x4, 3x3) kernels (`fast.winograd_native`),
        within `native`.
    winograd: the same convolutions (float32/64) as Winograd F(4x4, 3x3) written as XLA operations (`fast.winograd`);
        off by default: 1.7-2.1x XLA's conv on an isolated layer, but 0.5-0.65x in the wide nets' train step.
    dense: dense layers with at most 16 outputs: the weight gradient as a transposed product (`fast.dense`).
    pool: max pooling over windows that tile the map as a chain of selects (`fast.pool`).
    """

    banded_conv: bool = True
    native: bool = True
    wide_conv: bool = True
    dense: bool = True
    pool: bool = True
    winograd_native: bool = True
    winograd: bool = False  # opt-in: faster per layer, slower in the wide nets' whole step (docs/performance.md)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if not isinstance(getattr(self, field.name), bool):
                raise TypeError(f"Kernels.{field.name} must be a bool, got {getattr(self, field.name)!r}")

    def replace(self, **changes) -> "Kernels":
        """A copy with `changes` (field names of Kernels)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown kernel switch(es) {unknown}; choose from {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)


DEFAULT = Kernels()
REFERENCE = Kernels(banded_conv=False, native=False, wide_conv=False, dense=False, pool=False, winograd=False,
                    winograd_native=False)
_NAMED = {"default": DEFAULT, "fast": DEFAULT, "reference": REFERENCE}
_CURRENT: contextvars.ContextVar[Kernels] = contextvars.ContextVar("jigcnn_kernels", default=DEFAULT)


def current() -> Kernels:
    """The kernel configuration in force in this thread / context."""
    return _CURRENT.get()


def resolve(spec=None, **changes) -> Kernels:
    """A Kernels from None (the current one), a name ("default", "fast", "reference"), a Kernels or a dict, plus `changes`."""
    if spec is None:
        base = current()
    elif isinstance(spec, Kernels):
        base = spec
    elif isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(f"unknown kernel configuration {spec!r}; choose one of {sorted(_NAMED)} or pass a Kernels")
        base = _NAMED[spec]
    elif isinstance(spec, dict):
        base = DEFAULT.replace(**spec)
    else:
        raise TypeError(f"kernels must be None, a name, a dict or a jigcnn.ops.Kernels, got {spec!r}")
    return base.replace(**changes) if changes else base


@contextlib.contextmanager
def using(spec=None, /, **changes):
    """Within this block, functions traced use the kernels `resolve(spec, **changes)`."""
    token = _CURRENT.set(resolve(spec, **changes))
    try:
        yield current()
    finally:
        _CURRENT.reset(token)


# --- convolution ---

def banded_serves(kernel_shape, strides, dilation, kernels: Kernels | None = None) -> bool:
    """Whether a convolution of this HWIO kernel shape, strides and dilation runs on the banded/native kernels."""
    kernels = current() if kernels is None else kernels
    kh, kw, cin, _ = kernel_shape
    return (kernels.banded_conv and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)
            and kh * kw * cin <= banded.MAX_TAPS)


def winograd_serves(kernel_shape, strides, dilation, dtype, kernels: Kernels | None = None) -> bool:
    """Whether a convolution of this HWIO kernel shape, strides, dilation and dtype runs as Winograd F(4x4, 3x3).

    Stride 1, undilated 3x3 kernels too wide for the banded kernels (kh*kw*Cin > 160), float32
    or float64, on the CPU (where it was measured faster than XLA's convolution).
    """
    kernels = current() if kernels is None else kernels
    return (kernels.winograd and jax.default_backend() == "cpu"
            and not banded_serves(kernel_shape, strides, dilation, kernels)
            and kernel_shape[0] * kernel_shape[1] * kernel_shape[2] > banded.MAX_TAPS
            and winograd.serves(kernel_shape, strides, dilation, dtype))


def winograd_native_serves(x, kernel, strides, dilation, kernels: Kernels | None = None) -> bool:
    """Whether this convolution of `x` with the HWIO `kernel` runs on the fused native Winograd kernel.

    Stride 1, undilated, 3x3, float32 on the CPU, input and output channels multiples of 16, with the
    `native` and `winograd_native` switches on. It takes precedence over the banded kernels, which
    also serve 16 input channels: there it was measured 1.5-2.8x faster (forward and both gradients,
    batch 32-128, 8x8-32x32 maps, 16-64 output channels; docs/performance.md).
    """
    kernels = current() if kernels is None else kernels
    return (kernels.native and kernels.winograd_native and jax.default_backend() == "cpu"
            and winograd_native.serves(x, kernel, strides, dilation))


def conv(x, kernel, bias, *, strides, padding, dilation):
    """z = conv(x, kernel) + bias: NHWC `x`, HWIO `kernel`, explicit zero `padding` ((top, bottom), (left, right))."""
    k = current()
    strides, dilation = tuple(strides), tuple(dilation)
    padding = tuple(tuple(int(v) for v in p) for p in padding)
    nonempty = all(int(d) > 0 for d in x.shape)
    if nonempty and winograd_native_serves(x, kernel, strides, dilation, k):
        # 3x3, 16k channels, float32 on CPU: the fused native Winograd kernels (forward and both gradients)
        z = winograd_native.conv(x, kernel, padding)
    elif banded_serves(kernel.shape, strides, dilation, k):
        # few channels: one banded GEMM or native kernel, bias included, several times XLA's conv
        if any(p for pp in padding for p in pp):
            x = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
        return fast_conv.conv_valid(x, kernel, bias, native=k.native)
    elif nonempty and winograd_serves(kernel.shape, strides, dilation, jnp.result_type(x, kernel), k):
        # 3x3 with tens of channels on CPU: Winograd F(4x4, 3x3), its gradients as tile-domain GEMMs
        z = winograd.conv(x, kernel, padding)
    elif k.wide_conv and jax.default_backend() == "cpu" and nonempty:
        # tens of channels on CPU: XLA's convolution with a cheaper weight gradient
        z = wide_conv.conv(x, kernel, strides, padding, dilation)
    else:
        z = lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                     dimension_numbers=DIMENSION_NUMBERS)
    return z if bias is None else z + bias


def conv_weight_gradient(xp, delta, kernel_hw, strides, dilation, *, plain: Callable, plain_bias: Callable | None = None,
                         unpadded=None):
    """(dL/dw, dL/db) of a convolution of the padded input `xp` for the deltas `delta` (Eqs. 1, 2).

    A fast kernel where one serves, else ``plain(xp, delta, kernel_hw, strides, dilation)`` and
    ``plain_bias(delta)``; dL/db is None when `plain_bias` is None. ``unpadded=(x, pads)``: `xp` is
    `x` zero-padded by ``pads`` ((top, bottom), (left, right)), which a kernel may read instead,
    the padding implied (the padded copy is then not made).
    """
    k = current()
    kernel_shape = (kernel_hw[0], kernel_hw[1], xp.shape[-1], delta.shape[-1])
    kernel_like = jax.ShapeDtypeStruct(kernel_shape, jnp.result_type(xp, delta))
    if unpadded is not None:
        x, pads = unpadded
        pads = tuple(tuple(int(v) for v in p) for p in pads)
        if (len(pads) != 2 or any(len(p) != 2 or min(p) < 0 for p in pads)
                or x.shape[0] != xp.shape[0] or x.shape[-1] != xp.shape[-1]
                or (x.shape[1] + sum(pads[0]), x.shape[2] + sum(pads[1])) != tuple(xp.shape[1:3])):
            raise ValueError(f"unpadded: an input of shape {tuple(x.shape)} padded by {pads} is not the padded "
                             f"input of shape {tuple(xp.shape)}")
    if (tuple(xp.shape[1:3]) == (delta.shape[1] + kernel_shape[0] - 1, delta.shape[2] + kernel_shape[1] - 1)
            and winograd_native_serves(xp, kernel_like, strides, dilation, k)):
        dw = (winograd_native.weight_gradient(xp, delta, ((0, 0), (0, 0))) if unpadded is None
              else winograd_native.weight_gradient(x, delta, pads))
        return dw, None if plain_bias is None else plain_bias(delta)
    if banded_serves(kernel_shape, strides, dilation, k):
        if plain_bias is None:
            return direct.conv_weight_gradient(xp, delta, tuple(kernel_hw), block=None, with_bias=False,
                                               native=k.native), None
        return direct.conv_weight_gradient(xp, delta, tuple(kernel_hw), block=None, with_bias=True, native=k.native)
    if all(int(d) > 0 for d in delta.shape) and winograd_serves(kernel_shape, strides, dilation,
                                                                jnp.result_type(xp, delta), k):
        return winograd.weight_gradient(xp, delta), (None if plain_bias is None else plain_bias(delta))
    if k.wide_conv and jax.default_backend() == "cpu" and all(int(d) > 0 for d in (*xp.shape, *delta.shape)):
        # tens of channels on CPU (strided, dilated, 5x5, ...): the wide-conv layout (autodiff's weight gradient)
        return (wide_conv.weight_gradient(xp, delta, kernel_hw, strides, dilation),
                None if plain_bias is None else plain_bias(delta))
    return plain(xp, delta, kernel_hw, strides, dilation), (None if plain_bias is None else plain_bias(delta))


def conv_input_gradient(delta, kernel, padded_hw, strides, dilation, *, plain: Callable, interior=None):
    """dL/d(padded input) of a convolution (Eq. 1a's expansion): a fast kernel, else ``plain(delta, kernel, padded_hw, strides, dilation)``.

    ``interior=((top, left), (h, w))``: only that window of it (the gradient of the unpadded input of a
    zero-padded convolution), which a kernel may compute without the border.
    """
    k = current()
    if interior is not None:
        (top, left), (h, w) = interior
        if not (0 <= top and 0 <= left and h > 0 and w > 0 and top + h <= padded_hw[0] and left + w <= padded_hw[1]):
            raise ValueError(f"interior {interior} is not a window of the padded input {tuple(padded_hw)}")

    def crop(g):
        return g if interior is None else g[:, top:top + h, left:left + w]

    padded_input = jax.ShapeDtypeStruct((delta.shape[0], *padded_hw, kernel.shape[2]), jnp.result_type(delta, kernel))
    if (tuple(padded_hw) == (delta.shape[1] + kernel.shape[0] - 1, delta.shape[2] + kernel.shape[1] - 1)
            and winograd_native_serves(padded_input, kernel, strides, dilation, k)):
        if interior is None:
            return winograd_native.input_gradient(delta, kernel, ((0, 0), (0, 0)), tuple(padded_hw))
        pads = ((top, padded_hw[0] - top - h), (left, padded_hw[1] - left - w))
        return winograd_native.input_gradient(delta, kernel, pads, (h, w))
    if banded_serves(kernel.shape, strides, dilation, k):
        return crop(direct.conv_input_gradient(delta, kernel, tuple(padded_hw), block=None, native=k.native))
    if all(int(d) > 0 for d in delta.shape) and winograd_serves(kernel.shape, strides, dilation,
                                                                jnp.result_type(delta, kernel), k):
        return crop(winograd.input_gradient(delta, kernel, tuple(padded_hw)))
    return crop(plain(delta, kernel, padded_hw, strides, dilation))


# --- dense ---

def _few_outputs(k: Kernels, features: int) -> bool:
    return k.dense and features <= fast_dense.MAX_FEATURES


def dense(x, kernel):
    """x @ kernel for a (N, D) batch; with few outputs its kernel gradient is the transposed product."""
    if x.ndim == 2 and _few_outputs(current(), kernel.shape[-1]):
        return fast_dense.matmul(x, kernel)
    return jnp.dot(x, kernel)


def dense_weight_gradient(x, delta, *, plain: Callable):
    """dL/dW of a dense layer (Eq. 1): the transposed product for few outputs, else ``plain(x, delta)``."""
    if _few_outputs(current(), delta.shape[-1]):
        return fast_dense.weight_gradient(x, delta)
    return plain(x, delta)


# --- pooling ---

def max_pool(x, window, strides, out_hw, *, plain: Callable):
    """Window maxima (N, Ho, Wo, C), gradient to each window's first maximum: selects for tiling windows, else ``plain(x)``."""
    if current().pool and tuple(window) == tuple(strides):
        return fast_pool.max_pool(x, tuple(window), tuple(out_hw))
    return plain(x)


__all__ = ["DEFAULT", "REFERENCE", "Kernels", "banded_serves", "winograd_native_serves", "winograd_serves", "conv", "conv_input_gradient", "conv_weight_gradient",
           "current", "dense", "dense_weight_gradient", "max_pool", "resolve", "using"]
