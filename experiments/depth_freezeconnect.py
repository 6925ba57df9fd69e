"""Nets of 1 to 7 layers (paper Figs. 5 and 7) with and without freezeconnect: passes and wall time to
reach a target error, and the final error.

    PYTHONPATH=src python -m experiments.depth_freezeconnect [--out results/depth_freezeconnect] [--seed 0]
        [--quick] [--data-dir STIRLING_FOLDER] [--depths 1,2,3,4,5,6,7] [--epochs 10] [--rate 0.5]
        [--target-fraction 0.9]

Nets: ``jigcnn.zoo.ignet_deep(depth)``: depth - 1 conv layers (3x3 valid, ``--filters`` maps) + one fully
connected layer, identity activations, Eq. 3 init, frozen biases. ``--init calibrated`` (default) sets
each net's amplitudes with ``jigcnn.diagnostics.calibrate_init`` (every layer's dL/dw MAV in 0.01-0.1, the
paper's band) -- without it the deep linear nets start with vanishing gradients; ``--init paper`` keeps
W = 1 per conv and 10 for the FC layer. Task: regression of age in months (MAE), Nesterov SGD, batch 32, on fold 0 of the grouped
protocol with x``--factor`` augmentation of the training side. Freezeconnect (``jigcnn.optim.freezeconnect``):
a random ``--rate`` share of the kernel elements gets no update, redrawn every epoch, chained after the
optimizer. The target error is ``--target-fraction`` x the training MAPE of the trivial predictor (the
training mean age): "passes to target" is the first epoch whose *training* MAPE is at or below it
(training speed is what the paper says freezeconnect improved); the final test MAPE is reported beside the
test baseline. The paper: freezeconnect made the 6- and 7-layer nets almost as quick to teach as shallow ones.
"""

from __future__ import annotations


import numpy as np

from experiments import common

NAME = "depth_freezeconnect"
INITS = ("calibrated", "paper")


def run(out=None, data_dir=None, seed=0, quick=False, depths=(1, 2, 3, 4, 5, 6, 7), epochs=10, lr=0.003,
        rate=0.5, filters=4, factor=3, target_fraction=0.95, init="calibrated", argv=None, verbose=True) -> dict:
    """Run the experiment, write ``<out>/results.json`` and the plot, print the table; return the results."""
    import jax
    import optax

    from jigcnn import zoo
    from jigcnn.metrics import age_mape_metric
    from jigcnn.optim import freezeconnect

    clock = common.Clock()
    depths = parse_depths(depths)
    common.check_int("--epochs", epochs, 1)
    common.check_float("--lr", lr, gt=0)
    common.check_float("--rate", rate, ge=0, lt=1)
    common.check_int("--filters", filters, 1)
    common.check_int("--factor", factor, 1)
    common.check_float("--target-fraction", target_fraction, gt=0)
    common.check_choices("--init", (init,), INITS)
    common.check_dir("--data-dir", data_dir)
    out = common.prepare_output(NAME, out, quick)
    n, k, batch = 338, 5, 32
    if quick:
        n, k, factor, epochs, filters, depths, batch = 24, 2, 2, 1, 2, (1, 2), 8
    s, images, desc, real = common.drawings(data_dir, n=n)
    y = np.asarray(s.labels["age_months"], np.float32)
    offset = float(y.mean())
    split = common.one_split(images, (y - offset)[:, None], s.source, protocol="grouped", factor=factor, seed=seed,
                             k=k)
    ytr, yte = split[0][1][:, 0], split[1][1][:, 0]
    base_train = float(100 * np.mean(np.abs(ytr - ytr.mean()) / np.abs(ytr + offset)))
    base_test = float(100 * np.mean(np.abs(yte - ytr.mean()) / np.abs(yte + offset)))
    target = target_fraction * base_train
    steps = len(ytr) // batch
    key = jax.random.key(seed)
    runs = []
    for depth in depths:
        for fc in (False, True):
            m = zoo.ignet_deep(depth, 1, filters=filters)
            tx = optax.sgd(lr, momentum=0.9, nesterov=True)
            if fc:
                tx = optax.chain(tx, freezeconnect(rate, key=jax.random.fold_in(key, 99), steps_per_epoch=steps))
            c = common.Clock()
            params, state = m.init(jax.random.fold_in(key, 0))
            amps = None
            if init == "calibrated":  # Eq. 3 amplitudes chosen so every layer's dL/dw MAV is in 0.01-0.1
                from jigcnn.diagnostics import calibrate_init

                cal = calibrate_init(m, params, state, split[0][0][:64], split[0][1][:64], "mae")
                params, amps = cal.params, {k2: round(float(v), 4) for k2, v in cal.amplitudes.items()}
            from jigcnn.train import fit

            r = fit(m, params, state, tx, split[0], split[1], split[2], key=jax.random.fold_in(key, 1), loss="mae",
                    metrics=(age_mape_metric(offset),), epochs=epochs, batch_size=batch, progress=False,
                    on_divergence="stop")
            wall = c.s
            tr_curve = r.history["train_mape"]
            hit = next((i for i, v in enumerate(tr_curve) if v is not None and v <= target), None)
            times = r.history["wall_time"]
            runs.append({"depth": depth, "freezeconnect": fc, "params": int(m.count_params()[0]), "amplitudes": amps,
                         "passes_to_target": None if hit is None else hit + 1,
                         "time_to_target_s": None if hit is None else float(times[hit]),
                         "final_train_mape": tr_curve[-1] if tr_curve else None,
                         "final_test_mape": r.metrics.get("test_mape"), "epochs": len(r.history),
                         "wall_time_s": wall, "stopped_reason": r.stopped_reason,
                         "train_mape_curve": tr_curve, "test_mape_curve": r.history["test_mape"]})
            if verbose:
                rr = runs[-1]
                print(f"  depth {depth} freezeconnect={fc}: passes to target {rr['passes_to_target']}, final train "
                      f"{common.fmt(rr['final_train_mape'])} test {common.fmt(rr['final_test_mape'])} "
                      f"({wall:.1f} s)", flush=True)

    plt = common.matplotlib_pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, fc in zip(axes, (False, True)):
        for r in (r for r in runs if r["freezeconnect"] == fc):
            ax.plot(range(1, len(r["train_mape_curve"]) + 1), r["train_mape_curve"], marker=".",
                    label=f"{r['depth']} layers")
        ax.axhline(target, color="k", ls=":", lw=1)
        ax.set_title(f"training MAPE %, freezeconnect {'on (rate %.2f)' % rate if fc else 'off'}", fontsize=8)
        ax.set_xlabel("pass (epoch)")
    axes[1].legend(fontsize=6)
    plots = [common.save_fig(fig, out / "depth_curves.png")]
    results = {
        "experiment": NAME, "command": common.command_line(NAME, argv), "data": desc, "real_data": real,
        "protocol": "grouped, fold 0 of 5, augmentation x%d of the training side" % factor,
        "config": {"net": "ignet_deep", "filters": filters, "kernel": [3, 3], "depths": list(depths),
                   "loss": "mae", "lr": lr, "optimizer": "nesterov 0.9", "epochs": epochs, "batch_size": batch, "freezeconnect_rate": rate,
                   "freezeconnect_resample": "epoch", "augment_factor": factor, "seed": seed, "quick": quick,
                   "target_fraction": target_fraction, "init": init},
        "target_train_mape": target, "baseline_train_mape": base_train, "baseline_test_mape": base_test,
        "published": {"claim": "freezeconnect made the 6- and 7-layer nets almost as quick to teach as shallow ones "
                               "(IgNet paper Sec. 5.5.1, Fig. 7); no numbers printed"},
        "runs": runs, "plots": plots,
        "metrics": {f"depth {r['depth']} fc={r['freezeconnect']} test MAPE": r["final_test_mape"] for r in runs},
        "headline": {"published": "freezeconnect: deep (6-7 layer) nets almost as quick as shallow (no numbers)",
                     "ours": "passes to target (off/on): " + ", ".join(
                         f"d{d}: {_p(runs, d, False)}/{_p(runs, d, True)}" for d in depths)},
    }
    common.finish(out, results, clock.t0)
    if verbose:
        print(summary(results))
    return results


