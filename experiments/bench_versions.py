"""The same training steps timed under two jigcnn source trees: is a change slower than what came before?

``python -m experiments.bench_versions --base /path/to/old/checkout [--head .]`` times, for each
row (net, batch, optimizer) and gradient method, one worker process per tree, both alive at
once, with their timed repeats interleaved (base, head, head, base, ...), in several rounds of
fresh workers, and reports the median samples/s of each and head / base. The workers use only what every jigcnn version
offers (``zoo``, ``Sequential.init``, ``train.make_train_step``, optax), set the same process
settings themselves (glibc keeps freed memory; no persistent compilation cache) and import
jigcnn from their tree's ``src`` (``PYTHONPATH``), so the two sides differ only in the library.
An old checkout is a ``git worktree add /tmp/base <commit>``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROWS = (("ignet_fig5", 32, "sgd"), ("ignet_fig5", 32, "adam"), ("ignet_fig5", 256, "sgd"),
        ("ignet_fig5", 256, "adam"), ("lenet5", 32, "sgd"), ("lenet5", 32, "adam"), ("lenet5", 256, "sgd"),
        ("lenet5", 256, "adam"), ("vgg_small", 128, "nesterov"))
METHODS = ("autodiff", "manual")
CLASSES = 10


def parse_rows(text: str) -> list[tuple[str, int, str]]:
    """Rows from 'net:batch:optimizer,...' (or 'all')."""
    if text == "all":
        return list(ROWS)
    rows = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) < 1:
            raise SystemExit(f"error: --rows item {item!r} is not net:batch:optimizer (for example lenet5:256:sgd)")
        if parts[2] not in ("sgd", "adam", "nesterov"):
            raise SystemExit(f"error: --rows item {item!r}: optimizer must be sgd, adam or nesterov")
        rows.append((parts[0], int(parts[1]), parts[2]))
    return rows


def _worker(net: str, batch: int, optimizer: str, method: str, seconds: float) -> None:
    """Build one training step, answer each 'run' line on stdin with the samples/s of ~`seconds` of steps."""
    import ctypes

    try:  # the same allocator setting on both sides (the experiments keep freed memory)
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 0)          # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 30)    # M_MMAP_THRESHOLD
    except OSError:
        pass
    import jax
    import numpy as np
    import optax

    from jigcnn import zoo
    from jigcnn.train import make_train_step

    model = getattr(zoo, net)()
    params, state = model.init(jax.random.key(0))
    tx = {"sgd": optax.sgd(1e-3), "adam": optax.adam(1e-3),
          "nesterov": optax.sgd(1e-2, momentum=0.9, nesterov=True)}[optimizer]
    opt_state = tx.init(params)
    step = make_train_step(model, "softmax_cross_entropy", tx, grad_method=method)
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.random((batch,) + tuple(model.input_shape), dtype=np.float32))
    y = jax.device_put(rng.integers(0, CLASSES, batch).astype(np.int32))
    key = jax.random.key(1)
    carry = [params, state, opt_state]

    def run(steps: int) -> float:
        p, s, o = carry
        t0 = time.perf_counter()
        for _ in range(steps):
            p, s, o, _ = step(p, s, o, x, y, key)
        jax.block_until_ready(p)
        carry[:] = [p, s, o]
        return time.perf_counter() - t0

    run(2)  # compile, warm
    per = run(3) / 3
    steps = max(1, int(round(seconds / max(per, 1e-6))))
    import jigcnn

    print(json.dumps({"ready": True, "jax": jax.__version__, "jigcnn": jigcnn.__file__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        print(json.dumps({"sps": steps * batch / run(steps)}), flush=True)


def _start(tree: pathlib.Path, row, method: str, seconds: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-c", "import sys; from experiments.bench_versions import _worker; "
           f"_worker({row[0]!r}, {row[1]}, {row[2]!r}, {method!r}, {seconds})"]
    return subprocess.Popen(cmd, cwd=str(pathlib.Path(__file__).resolve().parents[1]), env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _ask(proc: subprocess.Popen, what: str | None = None) -> dict:
    if what is not None:
        proc.stdin.write(what + "\n")
        proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a worker ended early (exit {proc.wait()})")
    return json.loads(line)


def _round(base, head, row, method, repeats, seconds, samples) -> None:
    procs = {"base": _start(base, row, method, seconds), "head": _start(head, row, method, seconds)}
    try:
        for k, p in procs.items():
            where = pathlib.Path(_ask(p)["jigcnn"]).resolve()
            tree = base if k == "base" else head
            if tree.resolve() not in where.parents:
                raise RuntimeError(f"the {k} worker imported jigcnn from {where}, not from {tree}")
        for i in range(repeats):
            for k in (("base", "head") if i % 2 == 0 else ("head", "base")):
                samples[k].append(_ask(procs[k], "run")["sps"])
    finally:
        for p in procs.values():
            try:
                p.stdin.write("stop\n")
                p.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            p.wait(timeout=60)


def compare(base: pathlib.Path, head: pathlib.Path, rows, methods=METHODS, repeats: int = 5,
            seconds: float = 0.5, rounds: int = 3) -> list[dict]:
    """Per row and method: median samples/s of base and head and head / base.

    Each round starts a fresh worker per tree (a process's speed can differ from the next one's
    by tens of percent on a small net: memory placement, huge pages), the rounds interleave the
    two trees' repeats, and the medians are over every repeat of every round.
    """
    out = []
    for row in rows:
        for method in methods:
            samples = {"base": [], "head": []}
            load0 = os.getloadavg()[0]
            for _ in range(rounds):
                _round(base, head, row, method, repeats, seconds, samples)
            med = {k: statistics.median(v) for k, v in samples.items()}
            rec = {"net": row[0], "batch": row[1], "optimizer": row[2], "method": method,
                   "base_sps": med["base"], "head_sps": med["head"], "head_over_base": med["head"] / med["base"],
                   "base_range": [min(samples["base"]), max(samples["base"])],
                   "head_range": [min(samples["head"]), max(samples["head"])],
                   "samples": samples, "rounds": rounds, "load_before_after": [load0, os.getloadavg()[0]]}
            print(f"{row[0]:10s} b{row[1]:<4d} {row[2]:8s} {method:8s} base {med['base']:9,.0f}  head "
                  f"{med['head']:9,.0f}  head/base {rec['head_over_base']:.2f}  (base {min(samples['base']):,.0f}-"
                  f"{max(samples['base']):,.0f}, head {min(samples['head']):,.0f}-{max(samples['head']):,.0f})  "
                  f"load {load0:.1f}/{rec['load_before_after'][1]:.1f}", flush=True)
            out.append(rec)
    return out


def main(argv=None) -> int:
    """Command line: compare --base TREE against --head TREE."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the source tree to compare against (a checkout with src/jigcnn)")
    ap.add_argument("--head", default=str(pathlib.Path(__file__).resolve().parents[1]), help="default: this tree")
    ap.add_argument("--rows", default="all", help="net:batch:optimizer,... (default: all rows)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per worker and round")
    ap.add_argument("--rounds", type=int, default=3, help="fresh worker pairs per row and method")
    ap.add_argument("--seconds", type=float, default=0.5, help="seconds of steps per repeat (about)")
    ap.add_argument("--json", help="write the records here (atomically)")
    a = ap.parse_args(argv)
    trees = {k: pathlib.Path(getattr(a, k)).resolve() for k in ("base", "head")}
    for k, t in trees.items():
        if not (t / "src" / "jigcnn" / "__init__.py").is_file():
            ap.error(f"--{k} {t}: no src/jigcnn/__init__.py there")
    methods = a.methods.split(",")
    if not set(methods) <= set(METHODS) or a.repeats < 1 or a.rounds < 1 or not a.seconds > 0:
        ap.error("--methods from autodiff,manual; --repeats >= 1; --rounds >= 1; --seconds > 0")
    print(f"load average {os.getloadavg()}; base {trees['base']}, head {trees['head']}", flush=True)
    recs = compare(trees["base"], trees["head"], parse_rows(a.rows), methods, a.repeats, a.seconds, a.rounds)
    print(f"load average at the end {os.getloadavg()}")
    if a.json:
        from jigcnn.atomic import write_text_atomic

        write_text_atomic(a.json, json.dumps(recs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
