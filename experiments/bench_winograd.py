"""Micro-benchmark: one wide 3x3 conv layer (forward + both gradients), XLA's conv against Winograd as XLA ops.

``PYTHONPATH=src python -m experiments.bench_winograd [--shapes 128x32x32x32x32,128x16x16x64x64]
[--contenders lax,wide,wino2,vjp2,vjp4] [--repeats 9] [--repeat-seconds 0.5] [--options reduce|default]``

Each contender runs in its own worker process (``--worker SPEC``, JSON lines over stdin/stdout, as
`experiments.bench`); the timed repeats are interleaved round-robin and the medians reported, with
the load average. Timed per contender and shape: the forward alone (``fwd``) and forward + input
gradient + weight gradient (``train``: ``jax.vjp`` with a fixed cotangent), jitted with the compiler
options the wide nets' train steps get (``--options reduce``: `jigcnn.xla_options.YNN_REDUCE_ONLY`)
or XLA's defaults.

Contenders:

* ``lax``: ``lax.conv_general_dilated`` (NHWC / HWIO), JAX's own transpose rules for the gradients.
* ``wide``: `jigcnn.fast.wide_conv.conv` (what `jigcnn.ops` runs today for these layers on CPU).
* ``wino2`` / ``wino4``: Winograd F(2x2, 3x3) / F(4x4, 3x3) written as XLA operations (:func:`winograd_conv`):
  the input tile transform B^T d B as strided slices combined elementwise, 16 / 36 batched GEMMs over
  the channels, the output transform A^T m A; gradients by JAX's transposition of those linear maps
  (the output transform's transpose on the deltas, GEMMs for the input and weight terms, the input
  transform's transpose as an overlap-add).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lavin & Gray's matrices and the coefficient sums: the library's own (jigcnn.fast.winograd)
from jigcnn.fast.winograd import MATRICES  # noqa: E402
from jigcnn.fast.winograd import combine as _combine  # noqa: E402


def _tile_rows(x, axis, m, t, count):
    """The t strided views along `axis`: view k holds rows k, k + m, ..., k + m (count - 1)."""
    from jax import lax

    views = []
    for k in range(t):
        start = [0] * x.ndim
        limit = list(x.shape)
        strides = [1] * x.ndim
        start[axis] = k
        limit[axis] = k + m * (count - 1) + 1
        strides[axis] = m
        views.append(lax.slice(x, start, limit, strides))
    return views


def input_transform(xp, m, th, tw):
    """B^T d B of every tile of the padded input (N, m th + 2, m tw + 2, C) -> (t*t, N, th, tw, C)."""
    import jax.numpy as jnp

    BT = MATRICES[m]["BT"]
    t = m + 2
    rows = _tile_rows(xp, 1, m, t, th)  # each (N, th, Wp, C)
    r = [_combine([(BT[i][k], rows[k]) for k in range(t)], xp.dtype) for i in range(t)]
    out = []
    for i in range(t):
        cols = _tile_rows(r[i], 2, m, t, tw)  # each (N, th, tw, C)
        for j in range(t):
            out.append(_combine([(BT[j][k], cols[k]) for k in range(t)], xp.dtype))
    return jnp.stack(out)


def input_transform_staged(xp, m, th, tw, apart):
    """`input_transform` as two passes (rows, then columns), each computed apart when `apart`."""
    import jax.numpy as jnp

    BT = MATRICES[m]["BT"]
    t = m + 2

    def rows_pass(x):
        rows = _tile_rows(x, 1, m, t, th)
        return jnp.stack([_combine([(BT[i][k], rows[k]) for k in range(t)], x.dtype) for i in range(t)])

    def cols_pass(r):
        cols = _tile_rows(r, 3, m, t, tw)  # each (t, N, th, tw, C)
        return jnp.stack([_combine([(BT[j][k], cols[k]) for k in range(t)], r.dtype) for j in range(t)], axis=1)

    return _apart(cols_pass, _apart(rows_pass, xp, apart), apart)


def _apart(fn, x, apart):
    if not apart:
        return fn(x)
    from jigcnn.fast.barrier import unfused

    return unfused(fn, x)


def kernel_transform(w, m):
    """G g G^T for each (cin, cout): (3, 3, Cin, Cout) -> (t*t, Cin, Cout)."""
    import jax.numpy as jnp

    G = jnp.asarray(MATRICES[m]["G"], w.dtype)
    u = jnp.einsum("ak,klio,bl->abio", G, w, G)
    return u.reshape(-1, *w.shape[2:])


def output_transform(mm, m, n, th, tw, cout):
    """A^T M A of every tile: (t*t, N*th*tw, Cout) -> (N, m th, m tw, Cout)."""
    import jax.numpy as jnp

    AT = MATRICES[m]["AT"]
    t = m + 2
    mm = mm.reshape(t, t, n, th, tw, cout)
    rows = [_combine([(AT[a][i], mm[i]) for i in range(t)], mm.dtype) for a in range(m)]  # (t, N, th, tw, C)
    out = jnp.stack([jnp.stack([_combine([(AT[b][j], r[j]) for j in range(t)], mm.dtype) for b in range(m)])
                     for r in rows])  # (m, m, N, th, tw, C)
    return jnp.transpose(out, (2, 3, 0, 4, 1, 5)).reshape(n, th * m, tw * m, cout)


def winograd_conv(x, w, padding, m=2):
    """A stride-1 3x3 correlation of NHWC `x` with HWIO `w`, zero `padding` ((top, bottom), (left, right))."""
    import jax.numpy as jnp
    from jax import lax

    n, h, wd, cin = x.shape
    cout = w.shape[-1]
    (pt, pb), (pl, pr) = padding
    ho, wo = h + pt + pb - 2, wd + pl + pr - 2
    th, tw = -(-ho // m), -(-wo // m)
    hp, wp = m * th + 2, m * tw + 2
    xp = lax.pad(x, jnp.asarray(0, x.dtype), ((0, 0, 0), (pt, hp - h - pt, 0), (pl, wp - wd - pl, 0), (0, 0, 0)))
    v = input_transform(xp, m, th, tw).reshape((m + 2) ** 2, n * th * tw, cin)
    u = kernel_transform(w, m)
    mm = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))))
    y = output_transform(mm, m, n, th, tw, cout)
    return y[:, :ho, :wo]


def _overlap_add(parts, axis, m):
    """The transpose of `_tile_rows`: parts[k] (tile axis `axis` of length T) added at rows m*y + k -> m*T + 2 rows."""
    import jax.numpy as jnp

    t = len(parts)
    zero = jnp.zeros_like(parts[0])
    main = jnp.stack(parts[:m], axis=axis + 1)  # (..., T, m, ...)
    shape = list(parts[0].shape)
    count = shape[axis]
    flat = shape[:axis] + [count * m] + shape[axis + 1:]
    main = main.reshape(flat)
    tail = jnp.stack(list(parts[m:t]) + [zero] * (2 * m - t), axis=axis + 1).reshape(flat)
    pad_main = [(0, 0)] * len(flat)
    pad_main[axis] = (0, 2)
    pad_tail = [(0, 0)] * len(flat)
    pad_tail[axis] = (m, 0)
    total = count * m + 2
    tail = jnp.pad(tail, pad_tail)
    idx = [slice(None)] * len(flat)
    idx[axis] = slice(0, total)
    return jnp.pad(main, pad_main) + tail[tuple(idx)]


def output_transform2(mm, m, n, th, tw, cout, apart=False):
    """A^T M A in two stages (rows, then columns): (t*t, P, Cout) -> (N, m th, m tw, Cout)."""
    import jax.numpy as jnp

    AT = MATRICES[m]["AT"]
    t = m + 2

    def rows_pass(mm):
        mm = mm.reshape(t, t, n, th, tw, cout)
        return jnp.stack([_combine([(AT[a][i], mm[i]) for i in range(t)], mm.dtype) for a in range(m)])

    def cols_pass(r):  # (m, t, N, th, tw, C)
        out = jnp.stack([_combine([(AT[b][j], r[:, j]) for j in range(t)], r.dtype) for b in range(m)], axis=1)
        return jnp.transpose(out, (2, 3, 0, 4, 1, 5)).reshape(n, th * m, tw * m, cout)

    return _apart(cols_pass, _apart(rows_pass, mm, apart), apart)


def output_transform_t(gp, m, th, tw):
    """The transpose of the output transform: (N, m th, m tw, C) -> (t*t, N*th*tw, C)."""
    import jax.numpy as jnp

    AT = MATRICES[m]["AT"]
    t = m + 2
    n, _, _, c = gp.shape
    g = gp.reshape(n, th, m, tw, m, c)
    rows = [_combine([(AT[a][i], g[:, :, a]) for a in range(m)], gp.dtype) for i in range(t)]  # (N, th, tw, m, C)
    out = jnp.stack([jnp.stack([_combine([(AT[b][j], r[:, :, :, b]) for b in range(m)], gp.dtype) for j in range(t)])
                     for r in rows])  # (t, t, N, th, tw, C)
    return out.reshape(t * t, n * th * tw, c)


def input_transform_t(dv, m, n, th, tw, c):
    """The transpose of `input_transform`: (t*t, P, C) -> the padded input's gradient (N, m th + 2, m tw + 2, C)."""
    BT = MATRICES[m]["BT"]
    t = m + 2
    dv = dv.reshape(t, t, n, th, tw, c)
    cols = []
    for i in range(t):
        parts = [_combine([(BT[j][l], dv[i, j]) for j in range(t)], dv.dtype) for l in range(t)]  # (N, th, tw, C)
        cols.append(_overlap_add(parts, 2, m))  # (N, th, Wp, C)
    parts = [_combine([(BT[i][k], cols[i]) for i in range(t)], dv.dtype) for k in range(t)]
    return _overlap_add(parts, 1, m)  # (N, Hp, Wp, C)


