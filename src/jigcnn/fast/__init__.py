"""Fast kernels for few-channel convolutions (see `jigcnn.fast.conv`); each is tested against the plain formulation."""

from jigcnn.fast import conv, dense, pool

__all__ = ["conv", "dense", "pool"]
