"""Anatomy of the paper's leak: when does "augment x10, then split" give <= 0.4% MAPE and 100% accuracy?

    PYTHONPATH=src python -m experiments.leak_anatomy [--quick] [--out DIR] [--seed N]
        [--manifest CSV --target COLUMN[,COLUMN]]

Under both protocols (``paper``: augment first, then split the augmented rows, so copies of a drawing
sit on both sides; ``grouped``: split by source drawing / manifest ``group``, augment the training side
only), this experiment varies three factors around a centre point and reports, for every cell, the test
figure, the trivial baseline (training mean / majority class) and a memorisation reference on the same
split: the label of the nearest training row in pixel space (1-NN), with the share of test rows whose
nearest training row is a copy of the same source drawing.

* Augmentation (x10, copy 0 the original): ``noise`` (near-identical copies), ``noise+flip``,
  ``noise+flip+shift``, ``paper`` (rotation, stretch, shifts, left-right flip, noising:
  ``jigcnn.data.paper_preset``). Each level's operations and numbers are in results.json.
* Capacity: the Fig. 5 net (``jigcnn.zoo.ignet_fig5``) with 4, 16 and 64 conv maps, and a Fig. 7
  net (``jigcnn.zoo.ignet_deep``, depth 4: three 3x3 convs of 8 maps + FC) with amplitudes set by
  ``jigcnn.diagnostics.calibrate_init`` (with the paper's W = 1 such nets do not learn, see
  results/depth_freezeconnect).
* Training length: the paper's rule (10 passes, tolerance 7: ``PaperStopping``) and "until the training
  loss stops improving" (``Patience`` on ``train_loss``, patience 2, capped at ``--max-epochs``).

Design: one factor at a time around the centre (paper augmentation, Fig. 5 with 16 maps, paper rule),
plus the corners that favour memorisation most (weakest augmentation x largest net x long training).
Each cell is fold 0 of the protocol's 5-fold split (the same split for every augmentation level and
net), for the regression of age (MAPE on ages) and one fine classification (age as classes: one class
per month of age, as the paper's "age" and "age in months" targets; both are the same partition).

As in ``experiments.ignet_drawings``: Nesterov momentum 0.9, batch 32, MAE loss on the age centred on
its mean (biases are frozen), softmax cross-entropy for classes, 15% validation part. One difference:
the augmentation runs on the raw [0, 1] pixels (noising clips to that range) and the images are shifted
by their mean pixel afterwards (``ignet_drawings`` augments the already shifted images).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings

import numpy as np

from experiments import common

NAME = "leak_anatomy"

PUBLISHED = {
    "regression_mape_percent": 0.4,
    "classification_accuracy": 1.0,
    "source": "IgNet paper, Sec. 5: <= 0.4% MAPE, 100% accuracy on every target; augmentation x10 before the split",
}
# what counts as "reaching the paper's figures" here
GOAL = {"regression_mape_percent": 0.4, "classification_accuracy": 0.99}


def augment_levels() -> dict:
    """The augmentation levels, weakest first: name -> (operations, AugmentConfig)."""
    from jigcnn.data import paper_preset

    p = paper_preset()
    noise = dataclasses.replace(type(p)(), noise_level=p.noise_level, noise_portion=p.noise_portion)
    flip = dataclasses.replace(noise, flip_h_prob=p.flip_h_prob)
    shift = dataclasses.replace(flip, shift_x=p.shift_x, shift_y=p.shift_y)
    return {
        "noise": (["noising"], noise),
        "noise+flip": (["noising", "left-right flip"], flip),
        "noise+flip+shift": (["noising", "left-right flip", "shift"], shift),
        "paper": (["rotation", "stretch x/y", "shift", "left-right flip", "noising"], p),
    }


NETS = {  # name -> (description, kind, filters)
    "fig5_4": ("Fig. 5: conv 5x5, 4 maps + FC", "fig5", 4),
    "fig5_16": ("Fig. 5: conv 5x5, 16 maps + FC", "fig5", 16),
    "fig5_64": ("Fig. 5: conv 5x5, 64 maps + FC", "fig5", 64),
    "deep4": ("Fig. 7: depth 4 (3 convs 3x3, 8 maps each) + FC, calibrated Eq. 3 amplitudes", "deep", 8),
}
TRAINING = {
    "paper": "the paper's rule: up to 10 passes, abandoned after 7 consecutive validation degradations",
    "converge": "until the training error stops improving: Patience on train_mape (min_delta 0.01 points) or "
                "train_accuracy (min_delta 0), patience 2, last weights kept, capped at max_epochs",
}


def design(quick: bool = False) -> list[dict]:
    """The design points: one factor at a time around the centre, plus the memorisation corners."""
    if quick:
        pts = [("paper", "fig5_4", "paper", "centre"), ("paper", "deep4", "paper", "capacity"),
               ("noise", "fig5_4", "converge", "corner")]
    else:
        c = ("paper", "fig5_16", "paper")
        pts = [(*c, "centre")]
        pts += [(a, c[1], c[2], "augmentation") for a in ("noise", "noise+flip", "noise+flip+shift")]
        pts += [(c[0], n, c[2], "capacity") for n in ("fig5_4", "fig5_64", "deep4")]
        pts += [(c[0], c[1], "converge", "training")]
        pts += [("noise", "fig5_64", "paper", "corner"), ("noise", "fig5_64", "converge", "corner"),
                ("paper", "fig5_64", "converge", "corner"), ("noise", "deep4", "paper", "corner")]
    return [{"id": f"{a}|{n}|{t}", "augmentation": a, "net": n, "training": t, "role": r} for a, n, t, r in pts]


# ---------------------------------------------------------------- pieces


def _age_mape(offset: float):
    """("mape", fn): MAPE in percent on ages, for nets trained on age - offset (private copy)."""
    import jax.numpy as jnp

    def mape(pred, target):
        return 100.0 * jnp.mean(jnp.abs(pred - target) / jnp.abs(target + offset))

    return ("mape", mape)


def _stratify(y, fallback, k, validation_fraction):
    """Labels to stratify by: the target's when some class can fill every split, else the fallback, else None."""
    need = max(k, int(round(1 / validation_fraction)))
    for lab, name in ((y, "target"), (fallback, "fallback")):
        if lab is not None and np.bincount(np.asarray(lab)).max() >= need:
            return np.asarray(lab, np.int32), name
    return None, "none"


