"""Threefry-2x32 on the host: jax.random's default generator in NumPy, to draw initial weights without compiling.

`Sequential.init` draws here when it can: a concrete threefry2x32 key, JAX's partitionable bit
layout (its default), float32 weights from uniform initialisers, at most :data:`MAX_ELEMENTS`
values. The results are those of ``jax.random.split`` / ``jax.random.uniform`` bit for bit (tested
with XLA's default optimisation), with nothing traced, lowered or compiled: the jitted draw cost
0.2-0.3 s of a LeNet-5 process's start-up, mostly lowering the generator's loop once per draw and
loading its ~115 kernels from the compilation cache (docs/performance.md).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import numpy as np

# NumPy draws ~10 M values/s here; the jitted draw costs 0.1-0.3 s from a warm compilation cache
# (more with more layers), 0.4-3 s cold. Above this many values the host stops and the jit draws.
MAX_ELEMENTS = 1 << 21


class TooLarge(Exception):
    """More values than :data:`MAX_ELEMENTS` asked of the host (the caller draws them compiled instead)."""

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


class HostKey(NamedTuple):
    """A threefry2x32 PRNG key on the host: its two uint32 words."""

    words: np.ndarray


def host_key(key) -> HostKey | None:
    """`key` as a HostKey when it is a concrete threefry2x32 key and JAX draws partitionable bits, else None."""
    if isinstance(key, HostKey):
        return key
    if isinstance(key, jax.core.Tracer) or not jax.config.jax_threefry_partitionable:
        return None
    if not isinstance(key, (jax.Array, np.ndarray)):
        return None
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != () or str(jax.random.key_impl(key)) != "threefry2x32":
            return None
        words = np.asarray(jax.random.key_data(key))
    elif key.dtype == np.uint32 and key.shape == (2,) and jax.config.jax_default_prng_impl == "threefry2x32":
        words = np.asarray(key)  # a raw key from jax.random.PRNGKey
    else:
        return None
    return HostKey(words.astype(np.uint32, copy=True))


def _rotate_left(x: np.ndarray, d: int) -> np.ndarray:
    return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def threefry2x32(words: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Threefry-2x32 hash (20 rounds) of the counter pairs (x0, x1) under the key `words`, as JAX computes it."""
    k0, k1 = np.uint32(words[0]), np.uint32(words[1])
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    a = x0 + ks[0]
    b = x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            a += b
            b = _rotate_left(b, r)
            b ^= a
        a += ks[(i + 1) % 3]
        b += ks[(i + 2) % 3]
        b += np.uint32(i + 1)
    return a, b


def _counter_bits(key: HostKey, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Threefry of the counters 0..n-1 (high words 0): JAX's `iota_2x32_shape` layout."""
    if n >= 1 << 32:
        raise ValueError(f"host_random: {n} values is more than 2**32 counters")
    return threefry2x32(key.words, np.zeros(n, np.uint32), np.arange(n, dtype=np.uint32))


def split(key: HostKey, num: int = 2) -> list[HostKey]:
    """`num` new keys, as ``jax.random.split(key, num)``."""
    a, b = _counter_bits(key, int(num))
    return [HostKey(np.array([x, y], np.uint32)) for x, y in zip(a, b)]


def bits(key: HostKey, shape: Sequence[int]) -> np.ndarray:
    """uint32 random bits of `shape`, as ``jax.random.bits(key, shape)``."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64))
    if n > MAX_ELEMENTS:
        raise TooLarge(f"{n} values")
    a, b = _counter_bits(key, n)
    a ^= b
    return a.reshape(shape)


def uniform(key: HostKey, shape: Sequence[int], dtype, minval: float, maxval: float) -> np.ndarray:
    """float32 values in [minval, maxval), as ``jax.random.uniform(key, shape, dtype, minval, maxval)``.

    JAX maps 23 random bits into [1, 2), subtracts 1 and scales, ``u * (maxval - minval) + minval``,
    which XLA's default optimisation contracts into one fused multiply-add (rounded once). The
    product of two float32 values is exact in float64, so the float64 sum rounded to float32
    gives the same values. (XLA at ``--xla_backend_optimization_level=0`` rounds twice and can
    differ from this in the last bit.)
    """
    if np.dtype(dtype) != np.float32:
        raise TypeError(f"host_random.uniform draws float32 only, got {np.dtype(dtype)}")
    mantissa = bits(key, shape).ravel()
    mantissa >>= np.uint32(32 - 23)
    mantissa |= np.array(1.0, np.float32).view(np.uint32)
    unit = mantissa.view(np.float32) - np.float32(1.0)
    lo, hi = np.float32(minval), np.float32(maxval)
    scaled = (unit.astype(np.float64) * np.float64(hi - lo) + np.float64(lo)).astype(np.float32)
    return np.maximum(lo, scaled).reshape(tuple(int(s) for s in shape))


def split_key(key, num: int = 2):
    """`num` keys from a JAX key (``jax.random.split``) or from a HostKey (`split`)."""
    return split(key, num) if isinstance(key, HostKey) else jax.random.split(key, num)


def full(key, shape: Sequence[int], value, dtype):
    """An array filled with `value`: NumPy's when `key` is a HostKey, JAX's otherwise."""
    if isinstance(key, HostKey):
        return np.full(tuple(shape), value, dtype)
    import jax.numpy as jnp

    return jnp.full(tuple(shape), value, dtype)


__all__ = ["HostKey", "MAX_ELEMENTS", "TooLarge", "bits", "full", "host_key", "split", "split_key", "threefry2x32",
           "uniform"]
