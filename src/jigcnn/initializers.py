"""Weight initialisers: the paper's Eq. 3 uniform ranges and the usual glorot/he/lecun rules."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from jigcnn import prng

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
        return prng.uniform(key, shape, dtype, -limit, limit)

    def bias(self, key, shape, dtype=jnp.float32):
        """Eq. 3 bias: uniform in +-B."""
        if self.B == 0:
            return jnp.zeros(shape, dtype)
        return prng.uniform(key, shape, dtype, -self.B, self.B)


@dataclasses.dataclass(frozen=True)
class VarianceScaling(Initializer):
    """Glorot / He / LeCun initialisers, zero biases.

    The values of ``jax.nn.initializers.variance_scaling(scale, mode, distribution)`` (in_axis -2,
    out_axis -1), bit for bit, with the draw made flat (`jigcnn.prng`: cheaper to compile).
    """

    scale: float = 1.0
    mode: str = "fan_avg"
    distribution: str = "uniform"

    def __post_init__(self):
        if self.mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling: mode must be fan_in, fan_out or fan_avg, got {self.mode!r}")
        if self.distribution not in ("uniform", "normal", "truncated_normal"):
            raise ValueError("VarianceScaling: distribution must be uniform, normal or truncated_normal, "
                             f"got {self.distribution!r}")

    def kernel(self, key, shape, extent, dtype=jnp.float32):
        """Variance-scaled kernel; fans come from the shape (receptive field x channels)."""
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2:
            raise ValueError(f"VarianceScaling: a kernel needs at least 2 axes (.., in, out), got shape {shape}")
        receptive = math.prod(shape) / shape[-2] / shape[-1]
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        denominator = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = jnp.array(self.scale / denominator, dtype=dtype)
        if self.distribution == "truncated_normal":
            # the standard deviation of a standard normal truncated to (-2, 2)
            stddev = jnp.sqrt(variance) / jnp.array(.87962566103423978, dtype)
            return prng.truncated_normal(key, -2, 2, shape, dtype) * stddev
        if self.distribution == "normal":
            return prng.normal(key, shape, dtype) * jnp.sqrt(variance)
        return prng.uniform(key, shape, dtype, -1) * jnp.sqrt(3 * variance)


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
