"""Per-channel standardisation with the training set's statistics (NumPy; no JAX import)."""

from __future__ import annotations

import numpy as np


def channel_stats(train, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std + eps) of ``train`` per channel (the last axis), shaped to broadcast against it."""
    train = np.asarray(train)
    if train.ndim < 2:
        raise ValueError(f"standardize: the training array needs a sample axis and a channel axis, "
                         f"got shape {train.shape}")
    if train.shape[0] == 0:
        raise ValueError("standardize: the training array is empty (0 samples)")
    if not eps >= 0:
        raise ValueError(f"standardize: eps must be >= 0, got {eps!r}")
    axes = tuple(range(train.ndim - 1))
    return train.mean(axis=axes, keepdims=True), train.std(axis=axes, keepdims=True) + eps


def standardize(train, *others, eps: float = 1e-6) -> list[np.ndarray]:
    """``[train, *others]`` shifted and scaled per channel by the training mean and std (float32)."""
    train = np.asarray(train)
    mu, sd = channel_stats(train, eps)
    out = []
    for i, a in enumerate((train, *others)):
        a = np.asarray(a)
        if a.ndim != train.ndim or a.shape[-1] != train.shape[-1]:
            raise ValueError(f"standardize: array {i} has shape {a.shape}, not (..., {train.shape[-1]}) with "
                             f"{train.ndim} axes like the training array {train.shape}")
        out.append(((a - mu) / sd).astype(np.float32))
    return out


__all__ = ["channel_stats", "standardize"]