def nearest_neighbour(x_train, x_test, chunk: int = 512) -> np.ndarray:
    """Index of the nearest training row (Euclidean, pixel space) for every test row."""
    a = np.asarray(x_train, np.float64).reshape(len(x_train), -1)
    b = np.asarray(x_test, np.float64).reshape(len(x_test), -1)
    a2 = (a * a).sum(1)
    out = np.empty(len(b), np.int64)
    for i in range(0, len(b), chunk):
        d = a2[None, :] - 2.0 * b[i:i + chunk] @ a.T  # + |b|^2, the same for every training row
        out[i:i + chunk] = np.argmin(d, axis=1)
    return out


def score(task: str, pred, y) -> float:
    """MAPE in percent (regression, on ages) or accuracy (classification)."""
    pred, y = np.asarray(pred), np.asarray(y)
    if task == "regression":
        return float(100.0 * np.mean(np.abs(pred - y) / np.abs(y)))
    return float(np.mean(pred == y))


def baseline(task: str, y_train, y_test) -> float:
    """The trivial baseline on the test rows: the training mean (regression) or majority class."""
    y_train = np.asarray(y_train)
    if task == "regression":
        return score(task, np.full(len(y_test), y_train.mean()), y_test)
    return score(task, np.full(len(y_test), np.bincount(y_train).argmax()), y_test)


def _model(net: str, n_out: int, input_shape):
    from jigcnn import zoo

    _, kind, filters = NETS[net]
    if kind == "fig5":
        return zoo.ignet_fig5(n_out, filters=filters, W=(1.0, 10.0), B=(0.0, 0.0), input_shape=input_shape)
    return zoo.ignet_deep(4, n_out, filters=filters, input_shape=input_shape)


