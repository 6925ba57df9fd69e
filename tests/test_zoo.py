"""The reference nets: exact published parameter counts, forward shapes, summaries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import zoo
from jigcnn.initializers import IgNetUniform, VarianceScaling
from jigcnn.layers import Activation, Conv2D, Dense

# (constructor, kwargs, (trainable, non-trainable)) -- the figures printed in the seeds.
PUBLISHED = [
    ("lenet5", {}, (61_706, 0)),                                       # thesis Fig. 13
    ("lenet5", {"input_shape": (32, 32, 1)}, (61_706, 0)),
    ("thesis_cifar_cnn", {}, (329_194 - 384, 384)),                    # thesis Fig. 22
    ("thesis_fashion_cnn", {}, (267_178 - 384, 384)),                  # thesis Fig. 31
    ("thesis_mlp", {"input_shape": (32, 32, 3)}, (404_010, 0)),        # thesis Fig. 18
    ("thesis_mlp", {"input_shape": (28, 28, 1)}, (111_146, 0)),        # thesis Fig. 27
    ("tutorial_cifar_net", {}, (631_658, 0)),                          # seed 004 summary
    ("alexnet", {}, (60_965_224, 0)),                                  # thesis Fig. 15
    ("alexnet", {"input_shape": (224, 224, 3)}, (60_965_224, 0)),
]


@pytest.mark.parametrize("name,kwargs,counts", PUBLISHED, ids=[f"{n}-{k}" for n, k, _ in PUBLISHED])
def test_published_parameter_counts(name, kwargs, counts):
    assert zoo.ZOO[name](**kwargs).count_params() == counts


def test_lenet5_per_layer_counts_match_thesis_figure_13():
    rows = zoo.lenet5().param_counts()
    assert [r[3] for r in rows if r[3]] == [156, 2416, 48_120, 10_164, 850]
    assert [r[2] for r in rows][:4] == [(28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16)]


def test_thesis_cnn_per_layer_counts_match_keras_summary():
    rows = zoo.thesis_cifar_cnn().param_counts()
    keras = [896, 128, 9248, 128, 0, 0, 18_496, 256, 36_928, 256, 0, 0, 0, 262_208, 0, 650]
    assert [r[3] + r[4] for r in rows if r[1] != "Activation"] == keras
    assert [r[4] for r in rows if r[4]] == [64, 64, 128, 128]


def test_alexnet_per_layer_counts_and_shapes_match_thesis_figure_15():
    rows = zoo.alexnet().param_counts()
    assert [r[3] for r in rows if r[3]] == [34_944, 307_456, 885_120, 663_936, 442_624,
                                           37_752_832, 16_781_312, 4_097_000]
    convs = [r[2] for r in rows if r[1] == "Conv2D"]
    assert convs == [(55, 55, 96), (27, 27, 256), (13, 13, 384), (13, 13, 384), (13, 13, 256)]
    assert zoo.alexnet().shapes()[-1] == (1000,)
    assert zoo.alexnet(input_shape=(224, 224, 3)).shapes()[1] == (55, 55, 96)


def test_annt_lenet_connection_table_is_annts_and_lecuns():
    # ANNT's connectionTable, rows = the 16 output maps, columns = the 6 input maps (seed 001).
    annt = np.array([
        1, 1, 1, 0, 0, 0,  0, 1, 1, 1, 0, 0,  0, 0, 1, 1, 1, 0,  0, 0, 0, 1, 1, 1,
        1, 0, 0, 0, 1, 1,  1, 1, 0, 0, 0, 1,  1, 1, 1, 1, 0, 0,  0, 1, 1, 1, 1, 0,
        0, 0, 1, 1, 1, 1,  1, 0, 0, 1, 1, 1,  1, 1, 0, 0, 1, 1,  1, 1, 1, 0, 0, 1,
        1, 1, 0, 1, 1, 0,  0, 1, 1, 0, 1, 1,  1, 0, 1, 1, 0, 1,  1, 1, 1, 1, 1, 1,
    ], bool).reshape(16, 6)
    np.testing.assert_array_equal(zoo.LENET5_C3_TABLE, annt.T)
    assert zoo.LENET5_C3_TABLE.sum(axis=0).tolist() == [3] * 6 + [4] * 9 + [6]
    net = zoo.annt_lenet()
    conv2 = [layer for layer in net.layers if isinstance(layer, Conv2D)][1]
    np.testing.assert_array_equal(np.asarray(conv2.connection_table, bool), zoo.LENET5_C3_TABLE)
    rows = net.param_counts()
    assert [r[3] for r in rows if r[3]] == [156, 60 * 25 + 16, 120 * (400 + 1), 1210]
    assert net.count_params() == (51_002, 0)
    assert net.shapes()[-1] == (10,)
    assert zoo.annt_lenet((28, 28, 1)).count_params() == (51_002, 0)


def test_alexnet_count_and_summary_never_draw_concrete_weights(monkeypatch):
    """The 60M-parameter count and summary go through jax.eval_shape: every kernel draw is traced."""
    drawn = []
    for cls in (VarianceScaling, IgNetUniform):
        original = cls.kernel

        def spy(self, key, shape, extent, dtype=jnp.float32, _original=original):
            drawn.append((tuple(shape), isinstance(key, jax.core.Tracer)))
            return _original(self, key, shape, extent, dtype)

        monkeypatch.setattr(cls, "kernel", spy)
    text = zoo.alexnet().summary(print_fn=None)
    assert "60,965,224" in text
    assert ((9216, 4096), True) in drawn
    assert len(drawn) == 8 and all(traced for _, traced in drawn)


def test_summary_text_contains_totals():
    text = zoo.thesis_cifar_cnn().summary(print_fn=None)
    assert "total params: 329,194" in text
    assert "trainable 328,810" in text and "non-trainable 384" in text
    assert "(8, 8, 64)" in text
    printed = []
    zoo.tutorial_cifar_net().summary(print_fn=printed.append)
    assert len(printed) == 1 and "631,658" in printed[0]


def test_ignet_fig5_structure_init_and_frozen_biases():
    net = zoo.ignet_fig5(3, W=(2.0, 30.0), B=(0.5, 0.25))
    conv, dense = net["conv1"], net["fc"]
    assert conv.activation == "identity" and dense.activation == "identity"
    assert conv.initializer == IgNetUniform(2.0, 0.5) and dense.initializer == IgNetUniform(30.0, 0.25)
    params, state = net.init(jax.random.key(0))
    assert set(params) == {"conv1", "fc"} and set(params["conv1"]) == {"kernel"}
    assert set(state["conv1"]) == {"bias"} and set(state["fc"]) == {"bias"}  # biases frozen
    assert float(jnp.max(jnp.abs(params["conv1"]["kernel"]))) <= 2.0 / 25
    d = 54 * 32 * 16
    assert params["fc"]["kernel"].shape == (d, 3)
    assert float(jnp.max(jnp.abs(params["fc"]["kernel"]))) <= 30.0 / d
    assert float(jnp.max(jnp.abs(state["conv1"]["bias"]))) <= 0.5
    assert net.count_params() == (16 * 25 + d * 3, 16 + 3)
    assert zoo.ignet_fig5(2, head_activation="softmax").layers[-1] == Activation("softmax", name="head")
    assert zoo.ignet_fig5(1).names == ("conv1", "flatten", "fc")


@pytest.mark.parametrize("depth", range(1, 8))
def test_ignet_deep_depths_are_valid_on_the_drawings(depth):
    net = zoo.ignet_deep(depth, 4)
    convs = [layer for layer in net.layers if isinstance(layer, Conv2D)]
    dense = [layer for layer in net.layers if isinstance(layer, Dense)]
    assert len(convs) == depth - 1 and len(dense) == 1
    shapes = net.shapes()
    assert shapes[-1] == (4,)
    if depth > 1:
        assert shapes[depth - 1] == (58 - 2 * (depth - 1), 36 - 2 * (depth - 1), 8)
    assert all(layer.activation == "identity" and layer.bias_mode == "frozen" for layer in convs + dense)
    assert dense[0].initializer == IgNetUniform(10.0, 0.0)
    assert all(c.initializer == IgNetUniform(1.0, 0.0) for c in convs)


def test_ignet_deep_per_layer_settings_and_errors():
    net = zoo.ignet_deep(3, 2, filters=(4, 6), kernel=[(3, 3), (5, 3)], W=(1.0, 2.0, 3.0))
    assert [net[n].features for n in ("conv1", "conv2")] == [4, 6]
    assert net.shapes()[2] == (52, 32, 6)
    assert net["fc"].initializer.W == 3.0
    with pytest.raises(ValueError, match="depth"):
        zoo.ignet_deep(8, 1)
    with pytest.raises(ValueError, match="W must be"):
        zoo.ignet_deep(3, 1, W=(1.0, 2.0))
    with pytest.raises(ValueError, match="kernel must be"):
        zoo.ignet_deep(3, 1, kernel=[3, 3, 3])
    # a tuple kernel / padding is one value for every conv; a list is one per conv; arrays work for W
    net = zoo.ignet_deep(3, 1, kernel=(5, 3), padding=["same", (1, 0)], W=np.array([1.0, 2.0, 4.0]))
    assert net.shapes()[1:3] == [(58, 36, 8), (56, 34, 8)]
    assert [net[n].initializer.W for n in ("conv1", "conv2", "fc")] == [1.0, 2.0, 4.0]
    assert zoo.ignet_fig5(W=5.0)["fc"].initializer.W == 5.0


SMALL = [
    ("ignet_fig5", {"outputs": 5, "head_activation": "softmax"}, (58, 36, 1), (5,)),
    ("ignet_deep", {"depth": 4, "outputs": 1}, (58, 36, 1), (1,)),
    ("lenet5", {}, (28, 28, 1), (10,)),
    ("annt_lenet", {}, (32, 32, 1), (10,)),
    ("thesis_cifar_cnn", {}, (32, 32, 3), (10,)),
    ("thesis_fashion_cnn", {}, (28, 28, 1), (10,)),
    ("thesis_mlp", {"input_shape": (28, 28, 1)}, (28, 28, 1), (10,)),
    ("tutorial_cifar_net", {}, (32, 32, 3), (10,)),
    ("keras_drawings_net", {"outputs": 7}, (58, 36, 1), (7,)),
    ("keras_drawings_net", {"outputs": 1, "task": "regression"}, (58, 36, 1), (1,)),
    ("vgg_small", {}, (32, 32, 3), (10,)),
]


def numpy_filled(net, seed=0):
    """Random params/state of the right shapes without drawing them with jax (no compile per shape)."""
    rng = np.random.default_rng(seed)
    p_shapes, s_shapes = jax.eval_shape(net.init, jax.random.key(0))
    params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0.0, 0.1, s.shape).astype(np.float32)), p_shapes)
    # state holds batch-norm variances and frozen biases: keep it positive
    state = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape).astype(np.float32)), s_shapes)
    return params, state


@pytest.mark.parametrize("name,kwargs,in_shape,out_shape", SMALL, ids=[f"{n}-{i}" for i, (n, *_) in enumerate(SMALL)])
def test_small_nets_forward(name, kwargs, in_shape, out_shape):
    net = zoo.ZOO[name](**kwargs)
    assert net.input_shape == in_shape
    params, state = numpy_filled(net)
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(2, *in_shape)).astype(np.float32))
    y, new_state = jax.jit(lambda p, s, x: net.apply(p, s, x, train=False))(params, state, x)
    assert y.shape == (2, *out_shape)
    assert bool(jnp.all(jnp.isfinite(y)))
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
    head = net.layers[-1]
    if isinstance(head, Activation) and head.fn == "softmax":
        np.testing.assert_allclose(np.asarray(jnp.sum(y, axis=-1)), 1.0, rtol=1e-5)
    if isinstance(head, Activation) and head.fn == "log_softmax":
        np.testing.assert_allclose(np.asarray(jnp.sum(jnp.exp(y), axis=-1)), 1.0, rtol=1e-5)


def test_keras_drawings_net_layout():
    net = zoo.keras_drawings_net(4)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Conv2D", "Conv2D", "MaxPool", "Dropout"] * 2 + ["Flatten", "Dense", "Dropout", "Dense", "Activation"]
    assert [d.activation for d in net.layers if isinstance(d, Dense)] == ["sigmoid", "sigmoid"]
    assert net.shapes()[8] == (11, 6, 64)
    assert type(zoo.keras_drawings_net(1, "regression").layers[-1]).__name__ == "Dense"
    with pytest.raises(ValueError, match="task"):
        zoo.keras_drawings_net(2, task="ranking")


def test_vgg_small_counts_and_global_pool():
    net = zoo.vgg_small()
    convs = 27 * 32 + 9 * 32 * 32 + 9 * 32 * 64 + 9 * 64 * 64 + 9 * 64 * 128 + 9 * 128 * 128
    bn = 2 * (32 + 32 + 64 + 64 + 128 + 128)
    assert net.count_params() == (convs + bn + 128 * 10 + 10, bn)
    assert (1, 1, 128) in net.shapes()


def test_zoo_registry():
    assert set(zoo.ZOO) == {"ignet_fig5", "ignet_deep", "lenet5", "annt_lenet", "thesis_cifar_cnn",
                            "thesis_fashion_cnn", "thesis_mlp", "tutorial_cifar_net", "alexnet",
                            "keras_drawings_net", "vgg_small", "resnet20"}
    for name, fn in zoo.ZOO.items():
        assert fn.__doc__ and len(fn.__doc__) > 80, name


def test_resnet20_is_he_et_al_option_a():
    """He et al. 2016's CIFAR ResNet-20: 0.27M parameters (269,722 with batch norm's scale and offset), option A."""
    from jigcnn import zoo

    model = zoo.resnet20()
    assert model.count_params() == (269_722, 1_376)
    assert model.shapes()[-1] == (10,)
    names = [r[0] for r in model.param_counts()]
    assert "stage2/block1/shortcut" in names and "stage3/block3/conv2" in names
    assert zoo.resnet20(shortcut="B").count_params()[0] == 272_474


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet20_fast_variance_reaches_every_batch_norm(shortcut):
    from jigcnn import zoo
    from jigcnn.layers import BatchNorm

    def norms(layers):
        for layer in layers:
            if isinstance(layer, BatchNorm):
                yield layer
            for attr in ("layers", "body", "shortcut", "branches"):
                inner = getattr(layer, attr, None)
                if inner is None or isinstance(inner, (str, bool)):
                    continue
                yield from norms(inner if isinstance(inner, (list, tuple)) else [inner])

    plain, fast = zoo.resnet20(shortcut=shortcut), zoo.resnet20(shortcut=shortcut, fast_variance=True)
    expected = 19 + (2 if shortcut == "B" else 0)  # after every conv: 1 + 3 stages x 3 blocks x 2 (+ 2 projections)
    assert [n.fast_variance for n in norms(plain.layers)] == [False] * expected
    assert [n.fast_variance for n in norms(fast.layers)] == [True] * expected
    assert fast.count_params() == plain.count_params()


@pytest.mark.parametrize("net", ["thesis_cifar_cnn", "thesis_fashion_cnn", "vgg_small"])
def test_fast_variance_reaches_every_batch_norm_of_the_chains(net):
    from jigcnn import zoo
    from jigcnn.layers import BatchNorm

    plain, fast = getattr(zoo, net)(), getattr(zoo, net)(fast_variance=True)
    expected = {"thesis_cifar_cnn": 4, "thesis_fashion_cnn": 4, "vgg_small": 6}[net]
    assert [n.fast_variance for n in plain.layers if isinstance(n, BatchNorm)] == [False] * expected
    assert [n.fast_variance for n in fast.layers if isinstance(n, BatchNorm)] == [True] * expected
    assert fast.count_params() == plain.count_params()
