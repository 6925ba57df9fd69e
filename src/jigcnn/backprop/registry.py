"""Which hand-written forward/backward pair serves each layer type; users register their own."""

from __future__ import annotations

from typing import Callable, NamedTuple

from jigcnn.backprop import conv, graph, other
from jigcnn.layers import Activation, AvgPool, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool, PReLU
from jigcnn.layers.graph import GlobalAvgPool, IdentityShortcut, Parallel, Residual, Serial


class Rule(NamedTuple):
    """A layer type's hand-written pair.

    forward(layer, params, state, x, *, train, key) -> (y, new_state, cache)
    backward(layer, params, state, cache, dy, *, delta=None) -> (dx, param_grads, record)
    `delta`, when given, is dL/dz directly (the fused softmax + cross-entropy case).
    `record` holds what the diagnostic reads: input, act_deriv, delta, weight_grad.
    """

    forward: Callable
    backward: Callable


_RULES: dict[type, Rule] = {
    Conv2D: Rule(conv.neurons_forward, conv.conv_backward),
    Dense: Rule(conv.neurons_forward, conv.dense_backward),
    MaxPool: Rule(other.pool_forward, other.max_pool_backward),
    AvgPool: Rule(other.pool_forward, other.avg_pool_backward),
    BatchNorm: Rule(other.batch_norm_forward, other.batch_norm_backward),
    Dropout: Rule(other.dropout_forward, other.dropout_backward),
    Flatten: Rule(other.flatten_forward, other.flatten_backward),
    Activation: Rule(other.activation_forward, other.activation_backward),
    PReLU: Rule(other.prelu_forward, other.prelu_backward),
    # the graph combinators: the chain rule of Eq. 1a over the graph (fork, sum, concatenation)
    Serial: Rule(graph.serial_forward, graph.serial_backward),
    Residual: Rule(graph.residual_forward, graph.residual_backward),
    Parallel: Rule(graph.parallel_forward, graph.parallel_backward),
    IdentityShortcut: Rule(graph.identity_shortcut_forward, graph.identity_shortcut_backward),
    GlobalAvgPool: Rule(graph.global_avg_pool_forward, graph.global_avg_pool_backward),
}


def register(layer_type: type, forward: Callable, backward: Callable) -> None:
    """Register the hand-written forward/backward pair of a (new) layer type."""
    _RULES[layer_type] = Rule(forward, backward)


def rule_for(layer) -> Rule:
    """The hand-written pair for `layer` (looked up through its class hierarchy)."""
    for cls in type(layer).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    raise TypeError(f"{layer.label()}: no hand-written backward registered for {type(layer).__name__}; "
                    "use jigcnn.backprop.register(LayerType, forward, backward)")


graph.bind_registry(rule_for)  # the combinators look their inner layers' rules up here
