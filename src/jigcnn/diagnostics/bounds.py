"""Bounds of the paper's Eqs. 4, 5 and 5a on layer inputs and weight derivatives (derivation: docs/bounds.md).

Assumptions (Sec. 5.4.2): inputs in [-input_bound, input_bound] (the paper: [0, 1]), Eq. 3
initialisation |w| <= W/(v h), |b| <= B, identity activations (ReLU, leaky ReLU with
|slope| <= 1 and tanh also keep |f(z)| <= |z| and |f'| <= 1, so they are accepted), a loss
averaged over the batch. Two forms:

* `paper_bounds`: the paper's single-channel form, Eq. 4 |In^n| <= prod_{v<n}(B^v + W^v),
  Eq. 5 and Eq. 5a (chained through every later layer). Valid for single-channel nets when
  every bias amplitude is 0 or every partial product is >= 1 (see docs/bounds.md for the
  counterexample otherwise).
* `bounds`: a form valid for any channels, connection tables, strides, dilation and zero or
  edge padding: the recursion A^{n+1} = c^n W^n A^n + B^n, with c^n the most input channels
  connected to one output map (1 for a dense layer, whose Eq. 3 normaliser is its input
  length), and exact term counts gamma from the layer geometry.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jigcnn.activations import activation_param, canonical_name
from jigcnn.grad import resolve_loss
from jigcnn.initializers import IgNetUniform, get_initializer
from jigcnn.layers import Activation, Conv2D, Dense, Dropout, Flatten

_ELEMENTWISE_OK = ("identity", "relu", "tanh", "leaky_relu")


@dataclasses.dataclass(frozen=True)
class LayerBound:
    """Bounds for one layer: max |input|, max |dL/dz| (delta), max |dL/dw|, max |dL/db| and gamma.

    `gamma` is the number of terms of Eq. 1's sum per sample (output positions one weight
    takes part in); the batch multiplies it by N. NaN where the layer has no such quantity.
    """

    layer: str
    kind: str
    input: float
    delta: float
    weight_grad: float
    bias_grad: float
    gamma: int


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Per-layer bounds, the bound on the network output and on |dLoss/dN| of the output."""

    layers: tuple[LayerBound, ...]
    output: float
    dloss: float
    form: str

    def __getitem__(self, layer: str) -> LayerBound:
        """The bounds of `layer`."""
        for b in self.layers:
            if b.layer == layer:
                return b
        raise KeyError(f"no bounds for layer {layer!r}; layers: {[b.layer for b in self.layers]}")

    def to_dict(self) -> dict:
        """{"form", "output", "dloss", "layers": {name: {quantity: bound}}}."""
        return {"form": self.form, "output": self.output, "dloss": self.dloss,
                "layers": {b.layer: dataclasses.asdict(b) for b in self.layers}}


def amplitudes_of(model) -> dict[str, tuple[float, float]]:
    """{layer: (W, B)} read from each conv/dense layer's Eq. 3 initialiser (B = 0 without a bias)."""
    out = {}
    for layer in model.layers:
        if isinstance(layer, (Conv2D, Dense)):
            init = get_initializer(layer.initializer, layer.label())
            if not isinstance(init, IgNetUniform):
                raise ValueError(f"{layer.label()}: initializer {layer.initializer!r} is not Eq. 3 (jigcnn.ignet); "
                                 "pass amplitudes={layer: (W, B)} explicitly")
            out[layer.name] = (float(init.W), 0.0 if layer.bias_mode == "none" else float(init.B))
    return out


def loss_derivative_bound(loss, batch_size: int, outputs_per_sample: int, *, output_bound: float = math.inf,
                          target_bound: float = 1.0) -> float:
    """Max |dLoss/dN| per output element for a batch-mean loss (the max|dL/dN| factor of Eq. 5).

    mae: 1/(N K); mse: 2 (max|y| + max|t|)/(N K); softmax_cross_entropy (logits) and
    cross_entropy after a softmax head (the fused (s - t)/N): 1/N.
    """
    name, _ = resolve_loss(loss)
    n, k = int(batch_size), int(outputs_per_sample)
    if name == "mae":
        return 1.0 / (n * k)
    if name == "mse":
        return 2.0 * (output_bound + target_bound) / (n * k)
    if name in ("softmax_cross_entropy", "cross_entropy"):
        return 1.0 / n
    raise ValueError(f"no derivative bound for loss {name or loss!r}; supported: mae, mse, "
                     "softmax_cross_entropy, cross_entropy (after a softmax head)")


