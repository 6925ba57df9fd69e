"""Run a small JAX program -- an initial-weight draw -- in NumPy on the host, without compiling it.

:func:`evaluate` traces a function to a jaxpr (``jax.make_jaxpr``: tracing only, nothing lowered
or compiled; ~5 ms for LeNet-5's draw) and evaluates the jaxpr here with a small NumPy interpreter:
JAX's threefry2x32 generator (its default, with the partitionable bit layout: ``random_seed``,
``random_wrap`` / ``random_unwrap``, ``random_split``, ``random_fold_in``, ``random_bits``), calls
(``jit``, ``custom_jvp_call``, ...) inlined, and the elementwise integer and float32 / float64
arithmetic, shifts, conversions and shape operations that initialisers produce. Anything else --
a transcendental function (``erf_inv`` of a normal initialiser), float16, a traced or non-threefry
key, more than :data:`MAX_ELEMENTS` random values -- raises :class:`Unsupported`, and the caller
runs the program jitted instead. Only ``Sequential.init`` calls it: layers and initialisers draw
with plain ``jax.random`` and know nothing of the host.

The values are the jitted program's bit for bit. That includes one compiler detail: XLA contracts
a float multiply whose only use is an add or subtract into one fused multiply-add (rounded once)
at its default optimisation, on CPUs with FMA (and GPUs), but not at
``--xla_backend_optimization_level=0`` (rounded twice); the interpreter does the same (:func:`contracts`).
The jitted draw cost 0.2-0.3 s of a LeNet-5 process's start-up, mostly lowering the generator's
loop once per drawn shape and loading its ~115 kernels from the compilation cache (docs/performance.md).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import platform
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from jax.extend import core as jcore

# NumPy draws ~10 M values/s here; the jitted draw costs 0.1-0.3 s from a warm compilation cache
# (more with more layers), 0.4-3 s cold. Above this many random values the host stops and the jit draws.
MAX_ELEMENTS = 1 << 21


class Unsupported(Exception):
    """The program uses something the host interpreter does not evaluate exactly as XLA would (the caller jits it)."""


class TooLarge(Unsupported):
    """More random values than :data:`MAX_ELEMENTS` asked of the host (the caller draws them compiled instead)."""


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x: np.ndarray, d: int) -> np.ndarray:
    return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def threefry2x32(k0, k1, x0, x1) -> tuple[np.ndarray, np.ndarray]:
    """The Threefry-2x32 hash (20 rounds) of the counter pairs (x0, x1) under the key words (k0, k1), as JAX computes it."""
    k0, k1 = np.asarray(k0, np.uint32), np.asarray(k1, np.uint32)
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    with np.errstate(over="ignore"):
        a = np.asarray(x0, np.uint32) + ks[0]
        b = np.asarray(x1, np.uint32) + ks[1]
        for i in range(5):
            for r in _ROTATIONS[i % 2]:
                a = a + b
                b = _rotate_left(b, r)
                b ^= a
            a = a + ks[(i + 1) % 3]
            b = b + ks[(i + 2) % 3] + np.uint32(i + 1)
    return a, b


def _counters(n: int) -> tuple[np.ndarray, np.ndarray]:
    """JAX's `iota_2x32_shape` counters 0..n-1 as (high, low) uint32 words."""
    if n >= 1 << 32:
        raise TooLarge(f"{n} counters")
    return np.zeros(n, np.uint32), np.arange(n, dtype=np.uint32)


class _Keys(NamedTuple):
    """A threefry2x32 key array on the host: uint32 words of shape (*key_shape, 2)."""

    data: np.ndarray


def _check_threefry(impl_name: str) -> None:
    if impl_name != "threefry2x32":
        raise Unsupported(f"a {impl_name} key")
    if not jax.config.jax_threefry_partitionable:
        raise Unsupported("jax_threefry_partitionable is off (the original bit layout)")


def _key_impl_name(dtype) -> str:
    impl = getattr(dtype, "_impl", None)
    return getattr(impl, "name", str(dtype))


def _split(keys: _Keys, shape) -> _Keys:
    shape = tuple(int(s) for s in shape)
    hi, lo = _counters(math.prod(shape))
    words = keys.data.reshape(-1, 2)
    a, b = threefry2x32(words[:, :1], words[:, 1:], hi, lo)
    return _Keys(np.stack([a, b], axis=-1).reshape(keys.data.shape[:-1] + shape + (2,)))


