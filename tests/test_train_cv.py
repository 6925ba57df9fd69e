"""Cross-validation: folds (scikit-learn and the numpy fallback), validation part, the two protocols."""

import importlib.util

import jax
import numpy as np
import optax
import pytest

from _train_helpers import tiny_data, tiny_model
from jigcnn.train import PaperStopping, cross_validate, kfold_indices, protocol_splits, split_validation

# the numpy fallback always; scikit-learn's splitters when installed (an optional extra)
SK = [False] + ([True] if importlib.util.find_spec("sklearn") else [])


def _check_partition(folds, n):
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(n))  # every index tested exactly once
    for tr, te in folds:
        assert not set(tr.tolist()) & set(te.tolist())
        assert len(tr) + len(te) == n


@pytest.mark.parametrize("use_sklearn", SK)
def test_kfold_plain_and_stratified(use_sklearn):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 100)
    folds = kfold_indices(100, 5, seed=1, use_sklearn=use_sklearn)
    _check_partition(folds, 100)
    folds = kfold_indices(100, 5, stratify=y, seed=1, use_sklearn=use_sklearn)
    _check_partition(folds, 100)
    for _, te in folds:  # class counts per fold within 1 of the ideal
        for c in range(3):
            assert abs(np.sum(y[te] == c) - np.sum(y == c) / 5) <= 1
    assert [te.tolist() for _, te in folds] == [te.tolist() for _, te in
                                                 kfold_indices(100, 5, stratify=y, seed=1, use_sklearn=use_sklearn)]


@pytest.mark.parametrize("use_sklearn", SK)
@pytest.mark.parametrize("stratified", [False, True])
def test_kfold_grouped_never_splits_a_group(use_sklearn, stratified):
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 30, 120)
    y = (groups % 3) if stratified else None
    folds = kfold_indices(120, 4, groups=groups, stratify=y, seed=2, use_sklearn=use_sklearn)
    _check_partition(folds, 120)
    for tr, te in folds:
        assert not set(groups[tr].tolist()) & set(groups[te].tolist())
    sizes = [len(te) for _, te in folds]
    assert max(sizes) - min(sizes) <= 12


@pytest.mark.parametrize("use_sklearn", SK)
def test_split_validation_grouped(use_sklearn):
    groups = np.repeat(np.arange(40), 3)
    rest, val = split_validation(120, 0.2, groups=groups, seed=0, use_sklearn=use_sklearn)
    assert len(rest) + len(val) == 120 and 18 <= len(val) <= 30
    assert not set(groups[rest].tolist()) & set(groups[val].tolist())


def test_paper_protocol_leaks_and_grouped_never_does():
    n, factor = 60, 10
    labels = np.arange(n) % 3
    paper = protocol_splits(n, protocol="paper", k=5, factor=factor, labels=labels, seed=0)
    grouped = protocol_splits(n, protocol="grouped", k=5, factor=factor, labels=labels, seed=0)
    # paper: copies of one drawing on both sides of (almost) every split
    assert all(lk["train_test"] > n // 5 for lk in paper.leaks())
    assert all(lk["train_val"] > 0 for lk in paper.leaks())
    # grouped: never
    assert all(lk == {"train_test": 0, "train_val": 0, "test_val": 0} for lk in grouped.leaks())
    # grouped: training side augmented (all copies), test and validation are originals only
    for tr, te in grouped.folds:
        assert len(tr) % factor == 0 and np.all(te < n)
    assert np.all(grouped.validation < n)
    # paper: the whole expanded set is used once, as validation or as a test part
    used = np.concatenate([paper.validation] + [te for _, te in paper.folds])
    assert sorted(used.tolist()) == list(range(n * factor))
    # with a manifest group coarser than the image (two images per drawing), grouped still never leaks
    src = np.arange(n) // 2
    g2 = protocol_splits(n, protocol="grouped", k=5, factor=3, source=src, seed=1)
    assert all(lk["train_test"] == 0 and lk["train_val"] == 0 for lk in g2.leaks())


@pytest.mark.parametrize("protocol", ["paper", "grouped"])
def test_cross_validate_reports_protocol_and_mean_std(protocol):
    x, y = tiny_data(n=60)
    shift = lambda key, imgs: imgs + 0.05 * jax.random.normal(key, imgs.shape)  # noqa: E731
    res = cross_validate(tiny_model(), x, y, np.arange(60), protocol=protocol, optimizer=optax.sgd(0.05),
                         loss="softmax_cross_entropy", k=2, augment_factor=2, augment=shift,
                         stopping=PaperStopping(passes=2, tolerance=7), validation_fraction=0.2, progress=False)
    assert res.protocol == protocol and res.k == 2 and len(res.folds) == 2
    assert set(res.mean) == {"test_loss", "test_accuracy", "val_loss", "val_accuracy"}
    for name, v in res.mean.items():
        vals = [f["metrics"][name] for f in res.folds]
        assert v == pytest.approx(np.mean(vals)) and res.std[name] == pytest.approx(np.std(vals, ddof=1))
    leaks = [f["leaks"]["train_test"] for f in res.folds]
    assert (min(leaks) > 0) if protocol == "paper" else (max(leaks) == 0)
    assert f"protocol={protocol}" in res.summary()


def test_cross_validate_vmapped_matches_sequential():
    x, y = tiny_data(n=60)
    noise = lambda key, imgs: imgs + 0.05 * jax.random.normal(key, imgs.shape)  # noqa: E731
    kw = dict(protocol="grouped", optimizer=optax.sgd(0.05), loss="softmax_cross_entropy", k=2, augment_factor=2,
              augment=noise, train_augment=noise, stopping=PaperStopping(passes=2, tolerance=7), batch_size=16,
              validation_fraction=0.2, progress=False)
    seq = cross_validate(tiny_model(), x, y, np.arange(60) // 2, **kw)
    vm = cross_validate(tiny_model(), x, y, np.arange(60) // 2, vmapped=True, **kw)
    assert [f["leaks"] for f in seq.folds] == [f["leaks"] for f in vm.folds]
    for a, b in zip(seq.folds, vm.folds):
        for name in a["metrics"]:
            np.testing.assert_allclose(a["metrics"][name], b["metrics"][name], rtol=1e-4, atol=1e-5)


def test_as_augment_accepts_callables_and_data_configs():
    from jigcnn.data.augment import AugmentConfig
    from jigcnn.train import as_augment

    f = lambda k, im: im  # noqa: E731
    assert as_augment(f) is f and as_augment(None) is None
    assert callable(as_augment(AugmentConfig(noise_level=0.1, noise_portion=0.2)))
    with pytest.raises(TypeError, match="AugmentConfig"):
        as_augment(3)


@pytest.mark.parametrize("use_sklearn", [True, False])
def test_classes_too_small_to_stratify_fall_back_to_unstratified_grouped_folds(use_sklearn):
    if use_sklearn:
        pytest.importorskip("sklearn")
    n = 60
    labels = np.arange(n) // 2  # 30 classes of 2 members: none can be spread over 5 folds
    groups = np.arange(n) // 3
    with pytest.warns(UserWarning, match="not stratified"):
        folds = kfold_indices(n, 5, stratify=labels, groups=groups, seed=0, use_sklearn=use_sklearn)
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(n))
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
