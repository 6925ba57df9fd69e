"""The paper's Keras net (two blocks of conv-conv-ReLU-maxpool, two sigmoid FC layers, softmax, dropout)
built with jigcnn, on Table 1's four target combinations and the regression, against the IgNet Fig. 5
net on the same data and protocol, with training times.

    PYTHONPATH=src python -m experiments.keras_baseline [--out results/keras_baseline] [--seed 0] [--quick]
        [--data-dir STIRLING_FOLDER] [--protocols paper,grouped] [--folds 1] [--epochs 10]

* Keras net: ``jigcnn.zoo.keras_drawings_net`` (3x3 convs 32/64, hidden FC 128 sigmoid, dropout 0.25/0.5;
  the paper prints no sizes). Classification: softmax + cross-entropy, Adam 1e-3 (Keras' usual choice;
  the paper does not say). Regression: sigmoid output, targets scaled into (0, 1), MSE loss (as the paper).
* IgNet net: ``jigcnn.zoo.ignet_fig5`` (4 maps 5x5, identity, Eq. 3 init, frozen biases), Nesterov SGD,
  MAE for regression (as in ``ignet_drawings``).
* Data and protocol as ``ignet_drawings`` (x10 augmentation with the paper preset; ``paper`` and ``grouped``),
  but to keep the run short only the first ``--folds`` folds of 5 are trained (default 1), each up to
  ``--epochs`` passes with the paper's stopping rule (``PaperStopping``, tolerance 7 on the validation
  metric). Both nets train through the same ``jigcnn.train.fit`` (a Python loop over one jitted step).
* Times: wall time per net and target (compilation included) and the steady-state time per epoch
  (epochs after the first); the ratio Keras / IgNet is the paper's "10x faster on regression, 30x on
  classification" comparison (the paper compared its C++ system with Keras; here both nets run on the same
  JAX/XLA backend, so the ratio measures the nets, not the systems).
"""

from __future__ import annotations

import warnings

import numpy as np

from experiments import common

NAME = "keras_baseline"
PROTOCOLS = ("paper", "grouped")
K = 5  # folds of the protocols
TABLE1 = (
    ("age_category", "age", "who_drew", "who_is_drawn"),
    ("age_category", "who_drew", "who_is_drawn"),
    ("age_category", "who_is_drawn"),
    ("age_category",),
)
PUBLISHED_KERAS = {"age_category + age + who_drew + who_is_drawn": 0.8558,
                   "age_category + who_drew + who_is_drawn": 0.7780,
                   "age_category + who_is_drawn": 0.8372, "age_category": 0.8854, "regression_mape_percent": 12.95}


def _epoch_time(history) -> float | None:
    t = [x for x in history["time"] if x is not None]
    return float(np.mean(t[1:])) if len(t) > 1 else (float(t[0]) if t else None)


