"""Winograd F(4x4, 3x3) convolution written as XLA operations, with a hand-written backward.

For stride-1, undilated 3x3 convolutions with tens of channels, XLA:CPU's convolution (and
even more its two gradient convolutions) runs well below the machine's GEMM rate. Winograd's
minimal filtering (Lavin & Gray 2016) turns each 6x6 input tile d into V = B^T d B, each 3x3
kernel g into U = G g G^T (6x6), multiplies elementwise and sums over the input channels --
36 independent GEMMs (tiles x Cin) @ (Cin x Cout) -- and maps each 6x6 product M back to a
4x4 output tile Y = A^T M A: 36 multiplies per 16 outputs instead of 144 (4x fewer).

Here the transforms are strided slices combined elementwise (XLA fuses each into one loop),
the GEMMs one batched ``dot_general`` over the 36 tile positions. The backward is the exact
transpose of that linear map (``jax.custom_vjp``): the deltas go through the transposed output
transform (dM = A dY A^T, tile by tile), then

* weight gradient (Eq. 1): dU = V^T dM per tile position (36 GEMMs contracting over all tiles
  of the batch, V saved from the forward pass), dw = G^T dU G;
* input gradient (Eq. 1a): dV = dM U^T per tile position, then the transposed input transform
  B dV B^T, overlap-added (tiles overlap by 2 rows and columns).

Values equal the direct correlation up to rounding: ~1e-15 relative in float64, ~1e-6 in
float32 (the transforms' coefficients 4, 5, 8 and 1/6, 1/24 amplify rounding; docs/performance.md
states the measured figures). Only `jigcnn.ops` calls this module; it routes here the
convolutions :func:`serves` accepts when its ``winograd`` switch is on.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# F(m x m, 3 x 3), tile t = m + 2 (Lavin & Gray's matrices)
MATRICES = {
    2: {"BT": [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        "G": [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        "AT": [[1, 1, 1, 0], [0, 1, -1, -1]]},
    4: {"BT": [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        "G": [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        "AT": [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]},
}
TILE = 4  # output tile side m: F(4x4, 3x3) measured faster than F(2x2, 3x3) (docs/performance.md)
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def serves(kernel_shape, strides, dilation, dtype) -> bool:
    """Whether a convolution of this HWIO kernel shape, strides, dilation and dtype can run here."""
    kh, kw = kernel_shape[:2]
    return ((kh, kw) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)
            and np.dtype(dtype) in DTYPES)


# --- the transforms (private: each public function below is what the fault-injection check perturbs) ---

def combine(terms, dtype):
    """sum of coefficient * array over the nonzero coefficients of ``terms`` ((coefficient, array) pairs)."""
    out = None
    for c, a in terms:
        if c == 0:
            continue
        v = a if c == 1 else (-a if c == -1 else a * jnp.asarray(c, dtype))
        out = v if out is None else out + v
    return out


def _views(x, axis, m, count):
    """The m + 2 strided views along `axis`: view k holds rows k, k + m, ..., k + m (count - 1)."""
    views = []
    for k in range(m + 2):
        start, limit, strides = [0] * x.ndim, list(x.shape), [1] * x.ndim
        start[axis], limit[axis], strides[axis] = k, k + m * (count - 1) + 1, m
        views.append(lax.slice(x, start, limit, strides))
    return views


def _input_tiles(xp, m, th, tw):
    """B^T d B of every tile of the padded input (N, m th + 2, m tw + 2, C) -> (t*t, N*th*tw, C)."""
    bt, t = MATRICES[m]["BT"], m + 2
    rows = _views(xp, 1, m, th)  # each (N, th, Wp, C)
    out = []
    for i in range(t):
        r = combine([(bt[i][k], rows[k]) for k in range(t)], xp.dtype)
        cols = _views(r, 2, m, tw)  # each (N, th, tw, C)
        out += [combine([(bt[j][k], cols[k]) for k in range(t)], xp.dtype) for j in range(t)]
    n, c = xp.shape[0], xp.shape[-1]
    return jnp.stack(out).reshape(t * t, n * th * tw, c)


def _kernel_tiles(w, m):
    """G g G^T: (3, 3, Cin, Cout) -> (t*t, Cin, Cout)."""
    g = jnp.asarray(MATRICES[m]["G"], w.dtype)
    return jnp.einsum("ak,klio,bl->abio", g, w, g).reshape(-1, *w.shape[2:])


def kernel_transform(w):
    """U = G g G^T of F(4x4, 3x3) for every (input, output) channel pair: (3, 3, Cin, C) -> (36, Cin, C)."""
    return _kernel_tiles(w, 4)


def _kernel_tiles_t(du, m):
    """The transpose of `_kernel_tiles`: G^T dU G, (t*t, Cin, Cout) -> (3, 3, Cin, Cout)."""
    t = m + 2
    g = jnp.asarray(MATRICES[m]["G"], du.dtype)
    return jnp.einsum("ak,abio,bl->klio", g, du.reshape(t, t, *du.shape[1:]), g)


def kernel_transform_transposed(du):
    """The transpose of `kernel_transform`: dw = G^T dU G, (36, Cin, C) -> (3, 3, Cin, C)."""
    return _kernel_tiles_t(du, 4)


def _output_tiles(mm, m, n, th, tw):
    """A^T M A of every tile: (t*t, N*th*tw, Cout) -> (N, m th, m tw, Cout)."""
    at, t = MATRICES[m]["AT"], m + 2
    cout = mm.shape[-1]
    mm = mm.reshape(t, t, n, th, tw, cout)
    rows = [combine([(at[a][i], mm[i]) for i in range(t)], mm.dtype) for a in range(m)]  # m x (t, N, th, tw, C)
    out = jnp.stack([jnp.stack([combine([(at[b][j], r[j]) for j in range(t)], mm.dtype) for b in range(m)],
                               axis=3) for r in rows], axis=2)  # (N, th, m, tw, m, C)
    return out.reshape(n, th * m, tw * m, cout)


def _output_tiles_t(gp, m, th, tw):
    """The transpose of `_output_tiles`: (N, m th, m tw, C) -> (t*t, N*th*tw, C)."""
    at, t = MATRICES[m]["AT"], m + 2
    n, c = gp.shape[0], gp.shape[-1]
    g = gp.reshape(n, th, m, tw, m, c)
    out = []
    for i in range(t):
        r = combine([(at[a][i], g[:, :, a]) for a in range(m)], gp.dtype)  # (N, th, tw, m, C)
        out += [combine([(at[b][j], r[:, :, :, b]) for b in range(m)], gp.dtype) for j in range(t)]
    return jnp.stack(out).reshape(t * t, n * th * tw, c)


def _overlap_add(parts, axis, m):
    """The transpose of `_views`: parts[k] (tile axis `axis`, T tiles) added at rows m y + k -> m T + 2 rows."""
    t = m + 2
    shape = list(parts[0].shape)
    count = shape[axis]
    flat = shape[:axis] + [count * m] + shape[axis + 1:]
    main = jnp.stack(parts[:m], axis=axis + 1).reshape(flat)
    zero = jnp.zeros_like(parts[0])
    tail = jnp.stack(list(parts[m:t]) + [zero] * (m - 2), axis=axis + 1).reshape(flat)
    pad_main, pad_tail = [(0, 0)] * len(flat), [(0, 0)] * len(flat)
    pad_main[axis], pad_tail[axis] = (0, 2), (m, 0)
    tail = lax.slice_in_dim(jnp.pad(tail, pad_tail), 0, count * m + 2, axis=axis)
    return jnp.pad(main, pad_main) + tail


def _input_tiles_t(dv, m, n, th, tw):
    """The transpose of `_input_tiles`: (t*t, N*th*tw, C) -> (N, m th + 2, m tw + 2, C)."""
    bt, t = MATRICES[m]["BT"], m + 2
    c = dv.shape[-1]
    dv = dv.reshape(t, t, n, th, tw, c)
    cols = []
    for i in range(t):
        parts = [combine([(bt[j][k], dv[i, j]) for j in range(t)], dv.dtype) for k in range(t)]
        cols.append(_overlap_add(parts, 2, m))  # (N, th, Wp, C)
    parts = [combine([(bt[i][k], cols[i]) for i in range(t)], dv.dtype) for k in range(t)]
    return _overlap_add(parts, 1, m)


def _tiles(ho, wo, m):
    return -(-ho // m), -(-wo // m)


def _pad_to_tiles(x, padding, m):
    """x zero-padded by `padding` and then at the bottom / right to whole tiles; and the tile counts."""
    n, h, w, _ = x.shape
    (pt, pb), (pl, pr) = padding
    ho, wo = h + pt + pb - 2, w + pl + pr - 2
    th, tw = _tiles(ho, wo, m)
    xp = lax.pad(x, jnp.asarray(0, x.dtype), ((0, 0, 0), (pt, m * th + 2 - h - pt, 0),
                                             (pl, m * tw + 2 - w - pl, 0), (0, 0, 0)))
    return xp, (ho, wo, th, tw)


def _deltas_to_tiles(delta, m):
    """dM = A dY A^T of the deltas (N, Ho, Wo, Cout), padded to whole tiles -> (t*t, N*th*tw, Cout)."""
    ho, wo = delta.shape[1:3]
    th, tw = _tiles(ho, wo, m)
    gp = jnp.pad(delta, ((0, 0), (0, m * th - ho), (0, m * tw - wo), (0, 0)))
    return _output_tiles_t(gp, m, th, tw)


# --- the kernels ---

def tile_products(v, u):
    """M = V U for each of the t*t tile positions: (t*t, P, Cin) x (t*t, Cin, Cout) -> (t*t, P, Cout)."""
    return lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))))


def tile_weight_gradient(v, dm, m=TILE):
    """dw = G^T (V^T dM) G: the weight gradient from the input tiles V and the delta tiles dM (Eq. 1)."""
    return _kernel_tiles_t(lax.dot_general(v, dm, (((1,), (1,)), ((0,), (0,)))), m)  # dU: (t*t, Cin, Cout)


def tile_input_gradient(dm, u, n, th, tw, m=TILE):
    """d(padded input) from the delta tiles dM and the kernel tiles U (Eq. 1a): B (dM U^T) B^T, overlap-added."""
    dv = lax.dot_general(dm, u, (((2,), (2,)), ((0,), (0,))))  # (t*t, P, Cin)
    return _input_tiles_t(dv, m, n, th, tw)


def _forward(x, w, padding, m):
    xp, (ho, wo, th, tw) = _pad_to_tiles(x, padding, m)
    v = _input_tiles(xp, m, th, tw)
    u = _kernel_tiles(w, m)
    y = _output_tiles(tile_products(v, u), m, x.shape[0], th, tw)[:, :ho, :wo]
    return y, (v, u)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x, w, padding, m=TILE):
    """The stride-1 correlation of NHWC `x` with the HWIO 3x3 kernel `w`, zero `padding` ((top, bottom), (left, right)).

    Equals ``lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))``;
    `m` is the output tile side (4: F(4x4, 3x3); 2: F(2x2, 3x3)).
    """
    return _forward(x, w, padding, m)[0]


def _conv_fwd(x, w, padding, m):
    y, (v, u) = _forward(x, w, padding, m)
    return y, (v, u, x.shape)


def _conv_bwd(padding, m, res, g):
    v, u, (n, h, w, _) = res
    (pt, _), (pl, _) = padding
    th, tw = _tiles(g.shape[1], g.shape[2], m)
    dm = _deltas_to_tiles(g, m)
    dw = tile_weight_gradient(v, dm, m)
    dxp = tile_input_gradient(dm, u, n, th, tw, m)
    return dxp[:, pt:pt + h, pl:pl + w], dw.astype(u.dtype)


conv.defvjp(_conv_fwd, _conv_bwd)


def weight_gradient(xp, delta, m=TILE):
    """dL/dw (3, 3, Cin, Cout) of the valid correlation of the padded input `xp` giving the deltas `delta` (Eq. 1)."""
    ho, wo = delta.shape[1:3]
    th, tw = _tiles(ho, wo, m)
    xt = lax.pad(xp, jnp.asarray(0, xp.dtype), ((0, 0, 0), (0, m * th + 2 - xp.shape[1], 0),
                                               (0, m * tw + 2 - xp.shape[2], 0), (0, 0, 0)))
    return tile_weight_gradient(_input_tiles(xt, m, th, tw), _deltas_to_tiles(delta, m), m)


def input_gradient(delta, kernel, padded_hw, m=TILE):
    """dL/d(padded input) (N, *padded_hw, Cin) of the valid 3x3 correlation giving the deltas `delta` (Eq. 1a)."""
    ho, wo = delta.shape[1:3]
    th, tw = _tiles(ho, wo, m)
    dxp = tile_input_gradient(_deltas_to_tiles(delta, m), _kernel_tiles(kernel, m), delta.shape[0], th, tw, m)
    return dxp[:, :padded_hw[0], :padded_hw[1]]
