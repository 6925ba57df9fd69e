"""Shared helpers for the experiments: argparse defaults, results.json, console tables, timing.

Every experiment is a module ``experiments/<name>.py`` with

* ``run(**options) -> dict``: the importable function that does the work, writes
  ``<out>/results.json`` (and its plots) and returns the results dict;
* ``main(argv=None)``: argparse over :func:`base_parser`, calls ``run`` and
  prints the one-screen summary; ``python -m`` runs it through :func:`run_program`.

The common options (documented defaults):

* ``--out DIR``: where ``results.json`` and the PNGs go (default ``results/<name>``);
* ``--data-dir DIR``: the data (default: the synthetic stand-in for the drawings,
  ``../shared/data`` style lookup for the benchmarks, see ``jigcnn.data``);
* ``--seed N``: the seed of every split, initialisation and augmentation (default 0);
* ``--quick``: a tiny configuration that runs in well under a minute (used by the tests).

``results.json`` always holds: ``experiment``, ``config``, ``protocol``, ``data``
(what data, real or stand-in), ``metrics`` (summary), per-fold / per-run detail,
``published`` (the reference figures), ``wall_time_s``, ``environment``
(jigcnn/jax/numpy/optax versions, python, platform, CPU count, load average,
JAX devices) and ``command`` (how to reproduce).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pathlib
import platform
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS_ROOT = REPO / "results"

STANDIN_NOTE = ("synthetic stand-in (jigcnn.data.synth), NOT the Stirling drawings: "
                "figures say nothing about real children's drawings")


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the common options ``--out``, ``--data-dir``, ``--seed``, ``--quick``."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=str(RESULTS_ROOT / name), help="output folder for results.json and plots")
    p.add_argument("--data-dir", default=None,
                   help="data folder (default: synthetic stand-in for drawings; shared data dir for benchmarks)")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, initialisation, augmentation")
    p.add_argument("--quick", action="store_true", help="tiny configuration, well under a minute (for tests)")
    return p


def run_program(main: Callable[[], int | None]) -> None:
    """Run an experiment's `main` as a program: glibc keeps freed memory (`jigcnn.allocator`), exit with its status."""
    from jigcnn import allocator

    allocator.retain_freed_memory()
    raise SystemExit(main())


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):  # pragma: no cover
        return None


