"""Shared helpers for the experiments: argparse defaults, results.json, console tables, timing.

Every experiment is a module ``experiments/<name>.py`` with

* ``run(**options) -> dict``: the importable function that does the work, writes
  ``<out>/results.json`` (and its plots) and returns the results dict;
* ``main(argv=None)``: argparse over :func:`base_parser`, calls ``run`` and
  prints the one-screen summary; ``python -m`` runs it through :func:`run_program`.

The common options (documented defaults):

* ``--out DIR``: where ``results.json`` and the PNGs go (default ``results/<name>``; with ``--quick``
  ``runs/<name>-quick``, git-ignored, so a quick run never overwrites the committed results; see
  :func:`default_out`);
* ``--data-dir DIR``: the data (default: the synthetic stand-in for the drawings,
  ``../shared/data`` style lookup for the benchmarks, see ``jigcnn.data``);
* ``--seed N``: the seed of every split, initialisation and augmentation (default 0);
* ``--quick``: a tiny configuration that runs in well under a minute (used by the tests).

Every ``run`` starts with :func:`prepare_output` (the output folder is created and a probe file
written and removed there) and checks its own arguments (:func:`check_int`, :func:`check_float`,
:func:`check_choices`) before it loads data or trains, so a typo or an unwritable folder fails in
seconds, not after the training. :func:`run_program` prints such user errors as one ``error: ...``
line and exits with status 2; anything else (a bug) keeps its traceback.

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
import numbers
import os
import pathlib
import platform
import sys
import time
from typing import Any, Callable, Iterable, Sequence

from jigcnn.atomic import atomic_path, write_text_atomic

try:  # the project's user-error types
    from jigcnn.errors import OutputPathError, UserError
except ImportError:  # pragma: no cover - an older jigcnn without jigcnn.errors
    class UserError(ValueError):
        """A user's argument, data or file is wrong."""

    class OutputPathError(UserError, OSError):
        """An output folder that cannot be written."""

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS_ROOT = REPO / "results"  # full runs of the documented commands (committed)
RUNS_ROOT = REPO / "runs"  # quick runs without --out (git-ignored)
USER_ERRORS = (UserError, ValueError, FileNotFoundError, NotADirectoryError)

STANDIN_NOTE = ("synthetic stand-in (jigcnn.data.synth), NOT the Stirling drawings: "
                "figures say nothing about real children's drawings")


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the common options ``--out``, ``--data-dir``, ``--seed``, ``--quick``."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=None,
                   help=f"output folder for results.json and plots (default: results/{name}; with --quick "
                        f"runs/{name}-quick)")
    p.add_argument("--data-dir", default=None,
                   help="data folder (default: synthetic stand-in for drawings; shared data dir for benchmarks)")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, initialisation, augmentation")
    p.add_argument("--quick", action="store_true", help="tiny configuration, well under a minute (for tests)")
    return p


def run_program(main: Callable[[], int | None]) -> None:
    """Run an experiment's `main` as a program (`jigcnn.runtime.configure_process` first), exit with its status.

    A user error (:data:`USER_ERRORS`: a bad argument, a missing file or folder) prints one
    ``error: ...`` line to stderr and exits with status 2 (``JIGCNN_TRACEBACK=1`` re-raises it with
    its traceback); any other exception keeps its traceback.
    """
    from jigcnn.runtime import configure_process

    configure_process()  # the program's process-wide choices: allocator, persistent compilation cache
    try:
        status = main()
    except USER_ERRORS as e:
        if os.environ.get("JIGCNN_TRACEBACK", "") not in ("", "0"):
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(status)


# ---------------------------------------------------------------- output folder and argument checks (before training)


def default_out(name: str, quick: bool = False, out: str | os.PathLike | None = None) -> pathlib.Path:
    """The output folder: ``out`` when given, else ``results/<name>`` for a full run, ``runs/<name>-quick`` for --quick."""
    if out is not None and str(out) != "":
        return pathlib.Path(out)
    return RUNS_ROOT / f"{name}-quick" if quick else RESULTS_ROOT / name


def prepare_output(name: str, out: str | os.PathLike | None = None, quick: bool = False) -> pathlib.Path:
    """Resolve the output folder (:func:`default_out`), create it and prove it writable (write and remove a probe).

    Raises ``OutputPathError`` naming ``--out``, the folder and the reason, before any training.
    """
    path = default_out(name, quick, out)
    probe = path / f".write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "w") as f:
            f.write("probe\n")
        os.remove(probe)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(probe)
        raise OutputPathError(f"--out {str(path)!r}: the output folder cannot be written "
                              f"({e.strerror or e})") from None
    return path


