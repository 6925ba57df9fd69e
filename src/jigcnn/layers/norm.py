"""Batch normalisation over the channel (last) axis."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from jigcnn.layers.base import Layer


@dataclasses.dataclass(frozen=True)
class BatchNorm(Layer):
    """Batch norm: batch statistics when training, running statistics when evaluating.

    Learns `scale` and `offset`; the running `mean` and `var` live in the non-trainable
    state and move as running = momentum * running + (1 - momentum) * batch (Keras defaults).
    `fast_variance=True` takes the batch variance as E[x^2] - E[x]^2 (one pass over the
    data, as Flax's default; loses precision when |mean| >> std) instead of E[(x - E[x])^2].
    """

    momentum: float = 0.99
    epsilon: float = 1e-3
    fast_variance: bool = False
    kind: ClassVar[str] = "batchnorm"

    def __post_init__(self):
        if not isinstance(self.fast_variance, bool):
            raise self.error(f"fast_variance must be a bool, got {self.fast_variance!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise self.error(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not self.epsilon > 0:
            raise self.error(f"epsilon must be > 0, got {self.epsilon!r}")

    def output_shape(self, in_shape):
        """Unchanged."""
        if len(in_shape) < 1:
            raise self.error("needs at least a channel axis")
        return tuple(in_shape)

    def init(self, key, in_shape, dtype=np.float32):
        """scale = 1, offset = 0; running mean 0 and variance 1."""
        c = self.output_shape(in_shape)[-1]
        params = {"scale": jnp.ones((c,), dtype), "offset": jnp.zeros((c,), dtype)}
        state = {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)}
        return tuple(in_shape), params, state

    def reduce_axes(self, x) -> tuple[int, ...]:
        """Every axis but the channel axis."""
        return tuple(range(x.ndim - 1))

    def batch_statistics(self, x):
        """(mean, variance) of `x` over every axis but the channel axis."""
        axes = self.reduce_axes(x)
        mean = jnp.mean(x, axis=axes)
        if self.fast_variance:
            return mean, jnp.maximum(jnp.mean(jnp.square(x), axis=axes) - jnp.square(mean), 0.0)
        return mean, jnp.mean(jnp.square(x - mean), axis=axes)

    def apply(self, params, state, x, *, train=False, key=None):
        """Normalise with batch (train) or running (eval) statistics, then scale and shift."""
        if train:
            mean, var = self.batch_statistics(x)
            m = self.momentum
            state = {"mean": m * state["mean"] + (1 - m) * mean, "var": m * state["var"] + (1 - m) * var}
        else:
            mean, var = state["mean"], state["var"]
        if self.fast_variance:  # one fused multiply-add per element
            inv = params["scale"] / jnp.sqrt(var + self.epsilon)
            return x * inv + (params["offset"] - mean * inv), state
        xhat = (x - mean) / jnp.sqrt(var + self.epsilon)
        return xhat * params["scale"] + params["offset"], state
