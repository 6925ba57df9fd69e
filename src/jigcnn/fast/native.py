"""Native direct-convolution kernels for few input channels, compiled on first use and called through XLA FFI.

Written as XLA operations (`fast.conv`'s banded GEMM), a few-channel convolution's forward pass
and weight gradient move the input through window matrices several times the input's size; a
direct kernel keeps the taps (or the tap gradients) in vector registers and reads the input and
the deltas once (`direct_conv.cc`). Measured isolated at batch 256 against the banded GEMM:
IgNet's first layer (1 channel, 16 maps) forward 3.4x, weight gradient 3.7x; LeNet-5's first
(1 channel, 6 maps) 3.5x and 4.5x (vectorised over output columns, as every conv with fewer than
16 maps; 1.5x and 1.8x over map vectors with 10 of 16 lanes idle); LeNet-5's second (6 channels,
16 maps) 1.75x and 4.2x, and its input gradient (the deltas carried to the layer below) 1.76x.

The C++ source ships with the package and is compiled on first use with the system's C++
compiler (``$CXX``, else ``c++``; ``-O3 -march=native``) into ``$JIGCNN_NATIVE_CACHE`` or
``~/.cache/jigcnn/native``, named by a hash of the source, the flags, jaxlib's version and
the CPU, and written atomically. Without a compiler, or when it fails, a warning says why
and jigcnn keeps the XLA formulation. Whether they may run at all is the caller's kernel
configuration (`jigcnn.ops.using(native=False)`); nothing here reads the environment at import.
Float32 on the CPU only: other dtypes and platforms take the XLA formulation
(`jax.lax.platform_dependent` picks it per platform when lowering).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = pathlib.Path(__file__).with_name("direct_conv.cc")
CACHE_ENV = "JIGCNN_NATIVE_CACHE"
DEFAULT_CACHE = pathlib.Path("~/.cache/jigcnn/native")
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
MAX_TAPS = 160  # the weight-gradient kernel's limit on kh * kw (kMaxTaps in the C++ source)
_TARGETS = {"forward": "JigcnnDirectConvForward",
            "weight_gradient": "JigcnnDirectConvWeightGradient",
            "input_gradient": "JigcnnDirectConvInputGradient",
            "winograd_forward": "JigcnnWinogradForward",
            "winograd_weight_gradient": "JigcnnWinogradWeightGradient"}
_LOCK = threading.Lock()
_STATE: dict = {}


def cache_dir() -> pathlib.Path:
    """Where compiled kernels are kept: $JIGCNN_NATIVE_CACHE, else ~/.cache/jigcnn/native."""
    return pathlib.Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def _cpu_signature() -> str:
    """The machine and its CPU flags: a library built with -march=native runs only where they match."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return platform.machine() + flags


def library_path(compiler: str) -> pathlib.Path:
    """The compiled library's file for this source, compiler, flags, jaxlib and CPU."""
    import jaxlib

    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), compiler.encode(), " ".join(FLAGS).encode(),
                 jaxlib.__version__.encode(), _cpu_signature().encode()):
        h.update(part)
        h.update(b"\0")
    return cache_dir() / f"direct_conv-{h.hexdigest()[:16]}.so"


