"""Freezeconnect and dropconnect as optax transforms (paper Sec. 5.5.1)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jigcnn.optim import (
    DropConnectState,
    FreezeConnectState,
    dropconnect,
    dropconnect_params,
    exclude_biases,
    find_states,
    freeze_layers,
    freezeconnect,
    kernels_only,
    layers,
)

OPTIMIZERS = {
    "sgd": lambda: optax.sgd(0.1),
    "momentum": lambda: optax.sgd(0.1, momentum=0.9),
    "nesterov": lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: optax.adam(0.05),
}


def make_params(seed=0):
    """A hand-made params tree in the library's convention."""
    ks = jax.random.split(jax.random.key(seed), 6)
    return {
        "conv1": {
            "kernel": jax.random.normal(ks[0], (3, 3, 2, 4)),
            "bias": jax.random.normal(ks[1], (4,)),
        },
        "bn1": {"scale": jnp.ones((4,)), "offset": jnp.zeros((4,))},
        "dense2": {"kernel": jax.random.normal(ks[2], (16, 3))},
        "prelu2": {"alpha": jnp.full((3,), 0.25, jnp.float32)},  # not weak-typed: no retrace
    }


def make_targets(params, seed=1):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def quad_loss(params, targets):
    return sum(
        jnp.sum((p - t) ** 2 * (1.0 + 0.1 * jnp.arange(p.size).reshape(p.shape) % 3))
        for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(targets))
    )


def make_step(tx, targets, forward_params=None):
    """A jitted training step; ``forward_params(params, state)`` gives the forward-pass params."""

    @jax.jit
    def step(params, state):
        def loss(p):
            q = p if forward_params is None else forward_params(p, state)
            return quad_loss(q, targets)

        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def full(mask, like):
    return np.broadcast_to(np.asarray(mask), np.shape(like))


def the_state(state, kind=FreezeConnectState):
    found = find_states(state, kind)
    assert len(found) == 1
    return found[0]


def bits(x):
    return np.asarray(x).view(np.uint32)


# --- freezeconnect: frozen elements stay bit-identical ---------------------------------


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("placement", ["after", "before"])
def test_fixed_mask_frozen_elements_bit_identical(opt, placement):
    params0 = make_params()
    targets = make_targets(params0)
    fc = freezeconnect(0.4, key=jax.random.key(3), resample="never")
    tx = optax.chain(OPTIMIZERS[opt](), fc) if placement == "after" else optax.chain(fc, OPTIMIZERS[opt]())
    state = tx.init(params0)
    mask = the_state(state).mask
    step = make_step(tx, targets)
    params = params0
    for _ in range(25):
        params, state = step(params, state)
    k0, k1, m = params0["conv1"]["kernel"], params["conv1"]["kernel"], np.asarray(mask["conv1"]["kernel"])
    assert (~m).sum() > 0 and m.sum() > 0
    np.testing.assert_array_equal(bits(k1)[~m], bits(k0)[~m])
    assert np.all(np.asarray(k1)[m] != np.asarray(k0)[m])
    d0, d1, md = params0["dense2"]["kernel"], params["dense2"]["kernel"], np.asarray(mask["dense2"]["kernel"])
    np.testing.assert_array_equal(bits(d1)[~md], bits(d0)[~md])
    # the default selection (kernels only) leaves biases, batch norm and PReLU learning freely
    for layer, name in [("conv1", "bias"), ("bn1", "scale"), ("bn1", "offset"), ("prelu2", "alpha")]:
        assert np.all(np.asarray(params[layer][name]) != np.asarray(params0[layer][name]))


@pytest.mark.parametrize("opt", ["momentum", "adam"])
def test_changing_mask_after_placement_freezes_exactly_each_step(opt):
    params = make_params()
    targets = make_targets(params)
    tx = optax.chain(OPTIMIZERS[opt](), freezeconnect(0.5, key=jax.random.key(4), resample="step"))
    state = tx.init(params)
    step = make_step(tx, targets)
    for _ in range(12):
        mask = the_state(state).mask
        new_params, state = step(params, state)
        for layer in ("conv1", "dense2"):
            m = np.asarray(mask[layer]["kernel"])
            np.testing.assert_array_equal(
                bits(new_params[layer]["kernel"])[~m], bits(params[layer]["kernel"])[~m]
            )
        params = new_params


