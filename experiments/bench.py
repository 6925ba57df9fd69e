"""Training-step throughput of IgNet's Fig. 5 net and LeNet-5 (issues 2 and 7).

``PYTHONPATH=src python -m experiments.bench [--nets ignet_fig5,lenet5] [--batches 32,256]
[--optimizers sgd,adam] [--repeats 7] [--quick] [--vs-torch] [--json PATH] [--startup]
[--allocator retain|default]``

For every (net, batch, optimizer) row it times the jitted, params-donated jigcnn train
step (``jigcnn.train.make_train_step``) with autodiff gradients and with the hand-written
ones (and, with ``--vs-torch``, the same net in PyTorch eager NCHW with ``torch.optim``),
interleaving the contenders repeat by repeat (A, B, C, A, B, C, ...) so machine noise hits
all alike, and reports the median samples/s. Compilation (the first call) is reported
apart. It also prints the achieved GFLOP/s (forward + backward conv/matmul FLOPs counted
analytically per sample) next to the machine's measured float32 GEMM peak, the
hand-written / autodiff step-time ratio (must stay <= 1.25) and the load average.
By default the process first calls ``jigcnn.allocator.retain_freed_memory`` (as the
experiments do); PyTorch, timed in the same process, runs under the same allocator.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

NETS = ("ignet_fig5", "lenet5")
INPUT_SHAPES = {"ignet_fig5": (58, 36, 1), "lenet5": (28, 28, 1)}
CLASSES = 10
LEARNING_RATE = 1e-3
MANUAL_LIMIT = 1.25


def build_model(net: str):
    """The jigcnn model (logits out, for softmax cross-entropy) of a bench net."""
    from jigcnn import zoo

    if net == "ignet_fig5":
        return zoo.ignet_fig5(CLASSES, head_activation=None)
    if net == "lenet5":
        return zoo.lenet5((28, 28, 1), CLASSES, head_activation=None)
    raise ValueError(f"unknown net {net!r}; choose from {NETS}")


def flops_per_sample(model) -> int:
    """Forward + backward conv/matmul FLOPs of one sample (2 per multiply-add).

    Per layer: forward, weight gradient (same count) and input gradient (same count,
    skipped for the first layer with parameters: the input needs none).
    """
    from jigcnn.layers import Conv2D, Dense

    shapes = model.shapes()
    total, first = 0, True
    for layer, shape_in in zip(model.layers, shapes[:-1]):
        if isinstance(layer, Conv2D):
            (kh, kw), _, _, _, (ho, wo, co) = layer.geometry(shape_in)
            m = layer.mask(shape_in[-1])
            links = shape_in[-1] * co if m is None else int(m.sum())
            fwd = 2 * ho * wo * kh * kw * links
        elif isinstance(layer, Dense):
            fwd = 2 * shape_in[0] * layer.features
        else:
            continue
        total += fwd * (2 if first else 3)
        first = False
    return total


def gemm_peak_gflops(n: int = 2048, repeats: int = 7) -> float:
    """Measured float32 GEMM rate (GFLOP/s) of a jitted n x n `jnp.dot` (best of `repeats`)."""
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    b = jnp.asarray(np.random.default_rng(1).standard_normal((n, n), np.float32))
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times) / 1e9


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (as `uptime` shows them)."""
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover
        return (float("nan"),) * 3


@dataclass
class Contender:
    """One way of running a training step: `run(steps)` runs that many steps and waits for them."""

    name: str
    run: Callable[[int], None]
    first_step_s: float
    times: list = field(default_factory=list)  # seconds per step, one entry per repeat


def _data(net: str, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch,) + INPUT_SHAPES[net], dtype=np.float32)
    y = rng.integers(0, CLASSES, batch).astype(np.int32)
    return x, y


def jax_contender(net: str, batch: int, method: str = "autodiff", optimizer: str = "sgd",
                  seed: int = 0) -> Contender:
    """The jigcnn train step (jitted, params and optimizer state donated) for this row.

    `method` is "autodiff" or "manual"; "plain-autodiff" / "plain-manual" trace the step with
    the fast few-channel convolutions switched off (XLA's convolution throughout), for comparison.
    """
    from jigcnn import ops

    plain = method.startswith("plain-")
    with ops.using(banded_conv=False) if plain else ops.using():
        # the step is traced within: make_train_step captures the configuration
        return _jax_contender(net, batch, method.removeprefix("plain-"), optimizer, seed, method)


