"""Optimisers by name from a config; bias exclusion; freezing and unfreezing layers by name."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jigcnn.optim import (
    OPTIMIZER_NAMES,
    carry_state,
    exclude_biases,
    freeze,
    freeze_layers,
    freezeconnect,
    kernels_only,
    make_optimizer,
    optimizer_hyperparameters,
)


def make_params(seed=0):
    ks = jax.random.split(jax.random.key(seed), 5)
    return {
        "conv1": {
            "kernel": jax.random.normal(ks[0], (3, 3, 1, 4)),
            "bias": jax.random.normal(ks[1], (4,)),
        },
        "conv2": {"kernel": jax.random.normal(ks[2], (3, 3, 4, 4)), "bias": jax.random.normal(ks[3], (4,))},
        "dense3": {"kernel": jax.random.normal(ks[4], (8, 2)), "bias": jnp.zeros((2,), jnp.float32)},
    }


def loss(params, targets):
    return sum(jnp.sum((p - t) ** 2) for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(targets)))


def targets_for(params):
    return jax.tree.map(lambda p: p + 1.0, params)


def train(tx, params, n, state=None):
    targets = targets_for(make_params())

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p, targets)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params) if state is None else state
    for _ in range(n):
        params, state = step(params, state)
    return params, state


def same_bits(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


REFERENCE = {
    "sgd": ({"learning_rate": 0.1}, lambda: optax.sgd(0.1)),
    "momentum": ({"learning_rate": 0.1, "momentum": 0.5}, lambda: optax.sgd(0.1, momentum=0.5)),
    "nesterov": ({"learning_rate": 0.1}, lambda: optax.sgd(0.1, momentum=0.9, nesterov=True)),
    "adam": ({"learning_rate": 0.01, "b1": 0.8}, lambda: optax.adam(0.01, b1=0.8)),
    "adamw": ({"learning_rate": 0.01, "weight_decay": 0.1}, lambda: optax.adamw(0.01, weight_decay=0.1)),
    "adagrad": ({"learning_rate": 0.1}, lambda: optax.adagrad(0.1)),
    "rmsprop": ({"learning_rate": 0.01, "decay": 0.8, "centered": True}, lambda: optax.rmsprop(0.01, decay=0.8, centered=True)),
}


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_make_optimizer_matches_optax(name):
    cfg, ref = REFERENCE[name]
    params = make_params()
    grads = targets_for(params)
    tx, rtx = make_optimizer({"name": name, **cfg}), ref()
    s, rs = tx.init(params), rtx.init(params)
    for _ in range(3):
        u, s = tx.update(grads, s, params)
        ru, rs = rtx.update(grads, rs, params)
        assert same_bits(u, ru)


def test_aliases_case_dataclass_and_none_entries():
    @dataclasses.dataclass
    class Cfg:
        name: str = "NAG"
        learning_rate: float = 0.1
        momentum: float | None = None
        b1: float | None = None

    params = make_params()
    grads = targets_for(params)
    tx = make_optimizer(Cfg())
    ref = optax.sgd(0.1, momentum=0.9, nesterov=True)
    u, _ = tx.update(grads, tx.init(params), params)
    ru, _ = ref.update(grads, ref.init(params), params)
    assert same_bits(u, ru)
    assert "momentum" in optimizer_hyperparameters("nesterov")


def test_learning_rate_schedule():
    sched = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
    params = make_params()
    grads = jax.tree.map(jnp.ones_like, params)
    tx = make_optimizer({"name": "sgd", "learning_rate": sched})
    s = tx.init(params)
    u1, s = tx.update(grads, s, params)
    u2, s = tx.update(grads, s, params)
    np.testing.assert_allclose(u1["dense3"]["bias"], -0.1, rtol=1e-6)
    np.testing.assert_allclose(u2["dense3"]["bias"], -0.05, rtol=1e-6)


@pytest.mark.parametrize("lr, why", [
    (-1, r"must be a finite number > 0, got -1 \(a negative learning rate trains uphill\)"),
    (0, r"must be a finite number > 0, got 0$"),
    (0.0, r"must be a finite number > 0, got 0.0$"),
    (float("nan"), r"must be a finite number > 0, got nan$"),
    (float("inf"), r"must be a finite number > 0, got inf$"),
    ("fast", r"must be a number > 0 or an optax schedule, got 'fast'$"),
    ("0.1", r"must be a number > 0 or an optax schedule, got '0.1'$"),  # no silent conversion of a string
    (True, r"must be a number > 0 or an optax schedule, got True$"),
    ([0.1], r"must be a number > 0 or an optax schedule, got \[0.1\]$"),
])
@pytest.mark.parametrize("name", ["sgd", "nesterov", "adam"])
def test_make_optimizer_refuses_a_learning_rate_that_is_no_positive_finite_number(name, lr, why):
    from jigcnn.errors import UserError

    with pytest.raises(UserError, match=rf"^optimizer '{name}': learning_rate {why}"):
        make_optimizer({"name": name, "learning_rate": lr})


@pytest.mark.parametrize("name, hp, value, why", [
    ("momentum", "momentum", 1.0, r"must be in \[0, 1\), got 1.0"),
    ("nesterov", "momentum", -0.9, r"must be in \[0, 1\), got -0.9"),
    ("momentum", "momentum", "0.9", r"must be a finite number, got '0.9'"),
    ("adam", "b1", 1.5, r"must be in \[0, 1\), got 1.5"),
    ("adam", "b2", 1.0, r"must be in \[0, 1\), got 1.0"),        # Adam's bias correction would divide by 0
    ("adam", "eps", -1e-8, r"must be >= 0, got -1e-08"),
    ("adam", "eps", float("nan"), r"must be a finite number, got nan"),
    ("adamw", "weight_decay", -0.01, r"must be >= 0, got -0.01"),
    ("adamw", "weight_decay", True, r"must be a finite number, got True"),
    ("adagrad", "initial_accumulator_value", -0.1, r"must be >= 0, got -0.1"),
    ("rmsprop", "decay", 1.0, r"must be in \[0, 1\), got 1.0"),
    ("rmsprop", "centered", 1, r"must be True or False, got 1"),
    ("rmsprop", "momentum", 2, r"must be in \[0, 1\), got 2"),
])
def test_make_optimizer_refuses_hyperparameters_out_of_range(name, hp, value, why):
    from jigcnn.errors import UserError

    with pytest.raises(UserError, match=rf"^optimizer '{name}': {hp} {why}$"):
        make_optimizer({"name": name, "learning_rate": 0.1, hp: value})


def test_make_optimizer_accepts_the_edges_of_the_ranges():
    for cfg in ({"name": "momentum", "momentum": 0.0}, {"name": "adam", "b1": 0.0, "b2": np.float32(0.5), "eps": 0},
                {"name": "rmsprop", "centered": np.bool_(True), "momentum": 0.5, "nesterov": True},
                {"name": "adamw", "weight_decay": 0}):
        tx = make_optimizer({"learning_rate": 0.1, **cfg})
        params = make_params()
        u, _ = tx.update(targets_for(params), tx.init(params), params)
        assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(u)), cfg


def test_make_optimizer_accepts_numpy_scalars_and_schedules_as_learning_rate():
    params = make_params()
    grads = jax.tree.map(jnp.ones_like, params)
    for lr in (np.float32(0.5), 1, optax.constant_schedule(0.5)):
        tx = make_optimizer({"name": "sgd", "learning_rate": lr})
        u, _ = tx.update(grads, tx.init(params), params)
        np.testing.assert_allclose(u["dense3"]["bias"], -float(lr(0) if callable(lr) else lr))


def test_config_errors():
    with pytest.raises(ValueError, match=r"unknown optimizer 'lbfgs'.*'sgd'.*'rmsprop'"):
        make_optimizer({"name": "lbfgs", "learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"unknown hyper-parameter\(s\) \['beta'\].*allowed: \['learning_rate', 'momentum'\]"):
        make_optimizer({"name": "momentum", "learning_rate": 0.1, "beta": 0.9})
    with pytest.raises(ValueError, match="needs a learning_rate"):
        make_optimizer({"name": "adam"})
    with pytest.raises(ValueError, match="needs a 'name'"):
        make_optimizer({"learning_rate": 0.1})
    with pytest.raises(TypeError, match="mapping or a dataclass"):
        make_optimizer("adam")
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizer_hyperparameters("nope")


# --- what learns -------------------------------------------------------------------------


def test_exclude_biases_all_and_per_layer():
    params = make_params()
    p, _ = train(exclude_biases(optax.adam(0.05)), params, 5)
    for layer in params:
        np.testing.assert_array_equal(p[layer]["bias"], params[layer]["bias"])
        assert np.all(np.asarray(p[layer]["kernel"]) != np.asarray(params[layer]["kernel"]))

    p, _ = train(exclude_biases(optax.sgd(0.05, momentum=0.9), layers=["conv1"]), params, 5)
    np.testing.assert_array_equal(p["conv1"]["bias"], params["conv1"]["bias"])
    assert np.all(np.asarray(p["conv2"]["bias"]) != np.asarray(params["conv2"]["bias"]))

    with pytest.raises(ValueError, match=r"exclude_biases: no layer\(s\) 'conv9' \(near: .*'conv1'.*\) in the params; "
                                         r"top-level layers are \['conv1', 'conv2', 'dense3'\]$"):
        exclude_biases(optax.sgd(0.1), layers="conv9").init(params)


def test_frozen_arrays_get_no_optimizer_state():
    params = make_params()
    state = freeze_layers(optax.adam(0.1), ["conv1"]).init(params)
    mu = state.inner_states["train"].inner_state[0].mu
    assert isinstance(mu["conv1"]["kernel"], optax.MaskedNode)
    assert mu["dense3"]["kernel"].shape == (8, 2)


@pytest.mark.parametrize("carry", [False, True])
def test_freeze_train_unfreeze_train(carry):
    params0 = make_params()
    base = lambda: optax.adam(0.05)  # noqa: E731
    tx1 = freeze_layers(base(), ["conv1", "conv2"])
    p1, s1 = train(tx1, params0, 6)
    for layer in ("conv1", "conv2"):
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(p1[layer][name], params0[layer][name])
    assert not np.array_equal(p1["dense3"]["kernel"], params0["dense3"]["kernel"])

    # phase 2: unfreeze conv2 (fine-tuning step by step), conv1 stays frozen
    tx2 = freeze_layers(base(), ["conv1"])
    s2 = tx2.init(p1)
    if carry:
        s2 = carry_state(s1, s2)
        adam2 = s2.inner_states["train"].inner_state[0]
        adam1 = s1.inner_states["train"].inner_state[0]
        assert int(adam2.count) == 6  # the step count (and any schedule) goes on
        np.testing.assert_array_equal(adam2.mu["dense3"]["kernel"], adam1.mu["dense3"]["kernel"])
        assert np.all(np.asarray(adam2.mu["conv2"]["kernel"]) == 0.0)  # newly unfrozen: fresh moments
    p2, _ = train(tx2, p1, 4, state=s2)
    np.testing.assert_array_equal(p2["conv1"]["kernel"], params0["conv1"]["kernel"])
    assert np.all(np.asarray(p2["conv2"]["kernel"]) != np.asarray(p1["conv2"]["kernel"]))
    assert not np.array_equal(p2["dense3"]["kernel"], p1["dense3"]["kernel"])

    # phase 3: everything learns
    tx3 = freeze_layers(base(), [])
    p3, _ = train(tx3, p2, 2, state=carry_state(s2, tx3.init(p2)) if carry else None)
    assert np.all(np.asarray(p3["conv1"]["kernel"]) != np.asarray(p2["conv1"]["kernel"]))


def test_freeze_layers_errors_and_string_name():
    params = make_params()
    with pytest.raises(ValueError, match=r"freeze_layers: no layer\(s\) 'dense9' \(near: 'dense3'\) in the params; "
                                         r"top-level layers are \['conv1', 'conv2', 'dense3'\]$"):
        freeze_layers(optax.sgd(0.1), ["dense9"]).init(params)
    p, _ = train(freeze_layers(optax.sgd(0.1), "dense3"), params, 2)
    np.testing.assert_array_equal(p["dense3"]["kernel"], params["dense3"]["kernel"])
    with pytest.raises(ValueError, match="different structures"):
        carry_state(optax.adam(0.1).init(params), optax.sgd(0.1, momentum=0.9).init(params))


def test_freeze_by_predicate_and_nesting_with_freezeconnect():
    params = make_params()
    p, _ = train(freeze(optax.sgd(0.1), kernels_only), params, 2)
    for layer in params:
        np.testing.assert_array_equal(p[layer]["kernel"], params[layer]["kernel"])
        assert not np.array_equal(p[layer]["bias"], params[layer]["bias"])

    inner = optax.chain(optax.sgd(0.05, momentum=0.9), freezeconnect(0.5, key=jax.random.key(0), resample="step"))
    tx = exclude_biases(freeze_layers(inner, ["conv1"]))
    p, s = train(tx, params, 4)
    np.testing.assert_array_equal(p["conv1"]["kernel"], params["conv1"]["kernel"])
    for layer in params:
        np.testing.assert_array_equal(p[layer]["bias"], params[layer]["bias"])
    assert not np.array_equal(p["dense3"]["kernel"], params["dense3"]["kernel"])


# --- freezing inside graph blocks (zoo.resnet20: nested names and block prefixes) -------


@pytest.fixture(scope="module")
def resnet20_params():
    """ResNet-20's params as ones of the right shapes (from the shapes alone: no draw, no training)."""
    from jigcnn import zoo

    model = zoo.resnet20()
    shapes = jax.eval_shape(lambda k: model.init(k)[0], jax.random.key(0))
    return jax.tree.map(lambda a: jnp.ones(a.shape, a.dtype), shapes)