def test_changing_mask_before_placement_leaks_momentum():
    """Before the optimizer, momentum from earlier steps still moves elements frozen in this step."""
    params = make_params()
    targets = make_targets(params)
    tx = optax.chain(freezeconnect(0.5, key=jax.random.key(4), resample="step"), OPTIMIZERS["momentum"]())
    state = tx.init(params)
    step = make_step(tx, targets)
    moved_frozen = 0
    for _ in range(6):
        mask = np.asarray(the_state(state).mask["dense2"]["kernel"])
        new_params, state = step(params, state)
        moved = np.asarray(new_params["dense2"]["kernel"]) != np.asarray(params["dense2"]["kernel"])
        moved_frozen += int((moved & ~mask).sum())
        params = new_params
    assert moved_frozen > 0


def test_adam_moments_see_zeros_only_before():
    params = make_params()
    targets = make_targets(params)
    for placement in ("before", "after"):
        fc = freezeconnect(0.5, key=jax.random.key(5), resample="never")
        adam = optax.adam(0.05)
        tx = optax.chain(fc, adam) if placement == "before" else optax.chain(adam, fc)
        state = tx.init(params)
        m = np.asarray(the_state(state).mask["dense2"]["kernel"])
        step = make_step(tx, targets)
        p = params
        for _ in range(3):
            p, state = step(p, state)
        adam_state = state[1][0] if placement == "before" else state[0][0]
        mu = np.asarray(adam_state.mu["dense2"]["kernel"])
        if placement == "before":
            assert np.all(mu[~m] == 0.0)
        else:
            assert np.all(mu[~m] != 0.0)


@pytest.mark.parametrize(
    "make_opt, exact_before",
    [(lambda: optax.adagrad(0.1), True), (lambda: optax.rmsprop(0.01), True), (lambda: optax.adamw(0.05, weight_decay=0.1), False)],
    ids=["adagrad", "rmsprop", "adamw"],
)
def test_fixed_mask_other_optimizers_before_placement(make_opt, exact_before):
    """Before the optimizer, a fixed mask is exact when its state for frozen elements stays 0; AdamW decays them."""
    params0 = make_params()
    targets = make_targets(params0)
    tx = optax.chain(freezeconnect(0.4, key=jax.random.key(3), resample="never"), make_opt())
    state = tx.init(params0)
    m = np.asarray(the_state(state).mask["dense2"]["kernel"])
    step = make_step(tx, targets)
    params = params0
    for _ in range(5):
        params, state = step(params, state)
    frozen_same = bits(params["dense2"]["kernel"])[~m] == bits(params0["dense2"]["kernel"])[~m]
    assert frozen_same.all() == exact_before


# --- masked fraction -----------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 1])
def test_masked_fraction_matches_rate(rate, seed):
    params = {"dense": {"kernel": jnp.zeros((100, 120)), "bias": jnp.zeros((120,))}}
    n = 100 * 120
    se = np.sqrt(rate * (1 - rate) / n)
    for transform in (freezeconnect, dropconnect):
        tx = transform(rate, key=jax.random.key(seed), resample="step")
        state = tx.init(params)
        for _ in range(3):
            m = np.asarray(find_states(state, (FreezeConnectState, DropConnectState))[0].mask["dense"]["kernel"])
            assert abs((~m).mean() - rate) < 5 * se
            _, state = tx.update(params, state, params)


