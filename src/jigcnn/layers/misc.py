"""Parameter-free or tiny layers: flatten, dropout, standalone activations, PReLU."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jigcnn import prng
from jigcnn.activations import activation_param, check_activation, get_activation
from jigcnn.layers.base import Layer


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
    """Flatten each sample to a vector (row-major over H, W, C)."""

    kind: ClassVar[str] = "flatten"

    def output_shape(self, in_shape):
        """(prod(in_shape),)."""
        return (int(np.prod(in_shape)),)

    def apply(self, params, state, x, *, train=False, key=None):
        """Reshape to (batch, -1)."""
        return x.reshape(x.shape[0], -1), state


_BATCH_SHARD: contextvars.ContextVar = contextvars.ContextVar("jigcnn_batch_shard", default=None)


@contextlib.contextmanager
def batch_shard(axis_name: str, count: int):
    """While tracing a ``shard_map`` body over ``axis_name`` (``count`` equal batch shards): dropout draws the global batch's mask and keeps its shard's rows."""
    token = _BATCH_SHARD.set((axis_name, int(count)))
    try:
        yield
    finally:
        _BATCH_SHARD.reset(token)


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
    """Dropout; `rate` is the probability of *dropping* a unit.

    In training, kept units are scaled by 1/(1 - rate) ("inverted" dropout), so inference
    (train=False) is the identity. Training with rate > 0 needs a `key`.
    """

    rate: float = 0.5
    kind: ClassVar[str] = "dropout"
    needs_key: ClassVar[bool] = True

    def __post_init__(self):
        if not (isinstance(self.rate, (int, float)) and 0.0 <= self.rate < 1.0):
            raise self.error(f"rate (the probability of dropping) must be in [0, 1), got {self.rate!r}")

    def output_shape(self, in_shape):
        """Unchanged."""
        return tuple(in_shape)

    def keep_mask(self, key, shape):
        """The boolean keep-mask for a batch of `shape` (True = kept)."""
        if key is None:
            raise self.error("train=True with rate > 0 needs a PRNG key: apply(..., train=True, key=key)")
        shard = _BATCH_SHARD.get()
        if shard is None:
            return prng.bernoulli(key, 1.0 - self.rate, shape)
        # one shard of a data-parallel batch (see batch_shard): the whole batch's mask, this shard's rows,
        # so the masks are those of one device running the whole batch
        axis, count = shard
        full = prng.bernoulli(key, 1.0 - self.rate, (shape[0] * count, *shape[1:]))
        return jax.lax.dynamic_slice_in_dim(full, jax.lax.axis_index(axis) * shape[0], shape[0], axis=0)

    def apply(self, params, state, x, *, train=False, key=None):
        """Drop units with probability `rate` when training; identity otherwise."""
        if not train or self.rate == 0.0:
            return x, state
        keep = self.keep_mask(key, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), 0.0).astype(x.dtype), state


@dataclasses.dataclass(frozen=True)
class Activation(Layer):
    """A standalone activation layer (e.g. after batch norm); `param` is leaky ReLU's slope or ELU's alpha."""

    fn: str = "identity"
    param: float | None = None
    kind: ClassVar[str] = "act"

    def __post_init__(self):
        check_activation(self.fn, self.label())
        activation_param(self.fn, self.param, self.label())

    def output_shape(self, in_shape):
        """Unchanged."""
        return tuple(in_shape)

    def apply(self, params, state, x, *, train=False, key=None):
        """f(x)."""
        return get_activation(self.fn, self.param)(x), state


@dataclasses.dataclass(frozen=True)
class PReLU(Layer):
    """Parametric ReLU with a learnable slope per channel (last axis), initialised to `init_slope`."""

    init_slope: float = 0.25
    kind: ClassVar[str] = "prelu"

    def output_shape(self, in_shape):
        """Unchanged."""
        return tuple(in_shape)

    def init(self, key, in_shape, dtype=np.float32):
        """One slope per channel."""
        return tuple(in_shape), {"alpha": jnp.full((in_shape[-1],), self.init_slope, dtype)}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        """x for x > 0, alpha * x otherwise."""
        return jnp.where(x > 0, x, params["alpha"] * x), state
