"""Checks of everything a training run is given, before its first step: numbers, data, labels, paths.

``fit`` and ``cross_validate`` call :func:`check_fit_inputs` / :func:`check_cv_inputs` first, so
a wrong argument, a label out of range, an input of the wrong shape, a NaN in the data, a
checkpoint about to be overwritten or an output folder that cannot be written is reported
before any work is done (not as a NaN loss, an obscure ``dot_general`` error or a lost run
hours later). Every error names the argument, array, index, value or path and what is wrong;
they are :class:`jigcnn.errors.UserError` subclasses (``ValueError``).

This module imports neither the loop nor cross-validation (no import cycles).
"""

from __future__ import annotations

import contextlib
import numbers
import os
import tempfile
import warnings

import numpy as np

from jigcnn import metrics as metric_functions
from jigcnn.errors import CheckpointError, BadDataError, OutputPathError, UserError
from jigcnn.checks import check_class_targets, check_finite, check_input_shape, first_non_finite
from jigcnn.train import checkpoint as ckpt

CLASS_LOSSES = ("softmax_cross_entropy", "cross_entropy", "nll")
SAME_SHAPE_LOSSES = ("mae", "mse", "binary_cross_entropy")


# ---------------------------------------------------------------- numbers


def _at(who: str) -> str:
    return f"{who}: " if who else ""


def check_positive_int(value, name: str, who: str = "fit") -> int:
    """``value`` as an int; a UserError naming ``name`` unless it is a whole number >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{_at(who)}{name} must be a whole number >= 1, got {value!r}")
    if value < 1:
        raise UserError(f"{_at(who)}{name} must be >= 1, got {value}")
    return int(value)


def check_learning_rate(value, name: str = "learning_rate", who: str = "optimizer") -> None:
    """A UserError naming ``name`` unless ``value`` is a finite number > 0 (or a callable schedule)."""
    from jigcnn.optim.select import check_learning_rate as check

    check(value, name, who)


# ---------------------------------------------------------------- data


def loss_kind(loss) -> str | None:
    """"class" for the library's classification losses, "same_shape" for mae/mse/binary CE, else None."""
    # by name and module, not by importing jigcnn.losses: the losses call this module's label checks
    if isinstance(loss, str):
        name = loss
    elif getattr(loss, "__module__", None) == "jigcnn.losses" and hasattr(loss, "__name__"):
        name = loss.__name__
    elif type(loss).__module__ == "jigcnn.losses" and type(loss).__name__ == "SmoothedSoftmaxCrossEntropy":
        return "class"
    else:
        return None
    if name in CLASS_LOSSES:
        return "class"
    if name in SAME_SHAPE_LOSSES:
        return "same_shape"
    return None


def model_shapes(model, x_shape, what: str = "fit") -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(input shape, output shape) per sample of ``model``, or None when the model cannot say."""
    if not hasattr(model, "shapes"):
        return None
    try:
        if getattr(model, "input_shape", None) is not None:
            shapes = model.shapes()
        else:
            shapes = model.shapes(tuple(x_shape[1:]))
    except UserError:
        raise
    except (ValueError, TypeError) as e:
        if getattr(model, "input_shape", None) is None:
            raise BadDataError(f"{what}: the model cannot take inputs of shape {tuple(x_shape)}: {e}") from None
        return None
    return tuple(shapes[0]), tuple(shapes[-1])


def check_targets(y, out_shape: tuple[int, ...], loss, what: str) -> None:
    """The targets ``y`` against the model's per-sample ``out_shape`` for ``loss`` (class labels, same shape)."""
    kind = loss_kind(loss)
    if kind == "class" and len(out_shape) == 1:
        check_class_targets(y, out_shape[0], what)
    elif kind == "same_shape":
        if tuple(y.shape[1:]) != tuple(out_shape):
            raise BadDataError(f"{what} has shape {tuple(y.shape)} but the model's outputs are (N, "
                            f"{', '.join(map(str, out_shape))}) and the loss compares them element by element")


def check_metric_targets(metrics, y, what: str) -> None:
    """A BadDataError unless every percentage metric's denominator (``fn.denominator(y)``) is non-zero.

    ``metrics``: names or ``(name, fn)`` pairs as ``fit`` takes them; a metric whose function has a
    ``denominator`` attribute (``"mape"``, :func:`jigcnn.metrics.age_mape_metric`) divides by it, so
    a zero there would turn the metric into inf (a NumPy warning at best) after the first epoch.
    """
    for m in metrics or ():
        if isinstance(m, str):
            name, fn = m, metric_functions.BY_NAME.get(m)
        elif isinstance(m, tuple) and len(m) == 2:
            name, fn = m
        else:
            continue  # a malformed entry is reported by ``resolve_metrics``
        denominator = getattr(fn, "denominator", None)
        if denominator is None:
            continue
        d = np.asarray(denominator(np.asarray(y)))
        zero = np.argwhere(d == 0)
        if zero.size:
            idx = tuple(int(i) for i in zero[0])
            where = f"sample {idx[0]}" + (f", position {idx[1:]}" if len(idx) > 1 else "")
            raise BadDataError(f"{what}: the metric {name!r} divides by the target, which is 0 for {len(zero)} "
                               f"value(s) (the first at {where}): the percentage error is undefined there; "
                               f"use 'mae' or drop / shift those targets")


