"""What a value-and-grad call computes: the loss of a model's outputs (resolved by name) and the `Aux` beside it."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from jigcnn.losses import LOSSES, get_loss


class Aux(NamedTuple):
    """What a value-and-grad call returns beside the loss."""

    state: Any  # the model's new non-trainable state
    outputs: Any  # the model's outputs for the batch
    intermediates: Any  # per-layer intermediates (hand-written path only; None for autodiff)


def resolve_loss(loss) -> tuple[str | None, Callable]:
    """(name, function) of a loss given by name or as one of jigcnn.losses' functions (name None for others)."""
    if isinstance(loss, str):
        return loss, get_loss(loss)
    for name, fn in LOSSES.items():
        if fn is loss:
            return name, fn
    if callable(loss):
        return None, loss
    raise ValueError(f"loss must be a name or a function, got {loss!r}")


__all__ = ["Aux", "resolve_loss"]
