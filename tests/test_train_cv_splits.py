"""CVResult.splits: cross_validate hands back the ProtocolSplits it trained on."""

import numpy as np
import optax
import pytest

from _train_helpers import tiny_data, tiny_model
from jigcnn.train import PaperStopping, cross_validate, protocol_splits


@pytest.mark.parametrize("protocol", ["paper", "grouped"])
def test_cross_validate_result_carries_the_splits_it_used(protocol):
    n = 40
    x, y = tiny_data(n=n)
    source = np.arange(n) // 2
    res = cross_validate(tiny_model(), x, y, source, protocol=protocol, optimizer=optax.sgd(0.05),
                         loss="softmax_cross_entropy", k=2, augment_factor=2, seed=3,
                         stopping=PaperStopping(passes=1, tolerance=7), validation_fraction=0.2, progress=False)
    want = protocol_splits(n, protocol=protocol, k=2, factor=2, labels=y, source=source, validation_fraction=0.2,
                           seed=3)
    sp = res.splits
    assert sp.protocol == protocol and sp.n == n and sp.factor == 2
    np.testing.assert_array_equal(sp.validation, want.validation)
    for (tr, te), (wtr, wte), fold in zip(sp.folds, want.folds, res.folds):
        np.testing.assert_array_equal(tr, wtr)
        np.testing.assert_array_equal(te, wte)
        assert fold["n_train"] == len(tr) and fold["n_test"] == len(te)
    assert [f["leaks"] for f in res.folds] == sp.leaks()
