"""Fully connected layer, optionally fused with an activation."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from jigcnn import ops
from jigcnn.layers.base import Neurons, check_batch


@dataclasses.dataclass(frozen=True)
class Dense(Neurons):
    """y = f(x @ kernel + bias) on a (batch, D) input; bias "learn", "frozen" or "none".

    With the paper's Eq. 3 initialiser the normaliser v*h is D (a filter covering the whole input).
    """

    kind: ClassVar[str] = "dense"

    def __post_init__(self):
        self.check_neurons()

    def output_shape(self, in_shape):
        """(features,); the input must be a vector per sample (use Flatten first)."""
        if len(in_shape) != 1:
            raise self.error(f"expects a vector per sample, got shape {tuple(in_shape)}; put a Flatten() before it")
        return (int(self.features),)

    def init(self, key, in_shape, dtype=np.float32):
        """Draw the (D, features) kernel and the bias."""
        out = self.output_shape(in_shape)
        params, state = self.draw(key, (in_shape[0], self.features), in_shape[0], dtype)
        return out, params, state

    def preactivation(self, params, state, x):
        """z = x @ kernel + bias."""
        check_batch(self, x, 2)
        z = ops.dense(x, params["kernel"])
        bias = params.get("bias", state.get("bias"))
        return z if bias is None else z + bias

    def apply(self, params, state, x, *, train=False, key=None):
        """y = f(x @ kernel + bias)."""
        z = self.preactivation(params, state, x)
        return self.activate(z), state
