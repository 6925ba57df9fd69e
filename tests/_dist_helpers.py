"""A program the multi-process tests start as several processes (by the launcher or by hand).

``python tests/_dist_helpers.py fit --out FILE [--ckpt DIR] [--epochs E] [--resume] [--sleep S]``
joins the run (:func:`jigcnn.distributed.initialize` from the ``JAX_*`` variables), trains the
tiny net of ``_train_helpers`` (plus dropout) data parallel over every process's devices, printing
``epoch N`` after each epoch, and writes the final metrics, history and params as JSON.
``python tests/_dist_helpers.py cv --out FILE`` runs a 2-fold ``cross_validate`` (folds spread
over the processes). Without the ``JAX_*`` variables both run as one process.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _train_helpers import split, tiny_data, tiny_model  # noqa: E402  (puts src/ on the path)

LOSS = "softmax_cross_entropy"
BATCH = 16  # the global batch: 8 rows a process with 2 processes


def dist_model():
    """The tiny net with dropout: its masks must be those of one process running the whole batch."""
    from jigcnn import Conv2D, Dense, Dropout, Flatten, Sequential

    return Sequential([Conv2D(features=2, kernel_size=3), Flatten(), Dropout(0.3), Dense(features=3)],
                      input_shape=(8, 8, 1))


def fit_kwargs():
    """The tiny fit's arguments besides the data (shared with the in-test single-process reference)."""
    import jax
    import optax

    return dict(batch_size=BATCH, key=jax.random.key(1), loss=LOSS, progress=False, config={"lr": 0.05},
                augment=_noise), optax.sgd(0.05, momentum=0.9)


def _noise(key, images):
    """The per-step augmentation: its key and its draw over the global batch must be those of one process."""
    import jax

    return images + 0.1 * jax.random.normal(key, images.shape)


def cv_kwargs():
    """The tiny cross-validation's arguments (shared with the in-test reference)."""
    import jax
    import optax

    from jigcnn.train import PaperStopping

    noise = lambda key, imgs: imgs + 0.05 * jax.random.normal(key, imgs.shape)  # noqa: E731
    return dict(protocol="grouped", optimizer=optax.sgd(0.05), loss=LOSS, k=2, augment_factor=2, augment=noise,
                train_augment=noise, stopping=PaperStopping(passes=2, tolerance=7), batch_size=16,
                validation_fraction=0.2, progress=False)


def _fit(args, me):
    import jax
    import numpy as np

    from jigcnn.train import fit

    x, y = tiny_data()
    tr, te, va = split(x, y)
    m = dist_model()
    p, s = m.init(jax.random.key(0))
    kw, tx = fit_kwargs()

    def report(epoch, rec):
        print(f"epoch {epoch}", flush=True)
        time.sleep(args.sleep)

    r = fit(m, p, s, tx, tr, te, va, epochs=args.epochs, checkpoint_dir=args.ckpt, resume=args.resume,
            on_epoch_end=report, **kw)
    return {"metrics": r.metrics, "history": r.history.metrics(), "reason": r.stopped_reason,
            "params": [np.asarray(a).tolist() for a in jax.tree.leaves(r.params)],
            "devices": len(jax.tree.leaves(r.params)[0].sharding.device_set)}


def _cv(args, me):
    import numpy as np

    from jigcnn.train import cross_validate

    x, y = tiny_data(n=60)
    res = cross_validate(tiny_model(), x, y, np.arange(60) // 2, **cv_kwargs())
    return {"folds": [f["metrics"] for f in res.folds], "mean": res.mean, "owners": [f.get("process") for f in res.folds],
            "histories": [h.metrics() for h in res.histories]}


def main(argv=None):
    """Join, run the mode, write ``--out`` (``{process_id}`` in it replaced)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["fit", "cv"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--ckpt")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.0)
    a = ap.parse_args(argv)
    from jigcnn import distributed

    me = distributed.initialize(timeout=60, heartbeat_timeout=10)
    import jax

    cache = os.environ.get("JIGCNN_TEST_JAX_CACHE")
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    try:
        out = (_fit if a.mode == "fit" else _cv)(a, me)
    except distributed.ProcessLostError as e:
        distributed.exit_lost(e, "_dist_helpers", 3)
    out["process"] = [me.process_id, me.num_processes]
    pathlib.Path(a.out.replace("{process_id}", str(me.process_id))).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
