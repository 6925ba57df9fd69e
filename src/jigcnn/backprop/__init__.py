"""Hand-written backpropagation from the paper's equations (Eqs. 1, 1a, 2, 2a).

Nothing in this package calls jax's differentiation (grad, vjp, jvp, linear_transpose,
custom_vjp): every derivative is written out. `tests/test_backprop_purity.py` enforces it.
"""

from jigcnn.backprop.network import backward, forward_with_caches, manual_value_and_grad
from jigcnn.backprop.registry import Rule, register, rule_for

__all__ = ["manual_value_and_grad", "forward_with_caches", "backward", "register", "rule_for", "Rule"]
