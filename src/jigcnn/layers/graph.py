"""Graph combinators: layers made of layers (serial blocks, residual blocks, parallel branches).

A combinator is a frozen `Layer` spec like any other, so it goes inside a `Sequential` (or
another combinator) unchanged. Its params and state are nested dicts keyed by the inner layers'
names -- ``params["stage2"]["block1"]["conv1"]["kernel"]`` -- so `Sequential` keys the block by
its own name as it does every layer, and the nested name of an inner layer is the path of names
joined by ``/`` (``"stage2/block1/conv1"``; :func:`leaf_layers` lists them). Shapes are inferred
without data; a graph that cannot run (a sum of different shapes, a concatenation of different
spatial sizes, two inner layers with one name) is an error at construction, naming the block,
the branches and their shapes.

* `Serial(layers)`: the layers in order (a nestable `Sequential`).
* `Residual(body, shortcut=None, activation=...)`: y = f(x + body(x)); the shortcut (identity by
  default) may be a layer: `IdentityShortcut` (He et al.'s option A: stride-2 subsampling,
  zero-padded channels) or a 1x1 strided convolution (option B, `Serial([Conv2D(c, 1, strides=2),
  BatchNorm()], name="shortcut")`).
* `Parallel(branches, join="sum" | "concat")`: every branch sees the input; their outputs are
  summed or concatenated along the channel (last) axis.
* `GlobalAvgPool()`: the mean over the spatial positions, (H, W, C) -> (C,).

Their hand-written backward passes (the chain rule over the graph, Eq. 1a) are in
`jigcnn.backprop.graph`; their reference forwards in `jigcnn.reference`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jigcnn.activations import check_activation, get_activation
from jigcnn.layers.base import Layer, check_batch, check_map_shape, pair

SEPARATOR = "/"


def _name_children(owner: Layer, layers, what: str, default_kind: str | None = None) -> tuple[Layer, ...]:
    """Name each unnamed inner layer `<kind><position>` (1-based); reject non-layers, '/' in names and duplicates."""
    if isinstance(layers, Layer):
        layers = (layers,)
    named = []
    for i, layer in enumerate(layers, start=1):
        if not isinstance(layer, Layer):
            raise TypeError(f"{owner.label()}: {what} {i} is not a Layer: {layer!r}")
        if layer.name is None:
            layer = dataclasses.replace(layer, name=f"{default_kind or layer.kind}{i}")
        if SEPARATOR in layer.name:
            raise owner.error(f"inner layer name {layer.name!r} contains {SEPARATOR!r}, which joins nested names")
        named.append(layer)
    return tuple(named)


def _check_unique(owner: Layer, layers: Sequence[Layer]) -> None:
    names = [layer.name for layer in layers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise owner.error(f"inner layer names must be unique within the block, repeated: {dupes}")


@dataclasses.dataclass(frozen=True)
class Block(Layer):
    """Shared part of the combinators: inner layers (`children`), nested params and state, keys per inner layer."""

    kind: ClassVar[str] = "block"

    def children(self) -> tuple[Layer, ...]:
        """The inner layers, in the order their keys are split and their params are drawn."""
        raise NotImplementedError

    def child_shapes(self, in_shape) -> list[tuple[Layer, tuple, tuple]]:
        """(inner layer, its input shape, its output shape) for each inner layer, in `children` order."""
        raise NotImplementedError

    @property
    def needs_key(self) -> bool:
        """Whether any inner layer draws at apply time (dropout)."""
        return any(child.needs_key for child in self.children())

    def child(self, name: str) -> Layer:
        """The inner layer called `name`."""
        for c in self.children():
            if c.name == name:
                return c
        raise KeyError(f"{self.label()}: no inner layer named {name!r}; inner layers: {[c.name for c in self.children()]}")

    def child_keys(self, key) -> list:
        """One PRNG key per inner layer that needs one (None elsewhere, and all None without a key)."""
        kids = self.children()
        if key is None or not any(c.needs_key for c in kids):
            return [None] * len(kids)
        keys = jax.random.split(key, len(kids))
        return [k if c.needs_key else None for c, k in zip(kids, keys)]

    def init(self, key, in_shape, dtype=np.float32):
        """Draw every inner layer's params and state (one key split per inner layer), nested by name."""
        rows = self.child_shapes(tuple(in_shape))
        keys = jax.random.split(key, len(rows)) if rows else []
        params, state = {}, {}
        for (child, shape_in, _), k in zip(rows, keys):
            _, p, s = child.init(k, shape_in, dtype)
            if p:
                params[child.name] = p
            if s:
                state[child.name] = s
        return self.output_shape(in_shape), params, state

    def trainable_count(self, params) -> int:
        """The inner layers' trainable counts, summed (connection tables count connected weights only)."""
        return sum(c.trainable_count(params[c.name]) for c in self.children() if c.name in params)

    def run_child(self, child: Layer, params, state, x, new_state: dict, *, train, key):
        """Apply one inner layer to `x`, storing its new state under its name; returns its output."""
        y, s = child.apply(params.get(child.name, {}), state.get(child.name, {}), x, train=train, key=key)
        if s:
            new_state[child.name] = s
        return y

    def param_rows(self, prefix: str, in_shape) -> list[tuple[str, str, tuple, int, int]]:
        """Summary rows (nested name, type, output shape, trainable, non-trainable) of every inner layer, then the block's own."""
        rows = []
        for child, shape_in, shape_out in self.child_shapes(tuple(in_shape)):
            name = f"{prefix}{SEPARATOR}{child.name}"
            if isinstance(child, Block):
                rows.extend(child.param_rows(name, shape_in))
                continue
            _, p, s = jax.eval_shape(lambda k, c=child, sh=shape_in: c.init(k, sh), jax.random.key(0))
            non_trainable = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(s))
            rows.append((name, type(child).__name__, tuple(shape_out), child.trainable_count(p), non_trainable))
        rows.append((prefix, f"{type(self).__name__}{self.join_label()}", tuple(self.output_shape(in_shape)), 0, 0))
        return rows

    def join_label(self) -> str:
        """How the block joins its inner layers, for the summary ('' for a plain chain)."""
        return ""


