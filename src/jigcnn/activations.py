"""Activation functions by name (identity, sigmoids, ReLU family, softmax)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def identity(z: Array) -> Array:
    """The identity: IgNet's activation in every layer (paper Sec. 5.5.2)."""
    return z


def bipolar_sigmoid(z: Array) -> Array:
    """Bipolar sigmoid 2/(1+e^-z) - 1, which equals tanh(z/2)."""
    return 2.0 * jax.nn.sigmoid(z) - 1.0


def leaky_relu(z: Array, negative_slope: float = 0.01) -> Array:
    """Leaky ReLU: z for z > 0, negative_slope * z otherwise."""
    return jnp.where(z > 0, z, negative_slope * z)


def elu(z: Array, alpha: float = 1.0) -> Array:
    """ELU: z for z > 0, alpha * (e^z - 1) otherwise."""
    # where(), not minimum(): at z = 0 autodiff then takes the left branch's derivative (alpha)
    return jnp.where(z > 0, z, alpha * jnp.expm1(jnp.where(z > 0, 0.0, z)))


def relu(z: Array) -> Array:
    """ReLU: max(z, 0), with derivative 0 at z = 0 (jax.nn.relu's convention)."""
    return jax.nn.relu(z)


def softmax(z: Array) -> Array:
    """Softmax over the last axis."""
    e = jnp.exp(z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def log_softmax(z: Array) -> Array:
    """Log-softmax over the last axis."""
    shifted = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))


# name -> (function, name of its optional scalar parameter, that parameter's default)
_REGISTRY: dict[str, tuple[Callable, str | None, float | None]] = {
    "identity": (identity, None, None),
    "linear": (identity, None, None),
    "sigmoid": (jax.nn.sigmoid, None, None),
    "bipolar_sigmoid": (bipolar_sigmoid, None, None),
    "tanh": (jnp.tanh, None, None),
    "relu": (relu, None, None),
    "leaky_relu": (leaky_relu, "negative_slope", 0.01),
    "elu": (elu, "alpha", 1.0),
    "softmax": (softmax, None, None),
    "log_softmax": (log_softmax, None, None),
}

ACTIVATION_NAMES = tuple(sorted(_REGISTRY))
ELEMENTWISE = frozenset(n for n in _REGISTRY if n not in ("softmax", "log_softmax"))


def canonical_name(name: str) -> str:
    """The registry name behind an alias ("linear" -> "identity")."""
    return "identity" if name == "linear" else name


def check_activation(name: str, where: str) -> None:
    """Raise a ValueError naming `where` if `name` is not a known activation."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"{where}: unknown activation {name!r}; choose one of {', '.join(ACTIVATION_NAMES)}"
        )


def get_activation(name: str, param: float | None = None) -> Callable[[Array], Array]:
    """The activation function called `name`, with its scalar parameter bound if it has one."""
    check_activation(name, "get_activation")
    fn, pname, default = _REGISTRY[name]
    if pname is None:
        if param is not None:
            raise ValueError(f"activation {name!r} takes no parameter, got {param!r}")
        return fn
    value = default if param is None else float(param)
    return lambda z: fn(z, value)


def activation_param(name: str, param: float | None, where: str = "activation") -> float | None:
    """The effective scalar parameter of activation `name` (its default when `param` is None)."""
    _, pname, default = _REGISTRY[name]
    if pname is None:
        if param is not None:
            raise ValueError(f"{where}: activation {name!r} takes no parameter, got {param!r}")
        return None
    return default if param is None else float(param)
