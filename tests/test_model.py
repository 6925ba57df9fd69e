"""Sequential: naming, params/state layout, apply with train/key, summary, deterministic init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import Activation, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool, Sequential, ignet


def small_net(**kw):
    return Sequential([
        Conv2D(4, 3, padding="same", bias="frozen", initializer=ignet(1.0, 0.5)),
        BatchNorm(),
        MaxPool(2),
        Flatten(),
        Dropout(0.5),
        Dense(3, name="out"),
    ], input_shape=(6, 6, 2), **kw)


def test_auto_names_and_explicit_names():
    net = small_net()
    assert net.names == ("conv1", "batchnorm2", "maxpool3", "flatten4", "dropout5", "out")
    assert net["out"].features == 3 and net["conv1"].features == 4
    with pytest.raises(KeyError, match="nope"):
        net["nope"]


def test_duplicate_names_are_rejected():
    with pytest.raises(ValueError, match="unique.*'fc'"):
        Sequential([Dense(3, name="fc"), Dense(2, name="fc")])
    # an explicit name that collides with an automatic one is a duplicate too
    with pytest.raises(ValueError, match="unique.*'dense1'"):
        Sequential([Dense(3), Dense(2, name="dense1")])
    with pytest.raises(TypeError, match="item 2"):
        Sequential([Dense(3), "relu"])


def test_params_keyed_by_name_and_state_separate():
    net = small_net()
    params, state = net.init(jax.random.key(0))
    assert set(params) == {"conv1", "batchnorm2", "out"}
    assert set(params["conv1"]) == {"kernel"}                    # frozen bias is not a parameter
    assert set(params["batchnorm2"]) == {"scale", "offset"}
    assert set(params["out"]) == {"kernel", "bias"}
    assert set(state) == {"conv1", "batchnorm2"}
    assert set(state["conv1"]) == {"bias"} and set(state["batchnorm2"]) == {"mean", "var"}
    assert params["conv1"]["kernel"].shape == (3, 3, 2, 4)
    assert params["out"]["kernel"].shape == (3 * 3 * 4, 3)
    assert net.shapes() == [(6, 6, 2), (6, 6, 4), (6, 6, 4), (3, 3, 4), (36,), (36,), (3,)]
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))
    n_state = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(state))
    assert net.count_params() == (n_params, n_state) == (72 + 8 + 111, 4 + 8)


def test_apply_train_and_key():
    net = small_net()
    params, state = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (5, 6, 6, 2))
    y_eval, s_eval = net.apply(params, state, x)
    assert y_eval.shape == (5, 3)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), s_eval, state))
    y_eval2, _ = net(params, state, x, train=False, key=jax.random.key(9))   # the key is unused at inference
    np.testing.assert_array_equal(np.asarray(y_eval), np.asarray(y_eval2))
    with pytest.raises(ValueError, match="dropout5.*key"):
        net.apply(params, state, x, train=True)
    y1, s1 = net.apply(params, state, x, train=True, key=jax.random.key(2))
    y2, _ = net.apply(params, state, x, train=True, key=jax.random.key(2))
    y3, _ = net.apply(params, state, x, train=True, key=jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    assert not np.array_equal(np.asarray(y1), np.asarray(y3))
    assert not np.array_equal(np.asarray(y1), np.asarray(y_eval))
    # training moves the batch-norm running statistics, the frozen bias stays
    assert not np.allclose(np.asarray(s1["batchnorm2"]["mean"]), 0.0)
    np.testing.assert_array_equal(np.asarray(s1["conv1"]["bias"]), np.asarray(state["conv1"]["bias"]))
    assert set(s1) == set(state)


def test_apply_matches_layer_by_layer_composition():
    net = Sequential([Conv2D(2, 3), Activation("tanh"), Flatten(), Dense(2)], input_shape=(4, 4, 1))
    params, state = net.init(jax.random.key(4))
    x = jax.random.normal(jax.random.key(5), (3, 4, 4, 1))
    h = x
    for layer in net.layers:
        h, _ = layer.apply(params.get(layer.name, {}), state.get(layer.name, {}), h)
    np.testing.assert_array_equal(np.asarray(net.apply(params, state, x)[0]), np.asarray(h))


def test_init_is_deterministic_per_key():
    net = small_net()
    a = net.init(jax.random.key(7))
    b = net.init(jax.random.key(7))
    c = net.init(jax.random.key(8))
    same = jax.tree_util.tree_map(lambda u, v: bool(jnp.array_equal(u, v)), a, b)
    assert all(jax.tree_util.tree_leaves(same))
    assert not np.array_equal(np.asarray(a[0]["conv1"]["kernel"]), np.asarray(c[0]["conv1"]["kernel"]))
    assert not np.array_equal(np.asarray(a[1]["conv1"]["bias"]), np.asarray(c[1]["conv1"]["bias"]))
    # layers get different keys: two identical layers do not draw identical weights
    twin = Sequential([Dense(5, name="a"), Dense(5, name="b")], input_shape=(5,))
    p, _ = twin.init(jax.random.key(0))
    assert not np.array_equal(np.asarray(p["a"]["kernel"]), np.asarray(p["b"]["kernel"]))


@pytest.mark.parametrize("on_host", [True, False])
def test_init_draws_what_eager_layer_by_layer_drawing_does(on_host, monkeypatch):
    from jigcnn import host_random, zoo
    from jigcnn.model import _draw

    if not on_host:  # the host refuses: the jitted draw
        def refuse(fn, *args):
            raise host_random.Unsupported("refused by the test")

        monkeypatch.setattr(host_random, "evaluate", refuse)
    # eager = op by op from Python, as Sequential.init drew before it was jitted (jax.disable_jit would
    # run even jax.random's own jitted kernels op by op: 20 s); the Fig. 5 net has Eq. 3 ranges, frozen biases
    for net in (small_net(), zoo.ignet_fig5(3, filters=2)):
        shape = net.shapes()[0]
        key = jax.random.key(3)
        eager = _draw(net.layers, shape, "float32", key)
        drawn = net.init(key)
        assert jax.tree.structure(eager) == jax.tree.structure(drawn)
        for u, v in zip(jax.tree.leaves(eager), jax.tree.leaves(drawn)):
            # the same random bits; XLA fuses the scaling of the uniforms (lo + u * (hi - lo)), so a value
            # may differ by a rounding step of the range's size, not of its own
            assert u.dtype == v.dtype
            scale = float(np.max(np.abs(np.asarray(u)))) or 1.0
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=0, atol=4 * np.finfo(np.float32).eps * scale)


def test_init_with_an_unhashable_layer_field_still_works():
    from jigcnn.initializers import Initializer

    class Unhashable(Initializer):
        __hash__ = None

        def kernel(self, key, shape, extent, dtype):
            return jnp.full(shape, 0.25, dtype)

        def bias(self, key, shape, dtype):
            return jnp.zeros(shape, dtype)

    net = Sequential([Dense(2, initializer=Unhashable())], input_shape=(3,))
    params, _ = net.init(jax.random.key(0))
    assert np.allclose(params["dense1"]["kernel"], 0.25)


def test_input_shape_given_late_and_missing():
    net = Sequential([Flatten(), Dense(2)])
    with pytest.raises(ValueError, match="input shape"):
        net.init(jax.random.key(0))
    params, _ = net.init(jax.random.key(0), (3, 4))
    assert params["dense2"]["kernel"].shape == (12, 2)
    assert net.count_params((3, 4)) == (26, 0)
    assert net.init(jax.random.key(0), (3, 4), dtype=jnp.float16)[0]["dense2"]["kernel"].dtype == jnp.float16


def test_summary_text():
    printed = []
    text = small_net().summary(print_fn=printed.append)
    assert printed == [text]
    lines = text.splitlines()
    assert lines[0] == "input shape: (6, 6, 2)"
    header = next(line for line in lines if line.startswith("layer"))
    for col in ("type", "output shape", "trainable", "non-trainable"):
        assert col in header
    conv_line = next(line for line in lines if line.startswith("conv1 "))
    assert "Conv2D" in conv_line and "(6, 6, 4)" in conv_line and conv_line.split()[-2:] == ["72", "4"]
    out_line = next(line for line in lines if line.startswith("out "))
    assert out_line.split()[-2:] == ["111", "0"]
    assert lines[-1] == "total params: 203  (trainable 191, non-trainable 12)"
    assert small_net().summary(print_fn=None) == text


def test_summary_counts_connected_weights_only():
    table = np.array([[1, 0, 1], [0, 1, 1]], bool)
    net = Sequential([Conv2D(3, 3, connection_table=table)], input_shape=(5, 5, 2))
    assert net.count_params() == (9 * 4 + 3, 0)
    assert "39" in net.summary(print_fn=None).splitlines()[-1]


def test_only_layers_that_draw_get_a_key():
    net = small_net()
    key = jax.random.key(5)
    keys = net.layer_keys(key)
    split = jax.random.split(key, len(net.layers))
    for layer, k, s in zip(net.layers, keys, split):
        if layer.needs_key:  # the dropout layer: the key it always got
            assert np.array_equal(np.asarray(jax.random.key_data(k)), np.asarray(jax.random.key_data(s)))
        else:
            assert k is None
    assert net.layer_keys(None) == [None] * len(net.layers)
    plain = Sequential([Flatten(), Dense(3)], input_shape=(2, 2, 1))
    assert plain.layer_keys(key) == [None, None]
    # no dropout: a training forward pass does no PRNG work
    params, state = plain.init(jax.random.key(0))
    jaxpr = jax.make_jaxpr(lambda k: plain.apply(params, state, jnp.ones((4, 2, 2, 1)), train=True, key=k))(key)
    assert "random" not in str(jaxpr) and "threefry" not in str(jaxpr)
