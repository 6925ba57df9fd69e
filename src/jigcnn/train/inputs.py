"""Argument normalisation shared by ``fit``, ``fit_folds_vmapped`` and ``cross_validate`` (no training here)."""

from __future__ import annotations

from typing import Callable


def as_augment(augment) -> Callable | None:
    """``augment(key, images) -> images`` from a callable, a ``jigcnn.data.augment.AugmentConfig`` or None."""
    if augment is None or callable(augment):
        return augment
    try:
        from jigcnn.data.augment import AugmentConfig, augment_batch
    except ImportError:  # pragma: no cover - data is part of the package
        AugmentConfig = None
    if AugmentConfig is not None and isinstance(augment, AugmentConfig):
        return lambda key, images: augment_batch(key, images, augment)
    raise TypeError(f"augment must be a callable augment(key, images) or an AugmentConfig, got {augment!r}")