def run(out=None, data_dir=None, seed=0, quick=False, protocols=PROTOCOLS, folds=1, epochs=10,
        lr_ignet_reg=0.003, lr_ignet_cls=0.01, lr_keras=1e-3, argv=None, verbose=True) -> dict:
    """Run the experiment, write ``<out>/results.json``, print the table; return the results."""
    import jax
    import optax

    from jigcnn import zoo
    from jigcnn.data import encode
    from jigcnn.metrics import age_mape_metric
    from jigcnn.train import PaperStopping, fit

    clock = common.Clock()
    protocols = common.check_choices("--protocols", protocols, PROTOCOLS)
    common.check_int("--folds", folds, 1, K)
    common.check_int("--epochs", epochs, 1)
    for arg, v in (("lr_ignet_reg", lr_ignet_reg), ("lr_ignet_cls", lr_ignet_cls), ("lr_keras", lr_keras)):
        common.check_float(arg, v, gt=0)
    common.check_dir("--data-dir", data_dir)
    out = common.prepare_output(NAME, out, quick)
    n, factor, k, batch, filters, kfilters, hidden = 338, 10, K, 32, 4, (32, 64), 128
    targets = (None,) + TABLE1
    if quick:
        n, factor, k, batch, filters, kfilters, hidden, epochs, folds = 24, 2, 2, 8, 2, (4, 4), 8, 1, 1
        protocols, targets = ("grouped",), (None, ("age_category",))
    s, images, desc, real = common.drawings(data_dir, n=n)
    y_age = np.asarray(s.labels["age_months"], np.float32)
    offset = float(y_age.mean())
    lo, hi = float(y_age.min()), float(y_age.max())
    cat_idx = encode(s.labels, ("age_category",))[0]
    key = jax.random.key(seed)
    rows = []
    for groups in targets:
        reg = groups is None
        label = "age in months (regression)" if reg else " + ".join(groups)
        if not reg:
            idx, table = encode(s.labels, groups)
        for proto in protocols:
            labels = None if reg else common.stratify_labels(idx, cat_idx, k)[0]
            row = {"target": label, "task": "regression" if reg else "classification", "protocol": proto,
                   "n_classes": None if reg else table.n_classes, "folds": []}
            for fold in range(folds):
                fold_res = {"fold": fold}
                for net in ("ignet", "keras"):
                    if reg and net == "keras":  # sigmoid output: targets scaled into (0.1, 0.9)
                        scale = (hi - lo) / 0.8
                        yt = ((y_age - lo) / scale + 0.1)[:, None]
                        metric = age_mape_metric(lo - 0.1 * scale, scale)  # age = (y - 0.1) * scale + lo
                    elif reg:
                        yt, metric = (y_age - offset)[:, None], age_mape_metric(offset)
                    else:
                        yt, metric = idx.astype(np.int32), "accuracy"
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        split = common.one_split(images, yt, s.source, protocol=proto, factor=factor, seed=seed,
                                                 fold=fold, k=k, labels=labels)
                    n_out = 1 if reg else table.n_classes
                    if net == "ignet":
                        m = zoo.ignet_fig5(n_out, filters=filters)
                        tx = optax.sgd(lr_ignet_reg if reg else lr_ignet_cls, momentum=0.9, nesterov=True)
                        loss = "mae" if reg else "softmax_cross_entropy"
                    else:
                        m = zoo.keras_drawings_net(n_out, "regression" if reg else "classification",
                                                   filters=kfilters, hidden=hidden)
                        tx = optax.adam(lr_keras)
                        loss = "mse" if reg else "cross_entropy"
                    c = common.Clock()
                    kf = jax.random.fold_in(key, fold)
                    p0, s0 = m.init(jax.random.fold_in(kf, 0))
                    r = fit(m, p0, s0, tx, split[0], split[1], split[2], key=jax.random.fold_in(kf, 1), loss=loss,
                            metrics=(metric,), batch_size=batch, stopping=PaperStopping(passes=epochs, tolerance=7),
                            progress=False, on_divergence="stop")
                    name = "mape" if reg else "accuracy"
                    ytr, yte = split[0][1], split[1][1]
                    if reg:
                        base = None
                    else:
                        base = float(np.mean(yte == np.bincount(ytr).argmax()))
                    fold_res[net] = {"test": r.metrics.get(f"test_{name}"), "val": r.metrics.get(f"val_{name}"),
                                     "epochs": len(r.history), "wall_time_s": c.s,
                                     "epoch_time_s": _epoch_time(r.history), "stopped_reason": r.stopped_reason,
                                     "params": int(m.count_params()[0])}
                    if reg and net == "ignet":
                        tr_age, te_age = split[0][1][:, 0] + offset, split[1][1][:, 0] + offset
                        base = float(100 * np.mean(np.abs(te_age - tr_age.mean()) / te_age))
                    if base is not None:
                        fold_res["baseline_test"] = base
                    if verbose:
                        print(f"  {label} / {proto} / fold {fold} / {net}: test {name} "
                              f"{common.fmt(fold_res[net]['test'], '.3f')} (baseline {common.fmt(base, '.3f')}), "
                              f"{fold_res[net]['wall_time_s']:.1f} s", flush=True)
                row["folds"].append(fold_res)
            for net in ("ignet", "keras"):
                for what in ("test", "wall_time_s", "epoch_time_s"):
                    row[f"{net}_{what}"] = common.mean_std([f[net][what] for f in row["folds"]])[0]
            row["baseline_test"] = common.mean_std([f.get("baseline_test") for f in row["folds"]])[0]
            rows.append(row)
    ratios = {kind: common.mean_std([r["keras_wall_time_s"] / r["ignet_wall_time_s"] for r in rows
                                     if r["task"] == kind and r["ignet_wall_time_s"]])[0]
              for kind in ("regression", "classification")}
    results = {
        "experiment": NAME, "command": common.command_line(NAME, argv), "data": desc, "real_data": real,
        "protocol": {p: f"first {folds} of {k} folds" for p in protocols},
        "config": {"keras_net": {"filters": list(kfilters), "hidden": hidden, "optimizer": f"adam {lr_keras}",
                                 "regression": "sigmoid output, targets in (0.1, 0.9), MSE"},
                   "ignet_net": {"filters": filters, "optimizer": "nesterov 0.9", "lr_regression": lr_ignet_reg,
                                 "lr_classification": lr_ignet_cls},
                   "augment_factor": factor, "k": k, "folds_run": folds, "max_epochs": epochs, "tolerance": 7,
                   "batch_size": batch, "seed": seed, "quick": quick},
        "published": {"keras": PUBLISHED_KERAS, "speed": "IgNet 10x faster on regression, 30x on classification"},
        "rows": rows, "time_ratio_keras_over_ignet": ratios,
        "metrics": {f"{r['target']} [{r['protocol']}] keras": r["keras_test"] for r in rows},
        "headline": {"published": "Keras 12.95% MAPE, 77.8-88.5% acc.; IgNet 10x/30x faster",
                     "ours": "time Keras/IgNet: regression x" + common.fmt(ratios["regression"], ".1f")
                             + ", classification x" + common.fmt(ratios["classification"], ".1f")},
    }
    common.finish(out, results, clock.t0)
    if verbose:
        print(summary(results))
    return results


