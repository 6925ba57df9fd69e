"""Checks of arrays that every entry point shares: finite values, input shapes, class targets.

Low in the import graph (it imports only `jigcnn.errors`), so the losses' public entry points
and the training checks of `jigcnn.train.validate` raise the same errors.
"""

from __future__ import annotations

import numpy as np

from jigcnn.errors import BadDataError

SUM_TOLERANCE = 1e-3


def _is_tracer(x) -> bool:
    import jax

    return isinstance(x, jax.core.Tracer)


def _fmt(v) -> str:
    """A NumPy scalar as its shortest text (1.7 for float32 1.7, not 1.7000000476837158)."""
    if isinstance(v, np.floating):
        return np.format_float_positional(v, unique=True, trim="-")
    return repr(v.item() if hasattr(v, "item") else v)


def _host(a):
    """A NumPy view of an array (no copy for NumPy and CPU-resident JAX arrays)."""
    return np.asarray(a)


def first_non_finite(a) -> tuple[int, ...] | None:
    """The index of the first NaN or infinity in ``a`` (a tuple), or None when every value is finite."""
    dt = np.dtype(a.dtype) if hasattr(a, "dtype") else np.asarray(a).dtype
    if not (dt.kind in "fc" or "float" in dt.name):  # integers and booleans are always finite
        return None
    import jax

    if isinstance(a, jax.Array):  # reduce on the device; fetch the data only when something is wrong
        import jax.numpy as jnp

        if bool(jnp.all(jnp.isfinite(a))):
            return None
    h = _host(a)
    bad = ~np.isfinite(h)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), h.shape))


def check_finite(a, what: str) -> None:
    """A BadDataError naming ``what`` and the first bad index unless every value of ``a`` is finite."""
    idx = first_non_finite(a)
    if idx is None:
        return
    h = _host(a)
    n_bad = int((~np.isfinite(h)).sum())
    where = f"sample {idx[0]}" + (f", position {idx[1:]}" if len(idx) > 1 else "") if idx else "the scalar"
    raise BadDataError(f"{what} holds {n_bad} non-finite value(s): the first is {_fmt(h[idx])} at {where} "
                       f"(index {idx}); clean or drop those samples before training")


def check_input_shape(x, expected: tuple[int, ...], what: str) -> None:
    """A BadDataError naming both shapes unless ``x`` is a batch of per-sample ``expected`` shapes."""
    shape = tuple(int(s) for s in x.shape)
    expected = tuple(int(s) for s in expected)
    if shape[1:] == expected:
        return
    msg = (f"{what} has shape {shape}, but the model's input_shape {expected} needs "
           f"(N, {', '.join(map(str, expected))})")
    if shape == expected:
        msg += "; it looks like one sample without the batch axis (use x[None])"
    elif len(shape) == len(expected) and len(expected) >= 2 and shape[-len(expected) + 1:] == expected[:-1]:
        msg += "; the channel axis seems to be missing (add it with x[..., None])"
    elif len(shape) == len(expected) + 1 and len(expected) == 3 and shape[1:] == (expected[2],) + expected[:2]:
        msg += "; it looks like NCHW (channels first): the layers take NHWC, use x.transpose(0, 2, 3, 1)"
    elif len(shape) == len(expected) + 1 and sorted(shape[1:]) == sorted(expected):
        msg += "; the same sizes in another order: check the axis order (the layers take NHWC)"
    raise BadDataError(msg)


def check_class_targets(y, num_classes: int, what: str) -> None:
    """A BadDataError naming ``what``, the index and the value unless ``y`` are class labels for ``num_classes``.

    Integer labels (N,) must lie in ``0..num_classes-1`` (float labels must be whole numbers
    there too); one-hot or soft targets (N, K) must have ``K == num_classes`` columns of
    values in [0, 1] that sum to 1 per row. Tracers (inside jit) are not checked.
    """
    if _is_tracer(y):
        return
    h = _host(y)
    k = int(num_classes)
    if h.ndim == 1:
        if h.dtype == bool:
            raise BadDataError(f"{what}: boolean labels; class labels must be integers 0..{k - 1}")
        if np.issubdtype(h.dtype, np.inexact):
            if np.issubdtype(h.dtype, np.complexfloating):
                raise BadDataError(f"{what}: complex labels ({h.dtype}); class labels must be integers 0..{k - 1}")
            nonfinite = ~np.isfinite(h)
            frac = np.zeros(h.shape, bool)
            frac[~nonfinite] = h[~nonfinite] != np.round(h[~nonfinite])
            bad = nonfinite | frac
            if bad.any():
                i = int(np.argmax(bad))
                raise BadDataError(
                    f"{what}: label {_fmt(h[i])} at index {i} is not a whole number ({int(bad.sum())} of {h.size} "
                    f"labels are not); class labels must be integers 0..{k - 1} (for regression targets use a "
                    f"loss such as 'mse' or 'mae')")
        bad = (h < 0) | (h >= k)
        if bad.any():
            i = int(np.argmax(bad))
            v = h[i].item()
            hint = f" (it would silently train as class {k + v})" if -k <= v < 0 else ""
            raise BadDataError(
                f"{what}: label {v} at index {i} is outside 0..{k - 1} ({k} outputs, one per class)"
                f"{hint}; {int(bad.sum())} of {h.size} labels are out of range (min {h.min().item()}, "
                f"max {h.max().item()})")
        return
    if h.ndim == 2:
        if h.shape[1] != k:
            raise BadDataError(f"{what}: targets of shape {h.shape} have {h.shape[1]} columns but the model has "
                            f"{k} outputs (one-hot or soft targets need one column per class)")
        if np.issubdtype(h.dtype, np.complexfloating) or h.dtype == bool:
            h = h.astype(np.float64)
        bad = ~np.isfinite(h) | (h < 0) | (h > 1) if np.issubdtype(h.dtype, np.inexact) else (h < 0) | (h > 1)
        if bad.any():
            r, c = (int(i) for i in np.unravel_index(int(np.argmax(bad)), h.shape))
            raise BadDataError(f"{what}: target {_fmt(h[r, c])} at row {r}, column {c} is not in [0, 1] "
                            f"(one-hot or soft targets are probabilities)")
        sums = h.sum(axis=1, dtype=np.float64)
        eps = float(np.finfo(h.dtype).eps) if np.issubdtype(h.dtype, np.floating) else 0.0
        off = np.abs(sums - 1.0) > max(SUM_TOLERANCE, 4 * k * eps)  # float16 rows of K rounded terms
        if off.any():
            r = int(np.argmax(off))
            raise BadDataError(f"{what}: target row {r} sums to {sums[r]:.6g}, not 1 ({int(off.sum())} of "
                            f"{h.shape[0]} rows do not; one-hot or soft targets are probability rows)")
        return
    raise BadDataError(f"{what}: targets of shape {h.shape}; class targets are (N,) integer labels or "
                    f"(N, {k}) one-hot / soft rows")


__all__ = ["check_class_targets", "check_finite", "check_input_shape", "first_non_finite"]
