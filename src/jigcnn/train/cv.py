"""Cross-validation: k folds (stratified, grouped), a held-out validation part, and the two protocols.

**Protocol "paper"** (what the paper did): the data set is augmented x10 *first*
(every copy keeps its drawing's source id), then the validation part and the k
folds are drawn from the augmented rows without regard to the source. Copies of
one drawing sit on both sides of a split: the test and validation scores
measure, in part, recognition of a drawing seen in training (a leak).

**Protocol "grouped"** (the honest one): the validation part and the folds are
drawn over *source drawings* (or the manifest's ``group``), so every copy of a
drawing is on one side; only the training side is augmented, test and
validation see the original images only.

Both protocols index one *expanded* data set of ``factor * n`` rows: row
``c * n + i`` is copy ``c`` of image ``i`` (copy 0 the original, copies
1..factor-1 drawn by ``augment``), so the row's source image is ``row % n``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jigcnn.train import validate
from jigcnn.train.inputs import as_augment

PROTOCOLS = ("paper", "grouped")

# ---------------------------------------------------------------- splitting


def _have_sklearn() -> bool:
    try:
        import sklearn.model_selection  # noqa: F401
    except ImportError:
        return False
    return True


def _np_stratified(y, k, rng):
    """Per class, shuffled, dealt round-robin over the folds (rotating start keeps fold sizes balanced)."""
    fold_of = np.empty(len(y), np.int64)
    start = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        fold_of[idx] = (start + np.arange(len(idx))) % k
        start = (start + len(idx)) % k
    return fold_of


def _np_grouped(groups, k, rng, y=None):
    """Whole groups to folds: largest first (random tie order), each to the fold that keeps
    sizes -- and, with ``y``, class proportions -- most balanced."""
    uniq, inv = np.unique(groups, return_inverse=True)
    n_g = len(uniq)
    if n_g < k:
        raise ValueError(f"cannot split {n_g} groups into {k} folds")
    sizes = np.bincount(inv, minlength=n_g)
    order = rng.permutation(n_g)
    order = order[np.argsort(-sizes[order], kind="stable")]
    if y is not None:
        classes, yi = np.unique(y, return_inverse=True)
        counts = np.zeros((n_g, len(classes)))
        np.add.at(counts, (inv, yi), 1)
        total = counts.sum(0)
    fold_size = np.zeros(k)
    fold_counts = np.zeros((k, len(classes))) if y is not None else None
    g_fold = np.empty(n_g, np.int64)
    for g in order:
        if y is None:
            f = int(np.argmin(fold_size))
        else:
            costs = []
            for f in range(k):
                fc = fold_counts.copy()
                fc[f] += counts[g]
                frac = fc / np.maximum(total, 1)
                costs.append((np.std(frac, axis=0).mean(), fold_size[f]))
            f = min(range(k), key=lambda i: costs[i])
            fold_counts[f] += counts[g]
        g_fold[g] = f
        fold_size[f] += sizes[g]
    return g_fold[inv]


def kfold_indices(n: int, k: int = 5, *, stratify=None, groups=None, seed: int = 0,
                  use_sklearn: bool | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, test) index pairs over ``range(n)``; every index is in exactly one test part.

    ``stratify``: class labels (N,) keeping class proportions per fold;
    ``groups``: group ids (N,) -- a group never straddles train and test. Uses
    scikit-learn's ``StratifiedKFold`` / ``GroupKFold`` / ``StratifiedGroupKFold``
    when installed (``use_sklearn=None``), else (or with ``use_sklearn=False``) a
    numpy implementation with the same guarantees (stratification there is greedy,
    approximately balanced). Shuffled with ``seed``.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if n < k:
        raise ValueError(f"cannot split {n} samples into {k} folds")
    y = None if stratify is None else np.asarray(stratify)
    if y is not None and y.ndim == 2:
        y = y.argmax(-1)
    g = None if groups is None else np.asarray(groups)
    for name, a in (("stratify", y), ("groups", g)):
        if a is not None and len(a) != n:
            raise ValueError(f"{name} has {len(a)} entries for {n} samples")
    if y is not None and np.unique(y, return_counts=True)[1].max() < k:
        # e.g. all four label groups joined on 338 drawings: no class can be spread over k folds
        warnings.warn(f"kfold_indices: every class has fewer than {k} members, so the folds are not stratified",
                      stacklevel=2)
        y = None
    if use_sklearn is None:
        use_sklearn = _have_sklearn()
    idx = np.arange(n)
    if use_sklearn:
        from sklearn import model_selection as ms

        if g is None and y is None:
            splits = ms.KFold(k, shuffle=True, random_state=seed).split(idx)
        elif g is None:
            splits = ms.StratifiedKFold(k, shuffle=True, random_state=seed).split(idx, y)
        elif y is None:
            try:
                splitter = ms.GroupKFold(k, shuffle=True, random_state=seed)
            except TypeError:  # scikit-learn < 1.6: no shuffling
                splitter = ms.GroupKFold(k)
            splits = splitter.split(idx, groups=g)
        else:
            splits = ms.StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(idx, y, g)
        return [(np.sort(a).astype(np.int64), np.sort(b).astype(np.int64)) for a, b in splits]
    rng = np.random.default_rng(seed)
    if g is not None:
        fold_of = _np_grouped(g, k, rng, y)
    elif y is not None:
        fold_of = _np_stratified(y, k, rng)
    else:
        fold_of = rng.permutation(n) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def split_validation(n: int, fraction: float = 0.15, *, stratify=None, groups=None, seed: int = 0,
                     use_sklearn: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rest, validation) indices: about ``fraction`` of ``range(n)`` held out (whole groups when given).

    Implemented as one fold of a ``round(1 / fraction)``-fold split, so it is
    stratified and grouped like :func:`kfold_indices`. The paper held out
    3,500 of 21,000 samples (1/6) in the Keras runs.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    k = max(2, int(round(1 / fraction)))
    rest, val = kfold_indices(n, k, stratify=stratify, groups=groups, seed=seed + 7919,
                              use_sklearn=use_sklearn)[0]
    return rest, val


@dataclasses.dataclass
class ProtocolSplits:
    """Row indices into the expanded data set (``factor * n`` rows, row ``c*n+i`` = copy c of image i)."""

    protocol: str
    n: int
    factor: int
    validation: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train rows, test rows)
    source: np.ndarray  # source id per original image

    def source_of(self, rows) -> np.ndarray:
        """Source ids of expanded rows."""
        return self.source[np.asarray(rows) % self.n]

    def leaks(self) -> list[dict]:
        """Per fold: how many sources have rows both in train and test / train and validation."""
        out = []
        val_src = set(self.source_of(self.validation).tolist())
        for tr, te in self.folds:
            tr_src = set(self.source_of(tr).tolist())
            out.append({"train_test": len(tr_src & set(self.source_of(te).tolist())),
                        "train_val": len(tr_src & val_src),
                        "test_val": len(set(self.source_of(te).tolist()) & val_src)})
        return out


def protocol_splits(n: int, *, protocol: str, k: int = 5, factor: int = 10, labels=None, source=None,
                    validation_fraction: float = 0.15, seed: int = 0,
                    use_sklearn: bool | None = None) -> ProtocolSplits:
    """The validation part and the k folds of a protocol, as rows of the expanded data set.

    * ``paper``: all ``factor * n`` rows split directly (stratified by ``labels``),
      ignoring ``source``.
    * ``grouped``: the ``n`` originals split by ``source`` (default: each image its
      own source), stratified by ``labels``; a fold's training rows are every copy
      of its training images, its test rows and the validation rows are copy 0
      (the originals) only.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if factor < 1:
        raise ValueError(f"augment factor must be >= 1, got {factor}")
    src = np.arange(n) if source is None else np.asarray(source)
    if len(src) != n:
        raise ValueError(f"source has {len(src)} entries for {n} images")
    lab = None if labels is None else np.asarray(labels)
    if lab is not None and lab.ndim == 2:
        lab = lab.argmax(-1)
    if protocol == "paper":
        m = n * factor
        lab_m = None if lab is None else np.tile(lab, factor)
        rest, val = split_validation(m, validation_fraction, stratify=lab_m, seed=seed, use_sklearn=use_sklearn)
        folds = kfold_indices(len(rest), k, stratify=None if lab_m is None else lab_m[rest], seed=seed,
                              use_sklearn=use_sklearn)
        folds = [(rest[a], rest[b]) for a, b in folds]
        return ProtocolSplits(protocol, n, factor, val, folds, src)
    rest, val = split_validation(n, validation_fraction, stratify=lab, groups=src, seed=seed,
                                 use_sklearn=use_sklearn)
    folds = kfold_indices(len(rest), k, stratify=None if lab is None else lab[rest], groups=src[rest], seed=seed,
                          use_sklearn=use_sklearn)
    out = []
    for a, b in folds:
        tr = rest[a]
        tr_rows = np.sort(np.concatenate([tr + c * n for c in range(factor)]))
        out.append((tr_rows, rest[b]))
    return ProtocolSplits(protocol, n, factor, val, out, src)


