"""The layer protocol: shape inference without data, a pure apply, parameters keyed by name."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import numpy as np

Shape = tuple[int, ...]
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Layer:
    """A layer spec: `init(key, in_shape) -> (out_shape, params, state)` and a pure `apply`.

    Shapes are per sample (no batch axis): (H, W, C) for maps, (D,) for vectors.
    `params` holds what learns; `state` holds what does not (batch-norm statistics,
    frozen biases). Both are flat dicts of arrays; the model keys them by layer name.
    A layer whose `apply` draws random numbers (dropout) sets ``needs_key = True``:
    `Sequential.apply` passes a key to those layers only.
    """

    name: str | None = dataclasses.field(default=None, kw_only=True)
    kind: ClassVar[str] = "layer"
    needs_key: ClassVar[bool] = False

    def output_shape(self, in_shape: Shape) -> Shape:
        """The per-sample output shape for a per-sample input shape (no data needed)."""
        raise NotImplementedError

    def init(self, key, in_shape: Shape, dtype=np.float32) -> tuple[Shape, Params, Params]:
        """Infer the output shape and draw the parameters and state; the default has none."""
        return self.output_shape(in_shape), {}, {}

    def apply(self, params: Params, state: Params, x, *, train: bool = False, key=None):
        """Return (output, new_state) for a batch `x`."""
        raise NotImplementedError

    def trainable_count(self, params: Params) -> int:
        """How many parameters learn (a connection table counts only its connected weights)."""
        return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))

    def label(self) -> str:
        """The layer's name, or its kind while it is still unnamed (for error messages)."""
        return self.name or self.kind

    def error(self, message: str) -> ValueError:
        """A ValueError prefixed with the layer's name."""
        return ValueError(f"{self.label()}: {message}")


def pair(value, what: str, layer: Layer, minimum: int = 1) -> tuple[int, int]:
    """Normalise an int or a pair of ints to (vertical, horizontal), checking the minimum."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        out = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ):
        out = (int(value[0]), int(value[1]))
    else:
        raise layer.error(f"{what} must be an int or a pair of ints, got {value!r}")
    if min(out) < minimum:
        raise layer.error(f"{what} must be >= {minimum}, got {value!r}")
    return out


def check_map_shape(layer: Layer, in_shape: Shape) -> tuple[int, int, int]:
    """Require a per-sample (H, W, C) shape and return it."""
    if len(in_shape) != 3:
        raise layer.error(f"expects per-sample input (H, W, C), got shape {tuple(in_shape)}")
    return tuple(int(s) for s in in_shape)


def check_batch(layer: Layer, x, ndim: int) -> None:
    """Require a batched input of rank `ndim` (batch axis first)."""
    if x.ndim != ndim:
        raise layer.error(f"expects a batch of rank {ndim} (batch axis first), got shape {x.shape}")


BIAS_MODES = ("learn", "frozen", "none")


@dataclasses.dataclass(frozen=True)
class Neurons(Layer):
    """Shared part of the layers of neurons (Conv2D, Dense): `features` outputs, a bias, an activation.

    bias: "learn", "frozen" (kept in the non-trainable state, as in the paper's runs) or "none"
    (True/False mean "learn"/"none"). `initializer`: an Initializer or a name ("ignet",
    "glorot_uniform", ...); `activation_param` is leaky ReLU's slope or ELU's alpha.
    """

    features: int = 1
    bias: Any = dataclasses.field(default="learn", kw_only=True)
    activation: str = dataclasses.field(default="identity", kw_only=True)
    activation_param: float | None = dataclasses.field(default=None, kw_only=True)
    initializer: Any = dataclasses.field(default="glorot_uniform", kw_only=True)

    def check_neurons(self) -> None:
        """Validate the shared arguments, naming the layer."""
        from jigcnn.activations import activation_param, check_activation
        from jigcnn.initializers import get_initializer

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

    def draw(self, key, kernel_shape, extent: int, dtype, mask=None) -> tuple[Params, Params]:
        """(params, state): the kernel (zero where `mask` is False) and the bias where its mode puts it."""
        from jigcnn.initializers import get_initializer

        initializer = get_initializer(self.initializer, self.label())
        kkey, bkey = jax.random.split(key)
        kernel = initializer.kernel(kkey, kernel_shape, extent, dtype)
        if mask is not None:
            kernel = kernel * np.asarray(mask, dtype)
        params, state = {"kernel": kernel}, {}
        if self.bias_mode != "none":
            (params if self.bias_mode == "learn" else state)["bias"] = initializer.bias(bkey, (self.features,), dtype)
        return params, state

    def activate(self, z):
        """f(z) for the layer's activation."""
        from jigcnn.activations import get_activation

        return get_activation(self.activation, self.activation_param)(z)