def _stopping(training: str, max_epochs: int, metric: str):
    from jigcnn.train import Patience, PaperStopping

    if training == "paper":
        return PaperStopping(passes=10, tolerance=7)
    return Patience(patience=2, monitor=f"train_{metric}", mode="auto", min_delta=0.01 if metric == "mape" else 0.0,
                    restore_best=False, max_epochs=max_epochs)


def train_cell(x_all, y_all, split, *, task, net, training, n_out, offset, lr, seed, max_epochs, batch_size,
               quick=False):
    """Train one net on one split (fold 0): {test, val, train figure, epochs, stopped_reason, wall_s}."""
    import jax
    import optax

    from jigcnn.train import fit

    clock = common.Clock()
    tr, te, va = split
    model = _model(net, n_out, tuple(x_all.shape[1:]))
    key = jax.random.fold_in(jax.random.key(seed), 30_000)
    params, state = model.init(jax.random.fold_in(key, 0))
    loss = "mae" if task == "regression" else "softmax_cross_entropy"
    metric = _age_mape(offset) if task == "regression" else "accuracy"
    mname = "mape" if task == "regression" else "accuracy"
    epochs = (2 if training == "converge" else 1) if quick else (10 if training == "paper" else max_epochs)
    amps = None
    if NETS[net][1] == "deep":
        from jigcnn.diagnostics import calibrate_init

        cal = calibrate_init(model, params, state, x_all[tr][:64], y_all[tr][:64], loss)
        params, amps = cal.params, {k: round(float(v), 4) for k, v in cal.amplitudes.items()}
    r = fit(model, params, state, optax.sgd(lr, momentum=0.9, nesterov=True), (x_all[tr], y_all[tr]),
            (x_all[te], y_all[te]), (x_all[va], y_all[va]), epochs=epochs,
            batch_size=batch_size, key=jax.random.fold_in(key, 1), loss=loss, metrics=(metric,),
            stopping=_stopping(training, epochs, mname), progress=False, on_divergence="stop")
    h = r.history
    train_curve = [None if v is None else float(v) for v in h[f"train_{mname}"]]
    return {"test": r.metrics.get(f"test_{mname}"), "val": r.metrics.get(f"val_{mname}"),
            "train_last_epoch": train_curve[-1] if train_curve else None, "train_curve": train_curve,
            "test_curve": [None if v is None else float(v) for v in h[f"test_{mname}"]],
            "epochs": len(h), "stopped_reason": r.stopped_reason,
            "diverged": "diverged" in str(r.stopped_reason), "amplitudes": amps, "lr": lr,
            "params": int(sum(model.count_params())), "wall_s": round(clock.s, 2),
            "load_average_1_5_15": common.load_average()}


def load_data(manifest=None, targets=None, n=338, quick=False):
    """(images in [0, 1], source, tasks [(name, kind, y, n_out, fallback)], description, real?)."""
    from jigcnn.data import encode, load_drawings, load_manifest

    if manifest is not None:
        if not targets:
            raise ValueError("--manifest needs --target COLUMN[,COLUMN]")
        s = load_manifest(manifest)
        tasks = []
        for t in targets:
            col = np.asarray(s.labels[t])
            numeric = np.issubdtype(col.dtype, np.number)
            if numeric and (not np.issubdtype(col.dtype, np.integer) or len(np.unique(col)) > 20):
                tasks.append((t, "regression", col.astype(np.float64), 1, None))
            else:
                idx, table = encode(s.labels, (t,))
                tasks.append((t, "classification", idx, table.n_classes, None))
        desc = f"manifest {manifest} ({len(s)} images, {len(np.unique(s.source))} groups)"
        real = True
    else:
        s = load_drawings(None, n=24 if quick else n, seed=0)
        cat = encode(s.labels, ("age_category",))[0]
        idx, table = encode(s.labels, ("age",))
        tasks = [("age in months (regression)", "regression", np.asarray(s.labels["age_months"], np.float64), 1,
                  None),
                 ("age (one class per month of age)", "classification", idx, table.n_classes, cat)]
        desc = f"{common.STANDIN_NOTE}; n={len(s)}, synth seed 0"
        real = False
    return np.asarray(s.images, np.float32), np.asarray(s.source), tasks, desc, real


