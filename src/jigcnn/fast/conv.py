"""Convolutions for few channels as width-blocked (banded Toeplitz) GEMMs.

XLA's CPU convolution is slow for the shapes of the IgNet and LeNet nets: one or a few
input channels, 5x5 kernels, tens of output maps. Its weight gradient (a correlation
with a huge "kernel", the deltas) is slower still. Here a stride-1, undilated "valid"
convolution is rewritten as one well-shaped matrix product:

* the output width Wo is cut into blocks of T columns (zero-padded up to a multiple of T);
* each output row block needs the K rows x (T + kw - 1) columns x Cin input window, so
  the input is gathered once into ``xb`` of shape (N*Ho*nb, kh*(T+kw-1)*Cin) -- a handful of
  contiguous slices, a few times the input's size, not the kh*kw times of im2col;
* the kernel becomes a banded matrix ``wb`` (kh*(T+kw-1)*Cin, T*Cout) with
  ``wb[a, r + b, c, r, o] = w[a, b, c, o]``;
* the output is ``xb @ wb`` reshaped (N*Ho*nb, T*Cout) -> (N, Ho, Wo, Cout): no transpose.

The weight gradient is the transposed product ``xb.T @ delta`` (delta reshaped the same
way, free) followed by summing the band back: ``dw[a, b, c, o] = sum_r G[a, r + b, c, r, o]``.
The input gradient is the same forward product on the zero-padded deltas with the flipped,
transposed kernel. The multiply count is (T + kw - 1) / kw times that of a direct
convolution (1.6x for T = 4, kw = 5), paid back many times by running as a GEMM.

In float32 on the CPU, the native kernels of `fast.native` replace the forward product and the
weight gradient (autodiff reaches the latter through `fast.kernel_tangent`).

Each function has a plain reference (`lax.conv_general_dilated`) it is tested against
(tests/test_fast_conv.py, tests/test_fast_native.py).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jigcnn.fast import native
from jigcnn.fast.barrier import unfused

# use the banded GEMM when kh*kw*Cin (one output's multiply count per output map) is at most this
# (measured faster up to LeNet's second conv, 5*5*6 = 150 taps; larger convs keep XLA's)
MAX_TAPS = 160
DEFAULT_BLOCK = 4
# on unless JIGCNN_FAST_CONV=0 (read at import; set `ENABLED` to switch in a running process,
# before the functions are traced)
ENABLED = os.environ.get("JIGCNN_FAST_CONV", "1") not in ("0", "false", "no", "off")


def eligible(kernel_shape, strides, dilation) -> bool:
    """Whether the fast formulation serves this convolution (enabled, stride 1, no dilation, few taps)."""
    kh, kw, cin, _ = kernel_shape
    return (ENABLED and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)
            and kh * kw * cin <= MAX_TAPS)


def block_width(wo: int, kw: int, block: int | None = None) -> int:
    """Output columns per block: `block` if given, else the first of 4, 5, 3, 6, 7, 8 dividing Wo (else 4).

    Blocks of about 4 columns measured fastest (IgNet's 32 and LeNet's 28 output columns
    take 4; LeNet's second conv, 10 columns, takes 5); never more than Wo.
    """
    if block is None:
        block = next((t for t in (4, 5, 3, 6, 7, 8) if wo % t == 0), DEFAULT_BLOCK)
    return max(1, min(block, wo))


def _band_selector(kw: int, t: int, dtype) -> np.ndarray:
    """S[l, r, b] = 1 where l = r + b: places kernel column b at window column l for output column r."""
    L = t + kw - 1
    s = np.zeros((L, t, kw), dtype)
    for r in range(t):
        for b in range(kw):
            s[r + b, r, b] = 1
    return s


def _padded_for_blocks(x, kw: int, wo: int, t: int):
    """(x zero-padded on the right to cover nb blocks of t columns, nb, the window width L = t + kw - 1)."""
    nb = -(-wo // t)
    need = nb * t + kw - 1
    if need > x.shape[2]:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, need - x.shape[2]), (0, 0)))
    return x, nb, t + kw - 1


def window_blocks(x, kh: int, kw: int, ho: int, wo: int, t: int):
    """The input windows of each (row, column block) output: (N*Ho*nb, kh*(t+kw-1)*Cin).

    `x` is the (already padded) NHWC input of a valid, stride-1 convolution with output
    Ho x Wo; columns past the input (when Wo is not a multiple of t) read zeros.
    """
    x, nb, L = _padded_for_blocks(x, kw, wo, t)
    n, _, _, c = x.shape
    rows = [x[:, a: a + ho] for a in range(kh)]  # kh x (N, Ho, W', C)
    blocks = jnp.stack([jnp.stack([r[:, :, j * t: j * t + L] for r in rows], axis=2) for j in range(nb)], axis=2)
    # (N, Ho, nb, kh, L, C)
    return blocks.reshape(n * ho * nb, kh * L * c), nb


def window_blocks_transposed(x, kh: int, kw: int, ho: int, wo: int, t: int):
    """``window_blocks(x, ...)[0].T`` built directly: (kh*(t+kw-1)*Cin, N*Ho*nb), one strided slice per tap.

    The weight gradient as ``xbT @ delta`` (a plain product) ran ~2x faster than as ``xb.T @ delta``
    (XLA's CPU dot with both operands contracted over their rows) for a single-channel input.
    """
    x, nb, L = _padded_for_blocks(x, kw, wo, t)
    n, _, _, c = x.shape
    taps = [x[:, a: a + ho, l: l + (nb - 1) * t + 1: t] for a in range(kh) for l in range(L)]  # (N, Ho, nb, C)
    stacked = jnp.moveaxis(jnp.stack(taps), -1, 1)  # (kh*L, C, N, Ho, nb)
    return stacked.reshape(kh * L * c, n * ho * nb), nb


def _layer_windows(x, kh: int, kw: int, ho: int, wo: int, t: int, predicate_from=None):
    """`window_blocks` of a conv's input; with several channels (a hidden layer) gathered apart.

    Apart (`unfused`), the gather reads the previous layer's output once instead of fusing it
    (a max-pool's select chain) and recomputing it for every window it lands in, and reverse
    mode's overlap-add runs apart from the pooling backward too (LeNet-5 autodiff step 1.08-1.14x).
    `predicate_from`: the primal input when `x` is a tangent (see `unfused`).
    """
    if x.shape[-1] == 1:
        return window_blocks(x, kh, kw, ho, wo, t)[0]
    return unfused(lambda v: window_blocks(v, kh, kw, ho, wo, t)[0], x, predicate_from=predicate_from)


def banded_kernel(w, t: int):
    """The (kh*(t+kw-1)*Cin, t*Cout) banded matrix with wb[a, r+b, c, r, o] = w[a, b, c, o]."""
    kh, kw, cin, cout = w.shape
    s = jnp.asarray(_band_selector(kw, t, np.float32), w.dtype)
    wb = jnp.einsum("lrb,abco->alcro", s, w)
    return wb.reshape(kh * (t + kw - 1) * cin, t * cout)


def _with_ones(xb, axis: int = 1):
    """xb with a trailing column of ones (axis=0: a row, for transposed windows); the bias row multiplies it."""
    shape = list(xb.shape)
    shape[axis] = 1
    return jnp.concatenate([xb, jnp.ones(shape, xb.dtype)], axis=axis)


def _with_bias_row(wb, bias, t: int):
    """The banded kernel with a last row holding `bias` for each of the t output columns."""
    return jnp.concatenate([wb, jnp.tile(bias.astype(wb.dtype), t)[None]], axis=0)


def conv_valid(x, w, bias=None, *, block: int | None = None):
    """Valid, stride-1 convolution of the NHWC `x` with the HWIO `w` (plus `bias`) as one banded GEMM.

    Equal to ``lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO",
    "NHWC")) + bias``. The bias rides in the GEMM (a column of ones in the windows, a bias row
    in the kernel), which saves a pass over the output (measured ~20% of IgNet's step at batch 256).
    In float32 on the CPU the native kernel computes it (`fast.native`), and differentiating it
    gives `conv_weight_gradient` (native too where it serves) through `fast.kernel_tangent`; so
    does a single input channel without the native kernels (the plain product on transposed windows).
    """
    t = block_width(x.shape[2] - w.shape[1] + 1, w.shape[1], block)
    bias = None if bias is None else jnp.asarray(bias)
    if x.shape[-1] == 1 or native.forward_eligible(x, w, bias):
        return _direct_conv(x, w, bias, t)
    return _banded_product(x, w, bias, t)


def _banded_product(x, w, bias, t: int, predicate_from=None):
    """`conv_valid` with block width `t`: windows @ banded kernel (`predicate_from`: see `_layer_windows`)."""
    n, h, wd, _ = x.shape
    kh, kw, _, cout = w.shape
    ho, wo = h - kh + 1, wd - kw + 1
    nb = -(-wo // t)
    xb = _layer_windows(x, kh, kw, ho, wo, t, predicate_from)
    wb = banded_kernel(w, t)
    if bias is not None:
        xb, wb = _with_ones(xb), _with_bias_row(wb, bias, t)
    y = (xb @ wb).reshape(n, ho, nb * t, cout)
    return y if nb * t == wo else y[:, :, :wo]


def direct_forward(x, w, bias, t: int):
    """`conv_valid` (block width `t`): the native kernel where it serves, else the banded GEMM."""
    if native.forward_eligible(x, w, bias):
        return native.forward(x, w, bias, functools.partial(_banded_product, t=t))
    return _banded_product(x, w, bias, t)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _direct_conv(x, w, bias, t: int):
    """`direct_forward`, whose kernel-tangent term reverse mode turns into the weight gradient."""
    return direct_forward(x, w, bias, t)


@functools.partial(_direct_conv.defjvp, symbolic_zeros=True)
def _direct_conv_jvp(t, primals, tangents):
    x, w, bias = primals
    dx, dw, dbias = tangents
    y = _direct_conv(x, w, bias, t)
    dy = jnp.zeros_like(y)
    if not isinstance(dx, SymbolicZero):
        # one primitive whose transpose is `conv_input_gradient` (the native kernel on the CPU)
        from jigcnn.fast.input_tangent import input_term

        dy = dy + input_term(dx, w, block=t)
    no_dw = isinstance(dw, SymbolicZero)
    no_db = bias is None or isinstance(dbias, SymbolicZero)
    if no_dw and no_db:
        return y, dy
    # one primitive whose transpose is `conv_weight_gradient` (the native kernel on the CPU; the
    # transposed-window product otherwise, ~2x faster than XLA's xb.T @ delta)
    from jigcnn.fast.kernel_tangent import kernel_term

    dw = jnp.zeros_like(w) if no_dw else dw
    db = jnp.zeros((w.shape[-1],), w.dtype) if no_db else dbias
    return y, dy + kernel_term(x, dw, db, block=t)


def conv_weight_gradient(x, delta, kernel_hw, *, block: int | None = None, with_bias: bool = False):
    """dL/dw of a valid, stride-1 convolution: sum over samples and positions of x-window * delta.

    `x` is the padded input (N, H, W, Cin), `delta` the deltas (N, Ho, Wo, Cout); returns
    (kh, kw, Cin, Cout). In float32 with fewer than 16 maps or a multiple of 16, the native
    kernel (`fast.native`) on the CPU. Otherwise one GEMM ``xb.T @ delta``
    contracting over N*Ho*nb rows, then the band summed back; for a single input channel the
    windows are built transposed (`window_blocks_transposed`) and the GEMM is ``xbT @ delta``.
    With `with_bias`, returns (dw, db): the windows carry a column (row) of ones, as in
    `conv_valid(..., bias)`, and the bias gradient, the sum of the deltas, is the GEMM's last row.
    """
    if native.weight_gradient_eligible(x, delta, kernel_hw):
        dw, db = native.weight_gradient(
            x, delta, kernel_hw, functools.partial(_weight_gradient_gemm, kernel_hw=kernel_hw, block=block,
                                                   with_bias=True))
        return (dw, db) if with_bias else dw
    return _weight_gradient_gemm(x, delta, kernel_hw=kernel_hw, block=block, with_bias=with_bias)


def _weight_gradient_gemm(x, delta, *, kernel_hw, block, with_bias: bool, predicate_from=None):
    """`conv_weight_gradient` as one GEMM over the window matrix (the XLA formulation; `predicate_from`: see `_layer_windows`)."""
    kh, kw = kernel_hw
    n, ho, wo, cout = delta.shape
    cin = x.shape[-1]
    t = block_width(wo, kw, block)
    nb = -(-wo // t)
    if nb * t != wo:
        delta = jnp.pad(delta, ((0, 0), (0, 0), (0, nb * t - wo), (0, 0)))
    delta = delta.reshape(n * ho * nb, t * cout)
    if cin == 1:
        # the windows laid out transposed: a plain product (IgNet step 1.12-1.27x; with 6 channels
        # the tap-by-tap gather was slower than reusing the forward pass's windows: LeNet-5 0.7x)
        xbt, _ = window_blocks_transposed(x, kh, kw, ho, wo, t)
        g = (_with_ones(xbt, axis=0) if with_bias else xbt) @ delta
    else:
        xb = _layer_windows(x, kh, kw, ho, wo, t, predicate_from)
        g = (_with_ones(xb) if with_bias else xb).T @ delta
    L = t + kw - 1
    s = jnp.asarray(_band_selector(kw, t, np.float32), g.dtype)
    dw = jnp.einsum("alcro,lrb->abco", g[: kh * L * cin].reshape(kh, L, cin, t, cout), s)
    if not with_bias:
        return dw
    return dw, g[-1].reshape(t, cout).sum(axis=0)


def conv_input_gradient(delta, w, in_hw, *, block: int | None = None):
    """dL/dx (N, H, W, Cin) of a valid, stride-1 convolution of an H x W input for the deltas `delta`.

    In float32 on the CPU the native kernel (`fast.native`); otherwise the transposed product
    (`_input_gradient_gemm`).
    """
    kh, kw = w.shape[:2]
    if tuple(in_hw) == (delta.shape[1] + kh - 1, delta.shape[2] + kw - 1) and native.input_gradient_eligible(delta, w):
        return native.input_gradient(delta, w, functools.partial(_input_gradient_gemm, in_hw=tuple(in_hw),
                                                                 block=block))
    return _input_gradient_gemm(delta, w, in_hw=in_hw, block=block)


def _input_gradient_gemm(delta, w, *, in_hw, block, apart: bool = True):
    """`conv_input_gradient` as the transposed product (the XLA formulation).

    The window gradients ``delta_blocks @ wb.T`` are added back onto the input positions they
    were gathered from (the transpose of `window_blocks`, an overlap-add). Measured faster than
    both XLA's convolution and the full convolution of the deltas with the flipped kernel written
    as `conv_valid` (whose window matrix has Cout channels).
    """
    n, ho, wo, cout = delta.shape
    kh, kw, cin, _ = w.shape
    h, wd = in_hw
    t = block_width(wo, kw, block)
    nb = -(-wo // t)
    if nb * t != wo:
        delta = jnp.pad(delta, ((0, 0), (0, 0), (0, nb * t - wo), (0, 0)))
    gxb = delta.reshape(n * ho * nb, t * cout) @ banded_kernel(w, t).T
    x_like = jax.ShapeDtypeStruct((n, h, wd, cin), delta.dtype)
    back = jax.linear_transpose(lambda x: window_blocks(x, kh, kw, ho, wo, t)[0], x_like)
    # apart: fused into its consumer (the max-pool backward, the activation's derivative) the
    # overlap-add ran ~1.2x slower for the whole LeNet-5 hand-written step. Not for tangents
    # (`apart=False`, in higher derivatives): their conditional would not transpose.
    return unfused(lambda g: back(g)[0], gxb) if apart else back(gxb)[0]


# --- plain references (what the fast kernels are tested against) ---

def conv_valid_reference(x, w):
    """lax.conv_general_dilated, valid, stride 1, NHWC/HWIO."""
    return lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


__all__ = ["MAX_TAPS", "ENABLED", "eligible", "block_width", "window_blocks", "window_blocks_transposed",
           "banded_kernel", "conv_valid", "conv_weight_gradient", "conv_input_gradient", "conv_valid_reference"]