def check_data(model, data, name: str, *, loss, who: str = "fit", shapes=None, metrics=None) -> int | None:
    """Check one ``(x, y)`` part (shape, targets, finiteness, metric denominators), naming it ``name``;
    returns its length."""
    if data is None or not (isinstance(data, (tuple, list)) and len(data) == 2):
        return None  # the caller reports a malformed part
    x, y = data
    if not hasattr(x, "shape") or not hasattr(y, "shape"):
        x, y = np.asarray(x), np.asarray(y)
    if len(x.shape) == 0:
        raise BadDataError(f"{who}: {name} x is a scalar, not a batch of inputs")
    if len(y.shape) == 0:
        raise BadDataError(f"{who}: {name} y is a scalar, not a batch of targets")
    shapes = shapes if shapes is not None else model_shapes(model, x.shape, who)
    if shapes is not None:
        check_input_shape(x, shapes[0], f"{who}: {name} x")
    if x.shape[0] != y.shape[0]:
        raise BadDataError(f"{who}: {name}: {x.shape[0]} inputs (x) but {y.shape[0]} targets (y)")
    if shapes is not None:
        check_targets(y, shapes[1], loss, f"{who}: {name} y")
    check_finite(x, f"{who}: {name} x")
    check_finite(y, f"{who}: {name} y")
    if metrics:
        check_metric_targets(metrics, y, f"{who}: {name} y")
    return int(x.shape[0])


# ---------------------------------------------------------------- paths


def _nearest_existing(folder: str) -> str:
    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder


def check_writable_dir(folder, what: str) -> None:
    """An OutputPathError naming ``folder`` unless it is (or can be created as) a folder where files can be written.

    Nothing is created: a probe file is made and removed in the folder, or in its nearest
    existing ancestor when the folder does not exist yet.
    """
    folder = os.fspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputPathError(f"{what} {folder} is a file, not a folder")
    base = _nearest_existing(folder)
    if not os.path.isdir(base):
        raise OutputPathError(f"{what} {folder} cannot be created: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".jigcnn-write-probe.", dir=base)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        where = folder if base == os.path.abspath(folder) else f"{folder} (its existing parent {base})"
        raise OutputPathError(f"{what} {where} is not writable: {e.strerror or e}") from None


def check_writable_file(path, what: str) -> None:
    """An OutputPathError naming ``path`` unless a file can be written there (its folder writable, not a folder)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputPathError(f"{what} {path} is a folder, not a file")
    check_writable_dir(os.path.dirname(os.path.abspath(path)), f"{what} {path}: its folder")


def _describe_checkpoint(path: str) -> str:
    with contextlib.suppress(Exception):
        return f"epoch {ckpt.read_header(path)['meta']['epoch']}"
    return "unreadable"


def check_checkpoint_dir(checkpoint_dir, *, resume: bool, who: str = "fit") -> None:
    """Refuse to overwrite a checkpoint (unless ``checkpoint.overwrite(dir)``); check the folder can be written.

    * without ``resume``, a folder holding ``checkpoint.npz`` is refused, naming it; with
      ``checkpoint_dir=jigcnn.train.checkpoint.overwrite(dir)`` the old checkpoint (and its
      previous generation) is removed here, just before training starts;
    * with ``resume`` and no checkpoint there, a warning says the run starts from scratch (a
      killed cross-validation resumes folds that never started); when only the previous
      generation ``checkpoint.prev.npz`` is left, it is restored as the checkpoint to resume.
    """
    if checkpoint_dir is None:
        if resume:
            raise UserError(f"{who}: resume=True needs checkpoint_dir")
        return
    folder = os.fspath(checkpoint_dir)
    check_writable_dir(folder, f"{who}: checkpoint_dir")
    latest = os.path.join(folder, ckpt.CHECKPOINT_NAME)
    prev = ckpt.previous_path(latest)
    if resume:
        if ckpt.wants_overwrite(checkpoint_dir):
            raise UserError(f"{who}: resume=True and checkpoint.overwrite({folder!r}) contradict each other")
        if not os.path.exists(latest):
            if os.path.exists(prev):
                ckpt.restore_previous(latest)
            else:
                warnings.warn(f"{who}: resume=True but {folder} holds no checkpoint ({latest} does not exist): "
                              "training starts from scratch", stacklevel=3)
        return
    if os.path.exists(latest):
        if ckpt.wants_overwrite(checkpoint_dir):
            for p in (latest, prev):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(p)
            return
        raise CheckpointError(
            f"{who}: {folder} already holds a checkpoint ({latest}, {_describe_checkpoint(latest)}); refusing to "
            f"overwrite it: pass resume=True to continue that run, another checkpoint_dir, or "
            f"checkpoint_dir=jigcnn.train.checkpoint.overwrite({folder!r}) to replace it")


# ---------------------------------------------------------------- entry points


def check_fit_inputs(model, train, test=None, validation=None, *, loss, batch_size, epochs=None, stopping=None,
                     checkpoint_dir=None, resume: bool = False, metrics=None, who: str = "fit") -> None:
    """Every check of :func:`jigcnn.train.fit`'s arguments that needs no compilation, before its first step.

    Numbers (``epochs``, ``batch_size`` >= 1, ``batch_size`` at most the training set's size),
    each data part's input shape against the model's ``input_shape`` (naming both, and
    "looks like NCHW"), the targets against the model's outputs for the loss (class labels in
    ``0..K-1``, one-hot / soft rows of width K), NaN / infinity in any array (naming the part,
    x or y, and the first bad index), a zero target under a percentage metric
    (:func:`check_metric_targets`), and the checkpoint folder (:func:`check_checkpoint_dir`).
    """
    if epochs is not None:
        check_positive_int(epochs, "epochs", who)
    check_positive_int(batch_size, "batch_size", who)
    if not isinstance(resume, (bool, np.bool_)):
        raise UserError(f"{who}: resume must be True or False, got {resume!r}")
    shapes = None
    if isinstance(train, (tuple, list)) and len(train) == 2 and hasattr(train[0], "shape") and train[0].shape:
        shapes = model_shapes(model, train[0].shape, who)
    n_train = check_data(model, train, "train", loss=loss, who=who, shapes=shapes, metrics=metrics)
    for part, name in ((test, "test"), (validation, "validation")):
        check_data(model, part, name, loss=loss, who=who, shapes=shapes, metrics=metrics)
    if n_train is not None and n_train >= 1 and batch_size > n_train:
        raise UserError(f"{who}: batch_size {batch_size} is larger than the {n_train} training samples "
                        f"(pass batch_size <= {n_train}: an epoch runs full mini-batches only)")
    check_checkpoint_dir(checkpoint_dir, resume=bool(resume), who=who)


def check_cv_inputs(model, images, targets, *, loss, k: int = 5, batch_size: int = 32, epochs=None, stopping=None,
                    augment_factor: int = 10, checkpoint_dir=None, resume: bool = False, metrics=None,
                    who: str = "cross_validate", **_other_fit_kwargs) -> None:
    """The checks of :func:`check_fit_inputs` for :func:`jigcnn.train.cross_validate`, before any fold.

    ``model`` may be a factory (then only the model-free checks run here; ``fit`` checks each
    fold's model). Fold checkpoints live in ``checkpoint_dir/fold_<f>``: without ``resume``,
    any of them holding a checkpoint is refused unless ``checkpoint.overwrite(dir)``.
    """
    check_positive_int(k, "k", who)
    check_positive_int(augment_factor, "augment_factor", who)
    if epochs is not None:
        check_positive_int(epochs, "epochs", who)
    check_positive_int(batch_size, "batch_size", who)
    mdl = model if hasattr(model, "apply") else None
    n = (check_data(mdl, (images, targets), "images/targets", loss=loss, who=who, metrics=metrics)
         if mdl is not None else None)
    if mdl is None:
        x, y = images, targets
        if not hasattr(x, "shape"):
            x = np.asarray(x)
        if not hasattr(y, "shape"):
            y = np.asarray(y)
        check_finite(x, f"{who}: images")
        check_finite(y, f"{who}: targets")
        if metrics:
            check_metric_targets(metrics, y, f"{who}: targets")
        n = int(x.shape[0]) if len(x.shape) else None
    if n is not None and batch_size > n * augment_factor:
        raise UserError(f"{who}: batch_size {batch_size} is larger than the whole expanded data set "
                        f"({n} images x{augment_factor}): no fold has a full mini-batch")
    if checkpoint_dir is None:
        if resume:
            raise UserError(f"{who}: resume=True needs checkpoint_dir")
        return
    folder = os.fspath(checkpoint_dir)
    check_writable_dir(folder, f"{who}: checkpoint_dir")
    if resume:
        if ckpt.wants_overwrite(checkpoint_dir):
            raise UserError(f"{who}: resume=True and checkpoint.overwrite({folder!r}) contradict each other")
        return
    held = [os.path.join(folder, f"fold_{f}", ckpt.CHECKPOINT_NAME) for f in range(int(k))]
    held = [p for p in held if os.path.exists(p)]
    if not held:
        return
    if ckpt.wants_overwrite(checkpoint_dir):
        for p in held:
            for q in (p, ckpt.previous_path(p)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(q)
        return
    raise CheckpointError(
        f"{who}: {folder} already holds fold checkpoints ({', '.join(held)}); refusing to overwrite them: pass "
        f"resume=True to continue that cross-validation, another checkpoint_dir, or "
        f"checkpoint_dir=jigcnn.train.checkpoint.overwrite({folder!r}) to replace them")


__all__ = ["check_positive_int", "check_learning_rate", "first_non_finite", "check_finite", "check_input_shape",
           "check_class_targets", "loss_kind", "model_shapes", "check_targets", "check_data",
           "check_writable_dir", "check_writable_file", "check_checkpoint_dir", "check_fit_inputs", "check_metric_targets",
           "check_cv_inputs"]