def _bits(keys: _Keys, bit_width: int, shape) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    hi, lo = _counters(math.prod(shape))
    words = keys.data.reshape(-1, 2)
    a, b = threefry2x32(words[:, :1], words[:, 1:], hi, lo)
    out_shape = keys.data.shape[:-1] + shape
    if bit_width == 64:
        return ((a.astype(np.uint64) << np.uint64(32)) | b.astype(np.uint64)).reshape(out_shape)
    if bit_width not in (8, 16, 32):
        raise Unsupported(f"{bit_width}-bit random bits")
    return (a ^ b).astype(f"uint{bit_width}").reshape(out_shape)


def _fold_in(keys: _Keys, data: np.ndarray) -> _Keys:
    data = np.broadcast_to(np.asarray(data).astype(np.uint32), keys.data.shape[:-1])
    a, b = threefry2x32(keys.data[..., 0], keys.data[..., 1], np.zeros_like(data), data)
    return _Keys(np.stack([a, b], axis=-1))


def _seed(seeds: np.ndarray) -> _Keys:
    """JAX's threefry_seed: a 64-bit seed's two words, a narrower seed's bits after a zero word."""
    if seeds.dtype.kind not in "iu":
        raise Unsupported(f"a {seeds.dtype} seed")
    wide = seeds.astype(np.int64 if seeds.dtype.kind == "i" else np.uint64).view(np.uint64)
    hi = (wide >> np.uint64(32)).astype(np.uint32) if seeds.dtype.itemsize == 8 else np.zeros(seeds.shape, np.uint32)
    lo = (wide & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return _Keys(np.stack([hi, lo], axis=-1))


# --- the multiply-add contraction of the jitted program ---------------------------------------------

def _flag_value(flags: str, name: str) -> str | None:
    for flag in flags.split():
        if flag.startswith(f"--{name}="):
            return flag.split("=", 1)[1]
    return None


@functools.lru_cache(maxsize=None)
def _contracts(backend: str, flags: str, machine: str, cpu_flags: frozenset | None) -> bool | None:
    if backend in ("gpu", "cuda", "rocm"):
        return True  # NVPTX / AMDGPU: LLVM contracts a * b + c into fma at XLA's default settings
    if backend != "cpu":
        return None
    if any(word in flags for word in ("fast_math", "max_isa", "xla_cpu_enable_fast")):
        return None  # flags that change XLA:CPU's float code: not modelled
    if _flag_value(flags, "xla_backend_optimization_level") == "0":
        return False  # LLVM at -O0 rounds the product and the sum separately
    if machine in ("aarch64", "arm64"):
        return True
    if machine in ("x86_64", "amd64") and cpu_flags is not None:
        return "fma" in cpu_flags
    return None


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def contracts() -> bool | None:
    """Whether the jitted program fuses `a * b + c` into one fused multiply-add here (None: not known)."""
    machine = platform.machine().lower()
    cpu_flags = _cpu_flags() if machine in ("x86_64", "amd64") else None
    return _contracts(jax.default_backend(), os.environ.get("XLA_FLAGS", ""), machine, cpu_flags)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 a * b + c rounded once: the exact product in float64, the sum rounded to odd, then to float32."""
    with np.errstate(all="ignore"):  # infinities: err is NaN there, and s already final
        p = a.astype(np.float64)
        p *= b  # exact: 24 + 24 bits
        s = p + c
        bb = s - p  # TwoSum: s + err is p + c exactly
        err = s - bb
        np.subtract(p, err, out=err)
        np.subtract(c, bb, out=bb)
        err += bb
    inexact = err != 0
    if inexact.any():  # round to odd: then rounding to float32 (24 bits <= 53 - 2) rounds p + c correctly
        fix = inexact & np.isfinite(s) & ((s.view(np.uint64) & np.uint64(1)) == 0)
        s[fix] = np.nextafter(s[fix], np.where(err[fix] > 0, np.inf, -np.inf))
    return s.astype(np.float32)


# --- the interpreter ---------------------------------------------------------------------------------

_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
                    "custom_vjp_call_jaxpr", "checkpoint", "remat"})
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class _Node(NamedTuple):
    name: str
    ins: tuple[int, ...]
    outs: tuple[int, ...]
    params: dict
    avals: tuple


def _check_aval(aval) -> None:
    dtype = getattr(aval, "dtype", None)
    if dtype is None:
        raise Unsupported(f"a value of type {aval}")
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        _check_threefry(_key_impl_name(dtype))
        return
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype not in _FLOATS or dtype.kind not in "biuf":
        raise Unsupported(f"{dtype} values")


def _host_value(x, aval=None):
    """A jaxpr input or constant as NumPy (a key as its words)."""
    if isinstance(x, jax.core.Tracer):
        raise Unsupported("a traced value")
    dtype = getattr(x, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        _check_threefry(_key_impl_name(dtype))
        return _Keys(np.asarray(jax.random.key_data(x)).astype(np.uint32))
    value = np.asarray(x)
    if aval is not None:
        value = value.astype(np.dtype(aval.dtype), copy=False)
    return value


class _Program(NamedTuple):
    nodes: list
    consts: dict
    inputs: list
    outputs: list


def _flatten(closed) -> _Program:
    """The jaxpr with every call inlined, as nodes over integer value ids (identical nodes merged, as XLA's CSE does)."""
    nodes: list[_Node] = []
    consts: dict[int, Any] = {}
    ids = itertools.count()
    seen: dict = {}
    interned: dict = {}

    def const(value, aval) -> int:
        value = _host_value(value, aval)
        key = None
        if isinstance(value, np.ndarray) and value.size <= 16:
            key = ("const", value.dtype.str, value.shape, value.tobytes())
            if key in interned:
                return interned[key]
        i = next(ids)
        consts[i] = value
        if key is not None:
            interned[key] = i
        return i

    def inline(jaxpr, jaxpr_consts, in_ids):
        env = {}
        for v, c in zip(jaxpr.constvars, jaxpr_consts):
            env[v] = const(c, v.aval)
        env.update(zip(jaxpr.invars, in_ids))

        def read(atom):
            return const(atom.val, atom.aval) if isinstance(atom, jcore.Literal) else env[atom]

        for eqn in jaxpr.eqns:
            ins = tuple(read(a) for a in eqn.invars)
            name = eqn.primitive.name
            if name in _CALLS:
                sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
                if isinstance(sub, jcore.ClosedJaxpr):
                    outs = inline(sub.jaxpr, sub.consts, ins)
                elif isinstance(sub, jcore.Jaxpr) and not sub.constvars:
                    outs = inline(sub, (), ins)
                else:
                    raise Unsupported(f"a {name} call without a jaxpr")
            else:
                if name not in _RULES:
                    raise Unsupported(f"the primitive {name}")
                for v in eqn.outvars:
                    _check_aval(v.aval)
                signature = (name, ins, repr(sorted(eqn.params.items())))
                if signature in seen:
                    outs = seen[signature]
                else:
                    outs = tuple(next(ids) for _ in eqn.outvars)
                    nodes.append(_Node(name, ins, outs, eqn.params, tuple(v.aval for v in eqn.outvars)))
                    seen[signature] = outs
            env.update(zip(eqn.outvars, outs))
        return [read(a) for a in jaxpr.outvars]

    for v in closed.jaxpr.invars:
        _check_aval(v.aval)
    inputs = [next(ids) for _ in closed.jaxpr.invars]
    outputs = inline(closed.jaxpr, closed.consts, inputs)
    return _Program(nodes, consts, inputs, outputs)


_RANDOM = frozenset({"random_bits", "random_split", "random_fold_in", "random_seed", "threefry2x32"})


def _producer_name(made: dict, i: int) -> str | None:
    node = made.get(i)
    return node.name if node is not None else None


def _simplify(program: _Program) -> _Program:
    """Fold the constants, and rewrite float arithmetic as XLA's algebraic simplifier does where that changes the rounding.

    XLA replaces ``x / c`` by ``x * (1 / c)``, ``(x * c1) * c2`` by ``x * (c1 * c2)``, ``x - c`` by
    ``x + (-c)``, ``(x + c1) + c2`` by ``x + (c1 + c2)`` and drops ``x + 0`` (c: constants); the same is
    done here. Divisions it rewrites otherwise (by a square root, of or by a quotient) are refused.
    """
    nodes: list[_Node] = []
    consts = dict(program.consts)
    made: dict[int, _Node] = {}
    ids = itertools.count(max([*consts, *program.inputs, *(o for n in program.nodes for o in n.outs)], default=0) + 1)
    alias: dict[int, int] = {}

    def const(value) -> int:
        i = next(ids)
        consts[i] = value
        return i

    def fold(name, ins, params, avals):
        args = [consts[i] for i in ins]
        with np.errstate(all="ignore"):
            outs = _apply(name, args, params, avals)
        return [const(v) for v in outs]

    def emit(name, ins, aval):
        if all(i in consts for i in ins):
            return fold(name, ins, {}, (aval,))[0]
        out = next(ids)
        node = _Node(name, tuple(ins), (out,), {}, (aval,))
        nodes.append(node)
        made[out] = node
        return out

    for node in program.nodes:
        ins = tuple(alias.get(i, i) for i in node.ins)
        name, aval = node.name, node.avals[0]
        if all(i in consts for i in ins):
            if name in _RANDOM:
                raise Unsupported("a random draw from a constant key (XLA may fold it)")
            alias.update(zip(node.outs, fold(name, ins, node.params, node.avals)))
            continue
        if name in ("add", "sub", "mul", "div") and np.dtype(aval.dtype).kind == "f":
            a, b = ins
            if name == "div":
                if _producer_name(made, a) == "div" or _producer_name(made, b) in ("div", "sqrt", "rsqrt"):
                    raise Unsupported("a division XLA rewrites")
                if b in consts:
                    b = emit("div", (const(np.ones((), consts[b].dtype)), b), jax.core.ShapedArray(consts[b].shape, consts[b].dtype))
                    name = "mul"
            if name == "sub" and b in consts:
                name, b = "add", emit("neg", (b,), jax.core.ShapedArray(consts[b].shape, consts[b].dtype))
            if name in ("add", "mul") and a in consts:
                a, b = b, a
            if name in ("add", "sub") and (_producer_name(made, a) == "sub" and made[a].ins[0] in consts
                                           or a in consts and _producer_name(made, b) in ("add", "sub")):
                raise Unsupported("a constant minus a value, in a chain XLA reassociates")
            if name in ("add", "mul") and b in consts:
                inner = made.get(a)
                if inner is not None and inner.name == name and inner.ins[1] in consts:
                    c1, c2 = consts[inner.ins[1]], consts[b]
                    if _uniform(c1) and _uniform(c2):  # XLA reassociates scalar (broadcast) constants
                        shape = np.broadcast_shapes(c1.shape, c2.shape)
                        b = emit(name, (inner.ins[1], b), jax.core.ShapedArray(shape, np.result_type(c1, c2)))
                        a = inner.ins[0]
                    elif name == "add" or not (_exact_factor(c1) or _exact_factor(c2)):
                        raise Unsupported(f"a {name} chain over array constants")
                if name == "add" and not np.any(consts[b]) and consts[b].size and tuple(made[a].avals[0].shape if a in made else ()) == tuple(aval.shape):
                    alias[node.outs[0]] = a  # x + 0 is x
                    continue
            new = _Node(name, (a, b), node.outs, node.params, node.avals)
        else:
            new = _Node(name, ins, node.outs, node.params, node.avals)
        nodes.append(new)
        for o in new.outs:
            made[o] = new
    outputs = [alias.get(i, i) for i in program.outputs]
    live = set(outputs)
    kept = []
    for node in reversed(nodes):  # what the rewrites left unused goes (XLA's dead code elimination)
        if any(o in live for o in node.outs):
            kept.append(node)
            live.update(node.ins)
    return _Program(kept[::-1], consts, program.inputs, outputs)


def _uniform(c: np.ndarray) -> bool:
    """A constant with one value throughout (a scalar, or a broadcast one)."""
    return c.size >= 1 and bool(np.all(c == c.flat[0]))


def _exact_factor(c: np.ndarray) -> bool:
    """Only 0s and 1s: multiplying by it is exact, so XLA's grouping of a product chain does not matter."""
    return bool(np.all((c == 0) | (c == 1)))


def _fusions(program: _Program, contract: bool | None) -> dict[int, tuple[int, int]]:
    """{index of an add/sub node: (index of the float32 multiply it absorbs, that multiply's operand position)}."""
    uses: dict[int, int] = {}
    for node in program.nodes:
        for i in node.ins:
            uses[i] = uses.get(i, 0) + 1
    for i in program.outputs:
        uses[i] = uses.get(i, 0) + 1
    producer = {node.outs[0]: n for n, node in enumerate(program.nodes) if node.name in ("mul", "square")}
    fused = {}
    if contract is False:
        return fused
    for n, node in enumerate(program.nodes):
        if node.name not in ("add", "sub", "neg"):
            continue
        muls = [(producer[i], pos) for pos, i in enumerate(node.ins) if i in producer and uses[i] == 1
                and np.dtype(program.nodes[producer[i]].avals[0].dtype).kind == "f"]
        if not muls:
            continue
        if node.name == "neg" or np.dtype(node.avals[0].dtype) != np.float32 or len(muls) > 1 or contract is None:
            raise Unsupported(f"a multiply feeding {node.name} that XLA may contract into a fused multiply-add")
        if contract:
            fused[n] = muls[0]
    return fused


def _shift(x, s, op, fill):
    """XLA's shift: `op` on the unsigned (or signed) view, `fill(x)` where the amount is outside [0, bits)."""
    bits = x.dtype.itemsize * 8
    s = np.asarray(s)
    if s.ndim == 0 and 0 <= int(s) < bits:
        return op(x, int(s))
    s = s.astype(np.int64)
    out = (s < 0) | (s >= bits)
    return np.where(out, fill(x), op(x, np.where(out, 0, s)))


def _unsigned(x):
    return x.view(f"uint{x.dtype.itemsize * 8}")


def _shift_left(x, s):
    u = _unsigned(x)
    return _shift(u, s, lambda v, d: v << np.asarray(d).astype(v.dtype), np.zeros_like).astype(u.dtype).view(x.dtype)


def _shift_right_logical(x, s):
    u = _unsigned(x)
    return _shift(u, s, lambda v, d: v >> np.asarray(d).astype(v.dtype), np.zeros_like).astype(u.dtype).view(x.dtype)


def _shift_right_arithmetic(x, s):
    signed = x.view(f"int{x.dtype.itemsize * 8}")
    top = signed.dtype.itemsize * 8 - 1
    return _shift(signed, s, lambda v, d: v >> np.asarray(d).astype(v.dtype),
                  lambda v: v >> np.asarray(top).astype(v.dtype)).astype(signed.dtype).view(x.dtype)


def _int_div(a, b):
    if a.dtype.kind == "f":
        return a / b
    if np.any(b == 0):
        raise Unsupported("an integer division by zero")
    q = a // b
    return q + ((a % b != 0) & ((a < 0) != (b < 0)))


def _rem(a, b):
    if a.dtype.kind != "f" and np.any(b == 0):
        raise Unsupported("an integer remainder by zero")
    return np.fmod(a, b)


def _convert(x, new_dtype, **_):
    new = np.dtype(new_dtype)
    if x.dtype.kind == "f" and new.kind in "iu":
        info = np.iinfo(new)
        if not np.all(np.isfinite(x)) or np.any(x < info.min) or np.any(x > info.max):
            raise Unsupported("a float out of the integer range")
    if new.kind == "b":
        return x != 0
    return x.astype(new)


def _bitcast(x, new_dtype, **_):
    new = np.dtype(new_dtype)
    if new.itemsize != x.dtype.itemsize:
        raise Unsupported("a bitcast between widths")
    return x.view(new)


def _broadcast_in_dim(x, shape, broadcast_dimensions, **_):
    target = [1] * len(shape)
    for axis, d in enumerate(broadcast_dimensions):
        target[d] = x.shape[axis]
    return np.broadcast_to(x.reshape(target), tuple(shape))


def _reshape(x, new_sizes, dimensions=None, **_):
    if dimensions is not None:
        raise Unsupported("a reshape with a permutation")
    return x.reshape(tuple(new_sizes))


def _slice(x, start_indices, limit_indices, strides=None, **_):
    strides = strides or (1,) * len(start_indices)
    return x[tuple(slice(a, b, s) for a, b, s in zip(start_indices, limit_indices, strides))]


def _iota(dtype, shape, dimension, **_):
    ramp = np.arange(shape[dimension], dtype=np.dtype(dtype))
    target = [1] * len(shape)
    target[dimension] = shape[dimension]
    return np.broadcast_to(ramp.reshape(target), tuple(shape))


def _select_n(which, *cases):
    if which.dtype == np.bool_:
        return np.where(which, cases[1], cases[0]) if len(cases) == 2 else cases[0]
    if np.any(which < 0) or np.any(which >= len(cases)):
        raise Unsupported("a select_n index out of range")
    return np.choose(which.astype(np.int64), np.broadcast_arrays(*cases))


def _structural(fn, adjust):
    """Apply the shape operation `fn` to arrays, and to keys' words with `adjust(params, ndim)` for their extra axis."""

    def rule(*args, **params):
        if any(isinstance(a, _Keys) for a in args):
            if not all(isinstance(a, _Keys) for a in args):
                raise Unsupported("keys mixed with values")
            return _Keys(fn(*(a.data for a in args), **adjust(params, args[0].data.ndim - 1)))
        return fn(*args, **params)

    return rule


def _same(params, ndim):
    return params


def _bcast_keys(params, ndim):
    return dict(params, shape=tuple(params["shape"]) + (2,),
                broadcast_dimensions=tuple(params["broadcast_dimensions"]) + (len(params["shape"]),))


def _reshape_keys(params, ndim):
    return dict(params, new_sizes=tuple(params["new_sizes"]) + (2,))


def _slice_keys(params, ndim):
    strides = params.get("strides") or (1,) * ndim
    return dict(params, start_indices=tuple(params["start_indices"]) + (0,),
                limit_indices=tuple(params["limit_indices"]) + (2,), strides=tuple(strides) + (1,))


def _transpose_keys(params, ndim):
    return dict(params, permutation=tuple(params["permutation"]) + (ndim,))


def _select_keys_rule(which, *cases):
    if isinstance(which, _Keys) or not all(isinstance(c, _Keys) for c in cases):
        raise Unsupported("keys mixed with values")
    return _Keys(_select_n(np.asarray(which)[..., None], *(c.data for c in cases)))


def _select_rule(which, *cases):
    if any(isinstance(c, _Keys) for c in cases):
        return _select_keys_rule(which, *cases)
    return _select_n(which, *cases)


def _keys_arg(x) -> _Keys:
    if not isinstance(x, _Keys):
        raise Unsupported("a random primitive on a raw array")
    return x


def _wrap(x, impl, **_):
    _check_threefry(getattr(impl, "name", str(impl)))
    if x.shape[-1:] != (2,):
        raise Unsupported(f"key data of shape {x.shape}")
    return _Keys(x.astype(np.uint32))


def _unwrap(x, **_):
    return _keys_arg(x).data


def _random_seed(x, impl, **_):
    _check_threefry(getattr(impl, "name", str(impl)))
    return _seed(np.asarray(x))


_RULES: dict[str, Callable] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "square": lambda a: a * a,
    "div": _int_div,
    "rem": _rem,
    "neg": lambda a: -a,
    "max": np.maximum,
    "min": np.minimum,
    "abs": np.abs,
    "sign": np.sign,
    "sqrt": np.sqrt,
    "floor": np.floor,
    "ceil": np.ceil,
    "nextafter": np.nextafter,
    "is_finite": np.isfinite,
    "and": lambda a, b: a & b,
    "or": lambda a, b: a | b,
    "xor": lambda a, b: a ^ b,
    "not": lambda a: ~a,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "clamp": lambda lo, x, hi: np.minimum(np.maximum(x, lo), hi),
    "shift_left": _shift_left,
    "shift_right_logical": _shift_right_logical,
    "shift_right_arithmetic": _shift_right_arithmetic,
    "convert_element_type": _convert,
    "bitcast_convert_type": _bitcast,
    "iota": _iota,
    "stop_gradient": lambda x: x,
    "copy": _structural(lambda x: x, _same),
    "copy_p": _structural(lambda x: x, _same),
    "broadcast_in_dim": _structural(_broadcast_in_dim, _bcast_keys),
    "reshape": _structural(_reshape, _reshape_keys),
    "squeeze": _structural(lambda x, dimensions: np.squeeze(x, tuple(dimensions)), _same),
    "slice": _structural(_slice, _slice_keys),
    "transpose": _structural(lambda x, permutation: np.transpose(x, permutation), _transpose_keys),
    "concatenate": _structural(lambda *xs, dimension: np.concatenate(xs, dimension), _same),
    "select_n": _select_rule,
    "random_seed": _random_seed,
    "random_wrap": _wrap,
    "random_unwrap": _unwrap,
    "random_split": lambda k, shape: _split(_keys_arg(k), shape),
    "random_fold_in": lambda k, m: _fold_in(_keys_arg(k), m),
    "random_bits": lambda k, bit_width, shape: _bits(_keys_arg(k), bit_width, shape),
    "threefry2x32": lambda k0, k1, x0, x1: threefry2x32(*np.broadcast_arrays(k0, k1, x0, x1)),
}
_PARAMS = {"convert_element_type": ("new_dtype",), "bitcast_convert_type": ("new_dtype",),
           "iota": ("dtype", "shape", "dimension"), "broadcast_in_dim": ("shape", "broadcast_dimensions"),
           "reshape": ("new_sizes", "dimensions"), "squeeze": ("dimensions",),
           "slice": ("start_indices", "limit_indices", "strides"), "transpose": ("permutation",),
           "concatenate": ("dimension",), "random_seed": ("impl",), "random_wrap": ("impl",),
           "random_split": ("shape",), "random_bits": ("bit_width", "shape")}


def _random_count(program: _Program) -> int:
    n = 0
    for node in program.nodes:
        if node.name in ("random_bits", "random_split", "random_fold_in", "threefry2x32"):
            n += sum(math.prod(a.shape) for a in node.avals)
    return n


def _run(program: _Program, inputs: list) -> list:
    values: dict[int, Any] = dict(program.consts)
    values.update(zip(program.inputs, inputs))
    fused = _fusions(program, contracts())
    absorbed = {m for m, _ in fused.values()}
    with np.errstate(all="ignore"):
        for n, node in enumerate(program.nodes):
            if n in absorbed:
                continue
            if n in fused:
                m, pos = fused[n]
                mul = program.nodes[m]
                a, b = (values[i] for i in mul.ins * (2 if mul.name == "square" else 1))
                other = values[node.ins[1 - pos]]
                if node.name == "sub" and pos == 1:
                    a = -a  # c - a * b
                elif node.name == "sub":
                    other = -other  # a * b - c
                a, b, other = np.broadcast_arrays(a, b, other)
                outs = [_fma(a, b, other).reshape(node.avals[0].shape)]
            else:
                outs = _apply(node.name, [values[i] for i in node.ins], node.params, node.avals)
            values.update(zip(node.outs, outs))
    return [values[i] for i in program.outputs]


def _apply(name: str, args: list, params: dict, avals) -> list:
    """The rule for `name` on NumPy values, its outputs in their avals' dtypes."""
    params = {k: params[k] for k in _PARAMS.get(name, ()) if k in params}
    outs = _RULES[name](*args, **params)
    if len(avals) == 1:
        outs = (outs,)
    checked = []
    for aval, value in zip(avals, outs):
        if not isinstance(value, _Keys):
            value = np.asarray(value)
            dtype = np.dtype(aval.dtype)
            if value.dtype != dtype:
                value = value.astype(dtype)
            if value.shape != tuple(aval.shape):
                raise Unsupported(f"{name} gave shape {value.shape}, not {tuple(aval.shape)}")
        checked.append(value)
    return checked


def evaluate(fn: Callable, *args):
    """``fn(*args)`` evaluated in NumPy from its jaxpr (traced, never compiled); raises Unsupported where it cannot be exact."""
    leaves = jax.tree_util.tree_leaves(args)
    inputs = [_host_value(x) for x in leaves]
    closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    program = _simplify(_flatten(closed))
    count = _random_count(program)
    if count > MAX_ELEMENTS:
        raise TooLarge(f"{count} random values")
    outs = _run(program, [x.astype(np.dtype(v.aval.dtype), copy=False) if isinstance(x, np.ndarray) else x
                          for x, v in zip(inputs, closed.jaxpr.invars)])
    if any(isinstance(x, _Keys) for x in outs):
        raise Unsupported("a key among the outputs")
    outs = [np.ascontiguousarray(x) for x in outs]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shapes), outs)


__all__ = ["MAX_ELEMENTS", "TooLarge", "Unsupported", "contracts", "evaluate", "threefry2x32"]