@dataclasses.dataclass(frozen=True)
class Serial(Block):
    """Inner layers applied in order (a `Sequential` usable as a layer); params nested by inner name."""

    layers: Any = ()
    kind: ClassVar[str] = "serial"

    def __post_init__(self):
        object.__setattr__(self, "layers", _name_children(self, self.layers, "item"))
        if not self.layers:
            raise self.error("needs at least one inner layer")
        _check_unique(self, self.layers)

    def children(self):
        """The layers, in order."""
        return self.layers

    def child_shapes(self, in_shape):
        """Each layer's input and output shape, chained."""
        rows, shape = [], tuple(in_shape)
        for layer in self.layers:
            out = tuple(layer.output_shape(shape))
            rows.append((layer, shape, out))
            shape = out
        return rows

    def output_shape(self, in_shape):
        """The last layer's output shape."""
        return self.child_shapes(in_shape)[-1][2]

    def apply(self, params, state, x, *, train=False, key=None):
        """Run `x` through the layers in order; returns (output, new nested state)."""
        new_state = {}
        for layer, k in zip(self.layers, self.child_keys(key)):
            x = self.run_child(layer, params, state, x, new_state, train=train, key=k)
        return x, new_state


SHORTCUT = "shortcut"


@dataclasses.dataclass(frozen=True)
class Residual(Block):
    """y = f(x + body(x)) (He et al. 2016); `shortcut` None is the identity, else a layer applied to x.

    `body`: a layer or a sequence of layers (chained; named in the block as in a `Serial`). The
    shortcut layer is called "shortcut" unless named; a sequence becomes a `Serial` called so.
    `activation` f: any of `jigcnn.activations` (identity by default, "relu" for a ResNet).
    """

    body: Any = ()
    shortcut: Any = None
    activation: str = "identity"
    kind: ClassVar[str] = "residual"

    def __post_init__(self):
        object.__setattr__(self, "body", _name_children(self, self.body, "body item"))
        if not self.body:
            raise self.error("needs at least one body layer")
        sc = self.shortcut
        if sc is not None:
            if not isinstance(sc, Layer):
                sc = Serial(tuple(sc), name=SHORTCUT)
            elif sc.name is None:
                sc = dataclasses.replace(sc, name=SHORTCUT)
            (sc,) = _name_children(self, (sc,), "shortcut")
            object.__setattr__(self, "shortcut", sc)
        _check_unique(self, self.children())
        check_activation(self.activation, self.label())

    def children(self):
        """The body layers, then the shortcut layer (when there is one)."""
        return self.body + (() if self.shortcut is None else (self.shortcut,))

    def child_shapes(self, in_shape):
        """The body chained from the input, the shortcut on the input; checks that the two can be added."""
        rows, shape = [], tuple(in_shape)
        for layer in self.body:
            out = tuple(layer.output_shape(shape))
            rows.append((layer, shape, out))
            shape = out
        short = tuple(in_shape)
        if self.shortcut is not None:
            short = tuple(self.shortcut.output_shape(tuple(in_shape)))
            rows.append((self.shortcut, tuple(in_shape), short))
        if shape != short:
            which = "the identity shortcut" if self.shortcut is None else f"shortcut {self.shortcut.name!r}"
            raise self.error(f"cannot add the body (ending in {self.body[-1].name!r}) of output shape {shape} and "
                             f"{which} of shape {short}; give the shortcut a projection "
                             "(IdentityShortcut or a 1x1 strided Conv2D)")
        return rows

    def output_shape(self, in_shape):
        """The body's output shape (equal to the shortcut's)."""
        return self.child_shapes(in_shape)[len(self.body) - 1][2]

    def join_label(self) -> str:
        """'(+, f)': a sum and the activation after it."""
        return f"(+, {self.activation})"

    def apply(self, params, state, x, *, train=False, key=None):
        """f(x + body(x)) (or f(shortcut(x) + body(x))); returns (output, new nested state)."""
        new_state = {}
        keys = self.child_keys(key)
        h = x
        for layer, k in zip(self.body, keys):
            h = self.run_child(layer, params, state, h, new_state, train=train, key=k)
        s = x if self.shortcut is None else self.run_child(self.shortcut, params, state, x, new_state, train=train,
                                                            key=keys[-1])
        return get_activation(self.activation)(h + s), new_state


