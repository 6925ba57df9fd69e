"""Benchmark: k folds trained in one vmapped program vs one after another.

``PYTHONPATH=src python experiments/bench_folds.py [--net conv|dense] [--k 5] [--n 1000] [--epochs 4] [--batch-size 32]``

Prints, for both ways, the total wall time (compilation included; the
sequential folds share one compiled epoch function when their sizes agree) and
the steady-state time per epoch (epochs after the first, compilation excluded),
and the speed-ups. ``--net conv`` (default) is IgNet's simplest net (one conv
layer + one dense layer, identity activations), ``--net dense`` a two-layer
perceptron; both on 58x36 single-channel images (the paper's size).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax

from jigcnn import Conv2D, Dense, Flatten, Sequential
from jigcnn.train import fit, fit_folds_vmapped, fold_keys, kfold_indices


def _problem(n, classes, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int32)
    x = (rng.random((n, 58, 36, 1)) * 0.5 + 0.1 * y[:, None, None, None]).astype(np.float32)
    return x, y


def make_net(net: str, features: int, classes: int) -> Sequential:
    """``conv``: IgNet's simplest net (one 5x5 conv + one dense layer); ``dense``: flatten, dense 64, dense."""
    if net == "conv":
        layers = [Conv2D(features=features, kernel_size=5), Flatten(), Dense(features=classes)]
    elif net == "dense":
        layers = [Flatten(), Dense(features=64), Dense(features=classes)]
    else:
        raise ValueError(f"net must be 'conv' or 'dense', got {net!r}")
    return Sequential(layers, input_shape=(58, 36, 1))


def bench(k: int = 5, n: int = 1000, epochs: int = 4, batch_size: int = 32, features: int = 4,
          classes: int = 4, seed: int = 0, net: str = "conv") -> dict:
    """Times (s) of sequential and vmapped k-fold training; returns a dict with the speed-ups."""
    x, y = _problem(n, classes, seed)
    model = make_net(net, features, classes)
    tx = optax.sgd(0.01, momentum=0.9)
    folds = kfold_indices(n, k, stratify=y, seed=seed)
    key = jax.random.key(seed)
    kw = dict(loss="softmax_cross_entropy", metrics=("accuracy",), epochs=epochs, batch_size=batch_size)

    t0 = time.perf_counter()
    seq_epoch = []
    for (tr, te), (ik, tk) in zip(folds, fold_keys(key, k)):
        p, s = model.init(ik)
        r = fit(model, p, s, tx, (x[tr], y[tr]), (x[te], y[te]), key=tk, progress=False, **kw)
        seq_epoch.append(np.mean(r.history["time"][1:]) if epochs > 1 else r.history["time"][0])
    seq_total = time.perf_counter() - t0

    def one_program(fold_batch):
        t0 = time.perf_counter()
        res = fit_folds_vmapped(model, tx, x, y, folds, key=key, progress=False, fold_batch=fold_batch, **kw)
        jax.block_until_ready(res.params)
        total = time.perf_counter() - t0
        times = res.histories[0]["time"]
        return total, float(np.mean(times[1:]) if epochs > 1 else times[0])

    vm_total, vm_epoch = one_program(None)
    map_total, map_epoch = one_program(1)
    seq_epoch_all = float(np.sum(seq_epoch))  # one epoch of every fold, one after another
    out = {"net": net, "k": k, "n": n, "epochs": epochs, "batch_size": batch_size,
           "devices": str(jax.devices()[0].platform),
           "sequential_total_s": seq_total, "vmapped_total_s": vm_total, "speedup_total": seq_total / vm_total,
           "sequential_epoch_s": seq_epoch_all, "vmapped_epoch_s": vm_epoch,
           "speedup_steady": seq_epoch_all / vm_epoch,
           "mapped_total_s": map_total, "mapped_epoch_s": map_epoch,
           "speedup_total_mapped": seq_total / map_total, "speedup_steady_mapped": seq_epoch_all / map_epoch}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--features", type=int, default=4)
    ap.add_argument("--net", choices=["conv", "dense"], default="conv")
    a = ap.parse_args(argv)
    r = bench(a.k, a.n, a.epochs, a.batch_size, a.features, net=a.net)
    print(f"{r['net']} net, {r['k']} folds, {r['n']} samples, {r['epochs']} epochs, batch {r['batch_size']}, on {r['devices']}")
    print(f"  total (compile included): sequential {r['sequential_total_s']:.2f} s, "
          f"vmapped {r['vmapped_total_s']:.2f} s -> speed-up x{r['speedup_total']:.2f}")
    print(f"  per epoch (all folds, steady): sequential {r['sequential_epoch_s']:.3f} s, "
          f"vmapped {r['vmapped_epoch_s']:.3f} s -> speed-up x{r['speedup_steady']:.2f}")
    print(f"  one program, folds by lax.map (fold_batch=1): total {r['mapped_total_s']:.2f} s "
          f"(x{r['speedup_total_mapped']:.2f}), per epoch {r['mapped_epoch_s']:.3f} s (x{r['speedup_steady_mapped']:.2f})")
    return r


if __name__ == "__main__":
    from jigcnn import allocator

    allocator.retain_freed_memory()
    main()
