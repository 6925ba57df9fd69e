"""Fast kernels: few-channel convs (`fast.conv`), wide convs on CPU (`fast.wide_conv`), pooling, dense.

Each is tested against the plain formulation (tests/test_fast_*.py).
"""

from jigcnn.fast import barrier, conv, dense, pool, wide_conv

__all__ = ["barrier", "conv", "dense", "pool", "wide_conv"]
