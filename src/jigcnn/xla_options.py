"""Per-computation XLA compiler options for a model's jitted steps, and the "auto" choice.

XLA:CPU (jaxlib 0.10) hands convolutions, dots and reductions to its YNNPACK fusions by
default. For convolutions with tens of channels that is the slow choice, but YNN's
reductions are ~10x faster than XLA's own (batch norm's statistics over N, H, W). So
for models that run XLA's own convolution "auto" keeps only the reduction fusions
(:data:`YNN_REDUCE_ONLY`): the training step of ``zoo.vgg_small`` /
``thesis_cifar_cnn`` / ``thesis_fashion_cnn`` at batch 128 ran 1.24-1.32x faster with
no YNN fusions at all (:data:`NO_YNN_FUSION`) and another 1.07-1.18x with the
reductions kept (docs/performance.md). The few-channel nets whose every convolution
goes through :mod:`jigcnn.fast` keep XLA's defaults (their dense weight gradient uses a
YNN dot; the hand-written IgNet step was 3x slower without it). A jaxlib that does not
know the reduction fusion type gets :data:`NO_YNN_FUSION` instead.

Measured again with the native Winograd kernels serving the wide 3x3 convolutions (2026-12-04, one
process per setting, two rounds, samples/s): :data:`YNN_REDUCE_ONLY` against XLA's defaults
vgg_small 1,115 / 1,118 against 1,025 / 1,092, thesis_cifar_cnn 1,090 / 1,207 against 1,064 / 1,154,
thesis_fashion_cnn 1,333 / 1,458 against 1,391 / 1,329, resnet20 495 / 514 against 419 / 461: "auto"
keeps choosing it for every net with a wide convolution.

The options are passed per computation (``jax.jit(..., compiler_options=...)``), not
process-wide through ``XLA_FLAGS``, so they never change other code in the process.
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

NO_YNN_FUSION = {"xla_cpu_experimental_ynn_fusion_type": ""}
YNN_REDUCE_ONLY = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}


@functools.lru_cache(maxsize=None)
def wide_conv_options() -> tuple:
    """What "auto" gives nets with XLA convolutions: YNN_REDUCE_ONLY if this jaxlib takes it, else NO_YNN_FUSION."""
    try:
        jax.jit(lambda x: x.sum(), compiler_options=YNN_REDUCE_ONLY).lower(np.zeros(2, np.float32)).compile()
    except Exception:  # noqa: BLE001 -- any rejection of the option means: fall back
        return tuple(NO_YNN_FUSION.items())
    return tuple(YNN_REDUCE_ONLY.items())


def _convolutions(layers, shapes):
    """(Conv2D, its input shape) for every convolution of ``layers``, those inside graph blocks too."""
    from jigcnn.layers.conv import Conv2D
    from jigcnn.layers.graph import Block

    for layer, in_shape in zip(layers, shapes):
        if isinstance(layer, Block):
            rows = layer.child_shapes(tuple(in_shape))
            yield from _convolutions([r[0] for r in rows], [r[1] for r in rows])
        elif isinstance(layer, Conv2D):
            yield layer, tuple(in_shape)


def uses_xla_convolution(model, input_shape=None) -> bool:
    """Whether some ``Conv2D`` of ``model`` (inside Serial / Residual / Parallel blocks too) is a wide one.

    That is, a convolution that no banded / few-channel native kernel of `jigcnn.ops` serves: XLA's
    convolution runs it, or (3x3, float32, channels multiples of 16) the native Winograd kernels; the
    "auto" options were measured faster for both (module docstring).
    """
    from jigcnn import ops

    shapes = model.shapes(input_shape)
    for layer, in_shape in _convolutions(model.layers, shapes[:-1]):
        k, s, d, _, _ = layer.geometry(in_shape)
        kernel = jax.ShapeDtypeStruct((k[0], k[1], in_shape[-1], int(layer.features)), jnp.float32)
        # the native Winograd kernels take some convolutions the banded ones also serve (16 input channels)
        if (not ops.banded_serves(kernel.shape, s, d)
                or ops.winograd_native_serves(jax.ShapeDtypeStruct((1, *in_shape), jnp.float32), kernel, s, d)):
            return True
    return False


def resolve_compiler_options(spec, model=None, input_shape=None) -> dict | None:
    """The compiler options to jit ``model``'s computations with: ``spec`` None, a dict, or "auto".

    "auto": :func:`wide_conv_options` on the CPU backend when :func:`uses_xla_convolution` (convolutions
    nested in graph blocks count, so ``zoo.resnet20`` gets them), else
    None (XLA's defaults); also None when the model's input shape is unknown.
    """
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return dict(spec)
    if spec != "auto":
        raise ValueError(f"compiler_options must be None, a dict or 'auto', got {spec!r}")
    if model is None or jax.default_backend() != "cpu":
        return None
    if input_shape is None and getattr(model, "input_shape", None) is None:
        return None
    try:
        return dict(wide_conv_options()) if uses_xla_convolution(model, input_shape) else None
    except (AttributeError, TypeError):  # not a Sequential of jigcnn layers: keep XLA's defaults
        return None


__all__ = ["NO_YNN_FUSION", "YNN_REDUCE_ONLY", "resolve_compiler_options", "uses_xla_convolution",
           "wide_conv_options"]