def parse_depths(depths) -> tuple[int, ...]:
    """``depths`` ("1,2,3" or a sequence) as a tuple of distinct ints >= 1; a UserError naming --depths else."""
    items = [d.strip() for d in depths.split(",") if d.strip()] if isinstance(depths, str) else list(depths)
    out = []
    for d in items:
        try:
            v = int(d)
        except (TypeError, ValueError):
            raise common.UserError(f"--depths: {d!r} is not an integer (expected e.g. 1,2,3)") from None
        out.append(common.check_int("--depths", v, 1))
    if not out:
        raise common.UserError(f"--depths: give at least one depth, got {depths!r}")
    if len(set(out)) != len(out):
        raise common.UserError(f"--depths: {depths!r} names a depth twice")
    return tuple(out)


def _p(runs, depth, fc):
    r = next(r for r in runs if r["depth"] == depth and r["freezeconnect"] == fc)
    return "-" if r["passes_to_target"] is None else r["passes_to_target"]


def summary(results: dict) -> str:
    """The one-screen table: per depth, with and without freezeconnect, passes and time to the target."""
    rows = [[r["depth"], "on" if r["freezeconnect"] else "off", r["params"], common.fmt(r["passes_to_target"], "d"),
             common.fmt(r["time_to_target_s"], ".1f"), common.fmt(r["final_train_mape"]),
             common.fmt(r["final_test_mape"]), r["epochs"], f"{r['wall_time_s']:.1f}", r["stopped_reason"]]
            for r in results["runs"]]
    return "\n".join([
        common.banner("Depth 1-7 with and without freezeconnect (regression of age)", results["data"]),
        common.table(rows, ["layers", "freezeconnect", "params", "passes to target", "s to target",
                            "final train MAPE", "final test MAPE", "epochs", "wall s", "stop"]),
        f"target: training MAPE <= {results['target_train_mape']:.2f} ({results['config']['target_fraction']} x the "
        f"mean-age predictor's {results['baseline_train_mape']:.2f}); test baseline {results['baseline_test_mape']:.2f}."
        " '-' = not reached.",
        f"wall time {results['wall_time_s']:.0f} s, load {results['environment']['load_average_1_5_15']}"])


def main(argv=None) -> int:
    """The command line: parse ``argv``, run, print the summary; 0 on success."""
    p = common.base_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--depths", default="1,2,3,4,5,6,7")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--rate", type=float, default=0.5, help="freezeconnect rate")
    p.add_argument("--filters", type=int, default=4)
    p.add_argument("--factor", type=int, default=3, help="augmentation factor of the training side")
    p.add_argument("--target-fraction", type=float, default=0.95)
    p.add_argument("--init", choices=INITS, default="calibrated",
                   help="Eq. 3 amplitudes: calibrated per depth (jigcnn.diagnostics.calibrate_init) or W=1 (conv), 10 (FC)")
    a = p.parse_args(argv)
    run(out=a.out, data_dir=a.data_dir, seed=a.seed, quick=a.quick, depths=a.depths,
        epochs=a.epochs, lr=a.lr, rate=a.rate, filters=a.filters, factor=a.factor, target_fraction=a.target_fraction,
        init=a.init, argv=argv)
    return 0


if __name__ == "__main__":
    common.run_program(main)
