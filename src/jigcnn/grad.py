"""One entry point for gradients: autodiff (jax.value_and_grad) or the hand-written backprop."""

from __future__ import annotations

from typing import Callable

import jax

from jigcnn.objective import Aux, resolve_loss

METHODS = ("autodiff", "manual")


def autodiff_value_and_grad(model, loss) -> Callable:
    """`f(params, state, x, targets, *, train, key) -> ((loss, Aux), grads)` through jax.value_and_grad."""
    _, loss_fn = resolve_loss(loss)

    def objective(params, state, x, targets, train, key):
        outputs, new_state = model.apply(params, state, x, train=train, key=key)
        return loss_fn(outputs, targets), Aux(new_state, outputs, None)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def value_and_grad(params, state, x, targets, *, train: bool = True, key=None):
        return grad_fn(params, state, x, targets, train, key)

    return value_and_grad


def value_and_grad(model, loss, method: str = "autodiff") -> Callable:
    """Gradients by `method`: "autodiff" (jax) or "manual" (the paper's equations, jigcnn.backprop)."""
    if method == "autodiff":
        return autodiff_value_and_grad(model, loss)
    if method == "manual":
        from jigcnn.backprop.network import manual_value_and_grad

        return manual_value_and_grad(model, loss)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


__all__ = ["METHODS", "Aux", "autodiff_value_and_grad", "resolve_loss", "value_and_grad"]