JOINS = ("sum", "concat")


@dataclasses.dataclass(frozen=True)
class Parallel(Block):
    """Branches that each see the input, joined by their sum or their concatenation along the channel (last) axis.

    A branch is a layer (a `Serial` for a chain; a sequence becomes one). Branches are named
    `branch1`, `branch2`, ... unless named.
    """

    branches: Any = ()
    join: str = "sum"
    kind: ClassVar[str] = "parallel"

    def __post_init__(self):
        branches = tuple(b if isinstance(b, Layer) else Serial(tuple(b)) for b in self.branches)
        object.__setattr__(self, "branches", _name_children(self, branches, "branch", "branch"))
        if len(self.branches) < 1:
            raise self.error("needs at least one branch")
        if self.join not in JOINS:
            raise self.error(f"join must be one of {JOINS}, got {self.join!r}")
        _check_unique(self, self.branches)

    def children(self):
        """The branches."""
        return self.branches

    def child_shapes(self, in_shape):
        """Each branch on the input; checks that their outputs can be joined."""
        rows = [(b, tuple(in_shape), tuple(b.output_shape(tuple(in_shape)))) for b in self.branches]
        first = rows[0]
        for b, _, shape in rows[1:]:
            if self.join == "sum" and shape != first[2]:
                raise self.error(f"cannot sum branch {first[0].name!r} of output shape {first[2]} and branch "
                                 f"{b.name!r} of output shape {shape}")
            if self.join == "concat" and (len(shape) != len(first[2]) or shape[:-1] != first[2][:-1]):
                raise self.error(f"cannot concatenate along channels branch {first[0].name!r} of output shape "
                                 f"{first[2]} and branch {b.name!r} of output shape {shape}: the sizes before the "
                                 "channel axis differ")
        return rows

    def widths(self, in_shape) -> list[int]:
        """The channel count of each branch's output (the slices of a concatenation)."""
        return [shape[-1] for _, _, shape in self.child_shapes(in_shape)]

    def output_shape(self, in_shape):
        """A branch's shape (sum) or the branches' with channels added up (concat)."""
        rows = self.child_shapes(in_shape)
        if self.join == "sum":
            return rows[0][2]
        return rows[0][2][:-1] + (sum(shape[-1] for _, _, shape in rows),)

    def join_label(self) -> str:
        """'(sum)' or '(concat)'."""
        return f"({self.join})"

    def apply(self, params, state, x, *, train=False, key=None):
        """Every branch on `x`, then the sum or the channel concatenation; returns (output, new nested state)."""
        new_state = {}
        outs = [self.run_child(b, params, state, x, new_state, train=train, key=k)
                for b, k in zip(self.branches, self.child_keys(key))]
        if self.join == "sum":
            y = outs[0]
            for o in outs[1:]:
                y = y + o
            return y, new_state
        return jnp.concatenate(outs, axis=-1), new_state


