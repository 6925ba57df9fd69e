"""Shared tiny problems for the training tests (also run as a subprocess script by some of them).

``python tests/_train_helpers.py run --ckpt DIR --epochs E [--resume] [--sleep S --sleep-after N] --out FILE``
trains the tiny net with per-epoch checkpoints, printing ``epoch N`` after each
epoch's checkpoint, and writes the final metrics and history (JSON) to FILE.
``python tests/_train_helpers.py dp --out FILE`` compares 1 device with a
2-device mesh (run it with XLA_FLAGS=--xla_force_host_platform_device_count=2).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "src"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jigcnn import Conv2D, Dense, Flatten, Sequential  # noqa: E402


def tiny_model(features=2, classes=3):
    return Sequential([Conv2D(features=features, kernel_size=3), Flatten(), Dense(features=classes)],
                      input_shape=(8, 8, 1))


def tiny_data(n=160, classes=3, seed=0):
    """Separable-ish 8x8 images: class c adds 0.5*c to every pixel, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int32)
    x = (rng.normal(size=(n, 8, 8, 1)) * 0.3 + 0.5 * y[:, None, None, None]).astype(np.float32)
    return x, y


def split(x, y, n_train=96, n_test=32):
    return (x[:n_train], y[:n_train]), (x[n_train:n_train + n_test], y[n_train:n_train + n_test]), \
        (x[n_train + n_test:], y[n_train + n_test:])


def _run(args):
    from jigcnn.train import fit

    x, y = tiny_data()
    tr, te, va = split(x, y)
    m = tiny_model()
    p, s = m.init(jax.random.key(0))
    tx = optax.sgd(0.05, momentum=0.9)

    def slow(epoch, rec):
        print(f"epoch {epoch}", flush=True)
        if epoch >= getattr(args, "sleep_after", 1):
            time.sleep(args.sleep)

    r = fit(m, p, s, tx, tr, te, va, epochs=args.epochs, key=jax.random.key(1), loss="softmax_cross_entropy",
            checkpoint_dir=args.ckpt, resume=args.resume, progress=False, on_epoch_end=slow,
            config={"lr": 0.05})
    out = {"metrics": r.metrics, "history": r.history.metrics(), "reason": r.stopped_reason,
           "params": [np.asarray(a).tolist() for a in jax.tree.leaves(r.params)]}
    pathlib.Path(args.out).write_text(json.dumps(out))


def _dp(args):
    from jigcnn.train import data_parallel_train_step, fit, make_mesh, make_train_step

    assert len(jax.devices()) == 2, jax.devices()
    x, y = tiny_data(n=128)
    m = tiny_model()
    p, s = m.init(jax.random.key(0))
    tx = optax.sgd(0.05)
    mesh = make_mesh()
    # one step, one device vs the mesh
    one = make_train_step(m, "softmax_cross_entropy", tx, donate=False)
    two = data_parallel_train_step(m, "softmax_cross_entropy", tx, mesh, donate=False)
    o = tx.init(p)
    p1, _, _, m1 = one(p, s, o, x[:32], y[:32], jax.random.key(3))
    p2, _, _, m2 = two(p, s, o, x[:32], y[:32], jax.random.key(3))
    step_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)))
    shard_count = len(jax.tree.leaves(p2)[0].sharding.device_set)
    # the single-channel conv's native kernel: in the one-device program, not in the partitioned ones
    from jigcnn.train.parallel import batch_sharding
    from jigcnn.train.step import make_eval_fn

    def native_calls(fn, *a):
        return fn.lower(*a).as_text().count("jigcnn_direct_conv")

    step_args = (p, s, o, x[:32], y[:32], jax.random.key(3))
    rows = np.arange(32, dtype=np.int32)
    ev_one = jax.jit(make_eval_fn(m, "softmax_cross_entropy", eval_batch_size=16))
    ev_two = jax.jit(make_eval_fn(m, "softmax_cross_entropy", eval_batch_size=16, batch_sharding=batch_sharding(mesh)))
    native = {"one": native_calls(one, *step_args), "two": native_calls(two, *step_args),
              "eval_one": native_calls(ev_one, p, s, x[:32], y[:32], rows, 32),
              "eval_two": native_calls(ev_two, p, s, x[:32], y[:32], rows, 32)}
    # a short fit, one device vs the mesh
    kw = dict(epochs=2, key=jax.random.key(1), loss="softmax_cross_entropy", progress=False)
    r1 = fit(m, p, s, tx, (x[:96], y[:96]), (x[96:], y[96:]), **kw)
    r2 = fit(m, p, s, tx, (x[:96], y[:96]), (x[96:], y[96:]), mesh=mesh, **kw)
    fit_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                   for a, b in zip(jax.tree.leaves(r1.params), jax.tree.leaves(r2.params)))
    out = {"fit_devices": len(jax.tree.leaves(r2.params)[0].sharding.device_set), "step_diff": step_diff, "loss": [float(m1["loss"]), float(m2["loss"])], "devices": shard_count,
           "fit_diff": fit_diff, "h1": r1.history.metrics(), "h2": r2.history.metrics(), "native": native}
    pathlib.Path(args.out).write_text(json.dumps(out))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["run", "dp"])
    ap.add_argument("--ckpt")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--sleep-after", type=int, default=1, help="sleep after each epoch from this one on")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cache = os.environ.get("JIGCNN_TEST_JAX_CACHE")
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    (_run if a.mode == "run" else _dp)(a)