def check_int(arg: str, value, minimum: int | None = 1, maximum: int | None = None) -> int:
    """``value`` as an int within [minimum, maximum], else a UserError naming ``arg`` (e.g. ``--epochs``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{arg}: expected an integer, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum or maximum is not None and v > maximum:
        rng = (f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}") if minimum is not None \
            else f"<= {maximum}"
        raise UserError(f"{arg}: must be {rng}, got {v}")
    return v


def check_float(arg: str, value, *, gt: float | None = None, ge: float | None = None,
                lt: float | None = None, le: float | None = None) -> float:
    """``value`` as a finite float within the given bounds, else a UserError naming ``arg`` (e.g. ``--lr``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{arg}: expected a number, got {value!r}") from None
    bad = not math.isfinite(v) or (gt is not None and not v > gt) or (ge is not None and not v >= ge) \
        or (lt is not None and not v < lt) or (le is not None and not v <= le)
    if bad:
        want = ", ".join(f"{op} {b:g}" for op, b in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if b is not None)
        raise UserError(f"{arg}: must be a finite number{' ' + want if want else ''}, got {value!r}")
    return v


def check_choices(arg: str, values, allowed: Sequence[str]) -> tuple:
    """``values`` (a comma-separated string or a sequence) as a tuple, each one of ``allowed``, at least one.

    Else a UserError naming ``arg``, the unknown values and the valid choices.
    """
    vals = tuple(v.strip() for v in values.split(",") if v.strip()) if isinstance(values, str) else tuple(values)
    unknown = [v for v in vals if v not in allowed]
    if unknown:
        raise UserError(f"{arg}: unknown {', '.join(repr(v) for v in unknown)}; valid choices: {', '.join(allowed)}")
    if not vals:
        raise UserError(f"{arg}: give at least one of {', '.join(allowed)}, got {values!r}")
    if len(set(vals)) != len(vals):
        raise UserError(f"{arg}: {values!r} names a value twice")
    return vals


def check_dir(arg: str, path) -> str | None:
    """``path`` (None passes) as a string when it is an existing folder, else FileNotFoundError / NotADirectoryError."""
    if path is None:
        return None
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{arg} {str(p)!r}: no such folder")
    if not p.is_dir():
        raise NotADirectoryError(f"{arg} {str(p)!r}: not a folder")
    return str(p)


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (rounded), or None where the OS has none."""
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
    """Write ``obj`` as indented JSON (NumPy/JAX values made plain, NaN -> null) atomically (``jigcnn.atomic``)."""
    path = pathlib.Path(path)
    write_text_atomic(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")
    return path


def command_line(name: str, argv: Sequence[str] | None) -> str:
    """The shell command that reproduces this run (``PYTHONPATH=src python -m experiments.<name> ...``)."""
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
    """``x`` formatted with ``spec``; "-" for None, "nan" for a non-finite float, str() for anything else."""
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
    """(mean, sample std) of the values that are not None; (None, None) when none are, std 0 for one value."""
    import numpy as np

    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def save_fig(fig, path: str | os.PathLike) -> str:
    """Save a matplotlib figure atomically (PNG, modest dpi to keep the results folders small), close it; its name."""
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    finally:
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
        """Seconds since the clock was made."""
        return time.perf_counter() - self.t0


def banner(title: str, note: str | None = None) -> str:
    """``== title ==`` with the note in brackets on the next line."""
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


def stratify_labels(y, fallback=None, k=5, validation_fraction=0.15):
    """Class labels to stratify by: the target's when scikit-learn can (some class has at least as many
    members as splits), else ``fallback`` (e.g. the age category), else None. Returns (labels, name)."""
    import numpy as np

    need = max(k, int(round(1 / validation_fraction)))
    for lab, name in ((y, "target"), (fallback, "age_category")):
        if lab is not None and np.bincount(np.asarray(lab)).max() >= need:
            return np.asarray(lab, np.int32), name
    return None, "none"


# the old (pre-jigcnn.diagnostics) row keys of results.json files written before the experiments used `diagnose`
_OLD_MAV_KEYS = {"input": "input_mav", "act_deriv": "act_deriv_mav", "weights": "weight_mav", "dL_dz": "delta_mav",
                 "dL_dw": "weight_grad_mav"}


def diagnostic_from_json(obj):
    """A ``jigcnn.diagnostics.Diagnostic`` from its ``to_dict()`` (or from an older results.json's list of rows)."""
    from jigcnn.diagnostics import COLUMNS, Diagnostic, LayerRow

    def num(v):
        return math.nan if v is None else float(v)

    if isinstance(obj, dict):
        rows = tuple(LayerRow(name, r.get("kind", "?"), *(num(r.get(c)) for c in COLUMNS))
                     for name, r in obj["layers"].items())
        return Diagnostic(rows, num(obj.get("loss")), obj.get("step"))
    rows = tuple(LayerRow(r["layer"], "?", *(num(r.get(old)) for old in _OLD_MAV_KEYS)) for r in obj)
    return Diagnostic(rows, math.nan)


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


def plot_accuracy_curve(out, info, title) -> str:
    """``<out>/test_accuracy.png``: test accuracy against wall time of one benchmark run; the file name."""
    import numpy as np

    plt = matplotlib_pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.array(info["curve"]["wall_time"]) / 60, info["curve"]["test_accuracy"], marker="o")
    ax.set_xlabel("wall time (min)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return save_fig(fig, pathlib.Path(out) / "test_accuracy.png")


def benchmark_summary(results: dict) -> str:
    """The one-screen summary of a one-net benchmark run (lenet_mnist, fashion_mnist): accuracy, time-to table."""
    tt = results["time_to"]
    rows = [[k, "-" if v is None else v["epoch"], "-" if v is None else f"{v['wall_time_s']:.0f}"] for k, v in tt.items()]
    return "\n".join([
        banner(f"{results['experiment']}: {results['config'].get('net')}", results["data"]),
        f"final test accuracy {100 * (results['test_accuracy'] or 0):.2f}% (best {100 * (results['best_test_accuracy'] or 0):.2f}%)"
        f" after {results['epochs']} epochs, training wall time {results['train_wall_time_s']:.0f} s;"
        f" params {results['params']}",
        table(rows, ["test accuracy >=", "epoch", "wall s"]),
        f"published: {results['headline']['published']}",
        f"total wall time {results['wall_time_s']:.0f} s, load {results['environment']['load_average_1_5_15']}, "
        f"{results['environment'].get('cpu_count')} CPUs ({results['environment'].get('jax_backend')})"])


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


# The yardstick beside every CIFAR-10 / Fashion-MNIST wall time (issue 19): these shared machines differ by up
# to 1.5x from day to day, so a wall time means little without the machine's speed measured the same hour.
TORCH_REFERENCE = {"net": "vgg_small", "batch": 128, "optimizer": "nesterov", "contender": "torch-channels_last"}


def torch_reference(repeats: int = 3, seconds: float = 1.0, timeout: float = 600) -> dict:
    """PyTorch eager's vgg_small training-step rate measured now (batch 128, SGD Nesterov, channels_last).

    Runs ``python -m experiments.bench`` for that one row and contender in a child process (whose
    PyTorch worker is a process of its own: no thread pool shared with this one's XLA), ``repeats``
    timed repeats of ~``seconds`` of steps, and reads its JSON: the median with the min-max and the
    load average. Returns ``{"samples_per_s", "min_sps", "max_sps", "step_s", "load_before",
    "load_after", "measured_utc", ...}``, or ``{"error": why}`` when PyTorch is not installed (it is
    not a jigcnn dependency) or the bench failed; never raises for those.
    """
    import importlib.util

    ref = dict(TORCH_REFERENCE)
    if importlib.util.find_spec("torch") is None:
        return {**ref, "error": "PyTorch is not installed (it is not a jigcnn dependency; pip install torch)"}
    argv = ["--nets", ref["net"], "--batches", str(ref["batch"]), "--optimizers", ref["optimizer"],
            "--contenders", ref["contender"], "--no-peak", "--repeats", str(repeats),
            "--repeat-seconds", str(seconds), "--worker-timeout", str(timeout)]
    result, err = _run_bench(argv, timeout=timeout + 120)
    if err:
        return {**ref, "error": err}
    try:
        row = next(r for r in result["rows"] if (r["net"], r["batch"], r["optimizer"])
                   == (ref["net"], ref["batch"], ref["optimizer"]))
        r = row["contenders"][ref["contender"]]
    except (KeyError, TypeError, StopIteration):
        return {**ref, "error": "the bench's JSON has no row for it"}
    if r.get("error") or not r.get("step_s"):
        return {**ref, "error": str(r.get("error") or "no timed repeat")}
    return {**ref, "samples_per_s": round(r["median_sps"], 1), "min_sps": round(r["min_sps"], 1),
            "max_sps": round(r["max_sps"], 1), "step_s": round(r["median_step_s"], 4), "repeats": repeats,
            "load_before": row["load_before"], "load_after": row["load_after"],
            "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _run_bench(argv: list[str], *, timeout: float) -> tuple[dict | None, str | None]:
    """``python -m experiments.bench <argv> --json <tmp>`` in a child process: (its JSON, None) or (None, why)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "bench.json")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "src")]
                                            + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        try:
            p = subprocess.run([sys.executable, "-m", "experiments.bench", *argv, "--json", out], cwd=REPO,
                               env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"experiments.bench did not finish in {timeout:.0f} s"
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [""]
            return None, f"experiments.bench exited with status {p.returncode}: {tail[0]}"
        try:
            with open(out) as f:
                return json.load(f), None
        except (OSError, ValueError) as e:
            return None, f"experiments.bench wrote no readable JSON ({e})"


def torch_reference_line(refs: dict | None) -> str | None:
    """One summary line for ``{"start": torch_reference(), "end": ...}``, or None when none was measured."""
    if not refs:
        return None
    parts = []
    for when, r in refs.items():
        if r is None:
            continue
        if r.get("error"):
            parts.append(f"{when}: not measured ({r['error']})")
        else:
            parts.append(f"{when} {r['samples_per_s']:.0f} samples/s ({r['min_sps']:.0f}-{r['max_sps']:.0f}, "
                         f"{r['measured_utc']}, load {r['load_before'][0]:.2f})")
    return ("machine speed, the same hour: PyTorch eager vgg_small training step (batch 128, SGD Nesterov, "
            "channels_last, its own process): " + "; ".join(parts)) if parts else None


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
