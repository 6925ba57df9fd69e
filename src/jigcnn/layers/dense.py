"""Fully connected layer, optionally fused with an activation."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import numpy as np

from jigcnn.activations import activation_param, check_activation, get_activation
from jigcnn.initializers import get_initializer
from jigcnn.layers.base import Layer, check_batch
from jigcnn.layers.conv import BIAS_MODES


@dataclasses.dataclass(frozen=True)
class Dense(Layer):
    """y = f(x @ kernel + bias) on a (batch, D) input; bias "learn", "frozen" or "none".

    With the paper's Eq. 3 initialiser the normaliser v*h is D (a filter covering the whole input).
    """

    features: int = 1
    bias: Any = "learn"
    activation: str = "identity"
    activation_param: float | None = None
    initializer: Any = "glorot_uniform"
    kind: ClassVar[str] = "dense"

    def __post_init__(self):
        if not isinstance(self.features, (int, np.integer)) or isinstance(self.features, bool) or self.features < 1:
            raise self.error(f"features must be a positive int, got {self.features!r}")
        if self.bias_mode not in BIAS_MODES:
            raise self.error(f"bias must be one of {BIAS_MODES} (or True/False), got {self.bias!r}")
        check_activation(self.activation, self.label())
        activation_param(self.activation, self.activation_param, self.label())
        get_initializer(self.initializer, self.label())

    @property
    def bias_mode(self) -> str:
        """The bias mode as a string ("learn", "frozen" or "none")."""
        if self.bias is True:
            return "learn"
        if self.bias is False or self.bias is None:
            return "none"
        return self.bias

    def output_shape(self, in_shape):
        """(features,); the input must be a vector per sample (use Flatten first)."""
        if len(in_shape) != 1:
            raise self.error(f"expects a vector per sample, got shape {tuple(in_shape)}; put a Flatten() before it")
        return (int(self.features),)

    def init(self, key, in_shape, dtype=np.float32):
        """Draw the (D, features) kernel and the bias."""
        out = self.output_shape(in_shape)
        initializer = get_initializer(self.initializer, self.label())
        kkey, bkey = jax.random.split(key)
        params = {"kernel": initializer.kernel(kkey, (in_shape[0], self.features), in_shape[0], dtype)}
        state = {}
        if self.bias_mode != "none":
            bias = initializer.bias(bkey, (self.features,), dtype)
            (params if self.bias_mode == "learn" else state)["bias"] = bias
        return out, params, state

    def preactivation(self, params, state, x):
        """z = x @ kernel + bias."""
        check_batch(self, x, 2)
        z = x @ params["kernel"]
        bias = params.get("bias", state.get("bias"))
        return z if bias is None else z + bias

    def apply(self, params, state, x, *, train=False, key=None):
        """y = f(x @ kernel + bias)."""
        z = self.preactivation(params, state, x)
        return get_activation(self.activation, self.activation_param)(z), state
