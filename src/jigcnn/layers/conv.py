"""2-D convolution (NHWC / HWIO): any kernel, stride, padding and padding fill, connection table."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from jigcnn import ops
from jigcnn.layers.base import Layer, Neurons, check_batch, check_map_shape, pair

PAD_MODES = ("zeros", "edge")
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def resolve_padding(padding, in_hw, kernel_eff, strides, layer: Layer):
    """Explicit ((top, bottom), (left, right)) padding for "valid", "same", an int or pairs.

    "same" gives ceil(in / stride) outputs with the extra row/column at the bottom/right,
    as TensorFlow and Keras do.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            pads = []
            for n, k, s in zip(in_hw, kernel_eff, strides):
                total = max((-(-n // s) - 1) * s + k - n, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise layer.error(f"unknown padding {padding!r}; use 'valid', 'same', an int, (ph, pw) or ((top, bottom), (left, right))")
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        pads = ((int(padding),) * 2,) * 2
    else:
        try:
            arr = np.asarray(padding)
        except Exception:  # noqa: BLE001 - any malformed value gets the same message
            arr = None
        if arr is None or arr.dtype.kind not in "iu" or arr.shape not in ((2,), (2, 2)):
            raise layer.error(f"padding must be 'valid', 'same', an int, (ph, pw) or ((top, bottom), (left, right)); got {padding!r}")
        pads = tuple((int(p), int(p)) for p in arr) if arr.shape == (2,) else tuple(tuple(int(v) for v in row) for row in arr)
    if min(min(p) for p in pads) < 0:
        raise layer.error(f"padding must be >= 0, got {padding!r}")
    return pads


def connection_mask(table, groups: int, cin: int, cout: int, layer: Layer) -> np.ndarray | None:
    """A (cin, cout) boolean connection table (ANNT style), `groups` as its block-diagonal case."""
    if table is not None and groups != 1:
        raise layer.error("give either connection_table or groups, not both")
    if table is not None:
        mask = np.asarray(table)
        if mask.shape != (cin, cout):
            raise layer.error(f"connection_table must have shape (in_channels, features) = ({cin}, {cout}), got {mask.shape}")
        mask = mask.astype(bool)
        if not mask.any(axis=0).all():
            raise layer.error(f"connection_table leaves output maps {np.flatnonzero(~mask.any(axis=0)).tolist()} with no input")
        return mask
    if groups == 1:
        return None
    if cin % groups or cout % groups:
        raise layer.error(f"groups={groups} must divide in_channels={cin} and features={cout}")
    gi, go = cin // groups, cout // groups
    mask = np.zeros((cin, cout), bool)
    for g in range(groups):
        mask[g * gi:(g + 1) * gi, g * go:(g + 1) * go] = True
    return mask


@dataclasses.dataclass(frozen=True)
class Conv2D(Neurons):
    """2-D convolution, NHWC activations and an HWIO kernel, optionally fused with an activation.

    padding: "valid", "same", an int, (ph, pw) or ((top, bottom), (left, right)).
    pad_mode: "zeros" fills the border with zeros (the paper's "zero padding"); "edge"
    repeats the edge pixels (our reading of the paper's "input padding").
    bias: "learn", "frozen" (kept in the non-trainable state, as in the paper's runs) or "none".
    connection_table: boolean (in_channels, features); entry (i, o) says input map i feeds
    output map o (ANNT); `groups` is its block-diagonal special case. The kernel keeps the
    full HWIO shape; unconnected entries are zero and never learn.
    """

    kernel_size: Any = 3
    strides: Any = 1
    padding: Any = "valid"
    pad_mode: str = "zeros"
    dilation: Any = 1
    connection_table: Any = None
    groups: int = 1
    kind: ClassVar[str] = "conv"

    def __post_init__(self):
        self.check_neurons()
        pair(self.kernel_size, "kernel_size", self)
        pair(self.strides, "strides", self)
        pair(self.dilation, "dilation", self)
        if self.pad_mode not in PAD_MODES:
            raise self.error(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        if not isinstance(self.groups, (int, np.integer)) or self.groups < 1:
            raise self.error(f"groups must be a positive int, got {self.groups!r}")
        if isinstance(self.padding, str):
            resolve_padding(self.padding, (1, 1), (1, 1), (1, 1), self)
        if self.connection_table is not None:
            table = np.asarray(self.connection_table)
            if table.ndim != 2:
                raise self.error(f"connection_table must be a 2-D (in_channels, features) boolean table, got shape {table.shape}")
            # stored as nested tuples so the layer spec stays hashable and comparable
            object.__setattr__(self, "connection_table", tuple(tuple(bool(v) for v in row) for row in table))

    def geometry(self, in_shape):
        """Kernel, strides, dilation, explicit padding and output shape for an (H, W, C) input."""
        h, w, _ = check_map_shape(self, in_shape)
        k = pair(self.kernel_size, "kernel_size", self)
        s = pair(self.strides, "strides", self)
        d = pair(self.dilation, "dilation", self)
        keff = tuple((ki - 1) * di + 1 for ki, di in zip(k, d))
        pads = resolve_padding(self.padding, (h, w), keff, s, self)
        padded = (h + sum(pads[0]), w + sum(pads[1]))
        if padded[0] < keff[0] or padded[1] < keff[1]:
            raise self.error(f"kernel {keff[0]}x{keff[1]} (dilated) is larger than the padded input {padded[0]}x{padded[1]}")
        out = tuple((p - ke) // si + 1 for p, ke, si in zip(padded, keff, s))
        return k, s, d, pads, (out[0], out[1], int(self.features))

    def output_shape(self, in_shape):
        """(Ho, Wo, features)."""
        return self.geometry(in_shape)[-1]

    def mask(self, cin: int) -> np.ndarray | None:
        """The (cin, features) connection mask, or None when every input feeds every output."""
        return connection_mask(self.connection_table, int(self.groups), cin, int(self.features), self)

    def init(self, key, in_shape, dtype=np.float32):
        """Draw the kernel (and bias); Eq. 3's v*h is the kernel's spatial extent."""
        k, _, _, _, out = self.geometry(in_shape)
        cin = in_shape[-1]
        params, state = self.draw(key, (k[0], k[1], cin, self.features), k[0] * k[1], dtype, self.mask(cin))
        return out, params, state

    def effective_kernel(self, params):
        """The kernel with unconnected entries forced to zero."""
        kernel = params["kernel"]
        m = self.mask(kernel.shape[2])
        return kernel if m is None else kernel * jnp.asarray(m, kernel.dtype)

    def pad_input(self, x, pads):
        """Pad `x` for the "edge" fill; zero padding is left to the convolution itself."""
        if self.pad_mode == "edge" and any(p for pp in pads for p in pp):
            return jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), mode="edge"), ((0, 0), (0, 0))
        return x, pads

    def preactivation(self, params, state, x):
        """z = conv(x, kernel) + bias, before the activation (the kernel chosen by `jigcnn.ops`)."""
        check_batch(self, x, 4)
        _, s, d, pads, _ = self.geometry(x.shape[1:])
        xp, conv_pads = self.pad_input(x, pads)
        kernel = self.effective_kernel(params)
        bias = params.get("bias", state.get("bias"))
        return ops.conv(xp, kernel, bias, strides=s, padding=conv_pads, dilation=d)

    def apply(self, params, state, x, *, train=False, key=None):
        """y = f(conv(x) + b)."""
        z = self.preactivation(params, state, x)
        return self.activate(z), state

    def trainable_count(self, params):
        """Connected kernel entries plus a learnable bias."""
        n = 0
        if "kernel" in params:
            kh, kw, cin, cout = params["kernel"].shape
            m = self.mask(cin)
            n += kh * kw * (cin * cout if m is None else int(m.sum()))
        if "bias" in params:
            n += int(np.prod(params["bias"].shape))
        return n
