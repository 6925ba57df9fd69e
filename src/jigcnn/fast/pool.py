"""Max pooling over windows that tile the map, as a chain of selects over strided views.

`jigcnn.layers.pool.window_stack` lays each window out along a new last axis (a transpose that
moves the channel axis, the fastest-varying one in NHWC, in front of the window axes) and the
layer picks the maximum with a gather at the arg-max. XLA fuses that gather into whatever
consumes the pooled map; when the consumer is the window copy of the next banded-GEMM
convolution (jigcnn.fast.conv), the gather is recomputed for every window slot (LeNet-5's
second conv measured ~4x slower than on a materialised input). For windows that tile the map
(stride = window), the kh*kw strided views ``x[:, a::kh, b::kw]`` hold each window's slots; a
running maximum over them, replaced only by a strictly greater value (or the first NaN),
keeps the first maximum in row-major window order, exactly `jnp.argmax`'s choice. Written as
``where(takes, v, best)`` with the comparison outside autodiff, autodiff routes each window's
gradient to that first maximum, as the gather did. All elementwise: one loop, C stays minor.
For windows that tile the map only (`jigcnn.ops` decides).

The hand-written backward pass keeps its arg-max and scatter (jigcnn.backprop.other): measured
faster there than re-deriving the routing from the strided views.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

def slots(x, window, out_hw):
    """The kh*kw strided views x[:, a::kh, b::kw] (row-major window order), each (N, Ho, Wo, C)."""
    (kh, kw), (ho, wo) = window, out_hw
    return [x[:, a: a + kh * (ho - 1) + 1: kh, b: b + kw * (wo - 1) + 1: kw]
            for a in range(kh) for b in range(kw)]


def _takes(best, v):
    """Whether slot value `v` replaces the running first maximum `best` (strictly greater, or the first NaN)."""
    return (v > best) | (jnp.isnan(v) & ~jnp.isnan(best))


def max_pool(x, window, out_hw):
    """Window maxima (N, Ho, Wo, C); autodiff routes each window's gradient to its first maximum."""
    vs = slots(x, window, out_hw)
    best = vs[0]
    for v in vs[1:]:
        best = jnp.where(_takes(jax.lax.stop_gradient(best), jax.lax.stop_gradient(v)), v, best)
    return best


__all__ = ["slots", "max_pool"]
