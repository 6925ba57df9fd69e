"""The network-level hand-written backward pass: the chain rule of Eq. 1a, layer by layer."""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from jigcnn.activations import canonical_name
from jigcnn.backprop.losses import output_gradient, softmax_cross_entropy_delta
from jigcnn.backprop.registry import rule_for
from jigcnn.objective import Aux, resolve_loss


def _ends_in_softmax(layer) -> bool:
    name = getattr(layer, "activation", None) or getattr(layer, "fn", None)
    return isinstance(name, str) and canonical_name(name) == "softmax"


def forward_with_caches(model, params, state, x, *, train: bool, key=None):
    """Run the hand-written forward pass: (outputs, new_state, caches in layer order)."""
    caches, new_state = [], {}
    for layer, k in zip(model.layers, model.layer_keys(key)):
        x, s, cache = rule_for(layer).forward(layer, params.get(layer.name, {}), state.get(layer.name, {}), x, train=train, key=k)
        caches.append(cache)
        if s:
            new_state[layer.name] = s
    return x, new_state, caches


def backward(model, params, state, caches, dy, *, last_delta=None):
    """Chain the layers' hand-written backward passes from dL/d(outputs) back to the input.

    Returns (dL/d(input), param_grads keyed like params, per-layer records keyed by name).
    `last_delta`, when given, is dL/dz of the last layer (fused softmax + cross-entropy).
    """
    grads, records = {}, {}
    g = dy
    for i in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[i]
        p, s = params.get(layer.name, {}), state.get(layer.name, {})
        delta = last_delta if i == len(model.layers) - 1 else None
        g, layer_grads, record = rule_for(layer).backward(layer, p, s, caches[i], g, delta=delta)
        if p:
            grads[layer.name] = {key: layer_grads[key] for key in p}
        if record:
            records[layer.name] = record
    return g, grads, records


def manual_value_and_grad(model, loss) -> Callable:
    """`f(params, state, x, targets, *, train, key) -> ((loss, Aux), grads)` by the paper's equations.

    Same signature and results as `jigcnn.grad.autodiff_value_and_grad`, plus `Aux.intermediates`:
    per layer name, the layer input, activation derivative N', deltas dL/dz and dL/dw that the
    gradient diagnostic (paper Fig. 4) reads. A net ending in softmax with the `cross_entropy`
    loss uses the combined gradient (s - t)/N.
    """
    name, loss_fn = resolve_loss(loss)
    if name is None:
        raise ValueError("manual_value_and_grad needs one of jigcnn.losses' losses (by name or function); "
                         "a custom loss has no hand-written gradient")
    fused = name == "cross_entropy" and bool(model.layers) and _ends_in_softmax(model.layers[-1])

    def hand_written_value_and_grad(params, state, x, targets, *, train: bool = True, key=None):
        outputs, new_state, caches = forward_with_caches(model, params, state, x, train=train, key=key)
        value = loss_fn(outputs, targets)
        if fused:
            dy, last_delta = jnp.zeros_like(outputs), softmax_cross_entropy_delta(outputs, targets)
        else:
            dy, last_delta = output_gradient(name, outputs, targets), None
        _, grads, records = backward(model, params, state, caches, dy, last_delta=last_delta)
        return (value, Aux(new_state, outputs, records)), grads

    return hand_written_value_and_grad
