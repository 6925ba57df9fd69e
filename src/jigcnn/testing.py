"""Check a hand-written backward pass against jax's autodiff, the way the equivalence suite does."""

from __future__ import annotations

import jax
import numpy as np

from jigcnn.backprop.registry import Rule, rule_for

DEFAULT_RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
# Gradients that are zero in exact arithmetic (a conv bias feeding batch norm) come out of
# both paths as rounding noise; errors are measured against the largest gradient in the
# tree times this floor, not against the noise itself.
ZERO_FLOOR = 1e-6


def relative_errors(reference, candidate) -> dict:
    """Per-leaf max|a - b| / max(max|a|, ZERO_FLOOR * largest |a| in the whole tree)."""
    reference = jax.tree_util.tree_map(np.asarray, reference)
    candidate = jax.tree_util.tree_map(np.asarray, candidate)
    leaves = jax.tree_util.tree_leaves(reference)
    scale = max([float(np.max(np.abs(a))) for a in leaves if a.size] + [0.0])
    floor = ZERO_FLOOR * scale if scale > 0 else np.finfo(np.float64).tiny

    def err(a, b):
        if a.shape != b.shape:
            raise AssertionError(f"shape mismatch: autodiff {a.shape} vs hand-written {b.shape}")
        if a.size == 0:
            return 0.0
        return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), floor)

    return jax.tree_util.tree_map(err, reference, candidate)


def max_error(errors) -> float:
    """The largest entry of a tree of errors (0 for an empty tree)."""
    return max(jax.tree_util.tree_leaves(errors) + [0.0])


def _dtype_ok(dtype):
    dtype = np.dtype(dtype)
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("float64 checks need jax.config.update('jax_enable_x64', True)")
    return dtype


def check_backward(layer, in_shape, *, rule: Rule | None = None, batch: int = 2, dtype=np.float64,
                   train: bool = False, key=None, seed: int = 0, rtol: float | None = None,
                   params=None, state=None, x=None) -> dict:
    """Compare `layer`'s hand-written backward with `jax.vjp` of its apply; raise AssertionError if off.

    Draws parameters (`layer.init`), an input batch in [-1, 1) and an output cotangent, then
    compares dL/dinput and dL/dparams. Returns the per-array relative errors.
    """
    dtype = _dtype_ok(dtype)
    rule = rule or rule_for(layer)
    rtol = DEFAULT_RTOL[dtype] if rtol is None else rtol
    kinit, kx, kdy = jax.random.split(jax.random.key(seed), 3)
    _, p0, s0 = layer.init(kinit, tuple(in_shape), dtype)
    params = p0 if params is None else params
    state = s0 if state is None else state
    if x is None:
        x = jax.random.uniform(kx, (batch, *in_shape), dtype, -1.0, 1.0)

    def forward(p, inp):
        return layer.apply(p, state, inp, train=train, key=key)[0]

    @jax.jit
    def autodiff(p, inp, cot):
        y, vjp = jax.vjp(forward, p, inp)
        return (y, *vjp(cot))

    @jax.jit
    def manual(p, inp, cot):
        y, _, cache = rule.forward(layer, p, state, inp, train=train, key=key)
        dx, dp, _ = rule.backward(layer, p, state, cache, cot)
        return y, dp, dx

    dy = jax.random.normal(kdy, jax.eval_shape(forward, params, x).shape, dtype)
    y, auto_dp, auto_dx = autodiff(params, x, dy)
    y_manual, dp, dx = manual(params, x, dy)
    errors = relative_errors({"output": y, "input": auto_dx, "params": auto_dp},
                             {"output": y_manual, "input": dx, "params": {k: dp[k] for k in auto_dp}})
    worst = max_error(errors)
    if not worst <= rtol:
        raise AssertionError(f"{layer.label()}: hand-written backward differs from autodiff by {worst:.3g} "
                             f"(> {rtol:g}): {errors}")
    return errors


def check_network(model, loss, x, targets, *, params=None, state=None, train: bool = False, key=None,
                  rtol: float | None = None, seed: int = 0) -> dict:
    """Compare a whole model's hand-written loss and gradients with jax.value_and_grad's."""
    from jigcnn.grad import autodiff_value_and_grad
    from jigcnn.backprop import manual_value_and_grad

    dtype = _dtype_ok(x.dtype)
    rtol = DEFAULT_RTOL[dtype] if rtol is None else rtol
    if params is None or state is None:
        params, state = model.init(jax.random.key(seed), x.shape[1:], dtype)
    auto = jax.jit(lambda p, s, xx, t, k: autodiff_value_and_grad(model, loss)(p, s, xx, t, train=train, key=k))
    manual = jax.jit(lambda p, s, xx, t, k: manual_value_and_grad(model, loss)(p, s, xx, t, train=train, key=k))
    (la, aux_a), ga = auto(params, state, x, targets, key)
    (lm, aux_m), gm = manual(params, state, x, targets, key)
    errors = relative_errors({"loss": la, "outputs": aux_a.outputs, "grads": ga},
                             {"loss": lm, "outputs": aux_m.outputs, "grads": gm})
    worst = max_error(errors)
    if not worst <= rtol:
        raise AssertionError(f"hand-written gradients differ from autodiff by {worst:.3g} (> {rtol:g}): {errors}")
    return errors
