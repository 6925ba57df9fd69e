"""Max and average pooling over (possibly overlapping) windows, "valid" placement."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax.numpy as jnp

from jigcnn import ops
from jigcnn.layers.base import Layer, check_batch, check_map_shape, pair


def window_stack(x, window, strides, out_hw):
    """The pooling windows of an NHWC batch as a (N, Ho, Wo, C, kh*kw) array (row-major window order)."""
    (kh, kw), (sy, sx), (ho, wo) = window, strides, out_hw
    if (sy, sx) == (kh, kw):
        n, _, _, c = x.shape
        blocks = x[:, : ho * kh, : wo * kw, :].reshape(n, ho, kh, wo, kw, c)
        return blocks.transpose(0, 1, 3, 5, 2, 4).reshape(n, ho, wo, c, kh * kw)
    views = [x[:, a: a + sy * (ho - 1) + 1: sy, b: b + sx * (wo - 1) + 1: sx, :]
             for a in range(kh) for b in range(kw)]
    return jnp.stack(views, axis=-1)


@dataclasses.dataclass(frozen=True)
class _Pool(Layer):
    """Shared shape logic of the pooling layers; strides default to the window."""

    window: Any = 2
    strides: Any = None

    def __post_init__(self):
        pair(self.window, "window", self)
        if self.strides is not None:
            pair(self.strides, "strides", self)

    def geometry(self, in_shape):
        """(window, strides, (Ho, Wo, C)) for an (H, W, C) input."""
        h, w, c = check_map_shape(self, in_shape)
        k = pair(self.window, "window", self)
        s = k if self.strides is None else pair(self.strides, "strides", self)
        if h < k[0] or w < k[1]:
            raise self.error(f"window {k[0]}x{k[1]} is larger than the input {h}x{w}")
        return k, s, ((h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1, c)

    def output_shape(self, in_shape):
        """(Ho, Wo, C)."""
        return self.geometry(in_shape)[-1]

    def windows(self, x):
        """The input's pooling windows, shape (N, Ho, Wo, C, kh*kw)."""
        check_batch(self, x, 4)
        k, s, out = self.geometry(x.shape[1:])
        return window_stack(x, k, s, out[:2])


@dataclasses.dataclass(frozen=True)
class MaxPool(_Pool):
    """Max pooling; the gradient goes to the first arg-max of each window."""

    kind: ClassVar[str] = "maxpool"

    def argmax(self, x):
        """Index (0..kh*kw-1, row-major) of each window's first maximum."""
        return jnp.argmax(self.windows(x), axis=-1)

    def apply(self, params, state, x, *, train=False, key=None):
        """Window maxima; written as a gather at the arg-max so autodiff routes like the hand-written rule.

        Windows that tile the map (stride = window) may take a fast form through `jigcnn.ops`
        (the same values and the same routing to the first maximum, as selects without a gather).
        """
        check_batch(self, x, 4)
        k, s, out = self.geometry(x.shape[1:])
        return ops.max_pool(x, k, s, out[:2], plain=self.gather_max), state

    def gather_max(self, x):
        """Window maxima as a gather at each window's first arg-max (the plain form)."""
        win = self.windows(x)
        idx = jnp.argmax(win, axis=-1)
        return jnp.take_along_axis(win, idx[..., None], axis=-1)[..., 0]


@dataclasses.dataclass(frozen=True)
class AvgPool(_Pool):
    """Average pooling over each window."""

    kind: ClassVar[str] = "avgpool"

    def apply(self, params, state, x, *, train=False, key=None):
        """Window means."""
        return jnp.mean(self.windows(x), axis=-1), state
