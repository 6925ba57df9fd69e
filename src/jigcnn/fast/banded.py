"""Few-channel convolutions as width-blocked (banded Toeplitz) GEMMs: the XLA formulation of jigcnn's conv kernels.

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

Plain functions of arrays (no custom derivative rules): `fast.direct` puts the native kernels in
their place where those serve, and `fast.conv` gives the convolution its derivative rules.
Tested against ``lax.conv_general_dilated`` (tests/test_fast_conv.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jigcnn.fast.barrier import unfused

# the banded GEMM serves a convolution when kh*kw*Cin (one output's multiply count per map) is at
# most this (measured faster up to LeNet's second conv, 5*5*6 = 150 taps; larger convs keep XLA's)
MAX_TAPS = 160
DEFAULT_BLOCK = 4


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


def banded_conv(x, w, bias, t: int, predicate_from=None):
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


def weight_gradient_gemm(x, delta, *, kernel_hw, block, with_bias: bool, predicate_from=None):
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


def input_gradient_gemm(delta, w, *, in_hw, block, apart: bool = True):
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