def test_per_layer_rates_and_masks_differ_between_arrays():
    params = {
        "a": {"kernel": jnp.zeros((100, 100))},
        "b": {"kernel": jnp.zeros((100, 100))},
        "c": {"kernel": jnp.zeros((100, 100))},
    }
    state = freezeconnect({"a": 0.2, "b": 0.7, "c": None}, key=jax.random.key(0), resample="never").init(params)
    fa = 1 - np.asarray(state.mask["a"]["kernel"]).mean()
    fb = 1 - np.asarray(state.mask["b"]["kernel"]).mean()
    assert abs(fa - 0.2) < 5 * np.sqrt(0.2 * 0.8 / 1e4)
    assert abs(fb - 0.7) < 5 * np.sqrt(0.7 * 0.3 / 1e4)
    assert np.shape(state.mask["c"]["kernel"]) == () and bool(state.mask["c"]["kernel"])
    # same rate, same shape, different arrays: independent masks
    state = freezeconnect(0.5, key=jax.random.key(0), resample="never").init(params)
    assert not np.array_equal(state.mask["a"]["kernel"], state.mask["b"]["kernel"])


# --- resampling policies -------------------------------------------------------------


def _masks_over_steps(tx, params, n):
    state = tx.init(params)
    update = jax.jit(tx.update)
    out = []
    for _ in range(n):
        out.append(np.asarray(the_state(state, (FreezeConnectState, DropConnectState)).mask["d"]["kernel"]))
        _, state = update(params, state, params)
    return out


def test_resample_step_epoch_never():
    params = {"d": {"kernel": jnp.ones((40, 50))}}
    ms = _masks_over_steps(freezeconnect(0.5, key=jax.random.key(1), resample="step"), params, 5)
    assert all(not np.array_equal(ms[i], ms[i + 1]) for i in range(4))

    ms = _masks_over_steps(freezeconnect(0.5, key=jax.random.key(1), resample="never"), params, 5)
    assert all(np.array_equal(ms[0], m) for m in ms)

    ms = _masks_over_steps(
        freezeconnect(0.5, key=jax.random.key(1), resample="epoch", steps_per_epoch=3), params, 9
    )
    epochs = [ms[0:3], ms[3:6], ms[6:9]]
    for e in epochs:
        assert all(np.array_equal(e[0], m) for m in e)
    assert not np.array_equal(epochs[0][0], epochs[1][0])
    assert not np.array_equal(epochs[1][0], epochs[2][0])

    # dropconnect defaults to a fresh mask every step
    ms = _masks_over_steps(dropconnect(0.5, key=jax.random.key(1)), params, 3)
    assert not np.array_equal(ms[0], ms[1]) and not np.array_equal(ms[1], ms[2])


