"""Smoke tests: every plot writes a non-empty PNG from plain data."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from jigcnn import plots  # noqa: E402
from jigcnn.diagnostics import COLUMNS, Diagnostic, LayerRow  # noqa: E402
from jigcnn.train import History  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path):
    data = open(path, "rb").read()
    assert len(data) > 1000 and data[:8] == PNG
    return data


def _history(seed, epochs=4):
    rng = np.random.default_rng(seed)
    return History([{"epoch": e, "train_loss": float(rng.random()), "test_loss": float(rng.random()),
                     "val_loss": float(rng.random()), "val_mape": float(rng.random())} for e in range(1, epochs + 1)])


def test_learning_curves_per_fold_and_single(tmp_path):
    p = plots.plot_learning_curves([_history(i) for i in range(3)], "loss", tmp_path / "curves.png")
    _png(p)
    single = {"epoch": [1, 2, 3], "train_accuracy": [0.2, 0.5, 0.9], "validation_accuracy": [0.1, 0.4, 0.8]}
    _png(plots.plot_learning_curves(single, "accuracy", tmp_path / "acc.png"))
    _png(plots.plot_learning_curves(_history(0).records, "mape", tmp_path / "mape.png", log_y=True))
    with pytest.raises(ValueError, match="no '<train"):
        plots.plot_learning_curves(single, "mape", tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_confusion_matrix(tmp_path):
    m = np.array([[5, 1, 0], [0, 7, 2], [1, 0, 9]])
    _png(plots.plot_confusion_matrix(m, ["a", "b", "c"], tmp_path / "cm.png"))
    _png(plots.plot_confusion_matrix(m, None, tmp_path / "sub" / "cmn.png", normalize=True))
    with pytest.raises(ValueError, match="class names"):
        plots.plot_confusion_matrix(m, ["a"], tmp_path / "bad.png")


def test_augmentation_preview(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((58, 36, 1))
    _png(plots.plot_augmentation_preview(img, [rng.random((58, 36, 1)) for _ in range(3)], tmp_path / "aug.png"))


def _diag(step, scale):
    rows = tuple(LayerRow(name, kind, *(scale * v for v in vals)) for name, kind, vals in (
        ("conv1", "Conv2D", (0.5, 1.0, 0.05, 2e-3, 0.07)), ("fc", "Dense", (0.1, 1.0, 1.5e-3, 0.12, 0.09)),
        ("head", "Activation", (0.3, 0.2, float("nan"), 0.01, float("nan")))))
    return Diagnostic(rows, 1.0 / (step + 1), step)


def test_mav_per_layer_and_trajectory(tmp_path):
    _png(plots.plot_mav_per_layer(_diag(0, 1.0), tmp_path / "mav.png"))
    _png(plots.plot_mav_per_layer(_diag(0, 1.0).to_dict(), tmp_path / "mav2.png"))
    records = [_diag(s, 1.0 + 0.1 * s) for s in range(0, 50, 10)]
    _png(plots.plot_mav_trajectory(records, tmp_path / "traj.png"))
    _png(plots.plot_mav_trajectory(records, tmp_path / "traj_in.png", column=COLUMNS[0]))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp")]  # atomic writes leave no temp files