def expand_dataset(key, images, factor: int, augment: Callable | None = None):
    """``factor * n`` images: the originals, then ``factor - 1`` augmented copies (``augment(key, images)``).

    Copy ``c`` uses ``jax.random.fold_in(key, c)``; without ``augment`` the
    copies are plain duplicates. Targets and sources of row ``r`` are those of
    image ``r % n``.
    """
    images = jnp.asarray(images)
    augment = as_augment(augment)
    copies = [images]
    for c in range(1, factor):
        if augment is None:
            copies.append(images)
        else:
            copies.append(augment(jax.random.fold_in(key, c), images))
    return jnp.concatenate(copies, axis=0)


# ---------------------------------------------------------------- cross-validation


@dataclasses.dataclass
class CVResult:
    """Per-fold metrics, their mean and std, the protocol used, the leak counts and the splits used."""

    protocol: str
    k: int
    augment_factor: int
    folds: list[dict]  # per fold: metrics, n_train, n_test, n_val, stopped_reason, epochs, leaks
    mean: dict
    std: dict
    histories: list = dataclasses.field(default_factory=list)
    splits: ProtocolSplits | None = None  # the validation rows and folds that were trained on

    def summary(self) -> str:
        """The protocol, ``mean +- std`` of every metric and the per-fold train/test leak counts."""
        lines = [f"protocol={self.protocol} k={self.k} augment x{self.augment_factor}"]
        for name in sorted(self.mean):
            lines.append(f"  {name}: {self.mean[name]:.4f} +- {self.std[name]:.4f}")
        leaks = [f["leaks"]["train_test"] for f in self.folds]
        lines.append(f"  sources on both sides of train/test, per fold: {leaks}")
        return "\n".join(lines)


