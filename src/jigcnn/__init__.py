"""jigcnn: IgNet in JAX -- pure CNN layer functions whose gradients exist twice."""

from jigcnn import activations, initializers, losses, metrics, zoo
from jigcnn.initializers import IgNetUniform, ignet
from jigcnn.layers import Activation, AvgPool, BatchNorm, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool, PReLU
from jigcnn.layers.graph import GlobalAvgPool, IdentityShortcut, Parallel, Residual, Serial
from jigcnn.model import Sequential

__version__ = "0.1.0"

_LAZY_SUBPACKAGES = ("backprop", "data", "diagnostics", "grad", "ops", "optim", "plots", "reference", "runtime",
                     "testing", "train")
# the verbs the README uses, imported from their modules on first use
_LAZY_NAMES = {"value_and_grad": "jigcnn.grad", "fit": "jigcnn.train.loop", "cross_validate": "jigcnn.train.cv",
               "configure_process": "jigcnn.runtime"}


def __getattr__(name):
    """Import the heavier subpackages (`jigcnn.train`, `jigcnn.data`, ...) and verbs (`fit`, ...) on first use."""
    import importlib

    if name in _LAZY_SUBPACKAGES:
        return importlib.import_module(f"jigcnn.{name}")
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jigcnn' has no attribute {name!r}")


def __dir__():
    """The public names, imported or not."""
    return sorted(set(globals()) | set(_LAZY_SUBPACKAGES) | set(_LAZY_NAMES))


__all__ = [
    "activations", "initializers", "losses", "metrics", "zoo",
    "IgNetUniform", "ignet",
    "Layer", "Conv2D", "Dense", "Flatten", "Dropout", "Activation", "PReLU", "BatchNorm", "MaxPool", "AvgPool",
    "Serial", "Residual", "Parallel", "IdentityShortcut", "GlobalAvgPool",
    "Sequential", "value_and_grad", "fit", "cross_validate", "configure_process",
]
