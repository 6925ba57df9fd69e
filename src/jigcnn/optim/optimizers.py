"""Optimisers by name from a config, and what learns: bias exclusion, freezing layers by name.

The paper used plain gradient descent, Momentum and Nesterov; the other seeds
add Adam, AdaGrad and RMSProp. All come from optax.

Freezing is done with optax's partitioning (``optax.partition`` with
``optax.set_to_zero()`` for the frozen group): frozen arrays never reach the
wrapped optimizer (no optimizer state for them, no weight decay) and their
update is exactly zero.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Mapping
from typing import Any, Iterable

import jax
import numpy as np
import optax
from optax.transforms import MaskedNode

from jigcnn.errors import UserError
from jigcnn.optim.select import (
    Where,
    _is_masked_node,
    biases_only,
    check_learning_rate,
    in_layers,
    nested_layer_names,
    resolve_where,
)

# name -> (optax factory, fixed kwargs, allowed hyper-parameters, defaults)
_OPTIMIZERS: dict[str, tuple[Any, dict, tuple[str, ...], dict]] = {
    "sgd": (optax.sgd, {}, ("learning_rate",), {}),
    "momentum": (optax.sgd, {"nesterov": False}, ("learning_rate", "momentum"), {"momentum": 0.9}),
    "nesterov": (optax.sgd, {"nesterov": True}, ("learning_rate", "momentum"), {"momentum": 0.9}),
    "adam": (optax.adam, {}, ("learning_rate", "b1", "b2", "eps", "eps_root"), {}),
    "adamw": (optax.adamw, {}, ("learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay"), {}),
    "adagrad": (optax.adagrad, {}, ("learning_rate", "initial_accumulator_value", "eps"), {}),
    "rmsprop": (
        optax.rmsprop,
        {},
        (
            "learning_rate",
            "decay",
            "eps",
            "initial_scale",
            "eps_in_sqrt",
            "centered",
            "momentum",
            "nesterov",
            "bias_correction",
        ),
        {},
    ),
}
_ALIASES = {"gd": "sgd", "plain": "sgd", "nag": "nesterov"}

OPTIMIZER_NAMES = tuple(_OPTIMIZERS)

# what each hyper-parameter other than the learning rate may be: a decay rate in [0, 1) (1 or more
# never forgets, or grows, and b2 = 1 divides by zero in Adam's bias correction), a non-negative
# number, or a flag
_UNIT_INTERVAL = ("momentum", "b1", "b2", "decay")
_NON_NEGATIVE = ("eps", "eps_root", "initial_accumulator_value", "initial_scale", "weight_decay")
_FLAGS = ("nesterov", "centered", "eps_in_sqrt", "bias_correction")


def _check_hyperparameter(name: str, value, who: str) -> None:
    """A UserError naming ``who``, ``name`` and ``value`` unless it is a number / flag in its allowed range."""
    if name in _FLAGS:
        if not isinstance(value, (bool, np.bool_)):
            raise UserError(f"{who}: {name} must be True or False, got {value!r}")
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise UserError(f"{who}: {name} must be a finite number, got {value!r}")
    if name in _UNIT_INTERVAL and not 0 <= value < 1:
        raise UserError(f"{who}: {name} must be in [0, 1), got {value!r}")
    if name in _NON_NEGATIVE and value < 0:
        raise UserError(f"{who}: {name} must be >= 0, got {value!r}")


def _config_dict(config) -> dict:
    if isinstance(config, Mapping):
        return dict(config)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    raise TypeError(
        f"optimizer config must be a mapping or a dataclass instance, got {type(config).__name__}"
    )


def optimizer_hyperparameters(name: str) -> tuple[str, ...]:
    """The hyper-parameters accepted for optimizer ``name``."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZER_NAMES)}")
    return _OPTIMIZERS[key][2]


def make_optimizer(config) -> optax.GradientTransformation:
    """The optax optimizer named by ``config["name"]`` with the config's hyper-parameters.

    ``config`` is a mapping or dataclass, e.g. ``{"name": "nesterov",
    "learning_rate": 0.01, "momentum": 0.9}``. Names: sgd (plain gradient
    descent; aliases gd, plain), momentum, nesterov (alias nag), adam, adamw,
    adagrad, rmsprop. ``learning_rate`` is required and may be an optax
    schedule. Entries set to None are ignored (optax's default is used);
    ``momentum`` defaults to 0.9 for momentum/nesterov. A learning rate that
    is not a finite number > 0 (or a callable schedule) is an error here, before
    any training: -1 trains uphill, 0 not at all, and "fast" or True is no number. So is a
    decay rate (momentum, b1, b2, decay) outside [0, 1), a negative eps / weight decay /
    accumulator, and a flag (nesterov, centered, ...) that is not a bool.
    """
    cfg = {k: v for k, v in _config_dict(config).items() if v is not None}
    if "name" not in cfg:
        raise ValueError(f"optimizer config needs a 'name', one of {list(OPTIMIZER_NAMES)}")
    name = cfg.pop("name")
    if not isinstance(name, str):
        raise TypeError(f"optimizer name must be a string, got {name!r}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZER_NAMES)}")
    factory, fixed, allowed, defaults = _OPTIMIZERS[key]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown hyper-parameter(s) {unknown} for optimizer {key!r}; allowed: {list(allowed)}"
        )
    if "learning_rate" not in cfg:
        raise ValueError(f"optimizer {key!r} needs a learning_rate (a float or an optax schedule)")
    check_learning_rate(cfg["learning_rate"], "learning_rate", f"optimizer {key!r}")
    for hp, value in cfg.items():
        if hp != "learning_rate":
            _check_hyperparameter(hp, value, f"optimizer {key!r}")
    kwargs = {**defaults, **cfg, **fixed}
    return factory(**kwargs)