def _jax_contender(net, batch, method, optimizer, seed, label) -> Contender:
    import jax

    from jigcnn.optim import make_optimizer
    from jigcnn.train import make_train_step

    model = build_model(net)
    params, state = model.init(jax.random.key(seed))
    tx = make_optimizer({"name": optimizer, "learning_rate": LEARNING_RATE})
    opt_state = tx.init(params)
    step = make_train_step(model, "softmax_cross_entropy", tx, grad_method=method)
    xn, yn = _data(net, batch, seed)
    x, y = jax.device_put(xn), jax.device_put(yn)
    key = jax.random.key(seed + 1)
    carry = [params, state, opt_state]

    t0 = time.perf_counter()
    p, s, o, _ = step(carry[0], carry[1], carry[2], x, y, key)
    jax.block_until_ready(p)
    first = time.perf_counter() - t0
    carry[:] = [p, s, o]

    def run(steps: int) -> None:
        p, s, o = carry
        for _ in range(steps):
            p, s, o, _ = step(p, s, o, x, y, key)
        jax.block_until_ready(p)
        carry[:] = [p, s, o]

    return Contender(f"jigcnn-{label}", run, first)


def torch_available() -> bool:
    """Whether PyTorch can be imported (it is not a jigcnn dependency)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_model(net: str):
    """The same net in PyTorch, NCHW; IgNet's frozen (zero) biases are kept and not trained."""
    from torch import nn

    if net == "ignet_fig5":
        conv = nn.Conv2d(1, 16, 5)
        fc = nn.Linear(16 * 54 * 32, CLASSES)
        for b in (conv.bias, fc.bias):
            b.requires_grad_(False)
            b.data.zero_()
        return nn.Sequential(conv, nn.Flatten(), fc)
    if net == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, CLASSES),
        )
    raise ValueError(f"unknown net {net!r}")


def torch_contender(net: str, batch: int, optimizer: str = "sgd", seed: int = 0, threads: int = 2) -> Contender:
    """PyTorch eager CPU: the same net NCHW, `torch.optim.SGD` / `Adam`, cross-entropy on logits."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = torch_model(net)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(trainable, lr=LEARNING_RATE) if optimizer == "sgd"
           else torch.optim.Adam(trainable, lr=LEARNING_RATE))
    xn, yn = _data(net, batch, seed)
    x = torch.from_numpy(np.ascontiguousarray(xn.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(yn.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()

    def one():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    one()
    first = time.perf_counter() - t0

    def run(steps: int) -> None:
        for _ in range(steps):
            one()

    return Contender("torch-eager", run, first)


def time_interleaved(contenders: list[Contender], repeats: int, target_s: float = 0.25) -> None:
    """Time every contender `repeats` times, round-robin; each repeat runs ~`target_s` of steps."""
    steps = {}
    for c in contenders:  # calibrate (also a warm-up run)
        t0 = time.perf_counter()
        c.run(2)
        per = (time.perf_counter() - t0) / 2
        steps[c.name] = max(2, int(target_s / max(per, 1e-6)))
    for _ in range(repeats):
        for c in contenders:
            n = steps[c.name]
            t0 = time.perf_counter()
            c.run(n)
            c.times.append((time.perf_counter() - t0) / n)


def bench_row(net: str, batch: int, optimizer: str = "sgd", *, repeats: int = 7, methods=("autodiff", "manual"),
              vs_torch: bool = False, target_s: float = 0.25, peak_gflops: float | None = None) -> dict:
    """Throughput of one (net, batch, optimizer) row: samples/s (median), first-step time, GFLOP/s, ratios."""
    contenders = [jax_contender(net, batch, m, optimizer) for m in methods]
    if vs_torch:
        contenders.append(torch_contender(net, batch, optimizer))
    time_interleaved(contenders, repeats, target_s)
    fl = flops_per_sample(build_model(net))
    row = {"net": net, "batch": batch, "optimizer": optimizer, "repeats": repeats,
           "flops_per_sample": fl, "load_avg": list(load_average())}
    for c in contenders:
        med = statistics.median(c.times)
        key = c.name.replace("jigcnn-", "").replace("-eager", "")
        row[f"{key}_step_s"] = med
        row[f"{key}_sps"] = batch / med
        row[f"{key}_first_step_s"] = c.first_step_s
        row[f"{key}_gflops"] = fl * batch / med / 1e9
        row[f"{key}_spread"] = (min(c.times), max(c.times))
    if "autodiff" in methods and "manual" in methods:
        row["manual_over_autodiff"] = row["manual_step_s"] / row["autodiff_step_s"]
    for m in methods:
        if m.startswith("plain-") and m.removeprefix("plain-") in methods:
            row[f"{m.removeprefix('plain-')}_speedup_over_plain"] = row[f"{m}_step_s"] / row[f"{m.removeprefix('plain-')}_step_s"]
    jig = [m for m in methods if not m.startswith("plain-")] or list(methods)
    best = max(jig, key=lambda m: row[f"{m}_sps"])
    row["jigcnn_method"] = best
    row["jigcnn_sps"] = row[f"{best}_sps"]
    row["jigcnn_gflops"] = row[f"{best}_gflops"]
    if vs_torch:
        row["torch_sps"] = row["torch_sps"]
        row["ratio"] = row["jigcnn_sps"] / row["torch_sps"]
    if peak_gflops:
        row["peak_fraction"] = row["jigcnn_gflops"] / peak_gflops
    return row


_STARTUP_CODE = r"""
import time, sys
t0 = time.perf_counter()
sys.path.insert(0, "src")
import jax, jax.numpy as jnp, numpy as np
from jigcnn import compile_cache, zoo
if {cache!r}:
    compile_cache.enable({cache!r})
