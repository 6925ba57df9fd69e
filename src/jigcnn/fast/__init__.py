"""Fast kernels: few-channel convolutions (`jigcnn.fast.conv`), wide ones on CPU (`jigcnn.fast.wide_conv`); each tested against the plain formulation."""

from jigcnn.fast import barrier, conv, dense, pool, wide_conv

__all__ = ["barrier", "conv", "dense", "pool", "wide_conv"]
