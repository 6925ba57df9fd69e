"""Samples/s of the data-parallel training step: 1 device, 2 simulated devices, 2 processes, one global batch.

``PYTHONPATH=src python experiments/bench_distributed.py [--net lenet5] [--batch 256] [--steps 30] [--repeats 3]``

Each configuration runs in its own fresh process (the 2-process one as two processes joined by
:func:`jigcnn.distributed.initialize` through the local launcher), and the configurations'
repeats are interleaved round-robin, so a change of the machine's load hits all of them alike:

* ``1 device``: one process, one XLA:CPU device, :func:`jigcnn.train.make_train_step`;
* ``2 simulated devices``: one process with ``--xla_force_host_platform_device_count=2``,
  :func:`jigcnn.train.data_parallel_train_step` over a 2-device mesh (one ``shard_map``: each
  device its half of the batch, native kernels on, gradients averaged with ``pmean``);
* ``2 processes``: two processes on 127.0.0.1 (gloo collectives), one device each, the same
  data-parallel step; each process feeds only its half of every global batch
  (``jax.make_array_from_process_local_data``).

A worker compiles, runs ``--warmup`` steps, then times ``--steps`` steps (the last one waited
for); samples/s = steps x batch / time. The table gives the median over the repeats, the
min-max, and the load average (1 min) before each repeat: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CONFIGS = ("1 device", "2 simulated devices", "2 processes")
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def interleaved(configs, repeats: int) -> list[tuple[int, str]]:
    """(repeat, configuration) in round-robin order: every configuration once per repeat."""
    return [(r, c) for r in range(repeats) for c in configs]


def summarise(rows: list[dict]) -> dict:
    """{configuration: {median, min, max, runs, load}} of samples/s from the workers' rows."""
    out = {}
    for c in dict.fromkeys(r["config"] for r in rows):
        vals = [r["samples_per_s"] for r in rows if r["config"] == c]
        loads = [r["load"] for r in rows if r["config"] == c]
        out[c] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": len(vals),
                  "load": statistics.median(loads)}
    return out


def table(summary: dict, base: str = "1 device") -> str:
    """A Markdown table of the summary, with each configuration's median relative to ``base``."""
    lines = ["| configuration | samples/s (median) | min-max | vs 1 device | load (1 min, median) |",
             "|---|---|---|---|---|"]
    ref = summary.get(base, {}).get("median")
    for c, s in summary.items():
        rel = f"{s['median'] / ref:.2f}x" if ref else "-"
        lines.append(f"| {c} | {s['median']:.0f} | {s['min']:.0f}-{s['max']:.0f} | {rel} | {s['load']:.1f} |")
    return "\n".join(lines)


def load_average() -> float:
    """The 1-minute load average (nan where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def worker(net: str, batch: int, steps: int, warmup: int, mode: str) -> dict:
    """Build the net and the step of ``mode`` ("single" or "parallel"), time ``steps`` steps; the row."""
    from jigcnn import distributed

    me = distributed.initialize()  # the launcher's JAX_* variables for the 2-process run; else one process
    import jax
    import numpy as np
    import optax

    from jigcnn.runtime import configure_process
    from jigcnn.train import data_parallel_train_step, make_mesh, make_train_step
    from jigcnn.zoo import ZOO

    configure_process(compilation_cache=False)
    shape = {"lenet5": (28, 28, 1)}.get(net, (32, 32, 3))
    model = ZOO[net](input_shape=shape, classes=10, head_activation=None)
    params, state = model.init(jax.random.key(0))
    tx = optax.sgd(0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *shape)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    key = jax.random.key(1)
    if mode == "single":
        step = make_train_step(model, "softmax_cross_entropy", tx)
        opt = tx.init(params)
    else:
        from jigcnn.train.parallel import batch_sharding, put_global, replicated

        mesh = make_mesh()
        if batch % mesh.size:
            raise SystemExit(f"--batch {batch} is not divisible by the {mesh.size} devices")
        step = data_parallel_train_step(model, "softmax_cross_entropy", tx, mesh)
        rep, bat = replicated(mesh), batch_sharding(mesh)
        params, state = put_global(params, rep), put_global(state, rep)
        opt = put_global(tx.init(params), rep)
        key = put_global(key, rep)
        lo = me.process_id * batch // me.num_processes  # this process's rows of the global batch
        hi = lo + batch // me.num_processes
        x = jax.make_array_from_process_local_data(bat, x[lo:hi], (batch, *shape))
        y = jax.make_array_from_process_local_data(bat, y[lo:hi], (batch,))
    for _ in range(warmup):
        params, state, opt, m = step(params, state, opt, x, y, key)
    jax.block_until_ready(params)
    t0 = time.perf_counter()
    for _ in range(steps):
        params, state, opt, m = step(params, state, opt, x, y, key)
    jax.block_until_ready((params, m))
    dt = time.perf_counter() - t0
    return {"samples_per_s": steps * batch / dt, "seconds": dt, "devices": len(jax.devices()),
            "processes": me.num_processes, "loss": float(np.asarray(m["loss"]))}


def run_config(config: str, net: str, batch: int, steps: int, warmup: int, timeout: float = 600) -> dict:
    """One fresh run of ``config`` (its own process or processes); the worker's row plus the load before it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "row{process_id}.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "single" if config == "1 device" else "parallel",
               "--net", net, "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup), "--out", out]
        if config == "2 simulated devices":
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
        if config == "2 processes":
            cmd = [sys.executable, "-m", "jigcnn.distributed.launch", "-n", "2", "--timeout", str(timeout), "--"] + cmd
        load = load_average()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 30)
        if res.returncode:
            raise RuntimeError(f"{config}: status {res.returncode}: {(res.stderr or res.stdout)[-2000:]}")
        with open(out.replace("{process_id}", "0")) as f:
            row = json.load(f)
    return {"config": config, "load": load, **row}


def bench(net: str = "lenet5", batch: int = 256, steps: int = 30, warmup: int = 3, repeats: int = 3,
          configs=CONFIGS, log=print) -> dict:
    """Every configuration ``repeats`` times, interleaved; {rows, summary, table}."""
    rows = []
    for r, c in interleaved(configs, repeats):
        row = run_config(c, net, batch, steps, warmup)
        rows.append(row)
        log(f"repeat {r + 1}/{repeats} {c}: {row['samples_per_s']:.0f} samples/s (load {row['load']:.1f})")
    summary = summarise(rows)
    return {"net": net, "batch": batch, "steps": steps, "rows": rows, "summary": summary, "table": table(summary),
            "cpus": os.cpu_count()}


def main(argv=None) -> int:
    """The command line (and the worker's, with ``--worker``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--net", default="lenet5")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the rows and the summary here")
    ap.add_argument("--worker", choices=("single", "parallel"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        row = worker(a.net, a.batch, a.steps, a.warmup, a.worker)
        from jigcnn import distributed
        from jigcnn.atomic import write_text_atomic

        write_text_atomic(a.out.replace("{process_id}", str(distributed.info().process_id)), json.dumps(row))
        return 0
    result = bench(a.net, a.batch, a.steps, a.warmup, a.repeats)
    print(f"\n{a.net}, global batch {a.batch}, {a.steps} timed steps, {result['cpus']} CPUs, "
          f"load average now {load_average():.1f}\n{result['table']}")
    if a.json:
        from jigcnn.atomic import write_text_atomic

        write_text_atomic(a.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
