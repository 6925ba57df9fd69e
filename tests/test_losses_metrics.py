"""Losses and metrics against NumPy formulas and hand-made cases."""

import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import losses, metrics

RNG = np.random.default_rng(0)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("shape", [(4,), (4, 3), (2, 3, 2)])  # vectors, rows, a matrix of output neurons
def test_mae_mse(shape):
    p = RNG.normal(size=shape).astype(np.float32)
    t = RNG.normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(float(losses.mae(jnp.asarray(p), jnp.asarray(t))), np.abs(p - t).mean(), rtol=1e-6)
    np.testing.assert_allclose(float(losses.mse(jnp.asarray(p), jnp.asarray(t))), ((p - t) ** 2).mean(), rtol=1e-6)


def test_mae_mse_hand_case():
    p, t = jnp.array([[1.0, 2.0], [3.0, 5.0]]), jnp.array([[0.0, 2.0], [4.0, 2.0]])
    assert float(losses.mae(p, t)) == pytest.approx((1 + 0 + 1 + 3) / 4)
    assert float(losses.mse(p, t)) == pytest.approx((1 + 0 + 1 + 9) / 4)


def test_softmax_cross_entropy_integer_and_one_hot():
    logits = RNG.normal(size=(5, 4)).astype(np.float32) * 3
    labels = np.array([0, 3, 1, 1, 2])
    ref = -np_log_softmax(logits.astype(np.float64))[np.arange(5), labels].mean()
    got_int = float(losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
    got_hot = float(losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(np.eye(4)[labels], jnp.float32)))
    assert got_int == pytest.approx(ref, rel=1e-5)
    assert got_hot == pytest.approx(ref, rel=1e-5)
    soft = np.full((5, 4), 0.25, np.float32)   # soft targets: mean over classes of -log p
    ref_soft = -(0.25 * np_log_softmax(logits.astype(np.float64)).sum(-1)).mean()
    assert float(losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(soft))) == pytest.approx(ref_soft, rel=1e-5)


def test_softmax_cross_entropy_hand_case():
    # uniform logits over K classes: the loss is log K
    assert float(losses.softmax_cross_entropy(jnp.zeros((3, 5)), jnp.array([0, 1, 4]))) == pytest.approx(np.log(5), rel=1e-6)


def test_cross_entropy_on_probabilities_and_nll_on_log_probabilities():
    logits = RNG.normal(size=(6, 3)).astype(np.float32)
    labels = np.array([2, 0, 1, 1, 0, 2])
    logp = np_log_softmax(logits.astype(np.float64))
    ref = -logp[np.arange(6), labels].mean()
    probs = jnp.asarray(np.exp(logp), jnp.float32)
    assert float(losses.cross_entropy(probs, jnp.asarray(labels))) == pytest.approx(ref, rel=1e-5)
    assert float(losses.cross_entropy(probs, jnp.asarray(np.eye(3)[labels]))) == pytest.approx(ref, rel=1e-5)
    assert float(losses.nll(jnp.asarray(logp, jnp.float32), jnp.asarray(labels))) == pytest.approx(ref, rel=1e-5)
    assert float(losses.nll(jnp.asarray(logp, jnp.float32), jnp.asarray(np.eye(3)[labels]))) == pytest.approx(ref, rel=1e-5)
    # hand case: p(true) = 0.5 and 0.25
    p = jnp.array([[0.5, 0.5], [0.75, 0.25]])
    assert float(losses.cross_entropy(p, jnp.array([0, 1]))) == pytest.approx((np.log(2) + np.log(4)) / 2, rel=1e-6)
    # a zero probability on the true class gives a large but finite loss
    assert np.isfinite(float(losses.cross_entropy(jnp.array([[1.0, 0.0]]), jnp.array([1]))))


def test_binary_cross_entropy():
    z = RNG.normal(size=(4, 3)).astype(np.float32) * 2
    t = (RNG.uniform(size=(4, 3)) > 0.5).astype(np.float32)
    s = 1 / (1 + np.exp(-z.astype(np.float64)))
    ref = -(t * np.log(s) + (1 - t) * np.log(1 - s)).mean()
    assert float(losses.binary_cross_entropy(jnp.asarray(z), jnp.asarray(t))) == pytest.approx(ref, rel=1e-5)
    assert float(losses.binary_cross_entropy(jnp.zeros((2,)), jnp.array([0.0, 1.0]))) == pytest.approx(np.log(2), rel=1e-6)


def test_get_loss():
    assert losses.get_loss("mae") is losses.mae
    assert set(losses.LOSSES) == {"mae", "mse", "softmax_cross_entropy", "cross_entropy", "nll", "binary_cross_entropy"}
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        losses.get_loss("hinge")