def environment() -> dict:
    """Versions and hardware: jigcnn, jax, jaxlib, numpy, optax, python, platform, CPUs, load, devices."""
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "machine": platform.machine(), "cpu_count": os.cpu_count(),
                           "load_average_1_5_15": load_average()}
    from jigcnn import allocator

    env["malloc_retains_freed_memory"] = allocator.retaining()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    env["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    for mod in ("jigcnn", "jax", "jaxlib", "numpy", "optax"):
        try:
            m = __import__(mod)
            env[f"{mod}_version"] = getattr(m, "__version__", "?")
        except ImportError:  # pragma: no cover
            env[f"{mod}_version"] = None
    try:
        import jax

        env["jax_backend"] = jax.default_backend()
        env["jax_devices"] = [str(d) for d in jax.devices()]
    except Exception:  # pragma: no cover
        pass
    return env


def _jsonable(x):
    """Numpy / JAX scalars and arrays, tuples, paths -> plain JSON types (NaN -> None)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, pathlib.PurePath):
        return str(x)
    if isinstance(x, float):
        return None if not math.isfinite(x) else x
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    if hasattr(x, "item"):
        return _jsonable(x.item())
    return str(x)


def write_json_atomic(path: str | os.PathLike, obj) -> pathlib.Path:
    """Write ``obj`` as indented JSON atomically (temporary file in the same folder, fsync, rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def command_line(name: str, argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["PYTHONPATH=src", "python", "-m", f"experiments.{name}", *args])


def finish(out: str | os.PathLike, results: dict, t0: float) -> dict:
    """Add wall time and environment, write ``<out>/results.json``, return the dict."""
    results["wall_time_s"] = round(time.perf_counter() - t0, 2)
    results["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["environment"] = environment()
    write_json_atomic(pathlib.Path(out) / "results.json", results)
    return results


def fmt(x, spec: str = ".2f") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "nan"
    if isinstance(x, (int, float)):
        return format(x, spec)
    return str(x)


def pm(mean, std, spec: str = ".2f") -> str:
    """'mean +- std' (std omitted when None)."""
    if mean is None:
        return "-"
    return fmt(mean, spec) if std is None else f"{fmt(mean, spec)} +- {fmt(std, spec)}"


def table(rows: Iterable[Sequence], headers: Sequence[str]) -> str:
    """A plain monospaced table (also valid GitHub markdown)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def mean_std(values) -> tuple[float | None, float | None]:
    import numpy as np

    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def save_fig(fig, path: str | os.PathLike) -> str:
    """Save a matplotlib figure (PNG, modest dpi to keep the results folders small) and close it."""
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path.name


def matplotlib_pyplot():
    """pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


class Clock:
    """Wall-clock stopwatch: ``c = Clock(); ...; c.s`` seconds since creation."""

    def __init__(self):
        self.t0 = time.perf_counter()

    @property
    def s(self) -> float:
        return time.perf_counter() - self.t0


def banner(title: str, note: str | None = None) -> str:
    s = f"== {title} =="
    if note:
        s += f"\n   ({note})"
    return s


# ---------------------------------------------------------------- drawings helpers shared by several experiments


def drawings(data_dir=None, n: int = 338, center: bool = True):
    """(ImageSet, images (centred by the mean pixel when ``center``), description, real?)."""
    import numpy as np

    from jigcnn.data import load_drawings

    s = load_drawings(data_dir) if data_dir else load_drawings(None, n=n, seed=0)
    desc = f"drawings folder {data_dir} ({len(s)} images)" if data_dir else f"{STANDIN_NOTE}; n={len(s)}"
    x = np.asarray(s.images, np.float32)
    if center:
        x = x - float(x.mean())
    return s, x, desc, bool(data_dir)


def one_split(images, y, source, *, protocol: str = "grouped", factor: int = 10, seed: int = 0, fold: int = 0,
              k: int = 5, labels=None):
    """One fold of a protocol as ((x_tr, y_tr), (x_te, y_te), (x_va, y_va)), augmented with the paper preset."""
    import jax
    import numpy as np

    from jigcnn.data import paper_preset
    from jigcnn.train import expand_dataset, protocol_splits

    sp = protocol_splits(len(y), protocol=protocol, k=k, factor=factor, labels=labels, source=source, seed=seed)
    x_all = np.asarray(expand_dataset(jax.random.fold_in(jax.random.key(seed), 10_000), images, factor,
                                      paper_preset()))
    y_all = np.concatenate([np.asarray(y)] * factor, axis=0)
    tr, te = sp.folds[fold]
    va = sp.validation
    return (x_all[tr], y_all[tr]), (x_all[te], y_all[te]), (x_all[va], y_all[va])


def mav_table(model, params, state, x, y, loss) -> list[dict]:
    """The paper's Fig. 4 diagnostic after one forward + backward pass (hand-written backprop, Eqs. 1-2a).

    Per layer with parameters: mean absolute value (MAV) of the layer input, the activation derivative
    N', the weights, the full neuron derivative dL/dz (= dL/db per neuron) and dL/dw. Gradients are of
    the batch-mean loss. Uses ``jigcnn.diagnostics.diagnose`` when it exists, else computes it here.
    """
    import jax.numpy as jnp

    from jigcnn.backprop.network import manual_value_and_grad

    (_, aux), grads = manual_value_and_grad(model, loss)(params, state, jnp.asarray(x), jnp.asarray(y), train=False)
    recs = aux.intermediates if hasattr(aux, "intermediates") else aux[2]
    rows = []
    for layer in model.layers:
        name = layer.name
        if name not in params or "kernel" not in params[name] or name not in recs:
            continue
        r = recs[name]
        mav = lambda a: float(jnp.mean(jnp.abs(a)))  # noqa: E731
        rows.append({"layer": name, "input": mav(r["input"]), "act_deriv": mav(r["act_deriv"]),
                     "saturated": float(jnp.mean(jnp.abs(r["act_deriv"]) < 0.05)),
                     "weights": mav(params[name]["kernel"]), "dL_dz": mav(r["delta"]),
                     "dL_dw": mav(grads[name]["kernel"])})
    return rows


def mav_text(rows: list[dict]) -> str:
    return table([[r["layer"], *(f"{r[c]:.3g}" for c in ("input", "act_deriv", "weights", "dL_dz", "dL_dw"))]
                  for r in rows], ["layer", "MAV input", "MAV N'", "MAV W", "MAV dL/dz", "MAV dL/dw"])


def age_mape_metric(offset: float, scale: float = 1.0):
    """("mape", fn): MAPE in percent on ages, for nets trained on (age - offset) / scale."""
    import jax.numpy as jnp

    def mape(pred, target):
        return 100.0 * jnp.mean(jnp.abs(pred - target) * scale / jnp.abs(target * scale + offset))

    return ("mape", mape)


def fit_split(model, split, *, lr, epochs, key, loss="mae", metrics=(), optimizer=None, stopping=None, **kw):
    """Train ``model`` from a fresh init on one split ((train), (test), (validation)) with Nesterov SGD."""
    import jax
    import optax

    from jigcnn.train import fit

    params, state = model.init(jax.random.fold_in(key, 0))
    tx = optimizer if optimizer is not None else optax.sgd(lr, momentum=0.9, nesterov=True)
    return fit(model, params, state, tx, split[0], split[1], split[2], key=jax.random.fold_in(key, 1), loss=loss,
               metrics=metrics, epochs=epochs, stopping=stopping, progress=False, on_divergence="stop", **kw)


# ---------------------------------------------------------------- benchmark helpers (MNIST, Fashion-MNIST, CIFAR-10)


def benchmark_data_dir(data_dir=None) -> str:
    """``--data-dir``, else ``$JIGCNN_DATA``, else ``../shared/data`` beside the repository."""
    if data_dir:
        return str(data_dir)
    return os.environ.get("JIGCNN_DATA") or str(REPO.parent / "shared" / "data")


def flip_crop_augment(pad: int = 4, flip: bool = True):
    """``augment(key, images)``: random left-right flips and random crops of a zero-padded image (traceable)."""
    import jax
    import jax.numpy as jnp

    def augment(key, x):
        kf, kc = jax.random.split(key)
        n, h, w, c = x.shape
        if flip:
            f = jax.random.bernoulli(kf, 0.5, (n, 1, 1, 1))
            x = jnp.where(f, x[:, :, ::-1, :], x)
        if pad:
            xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            off = jax.random.randint(kc, (n, 2), 0, 2 * pad + 1)
            x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(xp, off)
        return x

    return augment


def standardize(train, *others):
    """Per-channel standardisation with the training set's mean and std."""
    import numpy as np

    mu = train.mean(axis=(0, 1, 2), keepdims=True)
    sd = train.std(axis=(0, 1, 2), keepdims=True) + 1e-6
    return [((a - mu) / sd).astype(np.float32) for a in (train, *others)]


def time_to(history, thresholds, metric: str = "test_accuracy") -> dict:
    """{threshold: (epoch, wall seconds) of the first epoch reaching it, or None}."""
    out = {}
    acc, wall = history[metric], history["wall_time"]
    for t in thresholds:
        hit = next((i for i, a in enumerate(acc) if a is not None and a >= t), None)
        out[f"{t:g}"] = None if hit is None else {"epoch": hit + 1, "wall_time_s": round(float(wall[hit]), 1)}
    return out


def benchmark_fit(model, train, test, *, optimizer, epochs: int, batch_size: int, seed: int = 0, augment=None,
                  thresholds=(), verbose: bool = True, loss="softmax_cross_entropy"):
    """Train on the full training set with ``jigcnn.train.fit``, test accuracy after every epoch; (FitResult, info)."""
    import jax

    from jigcnn.train import fit

    params, state = model.init(jax.random.key(seed))

    def report(epoch, rec):
        if verbose:
            print(f"  epoch {rec.get('epoch', epoch)}: train loss {rec.get('train_loss', 0):.4f}"
                  f" test acc {rec.get('test_accuracy', 0):.4f} ({rec.get('wall_time', 0):.0f} s)", flush=True)

    r = fit(model, params, state, optimizer, train, test, key=jax.random.key(seed + 1),
            loss=loss, metrics=("accuracy",), epochs=epochs, batch_size=batch_size,
            augment=augment, on_epoch_end=report, progress=False)
    info = {"test_accuracy": r.metrics.get("test_accuracy"),
            "best_test_accuracy": max([a for a in r.history["test_accuracy"] if a is not None], default=None),
            "epochs": len(r.history), "train_wall_time_s": float(r.history["wall_time"][-1]) if len(r.history) else 0,
            "time_to": time_to(r.history, thresholds),
            "curve": {"test_accuracy": r.history["test_accuracy"], "train_loss": r.history["train_loss"],
                      "wall_time": r.history["wall_time"]},
            "params": [int(v) for v in model.count_params()]}
    return r, info


def flip_tta_accuracy(model, params, state, x, y, *, batch: int = 1000) -> float:
    """Accuracy of the mean softmax over each image and its left-right mirror (2-view test-time augmentation)."""
    import jax
    import jax.numpy as jnp

    from jigcnn.xla_options import resolve_compiler_options

    def correct(params, state, xb, yb):
        probs = sum(jax.nn.softmax(model.apply(params, state, v, train=False)[0], axis=-1)
                    for v in (xb, xb[:, :, ::-1]))
        return jnp.sum(jnp.argmax(probs, axis=-1) == yb)

    count = jax.jit(correct, compiler_options=resolve_compiler_options("auto", model, tuple(x.shape[1:])))
    n = int(len(y))
    if n == 0:
        raise ValueError("flip_tta_accuracy: empty test set")
    hits = sum(int(count(params, state, x[i:i + batch], y[i:i + batch])) for i in range(0, n, batch))
    return hits / n


def onecycle_sgd(peak_lr: float, total_steps: int, *, momentum: float = 0.9, weight_decay: float = 5e-4,
                 nesterov: bool = True):
    """SGD (Nesterov) with a one-cycle learning-rate schedule and decoupled-from-loss weight decay on kernels."""
    import optax

    from jigcnn.optim.select import kernels_only

    sched = optax.cosine_onecycle_schedule(total_steps, peak_lr, pct_start=0.25, div_factor=10.0,
                                           final_div_factor=100.0)
    import jax

    mask = lambda params: jax.tree_util.tree_map_with_path(lambda p, x: kernels_only(p, x), params)  # noqa: E731
    return optax.chain(optax.add_decayed_weights(weight_decay, mask=mask),
                       optax.sgd(sched, momentum=momentum, nesterov=nesterov))
