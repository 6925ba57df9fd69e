"""Learning-rate schedules and the optimizers built on them (optax schedules underneath)."""

from __future__ import annotations

import jax
import optax

from jigcnn.optim.select import kernels_only


def onecycle_schedule(peak_lr: float, total_steps: int, *, pct_start: float = 0.25, div_factor: float = 10.0,
                      final_div_factor: float = 100.0) -> optax.Schedule:
    """optax's cosine one-cycle schedule: ``peak_lr / div_factor`` up to ``peak_lr`` over ``pct_start`` of the
    steps, then down to ``peak_lr / (div_factor * final_div_factor)`` at ``total_steps``."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"onecycle_schedule: total_steps must be an int >= 1, got {total_steps!r}")
    if not peak_lr > 0:
        raise ValueError(f"onecycle_schedule: peak_lr must be > 0, got {peak_lr!r}")
    if not 0 < pct_start < 1:
        raise ValueError(f"onecycle_schedule: pct_start must be in (0, 1), got {pct_start!r}")
    if not div_factor > 0 or not final_div_factor > 0:
        raise ValueError(f"onecycle_schedule: div_factor and final_div_factor must be > 0, got "
                         f"{div_factor!r}, {final_div_factor!r}")
    return optax.cosine_onecycle_schedule(total_steps, peak_lr, pct_start=pct_start, div_factor=div_factor,
                                          final_div_factor=final_div_factor)


def onecycle_sgd(peak_lr: float, total_steps: int, *, momentum: float = 0.9, weight_decay: float = 5e-4,
                 nesterov: bool = True, pct_start: float = 0.25, div_factor: float = 10.0,
                 final_div_factor: float = 100.0) -> optax.GradientTransformation:
    """SGD (Nesterov by default) on :func:`onecycle_schedule`, with weight decay added to the kernels' gradients.

    The decay term ``weight_decay * kernel`` is added to each kernel's gradient before the momentum
    (biases, batch-norm and PReLU arrays get none); it is not part of the loss.
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"onecycle_sgd: momentum must be in [0, 1), got {momentum!r}")
    if not weight_decay >= 0:
        raise ValueError(f"onecycle_sgd: weight_decay must be >= 0, got {weight_decay!r}")
    sched = onecycle_schedule(peak_lr, total_steps, pct_start=pct_start, div_factor=div_factor,
                              final_div_factor=final_div_factor)

    def mask(params):
        return jax.tree_util.tree_map_with_path(kernels_only, params)

    return optax.chain(optax.add_decayed_weights(weight_decay, mask=mask),
                       optax.sgd(sched, momentum=momentum, nesterov=nesterov))


def step_schedule(peak_lr: float, total_steps: int, boundaries=(0.5, 0.75), factor: float = 0.1):
    """``peak_lr``, multiplied by ``factor`` at each fraction of ``total_steps`` in ``boundaries`` (He et al.'s steps)."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"step_schedule: total_steps must be a whole number >= 1, got {total_steps!r}")
    if not all(0 < float(b) <= 1 for b in boundaries):
        raise ValueError(f"step_schedule: boundaries must be fractions in (0, 1], got {tuple(boundaries)!r}")
    marks: dict[int, float] = {}
    for b in boundaries:
        k = max(1, int(round(b * total_steps)))
        marks[k] = marks.get(k, 1.0) * factor
    return optax.piecewise_constant_schedule(peak_lr, marks)


def step_sgd(peak_lr: float, total_steps: int, *, momentum: float = 0.9, weight_decay: float = 1e-4,
             nesterov: bool = False, boundaries=(0.5, 0.75), factor: float = 0.1) -> optax.GradientTransformation:
    """SGD on :func:`step_schedule` with weight decay added to the kernels' gradients (He et al. 2016's CIFAR recipe)."""
    if not 0 <= momentum < 1:
        raise ValueError(f"step_sgd: momentum must be in [0, 1), got {momentum!r}")
    if not weight_decay >= 0:
        raise ValueError(f"step_sgd: weight_decay must be >= 0, got {weight_decay!r}")

    def mask(params):
        return jax.tree_util.tree_map_with_path(kernels_only, params)

    return optax.chain(optax.add_decayed_weights(weight_decay, mask=mask),
                       optax.sgd(step_schedule(peak_lr, total_steps, boundaries, factor), momentum=momentum,
                                 nesterov=nesterov))


__all__ = ["onecycle_schedule", "onecycle_sgd", "step_schedule", "step_sgd"]