# ---------------------------------------------------------------- the experiment


def default_out(quick: bool = False, manifest=None) -> pathlib.Path:
    """results/leak_anatomy for the full stand-in run; a folder under the temp dir for --quick or --manifest."""
    if quick or manifest is not None:
        import tempfile

        return pathlib.Path(tempfile.gettempdir()) / "jigcnn_runs" / (NAME + ("_quick" if quick else "_manifest"))
    return common.RESULTS_ROOT / NAME


def run(out=None, seed=0, quick=False, manifest=None, target=None, max_epochs=25, lr_regression=0.003,
        lr_classification=0.01, lr_classification_deep=0.001, points=None, argv=None, verbose=True, data_dir=None) -> dict:
    """Run the design under both protocols, write ``<out>/results.json`` and the plot; return the results."""
    import jax

    from jigcnn.train import expand_dataset, protocol_splits

    if data_dir is not None:
        raise ValueError("leak_anatomy reads the stand-in or a --manifest CSV (with a group column), "
                         "not --data-dir")
    clock = common.Clock()
    out = pathlib.Path(out or default_out(quick, manifest))
    out.mkdir(parents=True, exist_ok=True)
    targets = [t for t in (target.split(",") if isinstance(target, str) else (target or [])) if t]
    k, factor, vf, batch = (2, 2, 0.25, 8) if quick else (5, 10, 0.15, 32)
    images, source, tasks, desc, real = load_data(manifest, targets, quick=quick)
    shift = float(images.mean())
    pts = design(quick) if points is None else points
    levels = augment_levels()
    cfg = {"seed": seed, "quick": quick, "k": k, "fold": 0, "augment_factor": factor, "validation_fraction": vf,
           "batch_size": batch, "optimizer": "nesterov momentum 0.9", "lr_regression": lr_regression,
           "lr_classification": lr_classification, "lr_classification_deep": lr_classification_deep,
           "lr_note": "deep4 classification uses lr_classification_deep (diverged at 0.01 in a trial run)",
           "max_epochs_converge": 2 if quick else max_epochs,
           "input_shift": shift, "augmentation_on": "raw [0, 1] pixels, then shifted by the mean pixel",
           "nets": {n: NETS[n][0] for n in NETS}, "training": TRAINING,
           "augmentation_levels": {a: {"operations": ops, "config": dataclasses.asdict(c)}
                                   for a, (ops, c) in levels.items()},
           "design": "one factor at a time around the centre (augmentation 'paper', net 'fig5_16', training "
                     "'paper'), plus corners favouring memorisation (weakest augmentation x 64 maps x long "
                     "training); fold 0 of the protocol's k-fold split per cell (not the mean of k folds)",
           "points": pts}
    if quick:
        cfg["design"] = "quick: 3 points on 24 images, x2 augmentation, 2 folds, 1 epoch (2 for 'converge')"
    base_key = jax.random.fold_in(jax.random.key(seed), 10_000)
    data = {}  # augmentation level -> expanded images (shifted)
    for a in sorted({p["augmentation"] for p in pts}, key=list(levels).index):
        data[a] = np.asarray(expand_dataset(base_key, images, factor, levels[a][1])) - shift

    cells, nn_refs, split_info = [], [], []
    for tname, kind, y, n_out, fallback in tasks:
        offset = float(y.mean()) if kind == "regression" else 0.0
        lab, strat = _stratify(None if kind == "regression" else y, fallback, k, vf)
        y_all = np.tile(y, factor)
        targets_all = ((y_all - offset).astype(np.float32)[:, None] if kind == "regression"
                       else y_all.astype(np.int32))
        for proto in ("paper", "grouped"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sklearn: "least populated class has only 1 member"
                sp = protocol_splits(len(y), protocol=proto, k=k, factor=factor, labels=lab, source=source,
                                     validation_fraction=vf, seed=seed)
            tr, te = sp.folds[0]
            va = sp.validation
            leaks = sp.leaks()[0]
            base = baseline(kind, y_all[tr], y_all[te])
            split_info.append({"task": tname, "protocol": proto, "stratified_by": strat, "n_train": len(tr),
                               "n_test": len(te), "n_val": len(va), "sources_in_train_and_test": leaks["train_test"],
                               "test_sources": int(len(np.unique(sp.source_of(te)))), "baseline_test": base})
            nn = {}
            for a, x_all in data.items():
                c = common.Clock()
                j = nearest_neighbour(x_all[tr], x_all[te])
                same = float(np.mean(sp.source_of(tr[j]) == sp.source_of(te)))
                nn[a] = {"task": tname, "protocol": proto, "augmentation": a,
                         "nn1_test": score(kind, y_all[tr][j], y_all[te]), "nn1_same_source": same,
                         "baseline_test": base, "wall_s": round(c.s, 2)}
                nn_refs.append(nn[a])
            for p in pts:
                if verbose:
                    print(f"  {tname} / {proto} / {p['id']} ...", flush=True)
                lr = (lr_regression if kind == "regression" else
                      lr_classification_deep if NETS[p["net"]][1] == "deep" else lr_classification)
                r = train_cell(data[p["augmentation"]], targets_all, (tr, te, va), task=kind, net=p["net"],
                               training=p["training"], n_out=n_out, offset=offset, lr=lr, seed=seed,
                               max_epochs=max_epochs, batch_size=batch, quick=quick)
                cell = {"task": tname, "kind": kind, "metric": "MAPE %" if kind == "regression" else "accuracy",
                        "protocol": proto, **{q: p[q] for q in ("id", "augmentation", "net", "training", "role")},
                        "test": r.pop("test"), "baseline_test": base,
                        "nn1_test": nn[p["augmentation"]]["nn1_test"],
                        "nn1_same_source": nn[p["augmentation"]]["nn1_same_source"],
                        "sources_in_train_and_test": leaks["train_test"], **r}
                cells.append(cell)
                if verbose:
                    print(f"    test {common.fmt(cell['test'], '.3f')} (base {base:.3f}, 1-NN "
                          f"{cell['nn1_test']:.3f}), {cell['epochs']} epochs, {cell['wall_s']:.1f} s, "
                          f"load {cell['load_average_1_5_15']}", flush=True)
    results = {"experiment": NAME, "command": common.command_line(NAME, argv), "data": desc, "real_data": real,
               "protocol": {"paper": "augment first, then split the augmented rows (copies on both sides: leaky)",
                            "grouped": "split by source drawing / manifest group, augment the training side only; "
                                       "test and validation rows are originals"},
               "config": cfg, "published": PUBLISHED, "goal": GOAL, "tasks": [t[0] for t in tasks],
               "splits": split_info, "nn1_reference": nn_refs, "cells": cells}
    results["answer"] = answer(cells, nn_refs)
    results["metrics"] = {f"{c['task']} [{c['protocol']}] {c['id']}": c["test"] for c in cells}
    results["headline"] = headline(results)
    results["plots"] = [plot(out, results)]
    common.finish(out, results, clock.t0)
    if verbose:
        print(summary(results))
    return results


def _reaches(kind, v) -> bool:
    if v is None:
        return False
    return v <= GOAL["regression_mape_percent"] if kind == "regression" else v >= GOAL["classification_accuracy"]


def answer(cells, nn_refs) -> dict:
    """Per task: the paper-protocol cells that reach the paper's figures, else the closest, with their context."""
    out = {}
    for task in dict.fromkeys(c["task"] for c in cells):
        cs = [c for c in cells if c["task"] == task]
        kind = cs[0]["kind"]
        better = min if kind == "regression" else max
        paper = [c for c in cs if c["protocol"] == "paper" and c["test"] is not None]
        hits = [c["id"] for c in paper if _reaches(kind, c["test"])]
        best = better(paper, key=lambda c: c["test"]) if paper else None
        entry = {"kind": kind, "goal": GOAL["regression_mape_percent" if kind == "regression"
                                            else "classification_accuracy"],
                 "paper_cells_reaching_goal": hits}
        if best is not None:
            g = next((c for c in cs if c["protocol"] == "grouped" and c["id"] == best["id"]), None)
            entry["closest_paper_cell"] = {q: best[q] for q in ("id", "test", "baseline_test", "nn1_test",
                                                                "nn1_same_source", "train_last_epoch", "epochs")}
            entry["grouped_at_that_cell"] = None if g is None else {q: g[q] for q in ("test", "baseline_test",
                                                                                      "nn1_test", "nn1_same_source")}
        refs = [r for r in nn_refs if r["task"] == task]
        entry["nn1_by_augmentation"] = {f"{r['augmentation']} [{r['protocol']}]": r["nn1_test"] for r in refs}
        entry["nn1_reaches_goal"] = [f"{r['augmentation']} [{r['protocol']}]" for r in refs
                                     if _reaches(kind, r["nn1_test"])]
        out[task] = entry
    return out


def headline(results: dict) -> dict:
    """The one-line published-vs-ours summary for docs/results.md."""
    parts = []
    for task, e in results["answer"].items():
        spec = ".2f" if e["kind"] == "regression" else ".3f"
        b, g = e.get("closest_paper_cell"), e.get("grouped_at_that_cell")
        if b is None:
            continue
        reached = f"goal reached in {len(e['paper_cells_reaching_goal'])} cell(s)" if e["paper_cells_reaching_goal"] \
            else "goal not reached"
        parts.append(f"{task}: {reached}; best paper cell {b['id']} {common.fmt(b['test'], spec)} "
                     f"(grouped {common.fmt(g and g['test'], spec)}, base {common.fmt(b['baseline_test'], spec)}, "
                     f"1-NN {common.fmt(b['nn1_test'], spec)})")
    return {"published": "IgNet <= 0.4% MAPE; 100% accuracy (augmented x10 before the split)",
            "ours": "; ".join(parts)}


def plot(out, results) -> str:
    """One PNG: per task, the figure against augmentation strength and against capacity, both protocols + references."""
    plt = common.matplotlib_pyplot()
    cells, refs = results["cells"], results["nn1_reference"]
    tasks = results["tasks"]
    centre = next(p for p in results["config"]["points"] if p["role"] == "centre")
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.4 * len(tasks)), squeeze=False)
    colours = {"paper": "tab:red", "grouped": "tab:blue"}
    levels = list(results["config"]["augmentation_levels"])
    nets = list(NETS)
    for row, task in enumerate(tasks):
        kind = next(c["kind"] for c in cells if c["task"] == task)
        for col, (factor, values, fixed) in enumerate((
                ("augmentation", levels, {"net": centre["net"], "training": centre["training"]}),
                ("net", nets, {"augmentation": centre["augmentation"], "training": centre["training"]}))):
            ax = axes[row][col]
            for proto in ("paper", "grouped"):
                sel = {c[factor]: c for c in cells if c["task"] == task and c["protocol"] == proto
                       and all(c[q] == v for q, v in fixed.items())}
                xs = [i for i, v in enumerate(values) if v in sel]
                if not xs:
                    continue
                ys = [sel[values[i]]["test"] for i in xs]
                ax.plot(xs, [np.nan if v is None else v for v in ys], "o-", color=colours[proto],
                        label=f"{proto} protocol, net")
                ax.axhline(sel[values[xs[0]]]["baseline_test"], color=colours[proto], ls=":", lw=1,
                           label=f"{proto}: trivial baseline")
                if factor == "augmentation":
                    nn = {r["augmentation"]: r["nn1_test"] for r in refs if r["task"] == task and r["protocol"] == proto}
                    ax.plot(xs, [nn[values[i]] for i in xs], "s--", color=colours[proto], alpha=0.5,
                            label=f"{proto}: 1-NN in pixel space")
                else:
                    ax.axhline(sel[values[xs[0]]]["nn1_test"], color=colours[proto], ls="--", alpha=0.5, lw=1,
                               label=f"{proto}: 1-NN in pixel space")
                # the long-training / corner cells at the same x, as open markers
                for c in cells:
                    if (c["task"] == task and c["protocol"] == proto and c["role"] in ("training", "corner")
                            and c[factor] in values and c["test"] is not None):
                        xi = values.index(c[factor])
                        ax.plot(xi, c["test"], marker="^" if c["training"] == "converge" else "v", mfc="none",
                                color=colours[proto], ls="none")
                        other = [c[q] for q in ("augmentation", "net", "training")
                                 if q != factor and c[q] != centre[q]]
                        ax.annotate(",".join(other), (xi, c["test"]), xytext=(4, 0), textcoords="offset points",
                                    fontsize=5, color=colours[proto])
            ax.axhline(GOAL["regression_mape_percent"] if kind == "regression" else 1.0, color="k", lw=1.5,
                       label="published IgNet")
            ax.set_xticks(range(len(values)), values, fontsize=7)
            ax.set_xlabel({"augmentation": "augmentation (weakest left)", "net": "capacity"}[factor]
                          , fontsize=7)
            ax.set_ylabel("test MAPE % (lower is better)" if kind == "regression" else "test accuracy")
            ax.set_title(f"{task}: vs {factor} ({'net ' + fixed.get('net', '') if 'net' in fixed else 'aug. ' + fixed['augmentation']})",
                         fontsize=8)
            if row == 0 and col == 0:
                ax.legend(fontsize=6)
    fig.suptitle("Leak anatomy: " + ("real data" if results["real_data"] else "SYNTHETIC STAND-IN data")
                 + "; open triangles: corner / long-training cells, labelled by what differs from the centre",
                 fontsize=9)
    fig.tight_layout()
    return common.save_fig(fig, pathlib.Path(out) / "leak_anatomy.png")


