"""The paper's Fig. 4 diagnostic: per-layer mean absolute values (MAV) of the quantities of Eqs. 1-2a.

For every layer the hand-written backprop records (conv, dense, standalone activations), one
jitted forward + backward pass gives the MAV of

* ``input_mav``       the layer's input map, In (Eq. 1's first factor),        printed "*"
* ``act_deriv_mav``   the activation derivative N',                             printed "*"
* ``weight_mav``      the layer's weights (connected entries only),             printed "*"
* ``delta_mav``       the full neuron derivative w.r.t. the bias, dL/dz (Eq. 2), printed "*"
* ``weight_grad_mav`` the loss derivative w.r.t. the weights, dL/dw (Eq. 1),    printed "***"

Layers without weights (a softmax head) get NaN in the weight columns. Layers inside graph blocks
(`jigcnn.layers.graph`) get a row each, named by their nested name (``stage2/block1/conv1``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from jigcnn.backprop import manual_value_and_grad
from jigcnn.layers.graph import get_path, leaf_layers, nested_names

COLUMNS = ("input_mav", "act_deriv_mav", "weight_mav", "delta_mav", "weight_grad_mav")
# header marks as in the paper's console output: "*" for the four quantities, "***" for dL/dw
HEADERS = {"input_mav": "*In", "act_deriv_mav": "*N'", "weight_mav": "*w", "delta_mav": "*dL/db",
           "weight_grad_mav": "***dL/dw"}


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One layer's MAVs (floats; NaN where the layer has no such quantity)."""

    layer: str
    kind: str
    input_mav: float
    act_deriv_mav: float
    weight_mav: float
    delta_mav: float
    weight_grad_mav: float

    def to_dict(self) -> dict:
        """The row as a plain dict."""
        return dataclasses.asdict(self)


def _fmt(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.3e}"


@dataclasses.dataclass(frozen=True)
class Diagnostic:
    """The Fig. 4 report: one `LayerRow` per recorded layer, the batch loss and (optionally) the step."""

    rows: tuple[LayerRow, ...]
    loss: float
    step: int | None = None

    def __getitem__(self, layer: str) -> LayerRow:
        """The row of `layer`."""
        for r in self.rows:
            if r.layer == layer:
                return r
        raise KeyError(f"no diagnostic row for layer {layer!r}; rows: {[r.layer for r in self.rows]}")

    @property
    def layers(self) -> tuple[str, ...]:
        """Layer names in network order."""
        return tuple(r.layer for r in self.rows)

    def column(self, name: str) -> dict[str, float]:
        """One column as {layer: value}."""
        if name not in COLUMNS:
            raise KeyError(f"unknown column {name!r}; columns: {COLUMNS}")
        return {r.layer: getattr(r, name) for r in self.rows}

    def weight_grad_mavs(self) -> dict[str, float]:
        """{layer: dL/dw MAV} for the layers with weights (what calibration steers)."""
        return {r.layer: r.weight_grad_mav for r in self.rows if math.isfinite(r.weight_grad_mav)}

    def in_band(self, band=(0.01, 0.1)) -> dict[str, bool]:
        """{layer: lo <= dL/dw MAV <= hi} for the layers with weights."""
        lo, hi = band
        return {k: bool(lo <= v <= hi) for k, v in self.weight_grad_mavs().items()}

    def to_dict(self) -> dict:
        """{"loss", "step", "layers": {name: {column: value}}} (plain floats)."""
        return {"loss": self.loss, "step": self.step,
                "layers": {r.layer: {c: getattr(r, c) for c in ("kind",) + COLUMNS} for r in self.rows}}

    def table(self) -> str:
        """A console table like the paper's Fig. 4: one line per layer, * / *** column marks."""
        header = ["layer"] + [HEADERS[c] for c in COLUMNS]
        body = [[r.layer] + [_fmt(getattr(r, c)) for c in COLUMNS] for r in self.rows]
        widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
        line = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
        title = "MAV per layer" + (f" at step {self.step}" if self.step is not None else "") + f"  (loss {self.loss:.6g})"
        rule = "-" * len(line(header))
        return "\n".join([title, rule, line(header), rule] + [line(r) for r in body] + [rule])

    def __str__(self) -> str:
        return self.table()


def _mav(a, mask=None):
    a = jnp.abs(a)
    if mask is None:
        return jnp.mean(a)
    # connection tables: average over the connected kernel entries only
    return jnp.sum(a * mask) / jnp.sum(mask)


def _kernel_mask(layer, kernel):
    """A kernel-shaped 0/1 mask of the connected entries (None when all are connected)."""
    mask_fn = getattr(layer, "mask", None)
    if mask_fn is None or kernel.ndim != 4:
        return None
    m = mask_fn(kernel.shape[2])
    return None if m is None else jnp.broadcast_to(jnp.asarray(m, kernel.dtype), kernel.shape)


