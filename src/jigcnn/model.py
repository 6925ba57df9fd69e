"""A sequential model: layers keyed by name, shape inference without data, and a summary table."""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import numpy as np

from jigcnn import host_random
from jigcnn.layers.base import Layer


def _auto_names(layers: Sequence[Layer]) -> tuple[Layer, ...]:
    """Give each unnamed layer the name `<kind><position>` (1-based); reject duplicates."""
    named = []
    for i, layer in enumerate(layers, start=1):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential: item {i} is not a Layer: {layer!r}")
        named.append(layer if layer.name else dataclasses.replace(layer, name=f"{layer.kind}{i}"))
    names = [layer.name for layer in named]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"Sequential: layer names must be unique, repeated: {dupes}")
    return tuple(named)


def _draw(layers: tuple[Layer, ...], input_shape: tuple[int, ...], dtype: str, key):
    """(params, state) of `layers` for a per-sample `input_shape`, layer by layer (one key split per layer)."""
    keys = jax.random.split(key, len(layers))
    params, state = {}, {}
    shape = input_shape
    for layer, k in zip(layers, keys):
        shape, p, s = layer.init(k, shape, np.dtype(dtype))
        if p:
            params[layer.name] = p
        if s:
            state[layer.name] = s
    return params, state


@functools.lru_cache(maxsize=64)
def _jitted_init(layers: tuple[Layer, ...], input_shape: tuple[int, ...], dtype: str):
    return jax.jit(functools.partial(_draw, layers, input_shape, dtype))


@dataclasses.dataclass(frozen=True)
class Sequential:
    """Layers applied in order; params and state are dicts keyed by layer name.

    `input_shape` is per sample, e.g. (58, 36, 1); it may also be given to `init`.
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...] | None = None

    def __init__(self, layers: Sequence[Layer], input_shape: Sequence[int] | None = None):
        object.__setattr__(self, "layers", _auto_names(layers))
        object.__setattr__(self, "input_shape", None if input_shape is None else tuple(int(s) for s in input_shape))
        if self.input_shape is not None:
            self.shapes()

    @property
    def names(self) -> tuple[str, ...]:
        """Layer names in order."""
        return tuple(layer.name for layer in self.layers)

    def __getitem__(self, name: str) -> Layer:
        """The layer called `name`."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {list(self.names)}")

    def _shape(self, input_shape):
        shape = self.input_shape if input_shape is None else tuple(int(s) for s in input_shape)
        if shape is None:
            raise ValueError("Sequential: no input shape: pass input_shape to the model or to this call")
        return shape

    def shapes(self, input_shape=None) -> list[tuple[int, ...]]:
        """Per-sample shapes: the input's, then each layer's output (no data needed)."""
        shapes = [self._shape(input_shape)]
        for layer in self.layers:
            shapes.append(tuple(layer.output_shape(shapes[-1])))
        return shapes

    def init(self, key, input_shape=None, dtype=np.float32):
        """Draw (params, state): dicts keyed by layer name (layers without any are left out).

        Deterministic per key: the values of the draw jitted as one program (cached per layer
        spec, input shape and dtype, and in the persistent compilation cache when that is on).
        Against drawing layer by layer eagerly, they can differ in the last bit (XLA fuses the
        scaling of some draws). This is the one place that decides where the draw runs: the
        layers' `init` is traced to a jaxpr and, when :func:`jigcnn.host_random.evaluate` can
        run all of it exactly in NumPy (a concrete threefry2x32 key, uniform initialisers and
        constants, float32, at most ``host_random.MAX_ELEMENTS`` random values), it runs there
        and is put on the device: nothing is lowered or compiled. Otherwise it is jitted.
        """
        spec = (self.layers, self.shapes(input_shape)[0], np.dtype(dtype).name)
        try:
            return jax.device_put(host_random.evaluate(functools.partial(_draw, *spec), key))
        except host_random.Unsupported:
            pass  # a normal initialiser, a traced key, a big net, ...: the compiled draw
        try:
            init = _jitted_init(*spec)
        except TypeError:  # a layer holds an unhashable value (e.g. a custom initializer): no cache
            init = jax.jit(functools.partial(_draw, *spec))
        return init(key)

    def layer_keys(self, key):
        """One PRNG key per layer: `key` split, for the layers that draw at apply time (`needs_key`); None elsewhere.

        All None when `key` is None or no layer needs one: then nothing is split, so a training
        step without dropout carries no PRNG work at all.
        """
        if key is None or not any(layer.needs_key for layer in self.layers):
            return [None] * len(self.layers)
        keys = jax.random.split(key, len(self.layers))
        return [k if layer.needs_key else None for layer, k in zip(self.layers, keys)]

    def apply(self, params, state, x, *, train: bool = False, key=None):
        """Run the batch `x` through every layer; returns (output, new_state)."""
        new_state = {}
        for layer, k in zip(self.layers, self.layer_keys(key)):
            x, s = layer.apply(params.get(layer.name, {}), state.get(layer.name, {}), x, train=train, key=k)
            if s:
                new_state[layer.name] = s
        return x, new_state

    def __call__(self, params, state, x, *, train: bool = False, key=None):
        """Alias of `apply`."""
        return self.apply(params, state, x, train=train, key=key)

    def param_counts(self, input_shape=None) -> list[tuple[str, str, tuple, int, int]]:
        """Rows (name, kind, output shape, trainable, non-trainable), computed without drawing weights.

        A graph block (`jigcnn.layers.graph`) gives a row per inner layer, named by its nested name
        (``stage2/block1/conv1``), then its own row (its output shape, counts 0) after them.
        """
        shapes = self.shapes(input_shape)
        rows = []
        for layer, shape_in, shape_out in zip(self.layers, shapes[:-1], shapes[1:]):
            if hasattr(layer, "param_rows"):  # a graph block: one row per inner layer (nested names), then its own
                rows.extend(layer.param_rows(layer.name, shape_in))
                continue
            _, p, s = jax.eval_shape(lambda k, lyr=layer, sh=shape_in: lyr.init(k, sh), jax.random.key(0))
            non_trainable = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(s))
            rows.append((layer.name, type(layer).__name__, shape_out, layer.trainable_count(p), non_trainable))
        return rows

    def count_params(self, input_shape=None) -> tuple[int, int]:
        """(trainable, non-trainable) totals."""
        rows = self.param_counts(input_shape)
        return sum(r[3] for r in rows), sum(r[4] for r in rows)

    def summary(self, input_shape=None, *, print_fn=print) -> str:
        """Print (and return) each layer's output shape and trainable / non-trainable counts."""
        rows = self.param_counts(input_shape)
        header = ("layer", "type", "output shape", "trainable", "non-trainable")
        body = [(n, k, str(s), f"{t:,}", f"{nt:,}") for n, k, s, t, nt in rows]
        widths = [max(len(r[i]) for r in [header] + body) for i in range(5)]
        line = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
        rule = "-" * len(line(header))
        t, nt = sum(r[3] for r in rows), sum(r[4] for r in rows)
        text = "\n".join(
            [f"input shape: {self._shape(input_shape)}", rule, line(header), rule]
            + [line(r) for r in body]
            + [rule, f"total params: {t + nt:,}  (trainable {t:,}, non-trainable {nt:,})"]
        )
        if print_fn is not None:
            print_fn(text)
        return text
