"""Selecting which parameter arrays a transform touches.

A *selection* ("where") is one of:

* ``None`` -- every array;
* a ``bool`` -- every array (``True``) or none (``False``);
* a pytree of booleans matching the params, or a prefix of it
  (``{"conv1": True, "dense2": {"kernel": True, "bias": False}}``);
* a predicate ``fn(path, array) -> bool``, where ``path`` is the JAX key path of
  the array (see :func:`path_names`).

A *rate* is a float in ``[0, 1)`` or a pytree (prefix) of floats / ``None``
(``None`` and ``0`` leave the array untouched).

Parameters follow the library's convention: a dict keyed by layer name, each a
dict of arrays (``kernel``, ``bias``, ``scale``, ``offset``, ``alpha``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Union

import jax
from optax.transforms import MaskedNode

Predicate = Callable[[tuple, Any], bool]
Where = Union[None, bool, Any, Predicate]
Rate = Union[float, Any]


def _is_masked_node(x) -> bool:
    return isinstance(x, MaskedNode)


def path_names(path) -> tuple[str, ...]:
    """The key path of an array as a tuple of strings, e.g. ``("conv1", "kernel")``."""
    out = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            out.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            out.append(str(k.name))
        elif isinstance(k, jax.tree_util.SequenceKey):
            out.append(str(k.idx))
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            out.append(str(k.key))
        else:  # pragma: no cover - other key kinds
            out.append(str(k))
    return tuple(out)


def kernels_only(path, leaf) -> bool:
    """Predicate: the conv/dense kernels (never biases, batch-norm or PReLU arrays)."""
    del leaf
    names = path_names(path)
    return bool(names) and names[-1] == "kernel"


def biases_only(path, leaf) -> bool:
    """Predicate: the biases only."""
    del leaf
    names = path_names(path)
    return bool(names) and names[-1] == "bias"


def in_layers(names, path) -> bool:
    """Whether an array's key path lies under one of the (nested, ``/``-joined) layer names.

    ``"stage2"`` covers every array of the block ``stage2``; ``"stage2/block1/conv1"`` those of
    that inner layer only (params of graph blocks nest by inner name, see `jigcnn.layers.graph`).
    """
    p = path_names(path)
    return any("/".join(p[:i]) in names for i in range(1, len(p) + 1))


def layers(*names: str) -> Predicate:
    """Predicate factory: every array of the layers called ``names`` (nested names such as ``"stage2/block1/conv1"`` too)."""
    wanted = frozenset(names)

    def pred(path, leaf) -> bool:
        del leaf
        return in_layers(wanted, path)

    pred.layer_names = wanted  # lets callers check the names exist
    return pred


def all_of(*preds: Predicate) -> Predicate:
    """Predicate factory: arrays selected by every one of ``preds``."""
    return lambda path, leaf: all(p(path, leaf) for p in preds)


def any_of(*preds: Predicate) -> Predicate:
    """Predicate factory: arrays selected by at least one of ``preds``."""
    return lambda path, leaf: any(p(path, leaf) for p in preds)


def layer_names(params) -> list[str]:
    """The top-level (layer) names of a params dict."""
    return list(params.keys()) if isinstance(params, dict) else []


def nested_layer_names(params) -> list[str]:
    """Every layer name of a params dict, nested ones ``/``-joined (``"stage2"``, ``"stage2/block1"``, ...).

    The names that `layers` accepts: every dict level above the arrays.
    """
    out = []

    def walk(tree, prefix):
        for k, v in tree.items():
            if isinstance(v, dict):
                name = f"{prefix}{k}"
                out.append(name)
                walk(v, name + "/")

    if isinstance(params, dict):
        walk(params, "")
    return out


def _broadcast_prefix(prefix, tree, what: str):
    """Map a prefix tree's leaves onto every array of ``tree`` below them."""
    try:
        return jax.tree.map(
            lambda v, sub: jax.tree.map(lambda _: v, sub),
            prefix,
            tree,
            is_leaf=lambda x: x is None,
        )
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{what} pytree does not match the params structure (it must be the same "
            f"tree or a prefix of it): {e}"
        ) from None


def resolve_where(where: Where, tree):
    """A pytree of Python bools, one per array of ``tree``, from a selection."""
    if where is None or where is True:
        return jax.tree.map(lambda _: True, tree)
    if where is False:
        return jax.tree.map(lambda _: False, tree)
    if callable(where):
        return jax.tree_util.tree_map_with_path(lambda p, x: bool(where(p, x)), tree)
    sel = _broadcast_prefix(where, tree, "selection")

    def check(v):
        if v is None:
            return False
        if not isinstance(v, (bool,)) and not (hasattr(v, "dtype") and v.dtype == bool):
            raise TypeError(f"selection leaves must be booleans or None, got {v!r}")
        return bool(v)

    return jax.tree.map(check, sel, is_leaf=lambda x: x is None)


def check_rate(rate, name: str = "rate") -> float:
    """Validate one rate: a real number in ``[0, 1)``; returns it as a float."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1), got {rate!r}")
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (the probability of masking an element), got {rate}")
    return rate


def check_learning_rate(value, name: str = "learning_rate", who: str = "optimizer") -> None:
    """A ``jigcnn.errors.UserError`` (ValueError) naming ``name`` unless ``value`` is > 0 and finite, or a schedule."""
    from jigcnn.errors import UserError

    at = f"{who}: " if who else ""
    if callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{at}{name} must be a number > 0 or an optax schedule, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{at}{name} must be a finite number > 0, got {value!r}"
                        + (" (a negative learning rate trains uphill)" if value < 0 else ""))


def resolve_rates(rate: Rate, where: Where, tree):
    """A pytree of Python floats (0.0 = untouched), one per array of ``tree``."""
    if rate is None:
        rates = jax.tree.map(lambda _: 0.0, tree)
    elif isinstance(rate, numbers.Real) and not isinstance(rate, bool):
        r = check_rate(rate)
        rates = jax.tree.map(lambda _: r, tree)
    else:
        rates = _broadcast_prefix(rate, tree, "rate")
        rates = jax.tree.map(
            lambda v: 0.0 if v is None else check_rate(v, "every rate in the pytree"),
            rates,
            is_leaf=lambda x: x is None,
        )
    sel = resolve_where(where, tree)
    return jax.tree.map(lambda r, s: r if s else 0.0, rates, sel)


def validate_rate_spec(rate: Rate) -> None:
    """Eager checks of a rate given at construction (before params are known)."""
    if rate is None:
        return
    if isinstance(rate, numbers.Real) and not isinstance(rate, bool):
        check_rate(rate)
        return
    if callable(rate):
        raise TypeError("rate must be a float or a pytree of floats; pass a predicate as `where=`")
    for leaf in jax.tree.leaves(rate):
        check_rate(leaf, "every rate in the pytree")