def test_same_key_same_masks_different_key_different_masks():
    params = {"d": {"kernel": jnp.ones((40, 50))}}
    a = _masks_over_steps(freezeconnect(0.5, key=jax.random.key(7), resample="step"), params, 3)
    b = _masks_over_steps(freezeconnect(0.5, key=jax.random.key(7), resample="step"), params, 3)
    c = _masks_over_steps(freezeconnect(0.5, key=jax.random.PRNGKey(8), resample="step"), params, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


# --- rate 0 is the plain optimizer, exactly ---------------------------------------------


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_rate_zero_reproduces_plain_optimizer(opt):
    params0 = make_params()
    targets = make_targets(params0)
    plain = OPTIMIZERS[opt]()
    runs = {
        "plain": (plain, None),
        "fc_after": (optax.chain(OPTIMIZERS[opt](), freezeconnect(0.0, key=jax.random.key(0), resample="step")), None),
        "fc_before": (optax.chain(freezeconnect(0.0, key=jax.random.key(0), resample="step"), OPTIMIZERS[opt]()), None),
        "dc": (optax.chain(OPTIMIZERS[opt](), dropconnect(0.0, key=jax.random.key(0))), dropconnect_params),
    }
    results = {}
    for name, (tx, fwd) in runs.items():
        state = tx.init(params0)
        step = make_step(tx, targets, fwd)
        p = params0
        for _ in range(8):
            p, state = step(p, state)
        results[name] = p
    for name in ("fc_after", "fc_before", "dc"):
        for a, b in zip(jax.tree.leaves(results["plain"]), jax.tree.leaves(results[name])):
            np.testing.assert_array_equal(bits(a), bits(b))


# --- selection ---------------------------------------------------------------------------


def test_selection_by_predicate_and_bool_tree():
    params = make_params()
    st = freezeconnect(0.5, key=jax.random.key(0), where=layers("dense2"), resample="never").init(params)
    assert np.shape(st.mask["conv1"]["kernel"]) == ()
    assert np.shape(st.mask["dense2"]["kernel"]) == (16, 3)

    where = {"conv1": {"kernel": False, "bias": True}, "bn1": False, "dense2": True, "prelu2": None}
    st = freezeconnect(0.5, key=jax.random.key(0), where=where, resample="never").init(params)
    shapes = jax.tree.map(np.shape, st.mask)
    assert shapes["conv1"] == {"kernel": (), "bias": (4,)}
    assert shapes["bn1"] == {"scale": (), "offset": ()}
    assert shapes["dense2"] == {"kernel": (16, 3)}
    assert shapes["prelu2"] == {"alpha": ()}

    st = freezeconnect(0.5, key=jax.random.key(0), where=None, resample="never").init(params)
    assert all(np.shape(m) == np.shape(p) for m, p in zip(jax.tree.leaves(st.mask), jax.tree.leaves(params)))


def test_unselected_updates_pass_through_untouched():
    params = make_params()
    grads = make_targets(params, seed=9)
    tx = freezeconnect(0.5, key=jax.random.key(0), where=kernels_only, resample="step")
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    for layer, name in [("conv1", "bias"), ("bn1", "scale"), ("prelu2", "alpha")]:
        np.testing.assert_array_equal(bits(updates[layer][name]), bits(grads[layer][name]))


# --- dropconnect --------------------------------------------------------------------------


def test_dropconnect_params_masks_and_scales():
    params = make_params()
    for scale, factor in [(True, 1 / (1 - 0.25)), (False, 1.0)]:
        tx = optax.chain(optax.sgd(0.1), dropconnect(0.25, key=jax.random.key(2), scale=scale))
        state = tx.init(params)
        mask = the_state(state, DropConnectState).mask
        fwd = dropconnect_params(params, state)
        for layer in ("conv1", "dense2"):
            m = np.asarray(mask[layer]["kernel"])
            w = np.asarray(params[layer]["kernel"])
            got = np.asarray(fwd[layer]["kernel"])
            assert np.all(got[~m] == 0.0)
            np.testing.assert_allclose(got[m], w[m] * np.float32(factor), rtol=1e-6)
        # biases, batch norm, PReLU untouched by default
        np.testing.assert_array_equal(fwd["conv1"]["bias"], params["conv1"]["bias"])
        np.testing.assert_array_equal(fwd["bn1"]["scale"], params["bn1"]["scale"])


def test_dropconnect_inverted_scaling_preserves_expectation():
    params = {"d": {"kernel": jnp.ones((100, 100))}}
    tx = dropconnect(0.4, key=jax.random.key(0))
    state = tx.init(params)
    mean = float(jnp.mean(dropconnect_params(params, state)["d"]["kernel"]))
    se = np.sqrt(0.4 / 0.6 / 1e4)  # std of the scaled Bernoulli / sqrt(n)
    assert abs(mean - 1.0) < 5 * se


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("placement", ["after", "before"])
def test_dropconnect_forward_and_update_share_the_mask(opt, placement):
    params = make_params()
    targets = make_targets(params)
    dc = dropconnect(0.5, key=jax.random.key(6))
    tx = optax.chain(OPTIMIZERS[opt](), dc) if placement == "after" else optax.chain(dc, OPTIMIZERS[opt]())
    state = tx.init(params)
    step = make_step(tx, targets, dropconnect_params)
    grad_fn = jax.jit(jax.grad(lambda p, s: quad_loss(dropconnect_params(p, s), targets)))
    leaked = 0
    for i in range(6):
        mask = np.asarray(the_state(state, DropConnectState).mask["dense2"]["kernel"])
        # the gradient of a dropped weight is exactly zero: it is not in the forward pass
        grads = grad_fn(params, state)
        assert np.all(np.asarray(grads["dense2"]["kernel"])[~mask] == 0.0)
        new_params, state = step(params, state)
        moved = np.asarray(new_params["dense2"]["kernel"]) != np.asarray(params["dense2"]["kernel"])
        if placement == "after" or opt == "sgd" or i == 0:
            assert not np.any(moved & ~mask)
        leaked += int((moved & ~mask).sum())
        params = new_params
    if placement == "before" and opt != "sgd":
        assert leaked > 0  # momentum/Adam moments from earlier masks still move dropped weights


def test_dropconnect_inside_partition_and_masked_wrappers():
    params = make_params()
    base = optax.chain(optax.sgd(0.1), dropconnect(0.5, key=jax.random.key(0), where=None))
    tx = freeze_layers(exclude_biases(base), ["dense2"])
    state = tx.init(params)
    fwd = dropconnect_params(params, state)
    # frozen layer and excluded biases are not seen by the dropconnect inside: used whole
    np.testing.assert_array_equal(fwd["dense2"]["kernel"], params["dense2"]["kernel"])
    np.testing.assert_array_equal(fwd["conv1"]["bias"], params["conv1"]["bias"])
    w = np.asarray(params["conv1"]["kernel"])
    got = np.asarray(fwd["conv1"]["kernel"])
    assert np.any(got == 0.0) and np.any(got == w * 2.0)
    step = make_step(tx, make_targets(params), dropconnect_params)
    p2, _ = step(params, state)
    np.testing.assert_array_equal(p2["dense2"]["kernel"], params["dense2"]["kernel"])


def test_chain_with_both_transforms_under_jit_epoch_resampling():
    params = make_params()
    targets = make_targets(params)
    tx = optax.chain(
        dropconnect(0.2, key=jax.random.key(1), where=layers("conv1")),
        optax.adam(0.01),
        freezeconnect(0.3, key=jax.random.key(2), where=layers("dense2"), resample="epoch", steps_per_epoch=2),
    )
    state = tx.init(params)
    step = make_step(tx, targets, dropconnect_params)
    losses = []
    for _ in range(10):
        params, state = step(params, state)
        losses.append(float(quad_loss(params, targets)))
    assert losses[-1] < losses[0]
    assert int(the_state(state).count) == 10


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("transform", [freezeconnect, dropconnect])
def test_errors(transform):
    k = jax.random.key(0)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            transform(bad, key=k, resample="step")
    with pytest.raises(TypeError, match="float"):
        transform("0.5", key=k, resample="step")
    with pytest.raises(TypeError, match="predicate as `where=`"):
        transform(kernels_only, key=k, resample="step")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        transform({"conv1": 1.0}, key=k, resample="step")
    with pytest.raises(TypeError, match="needs a PRNG key"):
        transform(0.5, key=None, resample="step")
    with pytest.raises(TypeError, match="PRNG key"):
        transform(0.5, key=0, resample="step")
    with pytest.raises(TypeError, match="PRNG key"):
        transform(0.5, key=jnp.zeros((3,)), resample="step")
    with pytest.raises(TypeError):
        transform(0.5, jax.random.key(0))  # key is keyword-only
    with pytest.raises(ValueError, match="resample must be one of"):
        transform(0.5, key=k, resample="batch")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        transform(0.5, key=k, resample="epoch")
    with pytest.raises(ValueError, match="positive int"):
        transform(0.5, key=k, resample="epoch", steps_per_epoch=0)
    with pytest.raises(ValueError, match="does not match"):
        transform({"nope": {"x": 0.5, "y": 0.1}}, key=k, resample="step").init(make_params())


def test_freezeconnect_default_resample_is_epoch():
    with pytest.raises(ValueError, match="resample='epoch' needs steps_per_epoch"):
        freezeconnect(0.5, key=jax.random.key(0))


def test_dropconnect_params_without_state():
    params = make_params()
    state = optax.sgd(0.1).init(params)
    with pytest.raises(ValueError, match="no DropConnectState"):
        dropconnect_params(params, state)
