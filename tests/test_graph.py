"""Graph combinators (jigcnn.layers.graph): construction errors, nested names, and the name-based features on a residual net."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import BatchNorm, Conv2D, Dense, Flatten, IdentityShortcut, Parallel, Residual, Sequential, Serial, zoo
from jigcnn.layers.graph import GlobalAvgPool, leaf_layers


def small_resnet():
    return Sequential([
        Conv2D(4, 3, padding="same", activation="relu", name="stem"),
        Serial([Residual([Conv2D(4, 3, padding="same", bias="none", name="conv1"), BatchNorm(name="bn1")],
                         activation="relu", name="block1"),
                Residual([Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv1")],
                         shortcut=IdentityShortcut(6, 2), activation="relu", name="block2")], name="stage1"),
        GlobalAvgPool(), Dense(3)], input_shape=(8, 8, 2))


def test_nested_names_and_params_layout():
    model = small_resnet()
    names = ["/".join(p) for p, _ in leaf_layers(model)]
    assert "stage1/block1/conv1" in names and "stage1/block2/shortcut" in names
    params, state = model.init(jax.random.key(0))
    assert params["stage1"]["block1"]["conv1"]["kernel"].shape == (3, 3, 4, 4)
    assert state["stage1"]["block1"]["bn1"]["mean"].shape == (4,)
    rows = {r[0]: r for r in model.param_counts()}
    assert rows["stage1/block2/conv1"][3] == 3 * 3 * 4 * 6 + 6


def test_sum_of_mismatched_shapes_names_both_branches():
    with pytest.raises(ValueError, match=r"branch 'a' of output shape \(8, 8, 2\) and branch 'b' of output shape \(8, 8, 3\)"):
        Sequential([Parallel([Conv2D(2, 1, name="a"), Conv2D(3, 1, name="b")])], input_shape=(8, 8, 1))


def test_residual_shape_mismatch_and_concat_spatial_mismatch():
    with pytest.raises(ValueError, match=r"res: cannot add the body .* \(4, 4, 2\) and the identity shortcut of shape \(8, 8, 2\)"):
        Sequential([Residual([Conv2D(2, 3, strides=2, padding="same")], name="res")], input_shape=(8, 8, 2))
    with pytest.raises(ValueError, match="sizes before the channel axis differ"):
        Sequential([Parallel([Conv2D(2, 1), Conv2D(2, 1, strides=2)], join="concat")], input_shape=(8, 8, 1))


def test_duplicate_inner_names():
    with pytest.raises(ValueError, match=r"blk: inner layer names must be unique within the block, repeated: \['c'\]"):
        Serial([Conv2D(2, 1, name="c"), Conv2D(2, 1, name="c")], name="blk")
    with pytest.raises(ValueError, match="unique"):
        Sequential([Serial([Conv2D(2, 1)], name="s"), Serial([Conv2D(2, 1)], name="s")])


def test_resnet20_has_the_published_parameter_count():
    assert zoo.resnet20().count_params() == (269_722, 1_376)  # He et al. 2016: 0.27M (option A)
    assert "resnet20" in zoo.ZOO


def test_diagnose_and_select_by_nested_name():
    from jigcnn.diagnostics import diagnose
    from jigcnn.optim import layers

    model = small_resnet()
    params, state = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 2))
    d = diagnose(model, params, state, x, jnp.array([0, 1, 2, 0]), "softmax_cross_entropy")
    assert "stage1/block1/conv1" in d.layers and d["stage1/block2/conv1"].weight_grad_mav > 0
    pred = layers("stage1/block1/conv1")
    sel = jax.tree_util.tree_map_with_path(lambda p, a: pred(p, a), params)
    assert sel["stage1"]["block1"]["conv1"]["kernel"] and not sel["stage1"]["block2"]["conv1"]["kernel"]
    assert not sel["stem"]["kernel"]


def test_fit_with_checkpoints_freezeconnect_and_freezing_by_nested_name(tmp_path):
    """fit (hand-written gradients) on a small residual net: a frozen inner conv stays put, checkpoints resume."""
    import optax

    from jigcnn.optim import freeze, freezeconnect, layers
    from jigcnn.train import fit

    model = small_resnet()
    params, state = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 8, 8, 2)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 32))
    tx = optax.chain(freeze(optax.sgd(0.05), layers("stage1/block1/conv1")),
                     freezeconnect(0.5, key=jax.random.key(3), where=layers("stage1/block2"), resample="step"))
    out = fit(model, params, state, tx, (x, y), epochs=2, batch_size=8, key=jax.random.key(1),
              loss="softmax_cross_entropy", grad_method="manual", checkpoint_dir=tmp_path, progress=False)
    p = out.params
    np.testing.assert_array_equal(p["stage1"]["block1"]["conv1"]["kernel"], params["stage1"]["block1"]["conv1"]["kernel"])
    assert not np.array_equal(p["stage1"]["block2"]["conv1"]["kernel"], params["stage1"]["block2"]["conv1"]["kernel"])
    assert not np.array_equal(p["stem"]["kernel"], params["stem"]["kernel"])
    again = fit(model, params, state, tx, (x, y), epochs=2, batch_size=8, key=jax.random.key(1),
                loss="softmax_cross_entropy", grad_method="manual", checkpoint_dir=tmp_path, resume=True,
                progress=False)
    np.testing.assert_array_equal(again.params["stage1"]["block2"]["conv1"]["kernel"],
                                  p["stage1"]["block2"]["conv1"]["kernel"])


def test_eq3_init_and_calibrate_init_per_inner_layer():
    """Eq. 3 ranges per inner conv (W / (v h)), and calibrate_init steering nested layers by nested name."""
    from jigcnn import ignet
    from jigcnn.diagnostics import calibrate_init

    model = Sequential([Conv2D(3, 3, padding="same", initializer=ignet(1.0, 0.1), name="stem"),
                        Residual([Conv2D(3, 3, padding="same", initializer=ignet(4.0, 0.1), name="conv1")], name="res"),
                        Flatten(), Dense(1, initializer=ignet(10.0, 0.1))], input_shape=(6, 6, 1))
    params, state = model.init(jax.random.key(0))
    k = np.abs(np.asarray(params["res"]["conv1"]["kernel"]))
    assert k.max() <= 4.0 / 9 and k.max() > 0.8 * 4.0 / 9
    x = jax.random.uniform(jax.random.key(1), (8, 6, 6, 1))
    cal = calibrate_init(model, params, state, x, jnp.ones((8, 1)), "mae", max_iters=8)
    assert set(cal.amplitudes) == {"stem", "res/conv1", "dense4"}
    assert cal.diagnostic["res/conv1"].weight_grad_mav > 0


def test_fit_folds_vmapped_and_cross_validate_on_a_residual_net():
    """The k-fold protocols train a residual net (folds vmapped as one program, and one by one)."""
    import optax

    from jigcnn.train import cross_validate

    model = small_resnet()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 8, 8, 2)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    for vmapped in (True, False):
        res = cross_validate(model, x, y, np.arange(24), protocol="grouped", optimizer=optax.sgd(0.05),
                             loss="softmax_cross_entropy", k=2, augment_factor=1, epochs=1, batch_size=8,
                             vmapped=vmapped, progress=False)
        assert len(res.folds) == 2
