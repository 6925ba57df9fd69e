"""The pure train step: autodiff vs hand-written gradients, per-layer finite flags, skipped bad steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from _train_helpers import tiny_data, tiny_model
from jigcnn.train import epoch_order, layer_finite, make_grad_fn, make_train_step

LOSS = "softmax_cross_entropy"


def _setup():
    m = tiny_model()
    p, s = m.init(jax.random.key(0))
    x, y = tiny_data(n=32)
    return m, p, s, jnp.asarray(x), jnp.asarray(y)


def test_step_updates_and_reports_metrics():
    m, p, s, x, y = _setup()
    tx = optax.sgd(0.1)
    step = make_train_step(m, LOSS, tx, metrics=("accuracy",), donate=False)
    p2, s2, o2, met = step(p, s, tx.init(p), x, y, jax.random.key(1))
    assert bool(met["ok"]) and bool(met["applied"])
    assert set(met["grad_finite"]) == {"conv1", "dense3"}
    assert 0.0 <= float(met["accuracy"]) <= 1.0
    # the update is plain SGD on the autodiff gradient
    def objective(q):
        out, _ = m.apply(q, s, x)
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    g = jax.grad(objective)(p)
    want = jax.tree.map(lambda a, b: a - 0.1 * b, p, g)
    for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_non_finite_step_is_not_applied_and_names_the_layer():
    m, p, s, x, y = _setup()
    tx = optax.sgd(0.1)
    step = make_train_step(m, LOSS, tx, donate=False)
    bad_x = x.at[0, 0, 0, 0].set(jnp.nan)
    p2, _, _, met = step(p, s, tx.init(p), bad_x, y, jax.random.key(1))
    assert not bool(met["ok"]) and not bool(met["applied"]) and not bool(met["loss_finite"])
    for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(p)):
        np.testing.assert_array_equal(a, b)
    flags = layer_finite({"conv1": {"kernel": jnp.ones(3)}, "dense3": {"kernel": jnp.array([1.0, jnp.inf])}})
    assert bool(flags["conv1"]) and not bool(flags["dense3"])


def test_epoch_order_is_prefix_consistent_permutation():
    k = jax.random.key(5)
    a = np.asarray(epoch_order(k, 37, 37))
    b = np.asarray(epoch_order(k, 37, 64))
    assert sorted(a.tolist()) == list(range(37))
    np.testing.assert_array_equal(a, b[:37])
    assert sorted(b[37:].tolist()) == list(range(37, 64))


def test_dropconnect_zeroes_gradient_of_dropped_weights():
    from jigcnn.optim import DropConnectState, dropconnect, find_states

    m, p, s, x, y = _setup()
    tx = optax.chain(optax.sgd(0.1), dropconnect(0.5, key=jax.random.key(2)))
    o = tx.init(p)
    (_, _), g = make_grad_fn(m, LOSS)(p, s, o, x, y, None)
    mask = find_states(o, DropConnectState)[0].mask
    dropped = ~np.asarray(mask["conv1"]["kernel"])
    assert dropped.any()
    assert np.all(np.asarray(g["conv1"]["kernel"])[dropped] == 0)
    assert np.any(np.asarray(g["conv1"]["kernel"])[~dropped] != 0)
    step = make_train_step(m, LOSS, tx, donate=False)
    p2, _, _, met = step(p, s, o, x, y, None)
    assert bool(met["applied"])
    np.testing.assert_array_equal(np.asarray(p2["conv1"]["kernel"])[dropped], np.asarray(p["conv1"]["kernel"])[dropped])


def test_manual_gradients_give_the_same_step():
    pytest.importorskip("jigcnn.backprop", reason="the hand-written backprop has not landed yet")
    m, p, s, x, y = _setup()
    tx = optax.sgd(0.1)
    o = tx.init(p)
    auto = make_train_step(m, LOSS, tx, grad_method="autodiff", donate=False)
    manual = make_train_step(m, LOSS, tx, grad_method="manual", donate=False)
    pa, _, _, ma = auto(p, s, o, x, y, None)
    pm, _, _, mm = manual(p, s, o, x, y, None)
    np.testing.assert_allclose(float(ma["loss"]), float(mm["loss"]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(pa), jax.tree.leaves(pm)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_manual_and_autodiff_fits_agree():
    pytest.importorskip("jigcnn.backprop", reason="the hand-written backprop has not landed yet")
    from _train_helpers import split
    from jigcnn.train import fit

    x, y = tiny_data()
    tr, te, _ = split(x, y)
    m = tiny_model()
    p, s = m.init(jax.random.key(0))
    kw = dict(epochs=2, key=jax.random.key(1), loss=LOSS, progress=False)
    a = fit(m, p, s, optax.sgd(0.05, momentum=0.9), tr, te, grad_method="autodiff", **kw)
    b = fit(m, p, s, optax.sgd(0.05, momentum=0.9), tr, te, grad_method="manual", **kw)
    for ra, rb in zip(a.history.metrics(), b.history.metrics()):
        for k in ra:
            np.testing.assert_allclose(ra[k], rb[k], rtol=1e-4, atol=1e-6)
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


def test_train_package_imports_its_modules_on_first_use():
    import subprocess
    import sys

    import jigcnn.train as train

    for name in train.__all__:
        assert getattr(train, name) is not None
    assert train.loop.fit is train.fit and "cv" in dir(train)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        train.nope
    code = ("import sys; from jigcnn.train import make_train_step; "
            "print(sorted(m for m in sys.modules if m.startswith('jigcnn.train.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['jigcnn.train.step']", out.stdout
