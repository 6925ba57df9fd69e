"""Metrics: accuracy, MAPE (also on shifted and scaled age targets), MAE and the confusion matrix."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def class_indices(labels):
    """Integer class labels from integer (N,) or one-hot (N, K) labels."""
    return labels.astype(jnp.int32) if labels.ndim == 1 else jnp.argmax(labels, axis=-1)


def accuracy(outputs, labels):
    """Fraction of samples whose arg-max output is the label (integer or one-hot labels)."""
    if labels.shape[0] != outputs.shape[0]:
        raise ValueError(f"accuracy: {labels.shape[0]} labels for a batch of {outputs.shape[0]} outputs")
    return jnp.mean(jnp.argmax(outputs, axis=-1) == class_indices(labels))


def mape(pred, target):
    """Mean absolute percentage error, in percent: 100 * mean(|pred - target| / |target|)."""
    if pred.shape != target.shape:
        raise ValueError(f"mape: predictions {pred.shape} and targets {target.shape} must have the same shape")
    return 100.0 * jnp.mean(jnp.abs(pred - target) / jnp.abs(target))


# A percentage metric's denominator as a function of the targets (NumPy, host side): training checks
# it for zeros before the first step (`jigcnn.train.validate`), where a zero would make the metric inf.
mape.denominator = np.asarray


def mean_absolute_error(pred, target):
    """Mean absolute error (a metric alias of the MAE loss)."""
    return jnp.mean(jnp.abs(pred - target))


def confusion_matrix(predicted, labels, num_classes: int):
    """(K, K) counts, row = true class, column = predicted; `predicted` is indices (N,) or outputs (N, K)."""
    idx = class_indices(labels) * num_classes + class_indices(predicted)
    return jnp.bincount(idx, length=num_classes * num_classes).reshape(num_classes, num_classes)


def age_mape_metric(offset: float, scale: float = 1.0, name: str = "mape"):
    """``(name, fn)`` for ``fit``'s metrics: MAPE in percent on ages, for a net trained on ``(age - offset) / scale``.

    ``fn(pred, target) = 100 * mean(|pred - target| * scale / |target * scale + offset|)``: the
    error and the reference are both mapped back to ages before dividing.
    """
    if not scale > 0:
        raise ValueError(f"age_mape_metric: scale must be > 0, got {scale!r}")
    offset, scale = float(offset), float(scale)

    def mape_of_ages(pred, target):
        if pred.shape != target.shape:
            raise ValueError(f"age_mape_metric: predictions {pred.shape} and targets {target.shape} must have "
                             "the same shape")
        return 100.0 * jnp.mean(jnp.abs(pred - target) * scale / jnp.abs(target * scale + offset))

    mape_of_ages.denominator = lambda target: np.asarray(target, dtype=np.float64) * scale + offset
    return (name, mape_of_ages)


# metric names that ``fit``'s ``metrics`` accepts
BY_NAME = {"accuracy": accuracy, "mape": mape, "mae": mean_absolute_error}