def _auto_stratify(targets):
    t = np.asarray(targets)
    if t.ndim == 1 and np.issubdtype(t.dtype, np.integer):
        return t
    if t.ndim == 2 and t.shape[1] > 1 and np.all((t == 0) | (t == 1)):
        return t.argmax(-1)
    return None


def cross_validate(model, images, targets, source=None, *, protocol: str = "grouped", optimizer, loss,
                   k: int = 5, augment_factor: int = 10, augment: Callable | None = None,
                   metrics=("accuracy",), epochs: int | None = None, batch_size: int = 32, stopping=None,
                   validation_fraction: float = 0.15, stratify="auto", seed: int = 0, vmapped: bool = False,
                   grad_method: str = "autodiff", progress=True, use_sklearn: bool | None = None,
                   train_augment: Callable | None = None, across_processes: str = "folds",
                   **fit_kwargs) -> CVResult:
    """k-fold cross-validation under ``protocol`` ("paper" or "grouped"); see the module docstring.

    ``model``: a :class:`jigcnn.Sequential` or a zero-argument factory returning
    one; ``optimizer``: an optax transformation or a factory ``f(fold) ->
    transformation`` (e.g. a freezeconnect key per fold). ``source``: the source
    drawing (or manifest ``group``) per image. ``stratify="auto"`` stratifies by
    integer / one-hot class targets, not regression targets. ``stopping``
    defaults to the paper's rule (10 passes, tolerance 7). ``train_augment``:
    optional on-the-fly augmentation of training batches (on top of the x factor
    expansion). ``checkpoint_dir`` (in ``fit_kwargs``) gets one subdirectory
    per fold, so ``resume=True`` continues a killed cross-validation
    (sequential folds only: ``vmapped=True`` refuses it, naming it). Fold ``f`` uses
    :func:`jigcnn.train.parallel.fold_keys`, so
    ``vmapped=True`` (all folds in one compiled program) gives the same numbers
    within float tolerance. ``augment`` / ``train_augment`` may also be a
    ``jigcnn.data.augment.AugmentConfig`` (applied with ``augment_batch``).

    In a multi-process run (:func:`jigcnn.distributed.initialize`), ``across_processes="folds"``
    (default) gives fold ``f`` to process ``f % N``: each process trains its folds alone on its
    own devices (``fit(..., mesh=False)``, its fold checkpoints in ``fold_f``), and the folds'
    results are gathered on every process, so every process returns the whole
    :class:`CVResult` (the same numbers as one process: each fold is the same program on the
    same data and keys; each fold's dict says which ``process`` trained it). ``"data"`` trains the folds one after another, each data parallel over
    every process's devices (``fit``'s default). One process: ignored.
    """
    validate.check_cv_inputs(model, images, targets, loss=loss, k=k, batch_size=batch_size, epochs=epochs,
                             stopping=stopping, augment_factor=augment_factor, metrics=metrics, **fit_kwargs)
    from jigcnn import distributed
    from jigcnn.train.epochs import History
    from jigcnn.train.loop import fit
    from jigcnn.train.parallel import fit_folds_vmapped, fold_keys
    from jigcnn.train.stopping import PaperStopping

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if across_processes not in ("folds", "data"):
        raise ValueError(f"across_processes must be 'folds' or 'data', got {across_processes!r}")
    me = distributed.info()
    spread = me.multiprocess and across_processes == "folds"
    if spread and vmapped:
        raise ValueError("cross_validate(vmapped=True) cannot spread its folds over the processes of a multi-process "
                         "run: pass vmapped=False (each process trains its folds) or across_processes='data'")
    if spread and fit_kwargs.get("mesh") not in (None, False):
        raise ValueError("cross_validate(across_processes='folds'): each process trains its folds on its own "
                         "devices; a mesh is not supported (pass across_processes='data' for a data-parallel fit)")
    mdl = model() if callable(model) and not hasattr(model, "apply") else model
    images = jnp.asarray(images, jnp.float32)
    targets = jnp.asarray(targets)
    n = int(images.shape[0])
    labels = _auto_stratify(targets) if isinstance(stratify, str) and stratify == "auto" else stratify
    stopping = PaperStopping() if stopping is None else stopping
    train_augment = as_augment(train_augment)
    splits = protocol_splits(n, protocol=protocol, k=k, factor=augment_factor, labels=labels, source=source,
                             validation_fraction=validation_fraction, seed=seed, use_sklearn=use_sklearn)
    key = jax.random.key(seed)
    x_all = expand_dataset(jax.random.fold_in(key, 10_000), images, augment_factor, augment)
    y_all = jnp.concatenate([targets] * augment_factor, axis=0)
    leaks = splits.leaks()
    keys = fold_keys(jax.random.fold_in(key, 20_000), k)
    opt = optimizer if hasattr(optimizer, "init") and hasattr(optimizer, "update") else None
    folds, histories = [], []
    if vmapped:
        if opt is None:
            raise ValueError("cross_validate(vmapped=True) needs one optimizer for every fold")
        res = fit_folds_vmapped(mdl, opt, x_all, y_all, splits.folds, key=jax.random.fold_in(key, 20_000),
                                loss=loss, metrics=metrics, epochs=epochs, batch_size=batch_size,
                                validation=splits.validation, stopping=stopping, augment=train_augment,
                                grad_method=grad_method, progress=progress, **fit_kwargs)
        for f in range(k):
            folds.append({"fold": f, "metrics": res.metrics[f], "stopped_reason": res.stopped_reasons[f],
                          "epochs": len(res.histories[f])})
        histories = res.histories
    else:
        val = (x_all[splits.validation], y_all[splits.validation])
        ckdir = fit_kwargs.pop("checkpoint_dir", None)
        if spread:  # every process must split the same data the same way before dealing the folds out
            fit_kwargs["mesh"] = False
            distributed.check_consistent("cross_validate configuration", {
                "k": k, "protocol": protocol, "seed": seed, "epochs": epochs, "batch_size": batch_size,
                "augment_factor": augment_factor, "stopping": repr(stopping), "metrics": list(metrics),
                "loss": loss if isinstance(loss, str) else repr(loss),
                "data": _digest(np.asarray(x_all), np.asarray(y_all)),
                "folds": _digest(*[np.asarray(r) for fold in splits.folds for r in fold])})
        for f, (tr, te) in enumerate(splits.folds):
            if spread and f % me.num_processes != me.process_id:
                folds.append(None)
                histories.append(None)
                continue
            params, state = mdl.init(keys[f][0])
            tx = opt if opt is not None else optimizer(f)
            r = fit(mdl, params, state, tx, (x_all[tr], y_all[tr]), (x_all[te], y_all[te]), val,
                    epochs=epochs, batch_size=batch_size, key=keys[f][1], loss=loss, metrics=metrics,
                    stopping=stopping, augment=train_augment, grad_method=grad_method, progress=progress,
                    checkpoint_dir=None if ckdir is None else os.path.join(os.fspath(ckdir), f"fold_{f}"),
                    config={"protocol": protocol, "fold": f, "k": k, "augment_factor": augment_factor,
                            "seed": seed}, **fit_kwargs)
            folds.append({"fold": f, "metrics": r.metrics, "stopped_reason": r.stopped_reason,
                          "epochs": len(r.history), **({"process": me.process_id} if spread else {})})
            histories.append(r.history)
        if spread:  # every process gets every fold's result (waits while the others are alive)
            mine = {f: (folds[f], histories[f].records) for f in range(k) if folds[f] is not None}
            for got in distributed.gather_json("cross_validate folds", {str(f): v for f, v in mine.items()}):
                for f, (fold, records) in got.items():
                    folds[int(f)], histories[int(f)] = fold, History(records)
    for f, (tr, te) in enumerate(splits.folds):
        folds[f].update(n_train=int(len(tr)), n_test=int(len(te)), n_val=int(len(splits.validation)),
                        leaks=leaks[f])
    names = sorted(folds[0]["metrics"])
    vals = {m: np.array([fd["metrics"][m] for fd in folds], np.float64) for m in names}
    mean = {m: float(v.mean()) for m, v in vals.items()}
    std = {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in vals.items()}
    return CVResult(protocol, k, augment_factor, folds, mean, std, histories, splits)


def _digest(*arrays) -> str:
    """SHA-256 of arrays' shapes, dtypes and bytes (the processes of a run must hold the same data)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


__all__ = ["PROTOCOLS", "as_augment", "kfold_indices", "split_validation", "protocol_splits", "ProtocolSplits",
           "expand_dataset", "cross_validate", "CVResult"]
