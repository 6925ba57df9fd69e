"""jigcnn.data.standardize: per-channel statistics of the training set, applied to every array."""

import numpy as np
import pytest

from jigcnn.data import channel_stats, standardize


def test_standardize_hand_case_uses_the_training_statistics_for_every_array():
    # channel 0: 1, 3 (mean 2, std 1); channel 1: 10, 10, 10, 10 (mean 10, std 0)
    train = np.array([[[[1.0, 10.0], [3.0, 10.0]]], [[[1.0, 10.0], [3.0, 10.0]]]])  # (2, 1, 2, 2)
    test = np.array([[[[5.0, 12.0]]]])  # (1, 1, 1, 2)
    tr, te = standardize(train, test, eps=0.0 + 1e-6)
    assert tr.dtype == te.dtype == np.float32
    np.testing.assert_allclose(tr[..., 0].ravel(), [-1, 1, -1, 1], rtol=1e-5)
    np.testing.assert_allclose(tr[..., 1], 0.0)
    assert te[0, 0, 0, 0] == pytest.approx(3.0, rel=1e-5)  # (5 - 2) / 1
    assert te[0, 0, 0, 1] == pytest.approx(2.0 / 1e-6, rel=1e-5)  # the eps keeps a constant channel finite


def test_standardize_makes_each_training_channel_zero_mean_unit_std():
    rng = np.random.default_rng(0)
    train = rng.normal([1.0, -5.0, 30.0], [0.5, 2.0, 7.0], size=(200, 4, 3, 3))
    (tr,) = standardize(train)
    np.testing.assert_allclose(tr.reshape(-1, 3).mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(tr.reshape(-1, 3).std(0), 1.0, atol=1e-5)
    mu, sd = channel_stats(train, eps=0.0)
    assert mu.shape == sd.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(mu.ravel(), [train[..., c].mean() for c in range(3)])


def test_standardize_rejects_mismatched_and_empty_arrays():
    with pytest.raises(ValueError, match=r"array 1 has shape \(2, 4, 4, 1\)"):
        standardize(np.zeros((3, 4, 4, 3)), np.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="empty"):
        standardize(np.zeros((0, 4, 4, 3)))
    with pytest.raises(ValueError, match="channel axis"):
        standardize(np.zeros(5))