def make_winograd_vjp(m, apart=False):
    """winograd_conv with a hand-written backward: the transposes of the transforms and the GEMMs, V saved."""
    import functools

    import jax
    import jax.numpy as jnp
    from jax import lax

    def geometry(x, padding):
        n, h, wd, cin = x.shape
        (pt, pb), (pl, pr) = padding
        ho, wo = h + pt + pb - 2, wd + pl + pr - 2
        th, tw = -(-ho // m), -(-wo // m)
        return n, h, wd, cin, ho, wo, th, tw

    def forward(x, w, padding):
        n, h, wd, cin, ho, wo, th, tw = geometry(x, padding)
        (pt, _), (pl, _) = padding
        hp, wp = m * th + 2, m * tw + 2
        xp = lax.pad(x, jnp.asarray(0, x.dtype), ((0, 0, 0), (pt, hp - h - pt, 0), (pl, wp - wd - pl, 0), (0, 0, 0)))
        v = input_transform_staged(xp, m, th, tw, apart).reshape((m + 2) ** 2, n * th * tw, cin)
        u = kernel_transform(w, m)
        mm = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))))
        y = output_transform2(mm, m, n, th, tw, w.shape[-1], apart)[:, :ho, :wo]
        return y, (v, u)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
    def conv(x, w, padding):
        return forward(x, w, padding)[0]

    def fwd(x, w, padding):
        y, (v, u) = forward(x, w, padding)
        return y, (v, u, x.shape)

    def bwd(padding, res, g):
        v, u, xshape = res
        n, h, wd, cin = xshape
        (pt, _), (pl, _) = padding
        ho, wo = g.shape[1], g.shape[2]
        th, tw = -(-ho // m), -(-wo // m)
        gp = jnp.pad(g, ((0, 0), (0, m * th - ho), (0, m * tw - wo), (0, 0)))
        dm = output_transform_t(gp, m, th, tw)  # (T, P, Cout)
        du = lax.dot_general(v, dm, (((1,), (1,)), ((0,), (0,))))  # (T, Cin, Cout)
        G = jnp.asarray(MATRICES[m]["G"], g.dtype)
        t = m + 2
        dw = jnp.einsum("ak,abio,bl->klio", G, du.reshape(t, t, cin, -1), G)
        dv = lax.dot_general(dm, u, (((2,), (2,)), ((0,), (0,))))  # (T, P, Cin)
        dxp = input_transform_t(dv, m, n, th, tw, cin)
        return dxp[:, pt:pt + h, pl:pl + wd], dw

    conv.defvjp(fwd, bwd)
    return conv


def contender_conv(name):
    """conv(x, w) of a contender, padding 1 ('same')."""
    from jax import lax

    pad = ((1, 1), (1, 1))
    if name == "lax":
        return lambda x, w: lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if name == "wide":
        from jigcnn.fast import wide_conv

        return lambda x, w: wide_conv.conv(x, w, (1, 1), pad, (1, 1))
    if name.startswith("vjp"):
        conv = make_winograd_vjp(int(name[3]), apart=name.endswith("a"))
        return lambda x, w: conv(x, w, pad)
    if name.startswith("wino"):
        m = int(name[4:])
        return lambda x, w: winograd_conv(x, w, pad, m)
    raise ValueError(f"unknown contender {name!r}")


def parse_shape(text):
    """NxHxWxCINxCOUT -> a tuple of ints."""
    n, h, w, cin, cout = (int(v) for v in text.split("x"))
    return n, h, w, cin, cout


def build(spec):
    """The jitted fwd and train functions of a contender, with their arguments."""
    import jax
    import jax.numpy as jnp

    from jigcnn import xla_options

    n, h, w, cin, cout = spec["shape"]
    conv = contender_conv(spec["contender"])
    opts = dict(xla_options.YNN_REDUCE_ONLY) if spec["options"] == "reduce" else None
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, h, w, cin)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin), jnp.float32)
    g = jnp.asarray(rng.standard_normal((n, h, w, cout)), jnp.float32)
    fwd = jax.jit(conv, compiler_options=opts)

    def train(x, k, g):
        y, vjp = jax.vjp(conv, x, k)
        dx, dk = vjp(g)
        return y, dx, dk

    train = jax.jit(train, compiler_options=opts)
    return {"fwd": (fwd, (x, k)), "train": (train, (x, k, g))}