def _axis_counts(n_in, k, s, d, pad_before, n_out, edge):
    """Per axis: (max over kernel taps of output positions using the tap inside the input,
    max over input positions of the (output position, tap) pairs that read it)."""
    gamma = np.zeros(k, np.int64)
    cover = np.zeros(n_in, np.int64)
    for o in range(n_out):
        for t in range(k):
            p = o * s + t * d - pad_before
            if 0 <= p < n_in:
                gamma[t] += 1
                cover[p] += 1
            elif edge:  # an edge-padded tap reads the nearest edge pixel
                gamma[t] += 1
                cover[min(max(p, 0), n_in - 1)] += 1
    return int(gamma.max()), int(cover.max())


def conv_counts(layer: Conv2D, in_shape) -> dict:
    """Exact geometry counts of a Conv2D on a per-sample (H, W, C) input.

    gamma: output positions (per sample) one weight takes part in (Eq. 1's beta count);
    cover: (output position, tap) pairs that read one input pixel, per output map;
    c_in / c_out: most input maps feeding one output map / output maps fed by one input map.
    """
    h, w, cin = in_shape
    k, s, d, pads, out = layer.geometry(in_shape)
    edge = layer.pad_mode == "edge"
    gy, cy = _axis_counts(h, k[0], s[0], d[0], pads[0][0], out[0], edge)
    gx, cx = _axis_counts(w, k[1], s[1], d[1], pads[1][0], out[1], edge)
    m = layer.mask(cin)
    c_in = cin if m is None else int(m.sum(axis=0).max())
    c_out = layer.features if m is None else int(m.sum(axis=1).max())
    return {"gamma": gy * gx, "cover": cy * cx, "c_in": c_in, "c_out": c_out, "extent": k[0] * k[1],
            "positions": out[0] * out[1]}


def _act_ok(name, param, where):
    name = canonical_name(name)
    if name not in _ELEMENTWISE_OK:
        return False
    if name == "leaky_relu" and abs(activation_param(name, param, where)) > 1:
        return False
    return True