from jigcnn.optim import make_optimizer
from jigcnn.train import make_train_step
model = zoo.lenet5(head_activation=None)
params, state = model.init(jax.random.key(0))
tx = make_optimizer({{"name": "sgd", "learning_rate": 1e-3}})
opt = tx.init(params)
step = make_train_step(model, "softmax_cross_entropy", tx)
x = np.zeros((32, 28, 28, 1), np.float32); y = np.zeros((32,), np.int32)
t1 = time.perf_counter()
p, s, o, m = step(params, state, opt, x, y, jax.random.key(1))
jax.block_until_ready(p)
t2 = time.perf_counter()
print("STARTUP", t1 - t0, t2 - t1, time.time())
"""


def startup(cache_dir: str | None = None) -> dict:
    """Process start to first LeNet-5 step, measured around a fresh `python -c` subprocess.

    `process_to_first_step_s`: from just before the process is launched until its first jitted
    step is done (the child reports the wall-clock time then); `process_wall_s` adds the
    interpreter's exit. Also the in-process set-up time (imports, model, init) and the first
    jitted step (compilation included, or loaded from the persistent cache when `cache_dir`).
    """
    code = _STARTUP_CODE.format(cache=cache_dir or "")
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", "src")
    t0_epoch = time.time()
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), check=True)
    wall = time.perf_counter() - t0
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("STARTUP")][-1].split()
    return {"cache": bool(cache_dir), "process_to_first_step_s": float(line[3]) - t0_epoch,
            "process_wall_s": wall, "setup_s": float(line[1]), "first_step_s": float(line[2])}


def format_table(rows: list[dict], vs_torch: bool) -> str:
    head = ["net", "batch", "opt", "autodiff sps", "manual sps", "man/auto"]
    if vs_torch:
        head += ["torch sps", "jig/torch"]
    head += ["GFLOP/s", "%peak", "compile s (auto/man)"]
    lines = [" | ".join(head)]
    for r in rows:
        cells = [r["net"], str(r["batch"]), r["optimizer"], f"{r.get('autodiff_sps', float('nan')):,.0f}",
                 f"{r.get('manual_sps', float('nan')):,.0f}", f"{r.get('manual_over_autodiff', float('nan')):.2f}"]
        if vs_torch:
            cells += [f"{r['torch_sps']:,.0f}", f"{r['ratio']:.2f}"]
        cells += [f"{r['jigcnn_gflops']:.1f}", f"{100 * r.get('peak_fraction', float('nan')):.0f}%",
                  f"{r.get('autodiff_first_step_s', float('nan')):.2f}/{r.get('manual_first_step_s', float('nan')):.2f}"]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default=",".join(NETS), help="comma-separated: ignet_fig5,lenet5")
    ap.add_argument("--batches", default="32,256", help="comma-separated batch sizes")
    ap.add_argument("--optimizers", default=None, help="comma-separated: sgd,adam (default sgd; sgd,adam with --vs-torch)")
    ap.add_argument("--methods", default="autodiff,manual",
                    help="gradient methods: autodiff,manual (plain-autodiff,plain-manual: without jigcnn.fast)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per contender (median reported)")
    ap.add_argument("--quick", action="store_true", help="3 repeats of ~0.1 s each, no GEMM peak")
    ap.add_argument("--vs-torch", action="store_true", help="also time PyTorch eager CPU (needs torch)")
    ap.add_argument("--startup", action="store_true", help="also measure process start to first LeNet-5 step")
    ap.add_argument("--startup-repeats", type=int, default=3, metavar="N",
                    help="warm-cache start-up processes to time (default 3)")
    ap.add_argument("--no-cache", action="store_true", help="do not enable the persistent compilation cache")
    ap.add_argument("--allocator", choices=("retain", "default"), default="retain",
                    help="retain: glibc malloc keeps freed memory (jigcnn.allocator, as the experiments run); "
                         "default: glibc's defaults. PyTorch runs in the same process, under the same choice")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.startup_repeats < 1:
        ap.error(f"--startup-repeats must be at least 1, got {args.startup_repeats}")

    from jigcnn.runtime import configure_process

    retained = configure_process(retain_memory=args.allocator == "retain",
                                 compilation_cache=not args.no_cache).retains_freed_memory
    nets = [n for n in args.nets.split(",") if n]
    batches = [int(b) for b in args.batches.split(",") if b]
    opts = args.optimizers or ("sgd,adam" if args.vs_torch else "sgd")
    opts = [o for o in opts.split(",") if o]
    methods = tuple(m for m in args.methods.split(",") if m)
    repeats, target = (3, 0.1) if args.quick else (args.repeats, 0.25)
    if args.vs_torch:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.vs_torch and not torch_available():
        print("--vs-torch: PyTorch is not installed (it is not a jigcnn dependency); "
              "install it by hand (pip install torch) to compare. Timing jigcnn alone.", file=sys.stderr)
        args.vs_torch = False
    if args.vs_torch:
        # OpenMP's default active spin-waiting makes PyTorch many times slower on a busy 2-core
        # machine (measured 10-20x); passive waiting is PyTorch's best case here (set before import)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        torch.set_num_threads(2)

    import jax

    peak = None if args.quick else gemm_peak_gflops()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; load average {load_average()}; "
          f"allocator: {'freed memory retained' if retained else 'glibc defaults'}")
    if peak:
        print(f"measured float32 GEMM peak (2048x2048 jnp.dot): {peak:.1f} GFLOP/s")
    rows = []
    for net in nets:
        for batch in batches:
            for opt in opts:
                r = bench_row(net, batch, opt, repeats=repeats, methods=methods, vs_torch=args.vs_torch,
                              target_s=target, peak_gflops=peak)
                rows.append(r)
                print(format_table([r], args.vs_torch).splitlines()[-1], flush=True)
                print("    " + ", ".join(f"{k[:-4]} {v:,.0f}" for k, v in r.items() if k.endswith("_sps")
                                         and k != "jigcnn_sps") + " samples/s", flush=True)
    print()
    print(format_table(rows, args.vs_torch))
    for r in rows:
        if "manual_over_autodiff" in r and r["manual_over_autodiff"] > MANUAL_LIMIT:
            print(f"WARNING: {r['net']} batch {r['batch']} {r['optimizer']}: hand-written step is "
                  f"{r['manual_over_autodiff']:.2f}x the autodiff step (limit {MANUAL_LIMIT})")
    result = {"jax": jax.__version__, "allocator": "retain" if retained else "default",
              "load_avg_end": list(load_average()), "gemm_peak_gflops": peak, "rows": rows}
    if args.startup:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            cold = startup(d)
            warm = [startup(d) for _ in range(args.startup_repeats)]
        result["startup"] = {"cold_cache": cold, "warm_cache": warm}
        for name, runs in (("empty cache", [cold]), ("warm cache", warm)):
            for s in runs:
                print(f"start-up ({name}): process start to first LeNet-5 step "
                      f"{s['process_to_first_step_s']:.2f} s (imports+model+init {s['setup_s']:.2f} s, "
                      f"first jitted step {s['first_step_s']:.2f} s; process exit at {s['process_wall_s']:.2f} s)")
    print(f"load average at the end: {load_average()}")
    if args.json:
        from jigcnn.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