def build(compiler: str | None = None) -> pathlib.Path:
    """Compile the kernels (unless already in the cache); returns the library's path.

    Raises RuntimeError naming the compiler and its output when no compiler is found or
    the compilation fails.
    """
    compiler = compiler or os.environ.get("CXX") or "c++"
    exe = shutil.which(compiler)
    if exe is None:
        raise RuntimeError(f"no C++ compiler: {compiler!r} is not on PATH (set CXX to use another)")
    out = library_path(compiler)
    if out.exists():
        return out
    from jigcnn.atomic import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(out):
        if out.exists():  # another process built it while this one waited
            return out
        with atomic_path(out) as tmp:
            cmd = [exe, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling {SOURCE.name} failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    return out


@contextlib.contextmanager
def _build_lock(out: pathlib.Path):
    """One compilation at a time per library file across processes (test workers, parallel runs); POSIX only."""
    try:
        import fcntl
    except ImportError:  # no flock: concurrent builds still each write atomically
        yield
        return
    with open(out.with_name(out.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load() -> bool:
    """Build, load and register the kernels once per process; False (with a warning) when that fails."""
    with _LOCK:
        if "ok" in _STATE:
            return _STATE["ok"]
        try:
            lib = ctypes.CDLL(str(build()))
            for kind, symbol in _TARGETS.items():
                jax.ffi.register_ffi_target(f"jigcnn_direct_conv_{kind}",
                                            jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
            _STATE.update(ok=True, lib=lib)
        except (RuntimeError, OSError, AttributeError) as err:
            warnings.warn(f"jigcnn.fast.native: native kernels unavailable, using the XLA formulation: {err}",
                          RuntimeWarning, stacklevel=3)
            _STATE.update(ok=False, error=str(err))
        return _STATE["ok"]


def available() -> bool:
    """Whether the native kernels are loaded (building them on the first call)."""
    return _load()


def _float32(*arrays) -> bool:
    return all(jnp.result_type(a) == jnp.float32 for a in arrays)


SERVES = ("forward", "weight", "input")


def serves(kind: str, *arrays, kernel_hw=None) -> bool:
    """Whether the native kernel `kind` serves these operands (and the kernels are loaded).

    "forward" (x, w[, bias]): NHWC / HWIO in float32. "weight" (x, delta; `kernel_hw`): float32,
    fewer than 16 maps or a multiple of 16 (other counts leave the last 16-wide vector part
    empty; not measured), kh * kw <= MAX_TAPS. "input" (delta, w): float32 deltas (N, Ho, Wo, C)
    and a (KH, KW, Cin, C) kernel.
    """
    if kind == "forward":
        x, w, *rest = arrays
        bias = rest[0] if rest else None
        ok = x.ndim == 4 and w.ndim == 4 and x.shape[-1] == w.shape[2] and _float32(*([x, w] + ([bias] if bias is not None else [])))
    elif kind == "weight":
        x, delta = arrays
        kh, kw = kernel_hw
        c = delta.shape[-1]
        ok = (x.ndim == 4 and delta.ndim == 4 and (c < 16 or c % 16 == 0)
              and x.shape[1] - delta.shape[1] + 1 == kh and x.shape[2] - delta.shape[2] + 1 == kw
              and kh * kw <= MAX_TAPS and _float32(x, delta))
    elif kind == "input":
        delta, w = arrays
        ok = delta.ndim == 4 and w.ndim == 4 and delta.shape[-1] == w.shape[-1] and _float32(delta, w)
    else:
        raise ValueError(f"native.serves: kind must be one of {SERVES}, got {kind!r}")
    return bool(ok) and available()


def _ffi_forward(x, w, b):
    n, h, wd, _ = x.shape
    kh, kw, _, c = w.shape
    out = jax.ShapeDtypeStruct((n, h - kh + 1, wd - kw + 1, c), jnp.float32)
    return jax.ffi.ffi_call("jigcnn_direct_conv_forward", out, vmap_method="sequential")(x, w, b)


def _ffi_weight_gradient(x, delta, kh: int, kw: int):
    c = delta.shape[-1]
    outs = (jax.ShapeDtypeStruct((kh, kw, x.shape[-1], c), jnp.float32), jax.ShapeDtypeStruct((c,), jnp.float32))
    return jax.ffi.ffi_call("jigcnn_direct_conv_weight_gradient", outs, vmap_method="sequential")(x, delta)


def _ffi_input_gradient(delta, w):
    n, ho, wo, _ = delta.shape
    kh, kw, cin, _ = w.shape
    out = jax.ShapeDtypeStruct((n, ho + kh - 1, wo + kw - 1, cin), jnp.float32)
    return jax.ffi.ffi_call("jigcnn_direct_conv_input_gradient", out, vmap_method="sequential")(delta, w)


def winograd_serves(x, w) -> bool:
    """Whether the fused Winograd F(4x4, 3x3) kernel serves a convolution of `x` with `w` (and it is loaded).

    Float32 x (N, H, W, Cin) and w (3, 3, Cin, C), Cin and C multiples of 16 (whole vectors), nothing empty.
    """
    ok = (x.ndim == 4 and w.ndim == 4 and tuple(w.shape[:2]) == (3, 3) and x.shape[-1] == w.shape[2]
          and min(x.shape) > 0 and w.shape[2] % 16 == 0 and w.shape[3] % 16 == 0 and w.shape[3] > 0
          and _float32(x, w))
    return bool(ok) and available()


def _ffi_winograd(x, w, *, offset, out_hw):
    from jigcnn.fast.winograd import kernel_transform

    out = jax.ShapeDtypeStruct((x.shape[0], *out_hw, w.shape[-1]), jnp.float32)
    return jax.ffi.ffi_call("jigcnn_direct_conv_winograd_forward", out, vmap_method="sequential")(
        x, kernel_transform(w), pad_top=np.int64(offset[0]), pad_left=np.int64(offset[1]))


def winograd_forward(x, w, offset, out_hw, fallback):
    """The 3x3 correlation of `x` (N, H, W, Cin), zero-padded by `offset` (top, left) rows and columns, with `w`.

    y[n, i, j] = sum_{a, c} x[n, i + a - top, j + c - left] w[a, c] for (i, j) in `out_hw`, x zero outside
    (a negative offset crops). The fused Winograd kernel on the CPU; `fallback(x, w)` (the XLA
    formulation) elsewhere, and where the kernels could not be built (with `available`'s warning).
    Check `winograd_serves` first.
    """
    if not available():
        return fallback(x, w)
    cpu = functools.partial(_ffi_winograd, offset=tuple(int(v) for v in offset), out_hw=tuple(int(v) for v in out_hw))
    return jax.lax.platform_dependent(x, w, cpu=cpu, default=fallback)


def _ffi_winograd_weight_gradient(x, delta, *, offset):
    from jigcnn.fast.winograd import kernel_transform_transposed

    out = jax.ShapeDtypeStruct((36, x.shape[-1], delta.shape[-1]), jnp.float32)
    du = jax.ffi.ffi_call("jigcnn_direct_conv_winograd_weight_gradient", out, vmap_method="sequential")(
        x, delta, pad_top=np.int64(offset[0]), pad_left=np.int64(offset[1]))
    return kernel_transform_transposed(du)


def winograd_weight_gradient(x, delta, offset, fallback):
    """dL/dw (3, 3, Cin, C) of `winograd_forward(x, w, offset, delta.shape[1:3])` for the deltas (Eq. 1).

    The fused kernel on the CPU (dU = sum over tiles of V^T (A dY A^T), then dw = G^T dU G);
    `fallback(x, delta)` elsewhere or where the kernels could not be built. Check `winograd_serves` first.
    """
    if not available():
        return fallback(x, delta)
    cpu = functools.partial(_ffi_winograd_weight_gradient, offset=tuple(int(v) for v in offset))
    return jax.lax.platform_dependent(x, delta, cpu=cpu, default=fallback)


def forward(x, w, bias, fallback):
    """Valid, stride-1 convolution of `x` (N, H, W, Cin) with `w` (KH, KW, Cin, C) plus `bias`.

    The native kernel on the CPU; `fallback(x, w, bias)` (the XLA formulation) elsewhere.
    Check `serves("forward", ...)` first.
    """
    b = jnp.zeros((w.shape[-1],), jnp.float32) if bias is None else bias
    return jax.lax.platform_dependent(x, w, b, cpu=_ffi_forward,
                                      default=lambda x, w, b: fallback(x, w, bias))


def weight_gradient(x, delta, kernel_hw, fallback):
    """(dw, db) of that convolution for the deltas `delta` (N, Ho, Wo, C); `fallback(x, delta)` off the CPU."""
    kh, kw = kernel_hw
    return jax.lax.platform_dependent(x, delta, cpu=functools.partial(_ffi_weight_gradient, kh=kh, kw=kw),
                                      default=fallback)


def input_gradient(delta, w, fallback):
    """dL/dx (N, Ho + KH - 1, Wo + KW - 1, Cin) of that convolution for the deltas; `fallback(delta, w)` off the CPU."""
    return jax.lax.platform_dependent(delta, w, cpu=_ffi_input_gradient, default=fallback)


__all__ = ["MAX_TAPS", "SERVES", "SOURCE", "available", "build", "cache_dir", "forward", "input_gradient",
           "winograd_forward", "winograd_serves", "winograd_weight_gradient",
           "library_path", "serves", "weight_gradient"]
