"""jigcnn's own kernels: few-channel convs (`banded`, `direct`, `conv`, `native`), wide convs on CPU, pooling, dense.

Reached only through `jigcnn.ops`, which decides per call which implementation runs. Module
by module, bottom up: `barrier` (keep XLA from fusing), `banded` (the banded-GEMM formulation),
`native` (C++ kernels through XLA FFI), `direct` (native where it serves, else banded),
`kernel_tangent` / `input_tangent` (the tangent primitives whose transposes are the weight
and input gradients), `conv` (the differentiable few-channel convolution), `dense`, `pool`,
`wide_conv`. Each is tested against the plain formulation (tests/test_fast_*.py), and the
equivalence suite's fault-injection check perturbs each kernel in turn.
"""
