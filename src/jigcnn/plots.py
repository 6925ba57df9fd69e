"""Plots of the paper's figures (matplotlib, an optional extra: `pip install jigcnn[plot]`).

Every function takes data (histories, matrices, images, diagnostics), never a model, writes a
PNG atomically (temporary file + os.replace) with the Agg backend and returns the path.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Sequence

import numpy as np

from jigcnn.atomic import atomic_path

BAND = (0.01, 0.1)  # the paper's acceptable dL/dw MAV (Sec. 5.4.2)
_PREFIXES = (("train", "train"), ("test", "test"), ("val", "validation"), ("validation", "validation"))


def _plt():
    """pyplot on the Agg backend, or a clear error when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("jigcnn.plots needs matplotlib: pip install jigcnn[plot]") from e
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # no display needed; an already chosen backend still saves PNGs
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> str:
    """Write `fig` to `path` as PNG atomically, then close it."""
    plt = _plt()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _as_series(history) -> dict[str, list]:
    """A history as {key: list}: a jigcnn History, a dict of lists, or a list of per-epoch dicts."""
    if hasattr(history, "to_dict"):
        return history.to_dict()
    if isinstance(history, dict):
        return {k: list(v) if isinstance(v, (list, tuple, np.ndarray)) else v for k, v in history.items()}
    if isinstance(history, (list, tuple)):
        keys: dict = {}
        for r in history:
            keys.update(dict.fromkeys(r))
        return {k: [r.get(k) for r in history] for k in keys}
    raise TypeError(f"a history must be a History, a dict of lists or a list of dicts, got {type(history).__name__}")


def _is_single_history(h) -> bool:
    """True for one history (History, dict of lists, list of per-epoch dicts); False for a list of folds."""
    if hasattr(h, "to_dict") or isinstance(h, dict):
        return True
    return bool(h) and isinstance(h[0], dict) and not any(isinstance(v, (list, tuple, np.ndarray)) for v in h[0].values())


def plot_learning_curves(histories, metric: str, path, *, title: str | None = None, log_y: bool = False) -> str:
    """Per-fold learning curves of `metric` for train / test / validation (paper Figs. 6 and 8).

    `histories`: one history or a list of per-fold histories; keys `<part>_<metric>` with part
    train, test, val or validation (the loop writes `val_`).
    """
    plt = _plt()
    if _is_single_history(histories):
        histories = [histories]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"train": "-", "test": "--", "validation": ":"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    plotted = 0
    for fold, h in enumerate(histories):
        series = _as_series(h)
        for prefix, part in _PREFIXES:
            ys = series.get(f"{prefix}_{metric}")
            if ys is None:
                continue
            ys = np.asarray([math.nan if v is None else v for v in ys], dtype=float)
            xs = series.get("epoch") or list(range(1, len(ys) + 1))
            ax.plot(xs, ys, styles[part], color=colors[fold % len(colors)], marker="o", markersize=3,
                    label=f"fold {fold + 1} {part}")
            plotted += 1
    if not plotted:
        plt.close(fig)
        raise ValueError(f"plot_learning_curves: no '<train|test|val|validation>_{metric}' series in the histories")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(metric)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title or f"learning curves: {metric}")
    return _save(fig, path)


def plot_confusion_matrix(matrix, class_names: Sequence[str] | None, path, *, normalize: bool = False,
                          title: str = "confusion matrix") -> str:
    """A confusion matrix (rows true, columns predicted), counts written in the cells."""
    plt = _plt()
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"plot_confusion_matrix: need a square matrix, got shape {m.shape}")
    k = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"plot_confusion_matrix: {len(names)} class names for a {k}x{k} matrix")
    shown = m / np.maximum(m.sum(axis=1, keepdims=True), 1e-12) if normalize else m
    size = min(max(4.0, 0.45 * k + 2), 30.0)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(shown, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(k), names, rotation=90, fontsize=7 if k > 15 else 9)
    ax.set_yticks(range(k), names, fontsize=7 if k > 15 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        hi = shown.max() if shown.size else 0
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    txt = f"{shown[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
                    ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > hi / 2 else "black")
    ax.set_title(title)
    return _save(fig, path)


