"""The paper's Fig. 4 diagnostic (too-small vs 10x second-layer W) and a calibrated initialisation,
with learning curves.

    PYTHONPATH=src python -m experiments.init_diagnostics [--out results/init_diagnostics] [--seed 0] [--quick]
        [--data-dir STIRLING_FOLDER] [--epochs 10]

Net: the Fig. 5 net (one conv layer of 5x5 maps + one fully connected layer, identity activations,
frozen biases), regression of age in months with the MAE loss, on one grouped fold of the drawings
(the synthetic stand-in by default). Three initialisations (Eq. 3):

* ``fig4a``: W = (1, 1) -- the second layer's amplitude too small;
* ``fig4b``: W = (1, 10) -- the second layer's amplitude raised 10x (Eq. 1a predicts the first
  layer's dL/dw MAV grows ~10x);
* ``calibrated``: W per layer rescaled until every layer's dL/dw MAV is in the paper's acceptable
  band 0.01-0.1 (``jigcnn.diagnostics.calibrate_init``).

For each: the MAV table after one forward + backward pass (``jigcnn.diagnostics.diagnose``: input, N',
W, dL/dz, dL/dw per layer; W and dL/dw over the connected kernel entries where a layer has a connection table),
then training with Nesterov SGD (the same learning rate for all three) and the learning curves.
The gradients are those of the batch-mean loss (batch 32): the paper does not say whether its MAVs
were per sample or per batch, so the band is a guide for the orders of magnitude, not a threshold.
"""

from __future__ import annotations


import numpy as np

from experiments import common

NAME = "init_diagnostics"
BAND = (0.01, 0.1)


def run(out=None, data_dir=None, seed=0, quick=False, epochs=10, lr=0.003, filters=4, argv=None,
        verbose=True) -> dict:
    """Run the experiment, write ``<out>/results.json`` and the plot, print the tables; return the results."""
    import jax
    import optax

    from jigcnn import zoo
    from jigcnn.diagnostics import calibrate_init, diagnose
    from jigcnn.metrics import age_mape_metric
    from jigcnn.train import fit

    clock = common.Clock()
    common.check_int("--epochs", epochs, 1)
    common.check_float("--lr", lr, gt=0)
    common.check_int("--filters", filters, 1)
    common.check_dir("--data-dir", data_dir)
    out = common.prepare_output(NAME, out, quick)
    n, factor, batch = 338, 10, 32
    if quick:
        n, factor, epochs, filters, batch = 24, 2, 1, 2, 8
    s, images, desc, real = common.drawings(data_dir, n=n)
    y = np.asarray(s.labels["age_months"], np.float32)
    offset = float(y.mean())
    yc = (y - offset)[:, None]
    (xtr, ytr), (xte, yte), (xva, yva) = common.one_split(images, yc, s.source, factor=factor, seed=seed,
                                                          k=2 if quick else 5)
    make = lambda W: zoo.ignet_fig5(1, filters=filters, W=W)  # noqa: E731
    key = jax.random.key(seed)
    xb, yb = xtr[:32], ytr[:32]
    m0 = make((1.0, 1.0))
    p0, s0 = m0.init(key)
    cal = calibrate_init(m0, p0, s0, xb, yb, "mae", target=BAND)
    W_cal = tuple(float(cal.amplitudes[n]) for n in m0.names if n in cal.amplitudes)
    cal_hist = [dict(t) for t in cal.trajectory]
    calib_source = f"jigcnn.diagnostics.calibrate_init (converged={cal.converged}, {cal.passes} passes)"
    configs = {"fig4a (W2 too small)": (1.0, 1.0), "fig4b (W2 x10)": (1.0, 10.0), "calibrated": W_cal}

    runs, first_layer_dLdw = {}, {}
    for label, W in configs.items():
        m = make(W)
        params, state = m.init(key)
        mav = diagnose(m, params, state, xb, yb, "mae")
        r = fit(m, params, state, optax.sgd(lr, momentum=0.9, nesterov=True), (xtr, ytr), (xte, yte), (xva, yva),
                key=jax.random.fold_in(key, 1), loss="mae", metrics=(age_mape_metric(offset),), epochs=epochs,
                batch_size=batch, progress=False, on_divergence="stop")
        mav_after = diagnose(m, r.params, r.state, xb, yb, "mae")
        first_layer_dLdw[label] = mav.rows[0].weight_grad_mav
        runs[label] = {"W": list(W), "mav_initial": mav.to_dict(), "mav_after_training": mav_after.to_dict(),
                       "train_loss": r.history["train_loss"], "train_mape": r.history["train_mape"],
                       "test_mape": r.history["test_mape"], "val_mape": r.history["val_mape"],
                       "stopped_reason": r.stopped_reason, "final": r.metrics}
    ratio = first_layer_dLdw["fig4b (W2 x10)"] / max(first_layer_dLdw["fig4a (W2 too small)"], 1e-30)
    base = float(100 * np.mean(np.abs(yte[:, 0] - ytr[:, 0].mean()) / np.abs(yte[:, 0] + offset)))

    plt = common.matplotlib_pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, r in runs.items():
        ep = range(1, len(r["train_mape"]) + 1)
        axes[0].plot(ep, r["train_mape"], marker=".", label=label)
        axes[1].plot(ep, r["test_mape"], marker=".", label=label)
    for ax, t in zip(axes, ("train MAPE % (augmented training part)", "test MAPE % (grouped fold)")):
        ax.axhline(base, color="k", ls=":", lw=1, label="mean-age baseline (test)")
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("epoch")
    axes[1].legend(fontsize=7)
    plots = [common.save_fig(fig, out / "learning_curves.png")]

    results = {
        "experiment": NAME, "command": common.command_line(NAME, argv), "data": desc, "real_data": real,
        "protocol": "grouped, one fold (fold 0 of 5), x10 augmentation of the training side",
        "config": {"net": "ignet_fig5", "filters": filters, "loss": "mae", "lr": lr, "optimizer": "nesterov 0.9",
                   "epochs": epochs, "batch_size": batch, "augment_factor": factor, "seed": seed, "quick": quick,
                   "calibration_band": BAND, "calibration": calib_source},
        "published": {"fig4": "raising the second layer's W 10x raised the first layer's dL/dw MAV about 10x; "
                              "acceptable dL/dw MAV 0.01-0.1"},
        "runs": runs, "calibration_history": cal_hist, "first_layer_grad_ratio_fig4b_over_fig4a": ratio,
        "baseline_test_mape": base, "plots": plots,
        "metrics": {"first_layer_dLdw_ratio": ratio, **{f"final test MAPE [{k}]": v["final"].get("test_mape")
                                                         for k, v in runs.items()}},
        "headline": {"published": "W2 x10 -> layer-1 dL/dw MAV ~x10",
                     "ours": f"x{ratio:.2f}; final test MAPE " + ", ".join(
                         f"{k.split(' ')[0]} {common.fmt(v['final'].get('test_mape'))}" for k, v in runs.items())
                     + f" (baseline {base:.2f})"},
    }
    common.finish(out, results, clock.t0)
    if verbose:
        print(summary(results))
    return results


