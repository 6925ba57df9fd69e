"""Losses (mean over the batch): MAE, MSE, softmax and plain cross-entropy, binary CE, NLL."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from jigcnn.checks import check_class_targets  # concrete labels only (tracers are skipped)


def _check_same_shape(name, pred, target):
    if pred.shape != target.shape:
        raise ValueError(f"{name}: predictions {pred.shape} and targets {target.shape} must have the same shape")


def mae(pred, target):
    """Mean absolute error over every element (a matrix of output neurons is fine).

    Written as mean(sign(r) * r), r = pred - target (the same values as mean(abs(r))), so that its
    derivative is sign(r) / n everywhere, 0 at a residual of exactly 0 -- the hand-written
    gradient's value there, and PyTorch's (``jax.grad(jnp.abs)(0.)`` would give 1).
    """
    _check_same_shape("mae", pred, target)
    r = pred - target
    return jnp.mean(jnp.sign(r) * r)


def mse(pred, target):
    """Mean squared error over every element."""
    _check_same_shape("mse", pred, target)
    return jnp.mean(jnp.square(pred - target))


def check_labels(name, outputs, labels):
    """Raise a ValueError naming `name` unless labels are (N,) integers or (N, K) targets matching outputs."""
    if labels.ndim == 1:
        if labels.shape[0] != outputs.shape[0]:
            raise ValueError(f"{name}: {labels.shape[0]} labels for a batch of {outputs.shape[0]} outputs")
    elif labels.shape != outputs.shape:
        raise ValueError(f"{name}: predictions {outputs.shape} and targets {labels.shape} must have the same shape")
    check_class_targets(labels, outputs.shape[-1], name)


def one_hot_targets(labels, num_classes: int, dtype, name: str = "loss"):
    """Integer labels (N,) -> one-hot (N, K); one-hot (N, K) passes through."""
    if labels.ndim == 1:
        return jax_one_hot(labels, num_classes, dtype)
    if labels.shape[-1] != num_classes:
        raise ValueError(f"{name}: one-hot targets have {labels.shape[-1]} classes, the outputs {num_classes}")
    return labels.astype(dtype)


def jax_one_hot(labels, num_classes, dtype):
    """One-hot encoding of integer labels."""
    return (labels[:, None] == jnp.arange(num_classes)[None, :]).astype(dtype)


def softmax_cross_entropy(logits, labels):
    """Cross-entropy of softmax(logits) against integer labels (N,) or one-hot / soft targets (N, K)."""
    check_labels("softmax_cross_entropy", logits, labels)
    if labels.ndim == 1:
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32)))
    return jnp.mean(optax.softmax_cross_entropy(logits, labels))


@dataclasses.dataclass(frozen=True)
class SmoothedSoftmaxCrossEntropy:
    """Softmax cross-entropy against labels smoothed toward uniform: (1 - smoothing) one-hot + smoothing / K.

    A value (hashable, compared by ``smoothing``), so jitted steps built with equal losses are shared.
    """

    smoothing: float

    def __post_init__(self):
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {self.smoothing!r}")

    def __call__(self, logits, labels):
        """Mean over the batch of -sum_k t_k log softmax(logits)_k with the smoothed targets t."""
        check_labels("smoothed_softmax_cross_entropy", logits, labels)
        t = one_hot_targets(labels, logits.shape[-1], logits.dtype, "smoothed_softmax_cross_entropy")
        return jnp.mean(optax.softmax_cross_entropy(logits, optax.smooth_labels(t, self.smoothing)))


def cross_entropy(probs, labels):
    """Cross-entropy -mean(sum t log p) of probabilities (a net ending in softmax, as IgNet's).

    log p is clamped at log(finfo(dtype).tiny): a probability that underflowed to 0 for the true
    class gives a large finite loss (about 87 per sample in float32, 708 in float64) and a zero
    gradient through that probability, where PyTorch's ``nll_loss(log(p))`` gives inf.
    """
    check_labels("cross_entropy", probs, labels)
    t = one_hot_targets(labels, probs.shape[-1], probs.dtype, "cross_entropy")
    tiny = jnp.finfo(probs.dtype).tiny
    return -jnp.mean(jnp.sum(t * jnp.log(jnp.maximum(probs, tiny)), axis=-1))


def nll(log_probs, labels):
    """Negative log-likelihood of log-probabilities (a net ending in log-softmax)."""
    check_labels("nll", log_probs, labels)
    t = one_hot_targets(labels, log_probs.shape[-1], log_probs.dtype, "nll")
    return -jnp.mean(jnp.sum(t * log_probs, axis=-1))


def binary_cross_entropy(logits, targets):
    """Sigmoid binary cross-entropy on logits, mean over every element."""
    _check_same_shape("binary_cross_entropy", logits, targets)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets.astype(logits.dtype)))


LOSSES = {
    "mae": mae,
    "mse": mse,
    "softmax_cross_entropy": softmax_cross_entropy,
    "cross_entropy": cross_entropy,
    "nll": nll,
    "binary_cross_entropy": binary_cross_entropy,
}


def get_loss(name: str):
    """The loss function called `name`."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


__all__ = ["mae", "mse", "softmax_cross_entropy", "SmoothedSoftmaxCrossEntropy", "cross_entropy", "nll",
           "binary_cross_entropy", "get_loss", "LOSSES"]
