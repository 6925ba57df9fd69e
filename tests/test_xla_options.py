"""Per-computation XLA options: the "auto" choice per model, and that the options change speed, not results."""

import jax
import numpy as np
import optax
import pytest

from jigcnn import Conv2D, Dense, Flatten, MaxPool, Sequential, zoo
from jigcnn.train import fit, make_train_step
from jigcnn import ops, xla_options
from jigcnn.fast import native
from jigcnn.xla_options import NO_YNN_FUSION, YNN_REDUCE_ONLY, resolve_compiler_options, uses_xla_convolution


def wide_model():
    # 3x3x24 = 216 taps per output: outside jigcnn.fast's few-channel kernels, so XLA's conv runs
    return Sequential([Conv2D(features=24, kernel_size=3, padding="same", activation="relu"),
                       Conv2D(features=24, kernel_size=3, activation="relu"), MaxPool(2), Flatten(),
                       Dense(features=3)], input_shape=(8, 8, 1))


def test_auto_turns_ynn_convolutions_off_only_for_xla_convolutions():
    assert jax.default_backend() == "cpu"
    assert uses_xla_convolution(zoo.vgg_small()) and not uses_xla_convolution(zoo.ignet_fig5(10))
    assert resolve_compiler_options("auto", zoo.vgg_small()) == YNN_REDUCE_ONLY
    assert resolve_compiler_options("auto", zoo.ignet_fig5(10)) is None
    assert resolve_compiler_options("auto", zoo.lenet5()) is None
    assert resolve_compiler_options("auto", zoo.thesis_mlp()) is None  # no conv at all
    assert resolve_compiler_options("auto", wide_model()) == YNN_REDUCE_ONLY


def test_auto_sees_convolutions_nested_in_graph_blocks():
    from jigcnn import GlobalAvgPool, Parallel, Residual, Serial

    # zoo.resnet20: its only top-level conv has 3 input channels (a banded kernel serves it); the 16-64 channel
    # convolutions are inside Serial stages of Residual blocks
    assert uses_xla_convolution(zoo.resnet20())
    assert resolve_compiler_options("auto", zoo.resnet20()) == YNN_REDUCE_ONLY

    def net(block):  # the top-level conv has one input channel: 9 taps, a banded kernel serves it
        return Sequential([Conv2D(features=24, kernel_size=3, padding="same"), block, GlobalAvgPool(),
                           Dense(features=2)], input_shape=(8, 8, 1))

    def narrow(name="narrow"):  # 1x1 over 24 channels: 24 taps, served
        return Conv2D(features=24, kernel_size=1, name=name)

    def wide(name="wide"):  # 3x3 over 24 channels: 216 taps, XLA's convolution
        return Conv2D(features=24, kernel_size=3, padding="same", name=name)

    assert not uses_xla_convolution(net(Serial([narrow()], name="s")))  # the control: served convolutions only
    if native.available():  # 3x3 over 16 channels: 144 taps, which the banded kernels serve, but Winograd takes it
        sixteen = Sequential([Conv2D(16, 3, padding="same"), Conv2D(16, 3, padding="same")], input_shape=(8, 8, 1))
        assert uses_xla_convolution(sixteen)
        with ops.using(winograd_native=False):
            assert not uses_xla_convolution(sixteen)
    assert not uses_xla_convolution(net(Residual([narrow()], shortcut=narrow("proj"))))
    for block in (Serial([Serial([wide()], name="inner")], name="outer"),
                  Residual([narrow(), wide()]),
                  Residual([narrow()], shortcut=wide("proj")),  # only the shortcut's convolution is wide
                  Parallel([narrow(), Serial([wide()], name="b2")], join="concat")):
        assert uses_xla_convolution(net(block)), block
        assert resolve_compiler_options("auto", net(block)) == YNN_REDUCE_ONLY


def test_auto_without_input_shape_keeps_defaults_and_explicit_values_pass_through():
    m = Sequential([Conv2D(features=24, kernel_size=3), Flatten(), Dense(features=2)])
    assert resolve_compiler_options("auto", m) is None
    assert resolve_compiler_options("auto", m, (8, 8, 24)) == YNN_REDUCE_ONLY
    assert resolve_compiler_options(None, zoo.vgg_small()) is None
    assert resolve_compiler_options({"a": "b"}, zoo.ignet_fig5(10)) == {"a": "b"}
    with pytest.raises(ValueError, match="compiler_options"):
        resolve_compiler_options("fast", zoo.vgg_small())


def test_a_jaxlib_without_the_reduction_fusion_type_gets_no_ynn_fusions(monkeypatch):
    monkeypatch.setattr(xla_options, "YNN_REDUCE_ONLY", {"xla_cpu_experimental_ynn_fusion_type": "NOT_A_TYPE"})
    xla_options.wide_conv_options.cache_clear()
    try:
        assert resolve_compiler_options("auto", zoo.vgg_small()) == NO_YNN_FUSION
    finally:
        xla_options.wide_conv_options.cache_clear()


def test_fit_gives_the_same_numbers_with_and_without_the_options():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 96).astype(np.int32)
    m = wide_model()
    params, state = m.init(jax.random.key(0))
    runs = [fit(m, params, state, optax.sgd(0.05, momentum=0.9), (x, y), (x[:32], y[:32]), key=jax.random.key(1),
                loss="softmax_cross_entropy", epochs=2, batch_size=16, progress=False, compiler_options=opts)
            for opts in ("auto", None)]
    a, b = (r.history.metrics() for r in runs)
    assert [r["epoch"] for r in a] == [1, 2]
    for ra, rb in zip(a, b):
        for k in ra:
            np.testing.assert_allclose(ra[k], rb[k], rtol=1e-4, atol=1e-6, err_msg=k)
    for la, lb in zip(jax.tree.leaves(runs[0].params), jax.tree.leaves(runs[1].params)):
        np.testing.assert_allclose(la, lb, rtol=1e-4, atol=1e-5)


def test_train_step_accepts_options():
    m = wide_model()
    params, state = m.init(jax.random.key(0))
    tx = optax.sgd(0.1)
    x = np.ones((4, 8, 8, 1), np.float32)
    y = np.zeros(4, np.int32)
    outs = []
    for opts in ("auto", None, NO_YNN_FUSION, YNN_REDUCE_ONLY):
        step = make_train_step(m, "softmax_cross_entropy", tx, donate=False, compiler_options=opts)
        outs.append(step(params, state, tx.init(params), x, y, jax.random.key(0))[3]["loss"])
    np.testing.assert_allclose(outs, outs[0], rtol=1e-5)
