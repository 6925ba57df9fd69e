"""Layer specs: each infers shapes without data and applies as a pure function."""

from jigcnn.layers.base import Layer
from jigcnn.layers.conv import Conv2D
from jigcnn.layers.dense import Dense
from jigcnn.layers.graph import GlobalAvgPool, IdentityShortcut, Parallel, Residual, Serial
from jigcnn.layers.misc import Activation, Dropout, Flatten, PReLU
from jigcnn.layers.norm import BatchNorm
from jigcnn.layers.pool import AvgPool, MaxPool

__all__ = ["Layer", "Conv2D", "Dense", "Flatten", "Dropout", "Activation", "PReLU", "BatchNorm", "MaxPool", "AvgPool",
           "Serial", "Residual", "Parallel", "IdentityShortcut", "GlobalAvgPool"]
