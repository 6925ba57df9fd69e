"""Fast kernels: few-channel convs (`fast.conv`), wide convs on CPU (`fast.wide_conv`), pooling, dense.

Single-input-channel convolutions run native C++ kernels on the CPU when a compiler is there
(`fast.native`); reverse mode reaches them through `fast.kernel_tangent` (imported when first
differentiated: `jax.extend` costs ~30 ms of import). Each is tested against the plain
formulation (tests/test_fast_*.py).
"""

from jigcnn.fast import barrier, conv, dense, native, pool, wide_conv

__all__ = ["barrier", "conv", "dense", "native", "pool", "wide_conv"]
