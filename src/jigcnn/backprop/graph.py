"""Hand-written backward passes of the graph combinators: the chain rule of Eq. 1a over a graph.

Eq. 1a expands dL/dN of a hidden neuron as the sum, over every neuron it feeds, of that neuron's
delta times the connecting weight. Over a graph of layers this is three rules, each a function here:

* at a **fork** (one tensor feeding several layers: a residual block's body and shortcut, the
  branches of a `Parallel`) the deltas that come back along each edge **add up** (`fork`);
* at a **sum** (a residual join, a `Parallel(join="sum")`) every addend receives the **same**
  delta (`sum_join`);
* at a **concatenation** each branch receives **its slice** of the delta along the channel axis
  (`concat_split`).

Inside each block the inner layers' own hand-written rules (`registry.rule_for`) chain as in
`backprop.network.backward`, serially. The per-layer records the Fig. 4 diagnostic reads come back
nested by inner name (``record["block1"]["conv1"]``), like the params.
"""

from __future__ import annotations

import jax.numpy as jnp

from jigcnn.activations import get_activation
from jigcnn.backprop.activations import delta as activation_delta
from jigcnn.layers.base import pair

# The inner layers' rule lookup: `jigcnn.backprop.registry.rule_for`, bound by the registry when it
# imports this module (the registry lists these rules beside the others, so importing it back here
# would be a cycle).
_RULE_FOR = None


def bind_registry(rule_for) -> None:
    """Set the lookup of the inner layers' hand-written pairs (called once by `jigcnn.backprop.registry`)."""
    global _RULE_FOR
    _RULE_FOR = rule_for


def rule_for(layer):
    """The hand-written pair of an inner layer, as the registry finds it."""
    return _RULE_FOR(layer)


def fork(deltas):
    """Eq. 1a at a fork: dL/dx of a tensor that feeds several layers is the sum of the deltas coming back along each."""
    total = deltas[0]
    for d in deltas[1:]:
        total = total + d
    return total


def sum_join(dy, n: int):
    """Eq. 1a through y = a_1 + ... + a_n: dy/da_i is the identity, so each addend receives dL/dy itself."""
    return [dy] * n


def concat_split(dy, widths):
    """Eq. 1a through a channel concatenation: each branch receives its slice of dL/dy (channel axis last)."""
    out, start = [], 0
    for w in widths:
        out.append(dy[..., start: start + w])
        start += w
    return out


def _chain_forward(layers, params, state, x, keys, new_state, *, train):
    caches = []
    for layer, k in zip(layers, keys):
        x, s, cache = rule_for(layer).forward(layer, params.get(layer.name, {}), state.get(layer.name, {}), x,
                                              train=train, key=k)
        caches.append(cache)
        if s:
            new_state[layer.name] = s
    return x, caches


def _chain_backward(layers, params, state, caches, dy, grads, records, *, delta=None):
    """The inner layers of a chain, last to first (Eq. 1a layer by layer); `delta` goes to the last one."""
    g = dy
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        p, s = params.get(layer.name, {}), state.get(layer.name, {})
        g, layer_grads, record = rule_for(layer).backward(layer, p, s, caches[i], g,
                                                          delta=delta if i == len(layers) - 1 else None)
        if p:
            grads[layer.name] = {key: layer_grads[key] for key in p}
        if record:
            records[layer.name] = record
    return g


def serial_forward(layer, params, state, x, *, train, key):
    """Forward pass of a `Serial` block keeping each inner layer's cache."""
    new_state = {}
    y, caches = _chain_forward(layer.layers, params, state, x, layer.child_keys(key), new_state, train=train)
    return y, new_state, caches


def serial_backward(layer, params, state, cache, dy, *, delta=None):
    """Backward pass of a `Serial` block: the inner rules chained (Eq. 1a); grads and records nested by inner name."""
    grads, records = {}, {}
    dx = _chain_backward(layer.layers, params, state, cache, dy, grads, records, delta=delta)
    return dx, grads, records