def _walk(model, amplitudes, batch_size, loss, input_bound, target_bound, paper: bool) -> Bounds:
    """Forward recursion for max|In|, backward recursion for max|delta|, then Eq. 1's sums."""
    amps = amplitudes_of(model) if amplitudes is None else {k: (float(v[0]), float(v[1])) for k, v in amplitudes.items()}
    shapes = model.shapes()
    layers = model.layers
    name, _ = resolve_loss(loss)
    n = int(batch_size)
    last = len(layers) - 1
    fused = False
    if isinstance(layers[-1], Activation) and canonical_name(layers[-1].fn) == "softmax":
        if name != "cross_entropy":
            raise ValueError("bounds: a softmax head needs the cross_entropy loss (the fused (s - t)/N gradient)")
        fused = True
        last -= 1

    # forward: A[i] bounds the input of layer i; paper's Eq. 4 is a product over earlier param layers
    A = [float(input_bound)]
    P = float(input_bound)
    info = {}
    for i, layer in enumerate(layers):
        a = A[-1]
        if isinstance(layer, Conv2D) or isinstance(layer, Dense):
            if layer.name not in amps:
                raise ValueError(f"bounds: no amplitudes for layer {layer.name!r}")
            W, B = amps[layer.name]
            if not _act_ok(layer.activation, layer.activation_param, layer.label()):
                raise ValueError(f"bounds: {layer.label()} has activation {layer.activation!r}; the bounds need "
                                 f"|f(z)| <= |z| and |f'| <= 1 ({', '.join(_ELEMENTWISE_OK)})")
            if isinstance(layer, Conv2D):
                c = conv_counts(layer, shapes[i])
                later = _has_param_before(layers, i)  # its input gradient matters for an earlier layer
                if paper and (c["c_in"] > 1 or (later and c["c_out"] > 1)):
                    raise ValueError(f"paper_bounds: {layer.label()} mixes several channels; the paper's single-channel "
                                     "form does not hold, use bounds()")
                if paper and later and layer.pad_mode == "edge" and c["cover"] > c["extent"]:
                    raise ValueError(f"paper_bounds: {layer.label()} repeats edge pixels into more than v*h terms; "
                                     "use bounds()")
                info[i] = c
                nxt = c["c_in"] * W * a + B
            else:
                D, F = shapes[i][0], layer.features
                info[i] = {"gamma": 1, "cover": 1, "c_in": 1, "c_out": F, "extent": D, "positions": 1}
                if paper and F > D and _has_param_before(layers, i):
                    raise ValueError(f"paper_bounds: {layer.label()} has more outputs than inputs; use bounds()")
                nxt = W * a + B
            if paper:
                P = P * (W + B)
                nxt = P
            A.append(nxt)
        elif isinstance(layer, (Flatten, Dropout)):
            A.append(a)
        elif isinstance(layer, Activation):
            fn = canonical_name(layer.fn)
            if fn == "softmax" and fused and i == len(layers) - 1:
                A.append(1.0)
            elif _act_ok(layer.fn, layer.param, layer.label()):
                A.append(a)
            else:
                raise ValueError(f"bounds: activation {layer.fn!r} ({layer.label()}) is not covered")
        else:
            raise ValueError(f"bounds: layer {layer.label()} ({type(layer).__name__}) is not covered; "
                             "the bounds handle Conv2D, Dense, Flatten, Dropout (inference) and activations")

    out_shape = shapes[-1]
    k_out = int(np.prod(out_shape))
    dloss = loss_derivative_bound(name, n, k_out, output_bound=A[-1], target_bound=target_bound)

    # backward: G bounds |dL/dy| at the output of the current layer
    G = dloss
    rows = [None] * len(layers)
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if fused and i == len(layers) - 1:
            rows[i] = LayerBound(layer.name, type(layer).__name__, A[i], dloss, math.nan, math.nan, 0)
            continue  # dloss already bounds the fused delta (s - t)/N of the pre-softmax output
        if isinstance(layer, (Conv2D, Dense)):
            W, B = amps[layer.name]
            c = info[i]
            delta = G  # |N'| <= 1
            gamma = c["gamma"]
            wg = n * gamma * A[i] * delta
            bg = n * c["positions"] * delta
            rows[i] = LayerBound(layer.name, type(layer).__name__, A[i], delta, wg, bg, gamma)
            if paper:
                # Eq. 5a: the next layer's weights that multiply one neuron sum to at most W^{n+1}
                G = delta * W
            elif isinstance(layer, Conv2D):
                G = delta * c["c_out"] * c["cover"] * W / c["extent"]
            else:
                G = delta * c["c_out"] * W / c["extent"]
        elif isinstance(layer, Activation):
            rows[i] = LayerBound(layer.name, type(layer).__name__, A[i], G, math.nan, math.nan, 0)
        # Flatten / Dropout (inference): G passes through unchanged
    return Bounds(tuple(r for r in rows if r is not None), A[-1], dloss, "paper" if paper else "general")


def _has_param_before(layers, i) -> bool:
    return any(isinstance(layer, (Conv2D, Dense)) for layer in layers[:i])


def bounds(model, batch_size: int, loss, *, amplitudes=None, input_bound: float = 1.0,
           target_bound: float = 1.0) -> Bounds:
    """Eqs. 4, 5, 5a generalised to any channels, connection tables, strides and padding (docs/bounds.md).

    max|In^{n+1}| <= c^n W^n max|In^n| + B^n;  max|delta^n| <= max|delta^{n+1}| c_out^{n+1} cover^{n+1} W^{n+1}/(v h);
    max|dL/dw^n| <= N gamma^n max|In^n| max|delta^n|.  `amplitudes` defaults to the layers' Eq. 3 (W, B).
    """
    return _walk(model, amplitudes, batch_size, loss, input_bound, target_bound, paper=False)


def paper_bounds(model, batch_size: int, loss, *, amplitudes=None, input_bound: float = 1.0,
                 target_bound: float = 1.0) -> Bounds:
    """The paper's single-channel Eq. 4 (input), Eq. 5 (last layer) and Eq. 5a (hidden layers, chained).

    |In^n| <= prod_{v<n}(B^v + W^v);  |dL/dw^n| <= max|dL/dN| N gamma^n prod_{v<n}(B^v + W^v) prod_{m>n} W^m.
    Raises ValueError for nets that mix channels (use `bounds`).
    """
    return _walk(model, amplitudes, batch_size, loss, input_bound, target_bound, paper=True)


__all__ = ["LayerBound", "Bounds", "amplitudes_of", "loss_derivative_bound", "conv_counts", "bounds", "paper_bounds"]
