"""Automatic Eq. 3 calibration: what the paper did by hand in Sec. 5.4.2 (Fig. 4), in a few passes.

Eq. 3 draws w = (W / (v h)) u with u ~ U[-1, 1], so a draw with amplitude s W is the same
draw with the kernel multiplied by s: calibration rescales each layer's kernel in place of
redrawing, and the amplitudes it reports are W^n times the factor it applied.

By Eqs. 1 and 1a the weight-derivative MAV of layer n is, for identity nets, proportional to
the product of the other layers' amplitudes (the earlier ones through the input map, Eq. 4;
the later ones through the chain of Eq. 1a): log M_n = sum_{m != n} log W^m + const. The
update is a Newton step in log space with that Jacobian (ones - identity) as the prior,
refined by Broyden updates from the measured passes (MSE, sign changes under MAE and
non-linear activations make the real dependence differ), aiming at the band's geometric centre.
Biases (B^n) are left as they are: the paper did not teach them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from jigcnn.diagnostics.report import Diagnostic, make_diagnose
from jigcnn.layers.graph import get_path, leaf_layers, nested_names, split_name


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What `calibrate_init` returns.

    amplitudes: {layer: W} after calibration (Eq. 3 amplitudes; relative factors for layers
    not initialised by Eq. 3); scales: {layer: factor applied to the kernel}; params: the
    rescaled params; trajectory: one dict per pass (iteration, amplitudes, weight_grad_mav,
    loss, in_band); converged: every layer's dL/dw MAV inside the band; diagnostic: the last pass.
    """

    amplitudes: dict
    scales: dict
    params: Any
    trajectory: tuple
    converged: bool
    diagnostic: Diagnostic

    @property
    def passes(self) -> int:
        """Forward/backward passes used."""
        return len(self.trajectory)


def scale_kernels(params, scales: dict):
    """A copy of `params` with `params[layer]["kernel"]` multiplied by `scales[layer]` (Eq. 3 is linear in W).

    A layer name may be nested (``"stage2/block1/conv1"``: the kernel at that path of names).
    """

    def scaled(tree, path, s):
        tree = dict(tree)
        if len(path) == 1:
            layer_params = dict(tree[path[0]])
            layer_params["kernel"] = layer_params["kernel"] * np.asarray(s, layer_params["kernel"].dtype)
            tree[path[0]] = layer_params
        else:
            tree[path[0]] = scaled(tree[path[0]], path[1:], s)
        return tree

    out = dict(params)
    for name, s in scales.items():
        out = scaled(out, split_name(name), s)
    return out


def _initial_amplitudes(model, names):
    from jigcnn.initializers import IgNetUniform, get_initializer

    by_name = {"/".join(path): layer for path, layer in leaf_layers(model)}
    amps = {}
    for name in names:
        init = get_initializer(getattr(by_name[name], "initializer", None) or "ignet", name)
        amps[name] = float(init.W) if isinstance(init, IgNetUniform) else 1.0
    return amps


def calibrate_init(model, params, state, x, targets, loss, *, target=(0.01, 0.1), max_iters: int = 10,
                   layers=None, train: bool = False, key=None, max_step: float = 1e3) -> Calibration:
    """Rescale each layer's Eq. 3 amplitude W^n until its dL/dw MAV (Eqs. 1, 1a) lies in `target`.

    At most `max_iters` updates (`max_iters + 1` forward/backward passes, no training). `layers`
    limits the layers adjusted (default: every layer with a kernel); one factor per pass never
    exceeds `max_step` either way.
    """
    lo, hi = float(target[0]), float(target[1])
    if not 0 < lo < hi:
        raise ValueError(f"calibrate_init: target must be (lo, hi) with 0 < lo < hi, got {target!r}")
    fn = make_diagnose(model, loss, train=train)
    names = [n for n in nested_names(model) if isinstance(get_path(params, split_name(n)), dict)
             and "kernel" in get_path(params, split_name(n))]
    if layers is not None:
        unknown = sorted(set(layers) - set(names))
        if unknown:
            raise ValueError(f"calibrate_init: layers {unknown} have no kernel; layers with one: {names}")
        names = [n for n in names if n in set(layers)]
    if not names:
        raise ValueError("calibrate_init: the model has no layer with a kernel to calibrate")
    amp0 = _initial_amplitudes(model, names)
    L = len(names)
    goal = math.log(math.sqrt(lo * hi))
    u = np.zeros(L)  # log of the factor applied to each kernel
    J = np.ones((L, L)) - np.eye(L) if L > 1 else np.ones((1, 1))
    trajectory = []
    prev = None
    converged = False
    x, targets = jax.numpy.asarray(x), jax.numpy.asarray(targets)
    for it in range(max_iters + 1):
        scales = {n: float(math.exp(v)) for n, v in zip(names, u)}
        d = fn(scale_kernels(params, scales), state, x, targets, key, it)
        mav = d.weight_grad_mavs()
        m = np.array([mav[n] for n in names], dtype=np.float64)
        band = {n: bool(lo <= mav[n] <= hi) for n in names}
        trajectory.append({"iteration": it, "amplitudes": {n: amp0[n] * scales[n] for n in names},
                           "weight_grad_mav": {n: mav[n] for n in names}, "loss": d.loss, "in_band": band})
        if all(band.values()):
            converged = True
            break
        if it == max_iters:
            break
        if not np.all(np.isfinite(m)) or np.any(m <= 0):
            raise FloatingPointError(f"calibrate_init: weight-derivative MAVs {dict(zip(names, m))} at pass {it} "
                                     "are zero or non-finite; start from other amplitudes")
        logm = np.log(m)
        if prev is not None:
            du, dm = u - prev[0], logm - prev[1]
            if du @ du > 1e-12:  # Broyden: make J reproduce the last measured change
                J = J + np.outer(dm - J @ du, du) / (du @ du)
        r = goal - logm
        step = np.linalg.solve(J.T @ J + 1e-6 * np.eye(L), J.T @ r)
        step = np.clip(step, -math.log(max_step), math.log(max_step))
        prev = (u.copy(), logm)
        u = u + step
    last = trajectory[-1]
    final_scales = {n: last["amplitudes"][n] / amp0[n] for n in names}
    return Calibration(dict(last["amplitudes"]), final_scales, scale_kernels(params, final_scales), tuple(trajectory),
                       converged, d)


__all__ = ["Calibration", "calibrate_init", "scale_kernels"]
