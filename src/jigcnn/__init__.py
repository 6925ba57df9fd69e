"""jigcnn: IgNet in JAX -- pure CNN layer functions whose gradients exist twice."""

from jigcnn import activations, initializers, losses, metrics, zoo
from jigcnn.initializers import IgNetUniform, ignet
from jigcnn.layers import Activation, AvgPool, BatchNorm, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool, PReLU
from jigcnn.model import Sequential

__version__ = "0.1.0"

_LAZY_SUBPACKAGES = ("backprop", "data", "diagnostics", "grad", "optim", "plots", "testing", "train")


def __getattr__(name):
    """Import the heavier subpackages (`jigcnn.train`, `jigcnn.data`, ...) on first use."""
    if name in _LAZY_SUBPACKAGES:
        import importlib

        return importlib.import_module(f"jigcnn.{name}")
    raise AttributeError(f"module 'jigcnn' has no attribute {name!r}")

__all__ = [
    "activations", "initializers", "losses", "metrics", "zoo",
    "IgNetUniform", "ignet",
    "Layer", "Conv2D", "Dense", "Flatten", "Dropout", "Activation", "PReLU", "BatchNorm", "MaxPool", "AvgPool",
    "Sequential",
]
