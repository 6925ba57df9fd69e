"""Freezeconnect and dropconnect as optax gradient transformations (paper Sec. 5.5.1).

* **freezeconnect** -- a random portion of the weights is *suspended from
  learning* (its update is exactly zero) but still takes part in the forward
  pass.
* **dropconnect** -- a random portion of the weights is removed from the forward
  pass *and* from learning. The transform's state owns the mask; the forward pass
  gets the masked weights from :func:`dropconnect_params`, so the forward pass and
  the update of one step always use the same mask.

In both, ``rate`` is the probability that an element is masked (frozen /
dropped); masks are boolean pytrees shaped like the params where ``True`` means
*kept* (learns / takes part). Arrays that are not selected (rate 0) carry a
scalar ``True`` mask: no memory, no random numbers, and their updates pass
through untouched. See ``docs/regularisation.md`` for the defaults and where to
put the transforms in a chain.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.transforms import MaskedNode

from jigcnn import prng
from jigcnn.optim.select import (
    Rate,
    Where,
    _is_masked_node,
    kernels_only,
    resolve_rates,
    validate_rate_spec,
)

RESAMPLE_POLICIES = ("step", "epoch", "never")


class FreezeConnectState(NamedTuple):
    """State of :func:`freezeconnect`: ``mask`` (True = learns), PRNG ``key``, update ``count``."""

    mask: Any
    key: jax.Array
    count: jax.Array


class DropConnectState(NamedTuple):
    """State of :func:`dropconnect`: ``mask`` (True = kept), forward ``scale`` per array, ``key``, ``count``."""

    mask: Any
    scale: Any
    key: jax.Array
    count: jax.Array


def _check_key(key, who: str):
    if key is None:
        raise TypeError(f"{who} needs a PRNG key: pass key=jax.random.key(seed)")
    if not isinstance(key, jax.Array):
        raise TypeError(
            f"{who}: key must be a JAX PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), "
            f"got {type(key).__name__} {key!r}"
        )
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise TypeError(f"{who}: key must be a single PRNG key, got a batch of shape {key.shape}")
        return key
    if key.dtype == jnp.uint32 and key.shape == (2,):
        return key
    raise TypeError(
        f"{who}: key must be a JAX PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), "
        f"got an array of dtype {key.dtype} and shape {key.shape}"
    )


def _check_resample(resample: str, steps_per_epoch, who: str):
    if resample not in RESAMPLE_POLICIES:
        raise ValueError(f"{who}: resample must be one of {RESAMPLE_POLICIES}, got {resample!r}")
    if resample == "epoch":
        if steps_per_epoch is None:
            raise ValueError(
                f"{who}: resample='epoch' needs steps_per_epoch (updates per epoch, e.g. "
                "n_train // batch_size with jigcnn.train.fit); or pass resample='step' or 'never'"
            )
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ValueError(f"{who}: steps_per_epoch must be a positive int, got {steps_per_epoch!r}")


def _draw_masks(key, rates, like):
    """Fresh boolean masks (True with probability 1 - rate); scalar True where rate is 0."""
    leaves, treedef = jax.tree.flatten(like)
    rate_leaves = treedef.flatten_up_to(rates)
    keys = jax.random.split(key, max(len(leaves), 1))
    masks = [
        jnp.ones((), bool) if r == 0.0 else prng.bernoulli(k, 1.0 - r, jnp.shape(x))
        for k, r, x in zip(keys, rate_leaves, leaves)
    ]
    return treedef.unflatten(masks)


def _advance(mask, key, count, rates, like, resample, steps_per_epoch):
    """Count one update and resample the mask if the policy says so (jit-friendly)."""
    count = optax.safe_increment(count)
    if resample == "never":
        return mask, key, count

    def draw(k):
        k, sub = jax.random.split(k)
        return _draw_masks(sub, rates, like), k

    if resample == "step":
        mask, key = draw(key)
    else:
        mask, key = jax.lax.cond(count % steps_per_epoch == 0, draw, lambda k: (mask, k), key)
    return mask, key, count


def _zero_masked(updates, mask, rates):
    """Exact zero updates where the mask is False; unselected arrays pass through untouched."""
    return jax.tree.map(
        lambda u, m, r: u if r == 0.0 else jnp.where(m, u, jnp.zeros_like(u)),
        updates,
        mask,
        rates,
    )


def freezeconnect(
    rate: Rate,
    *,
    key: jax.Array,
    where: Where = kernels_only,
    resample: str = "epoch",
    steps_per_epoch: int | None = None,
) -> optax.GradientTransformation:
    """Freezeconnect: zero the updates of a random ``rate`` portion of the selected weights.

    Args:
      rate: probability that an element is frozen, in ``[0, 1)``; a float or a
        pytree (prefix of the params) of floats / None.
      key: PRNG key (``jax.random.key(seed)``); it lives in the state and is
        split on every resample.
      where: which arrays are touched (see :mod:`jigcnn.optim.select`); default
        the conv/dense kernels only, never biases.
      resample: ``"epoch"`` (default: a fresh frozen set every
        ``steps_per_epoch`` updates), ``"step"`` (every update) or ``"never"``
        (one fixed set for the whole run).
      steps_per_epoch: updates per epoch, required by ``resample="epoch"``.

    Place it *after* the optimizer (last in ``optax.chain``) to guarantee that
    frozen elements get exactly zero updates with any optimizer.
    """
    who = "freezeconnect"
    validate_rate_spec(rate)
    key = _check_key(key, who)
    _check_resample(resample, steps_per_epoch, who)

    def init_fn(params):
        rates = resolve_rates(rate, where, params)
        mask = _draw_masks(jax.random.fold_in(key, 0), rates, params)
        return FreezeConnectState(mask=mask, key=key, count=jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        rates = resolve_rates(rate, where, updates)
        new_updates = _zero_masked(updates, state.mask, rates)
        mask, k, count = _advance(
            state.mask, state.key, state.count, rates, updates, resample, steps_per_epoch
        )
        return new_updates, FreezeConnectState(mask=mask, key=k, count=count)

    return optax.GradientTransformation(init_fn, update_fn)


def dropconnect(
    rate: Rate,
    *,
    key: jax.Array,
    where: Where = kernels_only,
    resample: str = "step",
    steps_per_epoch: int | None = None,
    scale: bool = True,
) -> optax.GradientTransformation:
    """Dropconnect: drop a random ``rate`` portion of the selected weights from the forward pass and learning.

    Args:
      rate: probability that an element is dropped, in ``[0, 1)``; a float or a
        pytree (prefix of the params) of floats / None.
      key: PRNG key (``jax.random.key(seed)``), kept in the state.
      where: which arrays are touched; default the conv/dense kernels only.
      resample: ``"step"`` (default, as in dropconnect's original definition: a
        fresh mask for every mini-batch), ``"epoch"`` or ``"never"``.
      steps_per_epoch: updates per epoch, required by ``resample="epoch"``.
      scale: if True (default) the kept weights are multiplied by
        ``1 / (1 - rate)`` in the training forward pass ("inverted" scaling), so
        inference simply uses all the raw weights; if False the weights are only
        removed (the paper's literal wording) and inference with all weights
        over-drives each layer by ``1 / (1 - rate)`` on average.

    The forward pass must use :func:`dropconnect_params` (params, opt_state);
    ``update`` zeroes the dropped elements' updates and then draws the mask for
    the next step.
    """
    who = "dropconnect"
    validate_rate_spec(rate)
    key = _check_key(key, who)
    _check_resample(resample, steps_per_epoch, who)

    def scales(rates, params):
        # in each parameter's own dtype: a float64 model gets 1/(1 - rate) to float64 precision
        return jax.tree.map(
            lambda r, p: jnp.asarray(1.0 / (1.0 - r) if scale else 1.0, jnp.result_type(p)), rates, params
        )

    def init_fn(params):
        rates = resolve_rates(rate, where, params)
        mask = _draw_masks(jax.random.fold_in(key, 0), rates, params)
        return DropConnectState(
            mask=mask, scale=scales(rates, params), key=key, count=jnp.zeros((), jnp.int32)
        )

    def update_fn(updates, state, params=None):
        del params
        rates = resolve_rates(rate, where, updates)
        new_updates = _zero_masked(updates, state.mask, rates)
        mask, k, count = _advance(
            state.mask, state.key, state.count, rates, updates, resample, steps_per_epoch
        )
        return new_updates, DropConnectState(mask=mask, scale=state.scale, key=k, count=count)

    return optax.GradientTransformation(init_fn, update_fn)


def find_states(opt_state, kind) -> list:
    """Every state of type ``kind`` (e.g. :class:`DropConnectState`) inside a (chained, masked) optax state."""
    found = jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, kind))
    return [s for s in found if isinstance(s, kind)]


def _apply_drop(params, state: DropConnectState):
    def one(m, s, p):
        if isinstance(m, MaskedNode):
            return p
        if jnp.ndim(m) == 0 and jnp.ndim(p) > 0:  # unselected array: scalar True mask
            return p
        return jnp.where(m, p * s.astype(p.dtype), jnp.zeros_like(p))

    return jax.tree.map(one, state.mask, state.scale, params, is_leaf=_is_masked_node)


def dropconnect_params(params, opt_state):
    """The params for the training forward pass: dropped weights zeroed, kept ones scaled (see ``scale``).

    Finds every :class:`DropConnectState` inside ``opt_state`` (a chain, a
    ``masked``/``partition`` wrapper) and applies its mask; differentiate the
    loss through this function so that the gradient of a dropped weight is 0.
    Inference uses ``params`` as they are.
    """
    states = find_states(opt_state, DropConnectState)
    if not states:
        raise ValueError(
            "dropconnect_params: no DropConnectState in opt_state; build the optimizer with "
            "jigcnn.optim.dropconnect(...) in its chain"
        )
    for st in states:
        params = _apply_drop(params, st)
    return params