def make_diagnose(model, loss, *, train: bool = False) -> Callable:
    """A jitted `f(params, state, x, targets, key=None, step=None) -> Diagnostic`, compiled once per shapes.

    One forward + backward pass of the hand-written backprop (`jigcnn.backprop`); the MAVs
    are reduced on the device, so only a few scalars per layer come back.
    """
    vg = manual_value_and_grad(model, loss)
    # every layer, those inside graph blocks too, by its nested name ("stage2/block1/conv1"); the
    # records and params of an inner layer sit at its path of names (jigcnn.layers.graph)
    leaves = [("/".join(path), path, layer) for path, layer in leaf_layers(model)]
    names = nested_names(model)
    kinds = {name: type(layer).__name__ for name, _, layer in leaves}

    def mavs(params, state, x, targets, key):
        (value, aux), _ = vg(params, state, x, targets, train=train, key=key)
        out = {}
        for name, path, layer in leaves:
            rec = get_path(aux.intermediates, path)
            if not rec:
                continue
            p = get_path(params, path, {})
            nan = jnp.array(jnp.nan, jnp.float32)
            kernel = p.get("kernel")
            mask = None if kernel is None else _kernel_mask(layer, kernel)
            out[name] = {
                "input_mav": _mav(rec["input"]),
                "act_deriv_mav": _mav(rec["act_deriv"]),
                "weight_mav": nan if kernel is None else _mav(kernel, mask),
                "delta_mav": _mav(rec["delta"]),
                "weight_grad_mav": nan if "weight_grad" not in rec else _mav(rec["weight_grad"], mask),
            }
        return value, out

    jitted = jax.jit(mavs)

    def diagnose_fn(params, state, x, targets, key=None, step=None) -> Diagnostic:
        value, out = jax.device_get(jitted(params, state, jnp.asarray(x), jnp.asarray(targets), key))
        rows = tuple(LayerRow(name, kinds[name], *(float(out[name][c]) for c in COLUMNS))
                     for name in names if name in out)
        return Diagnostic(rows, float(value), None if step is None else int(step))

    diagnose_fn.jitted = jitted  # the raw compiled function (dict of device scalars), for embedding in other jits
    return diagnose_fn


_CACHE: dict = {}


def diagnose(model, params, state, x, targets, loss, *, train: bool = False, key=None, step=None) -> Diagnostic:
    """The Fig. 4 report for one batch (the compiled pass is cached per model, loss and `train`)."""
    try:
        cache_key = (model, loss, bool(train))
        hash(cache_key)
    except TypeError:
        return make_diagnose(model, loss, train=train)(params, state, x, targets, key, step)
    fn = _CACHE.get(cache_key)
    if fn is None:
        if len(_CACHE) > 32:
            _CACHE.clear()
        fn = _CACHE[cache_key] = make_diagnose(model, loss, train=train)
    return fn(params, state, x, targets, key, step)


class DiagnosticRecorder:
    """Records the Fig. 4 report every `every` steps (or epochs) of training into `.records`.

    Call it as `recorder(step, params, state, x, targets)`; it diagnoses when `step % every == 0`
    and returns the `Diagnostic` (else None). `history()` flattens the records into
    {"step": [...], "<layer>/<column>": [...]} lists, the shape `plots.plot_mav_trajectory` takes.
    `on_epoch_end` adapts it to a loop that calls back with (epoch, record, params, state).
    With `unit="step"`, `jigcnn.train.fit(diagnostic=recorder)` calls it after every training
    step (global step numbers from 1) instead, and puts `history()` in `History.diagnostics`.
    """

    def __init__(self, model, loss, every: int = 1, *, batch=None, train: bool = False, unit: str = "epoch"):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"DiagnosticRecorder: every must be a positive int, got {every!r}")
        if unit not in ("epoch", "step"):
            raise ValueError(f"DiagnosticRecorder: unit must be 'epoch' or 'step', got {unit!r}")
        self.every = every
        self.unit = unit
        self.batch = batch
        self.records: list[Diagnostic] = []
        self._fn = make_diagnose(model, loss, train=train)

    def __call__(self, step: int, params, state, x=None, targets=None, key=None) -> Diagnostic | None:
        """Diagnose (x, targets) or the fixed `batch` when `step` is a multiple of `every`."""
        if step % self.every:
            return None
        if x is None:
            if self.batch is None:
                raise ValueError("DiagnosticRecorder: pass (x, targets) or give a fixed batch= at construction")
            x, targets = self.batch
        d = self._fn(params, state, x, targets, key, step)
        self.records.append(d)
        return d

    def on_epoch_end(self, epoch: int, record: dict, params, state) -> dict:
        """Loop hook: diagnose the fixed batch; returns {"mav/<layer>/<column>": value} to merge into the record."""
        if self.unit != "epoch":
            return {}
        d = self(epoch, params, state)
        if d is None:
            return {}
        return {f"mav/{r.layer}/{c}": getattr(r, c) for r in d.rows for c in COLUMNS}

    def history(self) -> dict[str, list]:
        """{"step": [...], "loss": [...], "<layer>/<column>": [...]} over the records."""
        out: dict[str, list] = {"step": [d.step for d in self.records], "loss": [d.loss for d in self.records]}
        for i, d in enumerate(self.records):
            for r in d.rows:
                for c in COLUMNS:
                    out.setdefault(f"{r.layer}/{c}", [math.nan] * len(self.records))[i] = getattr(r, c)
        return out


def diagnostics_to_history(records) -> dict[str, list]:
    """Flatten a list of `Diagnostic`s into {"step", "loss", "<layer>/<column>": lists}."""
    rec = DiagnosticRecorder.__new__(DiagnosticRecorder)
    rec.records = list(records)
    return DiagnosticRecorder.history(rec)


__all__ = ["COLUMNS", "LayerRow", "Diagnostic", "make_diagnose", "diagnose", "DiagnosticRecorder",
           "diagnostics_to_history"]
