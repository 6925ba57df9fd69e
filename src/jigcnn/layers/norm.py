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
    """

    momentum: float = 0.99
    epsilon: float = 1e-3
    kind: ClassVar[str] = "batchnorm"

    def __post_init__(self):
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

    def apply(self, params, state, x, *, train=False, key=None):
        """Normalise with batch (train) or running (eval) statistics, then scale and shift."""
        if train:
            axes = self.reduce_axes(x)
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            m = self.momentum
            state = {"mean": m * state["mean"] + (1 - m) * mean, "var": m * state["var"] + (1 - m) * var}
        else:
            mean, var = state["mean"], state["var"]
        xhat = (x - mean) / jnp.sqrt(var + self.epsilon)
        return xhat * params["scale"] + params["offset"], state