def plot_augmentation_preview(original, augmented_list, path, *, title: str = "augmentation preview") -> str:
    """The original image beside its augmented copies (paper Fig. 3); images (H, W) or (H, W, C) in [0, 1]."""
    plt = _plt()
    images = [np.asarray(original)] + [np.asarray(a) for a in augmented_list]
    fig, axes = plt.subplots(1, len(images), figsize=(1.6 * len(images) + 0.5, 2.6))
    axes = np.atleast_1d(axes)
    for i, (ax, img) in enumerate(zip(axes, images)):
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title("original" if i == 0 else f"copy {i}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _rows(diagnostic) -> list[dict]:
    """Diagnostic rows as dicts: a Diagnostic, its to_dict(), or a list of row dicts / LayerRows."""
    if hasattr(diagnostic, "rows"):
        return [r.to_dict() for r in diagnostic.rows]
    if isinstance(diagnostic, dict) and "layers" in diagnostic:
        return [{"layer": name, **cols} for name, cols in diagnostic["layers"].items()]
    return [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in diagnostic]


_LABELS = {"input_mav": "In", "act_deriv_mav": "N'", "weight_mav": "w", "delta_mav": "dL/db", "weight_grad_mav": "dL/dw"}


def plot_mav_per_layer(diagnostic, path, *, band=BAND, columns=tuple(_LABELS), title: str = "MAV per layer (Fig. 4)") -> str:
    """Grouped bars of each layer's MAVs on a log scale, the acceptable dL/dw band shaded."""
    plt = _plt()
    rows = _rows(diagnostic)
    if not rows:
        raise ValueError("plot_mav_per_layer: no rows")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(rows) + 2), 4.5))
    width = 0.8 / len(columns)
    x = np.arange(len(rows))
    for j, c in enumerate(columns):
        vals = np.array([r.get(c, math.nan) for r in rows], dtype=float)
        vals = np.where(np.isfinite(vals) & (vals > 0), vals, np.nan)
        ax.bar(x + (j - (len(columns) - 1) / 2) * width, vals, width, label=_LABELS.get(c, c),
               hatch="//" if c == "weight_grad_mav" else None)
    if band is not None:
        ax.axhspan(band[0], band[1], color="green", alpha=0.15, label=f"dL/dw band {band[0]:g}-{band[1]:g}")
    ax.set_yscale("log")
    ax.set_xticks(x, [r["layer"] for r in rows])
    ax.set_ylabel("mean absolute value")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def _trajectory_series(records) -> dict[str, Any]:
    """{"step": [...], "<layer>/<column>": [...]} from Diagnostics, a recorder, or that dict itself."""
    if hasattr(records, "history") and callable(records.history):
        return records.history()
    if isinstance(records, dict):
        return records
    from jigcnn.diagnostics.report import diagnostics_to_history

    return diagnostics_to_history(records)


def plot_mav_trajectory(records, path, *, column: str = "weight_grad_mav", band=BAND,
                        title: str | None = None) -> str:
    """One line per layer: `column`'s MAV over the training steps (log scale, band shaded).

    `records`: a list of `Diagnostic`s, a `DiagnosticRecorder`, or its `history()` dict.
    """
    plt = _plt()
    series = _trajectory_series(records)
    steps = series.get("step") or []
    keys = [k for k in series if k.endswith("/" + column)]
    if not keys:
        raise ValueError(f"plot_mav_trajectory: no '<layer>/{column}' series")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k in keys:
        ys = np.asarray(series[k], dtype=float)
        xs = steps if len(steps) == len(ys) and all(s is not None for s in steps) else range(len(ys))
        ax.plot(xs, ys, marker="o", markersize=3, label=k.split("/")[0])
    if band is not None and column == "weight_grad_mav":
        ax.axhspan(band[0], band[1], color="green", alpha=0.15, label=f"band {band[0]:g}-{band[1]:g}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"MAV {_LABELS.get(column, column)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title or f"MAV of {_LABELS.get(column, column)} during training")
    return _save(fig, path)


__all__ = ["plot_learning_curves", "plot_confusion_matrix", "plot_augmentation_preview", "plot_mav_per_layer",
           "plot_mav_trajectory"]