def summary(results: dict) -> str:
    """The console / docs table: every cell beside its baseline and 1-NN reference, then the answer."""
    rows = []
    for c in results["cells"]:
        spec = ".2f" if c["kind"] == "regression" else ".3f"
        rows.append([c["task"].split(" (")[0], c["protocol"], c["augmentation"], c["net"], c["training"],
                     common.fmt(c["test"], spec), common.fmt(c["baseline_test"], spec), common.fmt(c["nn1_test"], spec),
                     common.fmt(c["nn1_same_source"], ".2f"), common.fmt(c["train_last_epoch"], spec), c["epochs"],
                     common.fmt(c["wall_s"], ".0f")])
    lines = [common.banner("Leak anatomy: paper vs grouped protocol", results["data"]),
             common.table(rows, ["task", "protocol", "augmentation", "net", "training", "test", "baseline", "1-NN",
                                 "1-NN same src", "train (last)", "epochs", "s"]),
             "test/baseline/1-NN: MAPE % (regression, lower is better) or accuracy; 1-NN = label of the nearest "
             "training row in pixel space, same split; '1-NN same src' = share of test rows whose nearest "
             "training row is a copy of the same drawing."]
    for task, e in results["answer"].items():
        b = e.get("closest_paper_cell") or {}
        g = e.get("grouped_at_that_cell") or {}
        lines.append(f"{task}: goal {e['goal']} reached by the net under the paper protocol in "
                     f"{e['paper_cells_reaching_goal'] or 'no cell'}; closest {b.get('id')} = "
                     f"{common.fmt(b.get('test'), '.3f')} (grouped {common.fmt(g.get('test'), '.3f')}); 1-NN reaches "
                     f"it at {e['nn1_reaches_goal'] or 'no level'}")
    env = results.get("environment", {})
    lines.append(f"wall time {common.fmt(results.get('wall_time_s'), '.0f')} s, load average "
                 f"{env.get('load_average_1_5_15')}, {env.get('cpu_count')} CPUs (shared machine)")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command line: parse the options, run, print the summary."""
    p = common.base_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--manifest", default=None, help="CSV manifest of any labelled folder (file, group, labels)")
    p.add_argument("--target", default=None, help="manifest column(s), comma-separated (numeric: regression)")
    p.add_argument("--max-epochs", type=int, default=25, help="cap for the 'converge' training length")
    p.set_defaults(out=None)  # default: results/leak_anatomy for the full stand-in run only (see default_out)
    a = p.parse_args(argv)
    run(out=a.out, seed=a.seed, quick=a.quick, manifest=a.manifest, target=a.target, max_epochs=a.max_epochs,
        data_dir=a.data_dir, argv=argv)
    return 0


if __name__ == "__main__":
    common.run_program(main)