def worker_main(spec_json):
    """Build the contender, then answer {"mode", "calls"} with the wall time of that many calls."""
    from jigcnn import runtime

    runtime.configure_process(compilation_cache=False)  # glibc keeps freed memory, as the train steps run

    import jax

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    spec = json.loads(spec_json)
    fns = build(spec)
    for fn, args in fns.values():
        jax.block_until_ready(fn(*args))
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("cmd") == "exit":
            break
        fn, args = fns[msg["mode"]]
        t0 = time.perf_counter()
        for _ in range(msg["calls"]):
            out = fn(*args)
        jax.block_until_ready(out)
        proto.write(json.dumps({"seconds": time.perf_counter() - t0}) + "\n")
    return 0


class Worker:
    def __init__(self, spec):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "src"), ROOT, env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen([sys.executable, "-m", "experiments.bench_winograd", "--worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env, text=True,
                                     bufsize=1)
        ready = json.loads(self.proc.stdout.readline() or '{"error": "worker died"}')
        if "error" in ready:
            raise RuntimeError(ready["error"])

    def time(self, mode, calls):
        self.proc.stdin.write(json.dumps({"mode": mode, "calls": calls}) + "\n")
        return json.loads(self.proc.stdout.readline())["seconds"] / calls

    def close(self):
        self.proc.stdin.write('{"cmd": "exit"}\n')
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def run_shape(shape, contenders, *, repeats=9, target_s=0.5, options="reduce", modes=("fwd", "train")):
    """Median ms per call of each (contender, mode) at `shape`, interleaved round-robin; and the load."""
    load = list(os.getloadavg())
    workers = {c: Worker({"contender": c, "shape": shape, "options": options}) for c in contenders}
    calls, times = {}, {(c, md): [] for c in contenders for md in modes}
    try:
        for c, w in workers.items():
            for md in modes:
                per = w.time(md, 2)
                calls[c, md] = max(1, round(target_s / max(per, 1e-6)))
        for _ in range(repeats):
            for md in modes:
                for c, w in workers.items():
                    times[c, md].append(w.time(md, calls[c, md]))
    finally:
        for w in workers.values():
            w.close()
    return {"shape": shape, "options": options, "load_before": load, "load_after": list(os.getloadavg()),
            "ms": {f"{c}/{md}": {"median": 1e3 * statistics.median(v), "min": 1e3 * min(v), "max": 1e3 * max(v)}
                   for (c, md), v in times.items()}}


def format_result(res, contenders, modes=("fwd", "train")):
    lines = [f"shape N,H,W,Cin,Cout = {res['shape']}  options {res['options']}  load {res['load_before'][0]:.2f} -> "
             f"{res['load_after'][0]:.2f}"]
    for md in modes:
        base = res["ms"][f"{contenders[0]}/{md}"]["median"]
        cells = [f"{c} {res['ms'][f'{c}/{md}']['median']:.1f} ms ({res['ms'][f'{c}/{md}']['min']:.1f}-"
                 f"{res['ms'][f'{c}/{md}']['max']:.1f}, {base / res['ms'][f'{c}/{md}']['median']:.2f}x)"
                 for c in contenders]
        lines.append(f"  {md:5s}: " + "; ".join(cells))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--shapes", default="128x32x32x32x32,128x16x16x64x64")
    p.add_argument("--contenders", default="lax,wide,wino2,vjp2,vjp4")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--repeat-seconds", type=float, default=0.5)
    p.add_argument("--options", choices=("reduce", "default"), default="reduce")
    p.add_argument("--json")
    a = p.parse_args(argv)
    if a.worker:
        return worker_main(a.worker)
    contenders = a.contenders.split(",")
    results = []
    for s in a.shapes.split(","):
        res = run_shape(parse_shape(s), contenders, repeats=a.repeats, target_s=a.repeat_seconds, options=a.options)
        print(format_result(res, contenders), flush=True)
        results.append(res)
    if a.json:
        from jigcnn.atomic import write_text_atomic

        write_text_atomic(a.json, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