def test_accuracy():
    out = jnp.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.3, 0.4, 0.3]])
    labels = jnp.array([1, 0, 0, 2])
    assert float(metrics.accuracy(out, labels)) == pytest.approx(0.5)
    assert float(metrics.accuracy(out, jnp.eye(3)[labels])) == pytest.approx(0.5)
    assert float(metrics.accuracy(out, jnp.array([1, 0, 2, 1]))) == pytest.approx(1.0)


def test_mape_and_mae_metric():
    pred, target = jnp.array([110.0, 90.0, 52.0]), jnp.array([100.0, 100.0, 50.0])
    assert float(metrics.mape(pred, target)) == pytest.approx(100 * (0.1 + 0.1 + 0.04) / 3, rel=1e-6)
    assert float(metrics.mape(-pred, -target)) == pytest.approx(100 * 0.24 / 3, rel=1e-6)
    assert float(metrics.mean_absolute_error(pred, target)) == pytest.approx(22 / 3, rel=1e-6)
    assert float(metrics.mape(target, target)) == 0.0


def test_confusion_matrix():
    labels = jnp.array([0, 1, 2, 2, 1, 0])
    predicted = jnp.array([0, 2, 2, 2, 1, 1])
    expected = np.array([[1, 1, 0],
                         [0, 1, 1],
                         [0, 0, 2]])
    np.testing.assert_array_equal(np.asarray(metrics.confusion_matrix(predicted, labels, 3)), expected)
    # outputs instead of indices, one-hot labels instead of integers
    outputs = jnp.eye(3)[predicted] * 0.7 + 0.1
    np.testing.assert_array_equal(np.asarray(metrics.confusion_matrix(outputs, jnp.eye(3)[labels], 3)), expected)
    assert int(metrics.confusion_matrix(predicted, labels, 4).sum()) == 6
    assert metrics.confusion_matrix(predicted, labels, 4).shape == (4, 4)


def test_smoothed_softmax_cross_entropy_against_numpy():
    z = RNG.normal(size=(5, 4)).astype(np.float32)
    y = np.array([0, 3, 1, 1, 2])
    for s in (0.0, 0.1, 0.5):
        t = np.full((5, 4), s / 4)
        t[np.arange(5), y] += 1 - s
        want = -(t * np_log_softmax(z.astype(np.float64))).sum(-1).mean()
        loss = losses.SmoothedSoftmaxCrossEntropy(s)
        np.testing.assert_allclose(float(loss(jnp.asarray(z), jnp.asarray(y))), want, rtol=1e-5)
        np.testing.assert_allclose(float(loss(jnp.asarray(z), jnp.asarray(np.eye(4)[y]))), want, rtol=1e-5)
    assert float(losses.SmoothedSoftmaxCrossEntropy(0.0)(jnp.asarray(z), jnp.asarray(y))) == pytest.approx(
        float(losses.softmax_cross_entropy(jnp.asarray(z), jnp.asarray(y))), rel=1e-6)
    assert losses.SmoothedSoftmaxCrossEntropy(0.1) == losses.SmoothedSoftmaxCrossEntropy(0.1)
    with pytest.raises(ValueError, match="label smoothing"):
        losses.SmoothedSoftmaxCrossEntropy(1.0)
    with pytest.raises(ValueError, match="labels"):
        losses.SmoothedSoftmaxCrossEntropy(0.1)(jnp.asarray(z), jnp.asarray(y[:3]))


def test_age_mape_metric_maps_both_sides_back_to_ages():
    name, fn = metrics.age_mape_metric(offset=100.0, scale=2.0)
    assert name == "mape"
    # trained on (age - 100) / 2: pred 1 -> age 102, target 0.5 -> age 101: |102 - 101| / 101
    pred, target = jnp.array([[1.0], [0.0]]), jnp.array([[0.5], [-1.0]])
    want = 100 * (1 / 101 + 2 / 98) / 2  # second: pred age 100, target age 98
    assert float(fn(pred, target)) == pytest.approx(want, rel=1e-6)
    # offset 0, scale 1: the plain MAPE
    p, t = RNG.uniform(1, 2, (5, 1)), RNG.uniform(1, 2, (5, 1))
    assert float(metrics.age_mape_metric(0.0)[1](jnp.asarray(p), jnp.asarray(t))) == pytest.approx(
        100 * np.mean(np.abs(p - t) / np.abs(t)), rel=1e-5)
    assert metrics.age_mape_metric(1.0, name="age_mape")[0] == "age_mape"


def test_age_mape_metric_rejects_bad_scale_and_shapes():
    with pytest.raises(ValueError, match="scale must be > 0, got 0"):
        metrics.age_mape_metric(1.0, scale=0)
    with pytest.raises(ValueError, match="same shape"):
        metrics.age_mape_metric(1.0)[1](jnp.zeros((3, 1)), jnp.ones((3,)))
