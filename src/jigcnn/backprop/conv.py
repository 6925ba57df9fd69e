"""Hand-written convolution and dense backward passes (paper Eqs. 1, 1a, 2, 2a).

Each equation is a function here, written as the paper states it: `conv_weight_gradient` (Eq. 1,
the correlation of the padded input with the deltas), `conv_input_gradient` (Eq. 1a's expansion,
the full convolution of the deltas with the flipped kernel), `bias_gradient` (Eqs. 2, 2a, the
sum of the deltas), `dense_weight_gradient` / `dense_input_gradient`. The backward rules call them
through `jigcnn.ops`, which runs a fast kernel in their place where one serves the shape and the
kernel configuration allows it (``jigcnn.ops.using("reference")`` runs these functions).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jigcnn import ops
from jigcnn.backprop.activations import delta as activation_delta
from jigcnn.backprop.activations import derivative


def fold_edge_padding(g, pads, h, w):
    """Transpose of edge padding: border gradients are summed back onto the edge pixels."""
    (pt, pb), (pl, pr) = pads
    rows = [g[:, : pt + 1].sum(axis=1, keepdims=True)]
    if h > 1:
        rows += [g[:, pt + 1: pt + h - 1], g[:, pt + h - 1:].sum(axis=1, keepdims=True)]
    else:
        rows = [g.sum(axis=1, keepdims=True)]
    g = jnp.concatenate(rows, axis=1)
    if w > 1:
        cols = [g[:, :, : pl + 1].sum(axis=2, keepdims=True), g[:, :, pl + 1: pl + w - 1],
                g[:, :, pl + w - 1:].sum(axis=2, keepdims=True)]
    else:
        cols = [g.sum(axis=2, keepdims=True)]
    return jnp.concatenate(cols, axis=2)


def conv_weight_gradient(xp, delta, kernel_hw, strides, dilation):
    """Eq. 1/1a: dL/dw[a,b,c,o] = sum over samples and output positions beta of In_alpha(beta) * delta_beta.

    The correlation of the padded layer input with the deltas, written as one convolution
    in which the deltas are the (stride-dilated) filter.
    """
    dw = lax.conv_general_dilated(
        xp, delta, window_strides=dilation, padding="VALID", rhs_dilation=strides,
        dimension_numbers=("CHWN", "IHWO", "HWNC"),
    )
    return dw[: kernel_hw[0], : kernel_hw[1]]


def conv_input_gradient(delta, kernel, padded_hw, strides, dilation):
    """dL/dIn: the full convolution of the (stride-dilated) deltas with the flipped kernel.

    Rows/columns of the padded input that no window reached (stride not dividing the size)
    get zero gradient.
    """
    kh, kw = kernel.shape[:2]
    keff = ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1)
    ho, wo = delta.shape[1:3]
    extra = (padded_hw[0] - ((ho - 1) * strides[0] + keff[0]), padded_hw[1] - ((wo - 1) * strides[1] + keff[1]))
    pads = ((keff[0] - 1, keff[0] - 1 + extra[0]), (keff[1] - 1, keff[1] - 1 + extra[1]))
    return lax.conv_general_dilated(
        delta, kernel[::-1, ::-1], window_strides=(1, 1), padding=pads, lhs_dilation=strides,
        rhs_dilation=dilation, dimension_numbers=("NHWC", "HWOI", "NHWC"),
    )


def bias_gradient(delta):
    """Eqs. 2, 2a: dL/db = the sum of the deltas over samples and positions (every axis but the last)."""
    return jnp.sum(delta, axis=tuple(range(delta.ndim - 1)))


def dense_weight_gradient(x, delta):
    """Eq. 1 for a fully connected layer: dL/dW = In^T delta, summed over the batch."""
    return x.T @ delta


def dense_input_gradient(delta, kernel):
    """Eq. 1a for a fully connected layer: dL/dIn = delta W^T."""
    return delta @ kernel.T


def neurons_forward(layer, params, state, x, *, train, key):
    """Forward pass of Conv2D / Dense keeping the input, pre-activation and output for the backward pass."""
    z = layer.preactivation(params, state, x)
    y = layer.activate(z)
    return y, state, (x, z, y)


def conv_backward(layer, params, state, cache, dy, *, delta=None):
    """Backward pass of Conv2D: deltas, Eq. 1/1a weight gradient, Eq. 2/2a bias gradient, input gradient."""
    x, z, y = cache
    if delta is None:
        delta = activation_delta(layer.activation, z, y, dy, layer.activation_param)
    k, s, d, pads, _ = layer.geometry(x.shape[1:])
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), mode="edge" if layer.pad_mode == "edge" else "constant")
    kernel = layer.effective_kernel(params)
    # with a bias (learnt or frozen) a fast kernel computes dL/db with dL/dw from the forward
    # pass's windows (a frozen bias's is dropped): cheaper than a separate pass over the deltas
    has_bias = "bias" in params or "bias" in state
    dw, db = ops.conv_weight_gradient(xp, delta, k, s, d, plain=conv_weight_gradient,
                                      plain_bias=bias_gradient if has_bias else None,
                                      unpadded=None if layer.pad_mode == "edge" else (x, pads))
    m = layer.mask(kernel.shape[2])
    if m is not None:
        dw = dw * jnp.asarray(m, dw.dtype)
    grads = {"kernel": dw}
    if "bias" in params:
        grads["bias"] = db
    h, w = x.shape[1:3]
    if layer.pad_mode == "edge":
        dxp = ops.conv_input_gradient(delta, kernel, xp.shape[1:3], s, d, plain=conv_input_gradient)
        dx = fold_edge_padding(dxp, pads, h, w)
    else:  # zero padding: only the unpadded input's part of Eq. 1a's result is needed
        dx = ops.conv_input_gradient(delta, kernel, xp.shape[1:3], s, d, plain=conv_input_gradient,
                                     interior=((pads[0][0], pads[1][0]), (h, w)))
    record = {"input": x, "act_deriv": derivative(layer.activation, z, y, layer.activation_param),
              "delta": delta, "weight_grad": dw}
    return dx, grads, record


def dense_backward(layer, params, state, cache, dy, *, delta=None):
    """Backward pass of Dense: dW = In^T delta (Eq. 1), db = sum of delta (Eq. 2), dIn = delta W^T."""
    x, z, y = cache
    if delta is None:
        delta = activation_delta(layer.activation, z, y, dy, layer.activation_param)
    dw = ops.dense_weight_gradient(x, delta, plain=dense_weight_gradient)
    grads = {"kernel": dw}
    if "bias" in params:
        grads["bias"] = bias_gradient(delta)
    record = {"input": x, "act_deriv": derivative(layer.activation, z, y, layer.activation_param),
              "delta": delta, "weight_grad": dw}
    return dense_input_gradient(delta, params["kernel"]), grads, record
