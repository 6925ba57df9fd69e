"""Check hand-written backward passes and autodiff against the reference oracle, the way the equivalence suite does.

The oracle is `jax.grad` through `jigcnn.reference` (plain lax / jnp forwards and losses, computed
in float64 when x64 is on). Three things are compared with it, each computed independently:

* ``"manual"``: the hand-written backward as training runs it (the `jigcnn.ops` kernels in force:
  fast kernels on by default);
* ``"manual_reference"``: the hand-written backward with every fast kernel off
  (``jigcnn.ops.using("reference")``): the paper's equations as `jigcnn.backprop` writes them;
* ``"autodiff"``: `jax.grad` through the layers' own forward (the fast path: custom primitives,
  native kernels).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jigcnn import ops, reference
from jigcnn.backprop.registry import Rule, rule_for

DEFAULT_RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
# Gradients that are zero in exact arithmetic (a conv bias feeding batch norm) come out of
# both paths as rounding noise; errors are measured against the largest gradient in the
# tree times this floor, not against the noise itself.
ZERO_FLOOR = 1e-6
MODES = ("manual", "manual_reference", "autodiff")


def relative_errors(reference_tree, candidate) -> dict:
    """Per-leaf max|a - b| / max(max|a|, ZERO_FLOOR * largest |a| in the whole tree)."""
    reference_tree = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), reference_tree)
    candidate = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), candidate)
    leaves = jax.tree_util.tree_leaves(reference_tree)
    scale = max([float(np.max(np.abs(a))) for a in leaves if a.size] + [0.0])
    floor = ZERO_FLOOR * scale if scale > 0 else np.finfo(np.float64).tiny

    def err(a, b):
        if a.shape != b.shape:
            raise AssertionError(f"shape mismatch: reference {a.shape} vs checked {b.shape}")
        if a.size == 0:
            return 0.0
        if not np.all(np.isfinite(b)) and np.all(np.isfinite(a)):
            return float("inf")
        return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), floor)

    return jax.tree_util.tree_map(err, reference_tree, candidate)


def max_error(errors) -> float:
    """The largest entry of a tree of errors (0 for an empty tree)."""
    return max(jax.tree_util.tree_leaves(errors) + [0.0])


def _dtype_ok(dtype):
    dtype = np.dtype(dtype)
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("float64 checks need jax.config.update('jax_enable_x64', True)")
    return dtype


def _check_modes(modes):
    modes = tuple(modes)
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise ValueError(f"modes must be a non-empty subset of {MODES}, got {modes!r}")
    return modes


def _oracle_cast(tree):
    """Floating arrays to float64 when x64 is on (the oracle's precision); other leaves as they are."""
    if not jax.config.jax_enable_x64:
        return tree
    return jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float64) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, tree)


def _raise_if_off(errors: dict, rtol: float, what: str) -> None:
    worst = {mode: max_error(e) for mode, e in errors.items()}
    bad = {mode: w for mode, w in worst.items() if not w <= rtol}
    if bad:
        detail = "; ".join(f"{mode}: {worst[mode]:.3g} {errors[mode]}" for mode in bad)
        raise AssertionError(f"{what} differs from the reference oracle (jax.grad of jigcnn.reference) by more "
                             f"than {rtol:g} in {sorted(bad)}: {detail}")