@dataclasses.dataclass(frozen=True)
class IdentityShortcut(Layer):
    """He et al.'s shortcut option A: subsample by `strides`, then zero-pad the channels up to `features`.

    (H, W, C) -> (ceil(H / s), ceil(W / s), features); no parameters. The new channels are
    appended after the input's (``features - C`` zero maps).
    """

    features: int = 1
    strides: Any = 1
    kind: ClassVar[str] = "identity_shortcut"

    def __post_init__(self):
        pair(self.strides, "strides", self)
        if not isinstance(self.features, (int, np.integer)) or isinstance(self.features, bool) or self.features < 1:
            raise self.error(f"features must be a positive int, got {self.features!r}")

    def output_shape(self, in_shape):
        """(ceil(H / sy), ceil(W / sx), features); features must be >= C."""
        h, w, c = check_map_shape(self, in_shape)
        sy, sx = pair(self.strides, "strides", self)
        if self.features < c:
            raise self.error(f"features {self.features} is smaller than the input's {c} channels (it only pads)")
        return (-(-h // sy), -(-w // sx), int(self.features))

    def apply(self, params, state, x, *, train=False, key=None):
        """x[:, ::sy, ::sx, :] followed by features - C zero channels."""
        check_batch(self, x, 4)
        sy, sx = pair(self.strides, "strides", self)
        sub = x[:, ::sy, ::sx, :]
        return jnp.pad(sub, ((0, 0), (0, 0), (0, 0), (0, self.features - x.shape[-1]))), state


@dataclasses.dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Global average pooling: the mean of each channel over the spatial positions, (H, W, C) -> (C,)."""

    kind: ClassVar[str] = "globalavgpool"

    def output_shape(self, in_shape):
        """(C,)."""
        return (check_map_shape(self, in_shape)[-1],)

    def apply(self, params, state, x, *, train=False, key=None):
        """mean over H and W."""
        check_batch(self, x, 4)
        return jnp.mean(x, axis=(1, 2)), state


def leaf_layers(model_or_layers, prefix: str = "") -> Iterator[tuple[tuple[str, ...], Layer]]:
    """(path of names, layer) for every non-combinator layer of a `Sequential`, a block or a sequence, in network order.

    The nested name of a layer is ``"/".join(path)``; `get_path(params, path)` finds its params.
    """
    layers = model_or_layers.children() if isinstance(model_or_layers, Block) else getattr(
        model_or_layers, "layers", model_or_layers)
    for layer in layers:
        if isinstance(layer, Block):
            for path, leaf in leaf_layers(layer):
                yield (layer.name,) + path, leaf
        else:
            yield (layer.name,), layer


def nested_names(model_or_layers) -> list[str]:
    """The slash-joined nested names of every layer (blocks expanded), in network order; rejects a repeated one."""
    names = [SEPARATOR.join(path) for path, _ in leaf_layers(model_or_layers)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"nested layer names must be unique across the model, repeated: {dupes}")
    return names


def get_path(tree, path, default=None):
    """`tree[path[0]][path[1]]...`, or `default` where a key is missing."""
    for name in path:
        if not isinstance(tree, dict) or name not in tree:
            return default
        tree = tree[name]
    return tree


def split_name(name: str) -> tuple[str, ...]:
    """A nested name ``"a/b/c"`` as the path ``("a", "b", "c")``."""
    return tuple(name.split(SEPARATOR))


__all__ = ["Block", "Serial", "Residual", "Parallel", "IdentityShortcut", "GlobalAvgPool", "JOINS", "SEPARATOR",
           "leaf_layers", "nested_names", "get_path", "split_name"]