def _moved(tx, params):
    """The nested names of the arrays that one step of ``tx`` with all-one gradients changes."""
    from jigcnn.optim.select import path_names

    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    flat = jax.tree_util.tree_flatten_with_path(updates)[0]
    return {"/".join(path_names(p)) for p, u in flat if np.any(np.asarray(u) != 0)}


def _all(params):
    from jigcnn.optim.select import path_names

    return {"/".join(path_names(p)) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_freeze_layers_by_nested_name_inside_resnet20(resnet20_params):
    params = resnet20_params
    every = _all(params)
    moved = _moved(freeze_layers(optax.sgd(0.1), ["stage2/block1/conv1", "fc"]), params)
    assert every - moved == {"stage2/block1/conv1/kernel", "fc/kernel", "fc/bias"}
    # the same-named conv1 of other blocks (and the top-level conv1) still learn
    assert {"conv1/kernel", "stage1/block1/conv1/kernel", "stage2/block2/conv1/kernel"} <= moved


@pytest.mark.parametrize("prefix", ["stage2", "stage3/block2"])
def test_freeze_layers_by_block_prefix_inside_resnet20(resnet20_params, prefix):
    params = resnet20_params
    every = _all(params)
    frozen = every - _moved(freeze_layers(optax.adam(0.1), prefix), params)
    assert frozen == {n for n in every if n.startswith(prefix + "/")}
    # 6 arrays per block (2 conv kernels, 2 batch norms' scale and offset; the option-A shortcut has none)
    assert len(frozen) == (3 * 6 if prefix == "stage2" else 6)


def test_freeze_layers_prefix_is_whole_names_not_characters():
    params = {"stage1": {"conv": {"kernel": jnp.ones((2,))}}, "stage10": {"conv": {"kernel": jnp.ones((2,))}}}
    assert _moved(freeze_layers(optax.sgd(0.1), "stage1"), params) == {"stage10/conv/kernel"}


def test_exclude_biases_by_nested_name():
    params = {"block": {"conv1": {"kernel": jnp.ones((2,)), "bias": jnp.ones((2,))},
                        "conv2": {"kernel": jnp.ones((2,)), "bias": jnp.ones((2,))}}}
    assert _moved(exclude_biases(optax.sgd(0.1), layers="block/conv1"), params) == {
        "block/conv1/kernel", "block/conv2/kernel", "block/conv2/bias"}


def test_freeze_layers_unknown_nested_name_lists_near_matches(resnet20_params):
    from jigcnn.errors import UserError

    with pytest.raises(UserError, match=r"^freeze_layers: no layer\(s\) 'stage2/block1/conv9' \(near: "
                                        r"[^)]*'stage2/block1/conv1'[^)]*\) in the params; top-level layers are "
                                        r"\['bn1', 'conv1', 'fc', 'stage1', 'stage2', 'stage3'\] \(a layer inside a block by its nested "
                                        r"name, e.g. 'stage3/block3/conv2', or a whole block by its prefix, e.g. "
                                        r"'stage3/block3'\)$"):
        freeze_layers(optax.sgd(0.1), ["fc", "stage2/block1/conv9"]).init(resnet20_params)
    with pytest.raises(UserError, match=r"no layer\(s\) 'stage2/block1/conv1/kernel'"):  # an array is no layer
        freeze_layers(optax.sgd(0.1), "stage2/block1/conv1/kernel").init(resnet20_params)
    with pytest.raises(UserError, match=r"no layer\(s\) 'stage4' \(near: 'stage3', 'stage2', 'stage1'\) in"):
        freeze_layers(optax.sgd(0.1), "stage4").init(resnet20_params)


@pytest.mark.parametrize("names, shown", [([""], r"\[''\]"), ([3], r"\[3\]"), (["fc", None], r"\[None\]"),
                                          (7, "7")])
def test_freeze_layers_refuses_names_that_are_no_strings_at_construction(names, shown):
    from jigcnn.errors import UserError

    with pytest.raises(UserError, match=rf"^freeze_layers: layer names must be .*, got {shown}$"):
        freeze_layers(optax.sgd(0.1), names)
    with pytest.raises(UserError, match=rf"^exclude_biases: layer names must be .*, got {shown}$"):
        exclude_biases(optax.sgd(0.1), layers=names)