def residual_forward(layer, params, state, x, *, train, key):
    """Forward pass of a `Residual` block keeping the body's and the shortcut's caches and the pre-activation sum."""
    new_state = {}
    keys = layer.child_keys(key)
    h, body_caches = _chain_forward(layer.body, params, state, x, keys, new_state, train=train)
    short_cache = None
    if layer.shortcut is None:
        s = x
    else:
        s, short_cache = _chain_forward((layer.shortcut,), params, state, x, keys[-1:], new_state, train=train)
    z = h + s
    y = get_activation(layer.activation)(z)
    return y, new_state, (body_caches, short_cache, z, y)


def residual_backward(layer, params, state, cache, dy, *, delta=None):
    """Backward pass of y = f(x + body(x)): dL/dz = N' dL/dy; both addends get it (sum); their dL/dx add up (fork)."""
    body_caches, short_cache, z, y = cache
    dz = delta if delta is not None else activation_delta(layer.activation, z, y, dy)
    d_body, d_short = sum_join(dz, 2)
    grads, records = {}, {}
    dx_body = _chain_backward(layer.body, params, state, body_caches, d_body, grads, records)
    if layer.shortcut is None:
        dx_short = d_short
    else:
        dx_short = _chain_backward((layer.shortcut,), params, state, short_cache, d_short, grads, records)
    return fork([dx_body, dx_short]), grads, records


def parallel_forward(layer, params, state, x, *, train, key):
    """Forward pass of a `Parallel` block keeping each branch's cache and the channel widths."""
    new_state, caches, outs = {}, [], []
    for branch, k in zip(layer.branches, layer.child_keys(key)):
        y, c = _chain_forward((branch,), params, state, x, [k], new_state, train=train)
        outs.append(y)
        caches.append(c)
    widths = [o.shape[-1] for o in outs]
    if layer.join == "sum":
        y = outs[0]
        for o in outs[1:]:
            y = y + o
    else:
        y = jnp.concatenate(outs, axis=-1)
    return y, new_state, (caches, widths)


def parallel_backward(layer, params, state, cache, dy, *, delta=None):
    """Backward pass of parallel branches: the same delta (sum) or its slices (concat) per branch; dL/dx add up (fork)."""
    if delta is not None:
        raise ValueError(f"{layer.label()}: a fused output delta needs an activation at the end of the net, "
                         "not a Parallel block")
    caches, widths = cache
    parts = sum_join(dy, len(layer.branches)) if layer.join == "sum" else concat_split(dy, widths)
    grads, records = {}, {}
    dxs = [_chain_backward((branch,), params, state, c, d, grads, records)
           for branch, c, d in zip(layer.branches, caches, parts)]
    return fork(dxs), grads, records


def identity_shortcut_forward(layer, params, state, x, *, train, key):
    """Forward pass of the option-A shortcut keeping the input shape."""
    y, _ = layer.apply(params, state, x)
    return y, state, x.shape


def identity_shortcut_backward(layer, params, state, cache, dy, *, delta=None):
    """Option A: the gradient of the kept channels goes back to the subsampled positions; the padding gets none."""
    n, h, w, c = cache
    sy, sx = pair(layer.strides, "strides", layer)
    dx = jnp.zeros(cache, dy.dtype)
    return dx.at[:, ::sy, ::sx, :].set(dy[..., :c]), {}, {}


def global_avg_pool_forward(layer, params, state, x, *, train, key):
    """Forward pass of global average pooling keeping the input shape."""
    y, _ = layer.apply(params, state, x)
    return y, state, x.shape


def global_avg_pool_backward(layer, params, state, cache, dy, *, delta=None):
    """Global average pooling: every position of a channel gets 1/(H W) of the channel's gradient."""
    n, h, w, c = cache
    return jnp.broadcast_to((dy / (h * w))[:, None, None, :], cache), {}, {}


__all__ = ["bind_registry", "rule_for", "fork", "sum_join", "concat_split", "serial_forward", "serial_backward", "residual_forward",
           "residual_backward", "parallel_forward", "parallel_backward", "identity_shortcut_forward",
           "identity_shortcut_backward", "global_avg_pool_forward", "global_avg_pool_backward"]