def summary(results: dict) -> str:
    """The one-screen table: per target and protocol, IgNet and Keras figures, baseline and times."""
    rows = []
    for r in results["rows"]:
        reg = r["task"] == "regression"
        spec = ".2f" if reg else ".3f"
        pub = PUBLISHED_KERAS.get("regression_mape_percent" if reg else r["target"])
        rows.append([r["target"], r["protocol"], "MAPE %" if reg else "accuracy", common.fmt(r["ignet_test"], spec),
                     common.fmt(r["keras_test"], spec), common.fmt(r["baseline_test"], spec), common.fmt(pub, spec),
                     f"{r['ignet_wall_time_s']:.1f}", f"{r['keras_wall_time_s']:.1f}",
                     common.fmt(r["ignet_epoch_time_s"], ".2f"), common.fmt(r["keras_epoch_time_s"], ".2f")])
    rt = results["time_ratio_keras_over_ignet"]
    return "\n".join([
        common.banner("Keras net vs IgNet Fig. 5 net", results["data"]),
        common.table(rows, ["target", "protocol", "metric", "IgNet", "Keras", "baseline", "Keras published",
                            "IgNet s", "Keras s", "IgNet s/epoch", "Keras s/epoch"]),
        f"wall time Keras / IgNet: regression x{common.fmt(rt['regression'], '.1f')}, classification "
        f"x{common.fmt(rt['classification'], '.1f')} (paper: 10x, 30x). Folds run: {results['config']['folds_run']}.",
        "baseline: regression = training mean age; classification = majority class.",
        f"wall time {results['wall_time_s']:.0f} s, load {results['environment']['load_average_1_5_15']}"])


def main(argv=None) -> int:
    """The command line: parse ``argv``, run, print the summary; 0 on success."""
    p = common.base_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help=f"comma-separated: {', '.join(PROTOCOLS)}")
    p.add_argument("--folds", type=int, default=1, help=f"how many of the {K} folds to train")
    p.add_argument("--epochs", type=int, default=10, help="max passes per fold (paper: 10, tolerance 7)")
    a = p.parse_args(argv)
    run(out=a.out, data_dir=a.data_dir, seed=a.seed, quick=a.quick, protocols=a.protocols,
        folds=a.folds, epochs=a.epochs, argv=argv)
    return 0


if __name__ == "__main__":
    common.run_program(main)