def summary(results: dict) -> str:
    """The one-screen summary: each initialisation's Fig. 4 table, the layer-1 ratio, the learning outcome."""
    lines = [common.banner("Fig. 4 diagnostic and calibrated initialisation", results["data"])]
    for label, r in results["runs"].items():
        lines += [f"{label}: W = {[round(w, 4) for w in r['W']]}",
                  common.diagnostic_from_json(r["mav_initial"]).table()]
    lines.append(f"layer-1 dL/dw MAV, fig4b / fig4a = {results['first_layer_grad_ratio_fig4b_over_fig4a']:.2f} "
                 "(the paper: about 10)")
    rows = [[k, common.fmt(v["final"].get("train_mape") if "train_mape" in v["final"] else
                           (v["train_mape"][-1] if v["train_mape"] else None)),
             common.fmt(v["final"].get("test_mape")), common.fmt(v["final"].get("val_mape")),
             len(v["test_mape"]), v["stopped_reason"]] for k, v in results["runs"].items()]
    lines.append(common.table(rows, ["init", "train MAPE (last epoch)", "test MAPE", "val MAPE", "epochs", "stop"]))
    lines.append(f"baseline (predict the training mean age): test MAPE {results['baseline_test_mape']:.2f}; "
                 f"wall time {results['wall_time_s']:.0f} s, load {results['environment']['load_average_1_5_15']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """The command line: parse ``argv``, run, print the summary; 0 on success."""
    p = common.base_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--filters", type=int, default=4)
    a = p.parse_args(argv)
    run(out=a.out, data_dir=a.data_dir, seed=a.seed, quick=a.quick, epochs=a.epochs, lr=a.lr, filters=a.filters,
        argv=argv)
    return 0


if __name__ == "__main__":
    common.run_program(main)