def _layer_name_tuple(names, who: str) -> tuple[str, ...]:
    """``names`` as a tuple of non-empty strings (one string is one name); anything else is an error."""
    if isinstance(names, str):
        names = (names,)
    try:
        names = tuple(names)
    except TypeError:
        raise UserError(f"{who}: layer names must be a string or an iterable of strings, got {names!r}") from None
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise UserError(f"{who}: layer names must be non-empty strings (nested ones '/'-joined), got {bad!r}")
    return names


def _check_layers(names: Iterable[str], tree, who: str) -> None:
    """An error naming every name of ``names`` that is no (nested) layer of the params ``tree``, with near matches."""
    have = nested_layer_names(tree) if isinstance(tree, Mapping) else []
    known = set(have)
    missing = [n for n in names if n not in known]
    if not missing:
        return
    hints = []
    for n in missing:
        near = difflib.get_close_matches(n, have, n=3, cutoff=0.6)
        hints.append(f"{n!r} (near: {', '.join(map(repr, near))})" if near else repr(n))
    top = [k for k in tree] if isinstance(tree, Mapping) else []
    inner = [n for n in have if "/" in n]
    how = (f" (a layer inside a block by its nested name, e.g. {inner[-1]!r}, or a whole block by its prefix,"
           f" e.g. {inner[-1].rsplit('/', 1)[0]!r})" if inner else "")
    raise UserError(f"{who}: no layer(s) {', '.join(hints)} in the params; top-level layers are {top}{how}")


def freeze(tx: optax.GradientTransformation, where: Where) -> optax.GradientTransformation:
    """Wrap ``tx`` so the arrays selected by ``where`` get zero updates (``optax.partition`` + ``set_to_zero``)."""

    def labels(tree):
        sel = resolve_where(where, tree)
        return jax.tree.map(lambda frozen: "frozen" if frozen else "train", sel)

    return optax.partition({"train": tx, "frozen": optax.set_to_zero()}, labels)


def freeze_layers(tx: optax.GradientTransformation, names: Iterable[str]) -> optax.GradientTransformation:
    """Wrap ``tx`` so every array of the layers ``names`` gets zero updates; ``names=()`` freezes nothing.

    A name is a layer's nested name inside graph blocks (``"stage2/block1/conv1"``) or a block's
    prefix (``"stage2"`` or ``"stage2/block1"`` freeze every layer inside); see
    :func:`jigcnn.optim.select.nested_layer_names`. Names are checked against the params when
    the optimizer state is built (``tx.init``): an unknown one is an error listing near matches.

    Unfreeze by building ``freeze_layers(base_tx, other_names)`` and either
    re-initialising its state from the current params or moving the old state
    over with :func:`carry_state`.
    """
    names = _layer_name_tuple(names, "freeze_layers")
    wanted = frozenset(names)

    def labels(tree):
        _check_layers(names, tree, "freeze_layers")
        sel = jax.tree_util.tree_map_with_path(lambda p, _: in_layers(wanted, p), tree)
        return jax.tree.map(lambda frozen: "frozen" if frozen else "train", sel)

    return optax.partition({"train": tx, "frozen": optax.set_to_zero()}, labels)


def exclude_biases(
    tx: optax.GradientTransformation, layers: Iterable[str] | None = None
) -> optax.GradientTransformation:
    """Wrap ``tx`` so the biases (of all layers, or of ``layers``: nested names or block prefixes) do not learn."""
    names = None if layers is None else _layer_name_tuple(layers, "exclude_biases")
    wanted = None if names is None else frozenset(names)

    def labels(tree):
        if names is not None:
            _check_layers(names, tree, "exclude_biases")

        def frozen(path, leaf):
            return biases_only(path, leaf) and (wanted is None or in_layers(wanted, path))

        sel = jax.tree_util.tree_map_with_path(frozen, tree)
        return jax.tree.map(lambda f: "frozen" if f else "train", sel)

    return optax.partition({"train": tx, "frozen": optax.set_to_zero()}, labels)


def carry_state(old_state, new_state):
    """``new_state`` with every array that also exists (same shape and dtype) in ``old_state`` carried over.

    For unfreezing: ``carry_state(old_state, new_tx.init(params))`` keeps the
    step count (so schedules go on) and the moments of the arrays that learned
    before; newly unfrozen arrays start with fresh (zero) optimizer state.
    Both states must come from the same base optimizer wrapped the same way.
    """

    def pick(new, old):
        if isinstance(new, MaskedNode) or isinstance(old, MaskedNode):
            return new
        if (
            hasattr(new, "shape")
            and hasattr(old, "shape")
            and new.shape == old.shape
            and new.dtype == old.dtype
        ):
            return old
        return new

    try:
        return jax.tree.map(pick, new_state, old_state, is_leaf=_is_masked_node)
    except (ValueError, TypeError) as e:
        raise ValueError(
            "carry_state: the two optimizer states have different structures; build both "
            f"from the same base optimizer and wrappers ({e})"
        ) from None
