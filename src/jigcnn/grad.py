"""One entry point for gradients: autodiff (jax.value_and_grad) or the hand-written backprop."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from jigcnn.losses import get_loss


class Aux(NamedTuple):
    """What a value-and-grad call returns beside the loss."""

    state: Any  # the model's new non-trainable state
    outputs: Any  # the model's outputs for the batch
    intermediates: Any  # per-layer intermediates (hand-written path only; None for autodiff)


def resolve_loss(loss) -> tuple[str | None, Callable]:
    """(name, function) of a loss given by name or as one of jigcnn.losses' functions."""
    if isinstance(loss, str):
        return loss, get_loss(loss)
    from jigcnn.losses import LOSSES

    for name, fn in LOSSES.items():
        if fn is loss:
            return name, fn
    if callable(loss):
        return None, loss
    raise ValueError(f"loss must be a name or a function, got {loss!r}")


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
        from jigcnn.backprop import manual_value_and_grad

        return manual_value_and_grad(model, loss)
    raise ValueError(f"method must be 'autodiff' or 'manual', got {method!r}")