def check_backward(layer, in_shape, *, rule: Rule | None = None, batch: int = 2, dtype=np.float64,
                   train: bool = False, key=None, seed: int = 0, rtol: float | None = None,
                   params=None, state=None, x=None, modes=MODES, kernels=None) -> dict:
    """Compare `layer`'s hand-written backward (fast and reference kernels) and autodiff with the reference oracle.

    Draws parameters (`layer.init`), an input batch in [-1, 1) and an output cotangent, then
    compares the output, dL/dinput and dL/dparams of each of `modes` with ``jax.vjp`` of the
    layer's reference forward (`jigcnn.reference.forward`). `kernels`: the `jigcnn.ops`
    configuration checked by "manual" and "autodiff" (default: the current one). Raises
    AssertionError naming the modes that are off; returns {mode: per-array relative errors}.
    """
    dtype = _dtype_ok(dtype)
    modes = _check_modes(modes)
    rule = rule or rule_for(layer)
    rtol = DEFAULT_RTOL[dtype] if rtol is None else rtol
    checked = ops.resolve(kernels)
    kinit, kx, kdy = jax.random.split(jax.random.key(seed), 3)
    _, p0, s0 = layer.init(kinit, tuple(in_shape), dtype)
    params = p0 if params is None else params
    state = s0 if state is None else state
    if x is None:
        x = jax.random.uniform(kx, (batch, *in_shape), dtype, -1.0, 1.0)

    def manual(p, s, inp, cot):
        y, new_state, cache = rule.forward(layer, p, s, inp, train=train, key=key)
        dx, dp, _ = rule.backward(layer, p, s, cache, cot)
        return {"output": y, "state": new_state, "input": dx, "params": {k: dp[k] for k in p}}

    def by_vjp(fn, p, s, inp, cot):
        y, vjp, new_state = jax.vjp(lambda pp, xx: fn(pp, s, xx), p, inp, has_aux=True)
        dp, dx = vjp(cot)
        return {"output": y, "state": new_state, "input": dx, "params": dp}

    @jax.jit
    def run(p, s, inp, cot):
        out = {}
        with ops.using(checked):
            if "manual" in modes:
                out["manual"] = manual(p, s, inp, cot)
            if "autodiff" in modes:
                out["autodiff"] = by_vjp(lambda pp, ss, xx: layer.apply(pp, ss, xx, train=train, key=key), p, s, inp, cot)
        with ops.using(ops.REFERENCE):
            if "manual_reference" in modes:
                out["manual_reference"] = manual(p, s, inp, cot)
        p64, s64, x64, c64 = _oracle_cast((p, s, inp, cot))
        out["oracle"] = by_vjp(lambda pp, ss, xx: reference.forward(layer, pp, ss, xx, train=train, key=key),
                               p64, s64, x64, c64)
        return out

    y_shape = jax.eval_shape(lambda p, inp: reference.forward(layer, p, state, inp, train=train, key=key)[0],
                             params, x).shape
    dy = jax.random.normal(kdy, y_shape, dtype)
    results = run(params, state, x, dy)
    oracle = results.pop("oracle")
    errors = {mode: relative_errors(oracle, results[mode]) for mode in modes}
    _raise_if_off(errors, rtol, f"{layer.label()}: the backward")
    return errors


def check_network(model, loss, x, targets, *, params=None, state=None, train: bool = False, key=None,
                  rtol: float | None = None, seed: int = 0, modes=MODES, kernels=None) -> dict:
    """Compare a whole model's hand-written and autodiff loss, outputs, state and gradients with the reference oracle.

    The oracle is `jigcnn.reference.value_and_grad` (float64 when x64 is on). `kernels`: the
    `jigcnn.ops` configuration checked by "manual" and "autodiff" (default: the current one).
    Raises AssertionError naming the modes that are off; returns {mode: per-array relative errors}.
    """
    from jigcnn.backprop.network import manual_value_and_grad
    from jigcnn.grad import autodiff_value_and_grad

    dtype = _dtype_ok(x.dtype)
    modes = _check_modes(modes)
    rtol = DEFAULT_RTOL[dtype] if rtol is None else rtol
    checked = ops.resolve(kernels)
    if params is None or state is None:
        params, state = model.init(jax.random.key(seed), x.shape[1:], dtype)
    manual_fn = manual_value_and_grad(model, loss)
    auto_fn = autodiff_value_and_grad(model, loss)
    oracle_fn = reference.value_and_grad(model, loss)

    def summary(result):
        (value, aux), grads = result
        return {"loss": value, "outputs": aux.outputs, "state": aux.state, "grads": grads}

    @jax.jit
    def run(p, s, xx, t, k):
        out = {}
        with ops.using(checked):
            if "manual" in modes:
                out["manual"] = summary(manual_fn(p, s, xx, t, train=train, key=k))
            if "autodiff" in modes:
                out["autodiff"] = summary(auto_fn(p, s, xx, t, train=train, key=k))
        with ops.using(ops.REFERENCE):
            if "manual_reference" in modes:
                out["manual_reference"] = summary(manual_fn(p, s, xx, t, train=train, key=k))
        p64, s64, x64, t64 = _oracle_cast((p, s, xx, t))
        out["oracle"] = summary(oracle_fn(p64, s64, x64, t64, train=train, key=k))
        return out

    results = run(params, state, x, targets, key)
    oracle = results.pop("oracle")
    errors = {mode: relative_errors(oracle, results[mode]) for mode in modes}
    _raise_if_off(errors, rtol, "the network's loss / gradients")
    return errors


__all__ = ["DEFAULT_RTOL", "MODES", "ZERO_FLOOR", "check_backward", "check_network", "max_error", "relative_errors"]
