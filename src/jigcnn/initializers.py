"""Weight initialisers: the paper's Eq. 3 uniform ranges and the usual glorot/he/lecun rules."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

@dataclasses.dataclass(frozen=True)
class Initializer:
    """Base class: draws a layer's kernel and bias with ``jax.random`` from a JAX key."""

    def kernel(self, key, shape, extent: int, dtype=jnp.float32):
        """Draw a kernel of `shape`; `extent` is the filter's v*h (Eq. 3's normaliser)."""
        raise NotImplementedError

    def bias(self, key, shape, dtype=jnp.float32):
        """Draw a bias of `shape` (zeros unless the rule says otherwise)."""
        return jnp.zeros(shape, dtype)


@dataclasses.dataclass(frozen=True)
class IgNetUniform(Initializer):
    """Paper Eq. 3: w ~ U[-W/(v h), +W/(v h)], b ~ U[-B, +B], with amplitudes W, B per layer.

    v, h are the filter's vertical and horizontal extents. For a dense layer (a filter that
    covers its whole 1-D input) v*h is the input length.
    """

    W: float = 1.0
    B: float = 0.0

    def __post_init__(self):
        if not (math.isfinite(self.W) and self.W > 0):
            raise ValueError(f"IgNetUniform: weight amplitude W must be > 0, got {self.W!r}")
        if not (math.isfinite(self.B) and self.B >= 0):
            raise ValueError(f"IgNetUniform: bias amplitude B must be >= 0, got {self.B!r}")

    def kernel(self, key, shape, extent, dtype=jnp.float32):
        """Eq. 3 kernel: uniform in +-W / (v h)."""
        limit = self.W / extent
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    def bias(self, key, shape, dtype=jnp.float32):
        """Eq. 3 bias: uniform in +-B."""
        if self.B == 0:
            return jnp.zeros(shape, dtype)
        return jax.random.uniform(key, shape, dtype, -self.B, self.B)


@dataclasses.dataclass(frozen=True)
class VarianceScaling(Initializer):
    """Glorot / He / LeCun initialisers (jax.nn.initializers.variance_scaling), zero biases."""

    scale: float = 1.0
    mode: str = "fan_avg"
    distribution: str = "uniform"

    def kernel(self, key, shape, extent, dtype=jnp.float32):
        """Variance-scaled kernel; fans come from the shape (receptive field x channels)."""
        init = jax.nn.initializers.variance_scaling(self.scale, self.mode, self.distribution)
        return init(key, shape, dtype)


def ignet(W: float = 1.0, B: float = 0.0) -> IgNetUniform:
    """The paper's Eq. 3 initialiser with amplitudes W (weights) and B (biases)."""
    return IgNetUniform(float(W), float(B))


_NAMED = {
    "glorot_uniform": VarianceScaling(1.0, "fan_avg", "uniform"),
    "glorot_normal": VarianceScaling(1.0, "fan_avg", "truncated_normal"),
    "he_uniform": VarianceScaling(2.0, "fan_in", "uniform"),
    "he_normal": VarianceScaling(2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": VarianceScaling(1.0, "fan_in", "uniform"),
    "lecun_normal": VarianceScaling(1.0, "fan_in", "truncated_normal"),
    "ignet": IgNetUniform(),
}
INITIALIZER_NAMES = tuple(sorted(_NAMED))


def get_initializer(spec, where: str = "initializer") -> Initializer:
    """An Initializer from an instance or a name such as "glorot_uniform" or "ignet"."""
    if isinstance(spec, Initializer):
        return spec
    if isinstance(spec, str) and spec in _NAMED:
        return _NAMED[spec]
    raise ValueError(f"{where}: unknown initializer {spec!r}; choose one of {', '.join(INITIALIZER_NAMES)} or pass an Initializer")
