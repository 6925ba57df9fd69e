"""Label groups and joint one-hot encodings for every combination of groups."""

import numpy as np
import pytest

from jigcnn.data.labels import (
    PAPER_GROUPS,
    all_group_combinations,
    canonical_groups,
    encode,
    encode_one_hot,
    labels_from_names,
    one_hot,
    regression_target,
)

NAMES = [
    "p3-67w-6.7f.jpeg", "nu-21s-4.5m.jpeg", "nu-22s-4.5f.jpeg", "nu-23m-4.10m.jpeg", "p1-1g-5.2f.jpeg",
    "p1-2b-5.2m.jpeg", "p1-3s-5.2m.jpeg", "p2-4s-6.11f.jpeg", "p2-5w-6.0m.jpeg", "p3-68s-7.4m.jpeg",
    "p3-69s-6.7f.jpeg", "nu-24w-4.10f.jpeg",
]


@pytest.fixture
def labels():
    return labels_from_names(NAMES)


def test_labels_from_names(labels):
    assert labels["age_category"].tolist()[:2] == ["p3", "nu"]
    assert labels["age"].tolist()[:4] == ["6.7", "4.5", "4.5", "4.10"]
    assert labels["age_months"].tolist()[:4] == [79, 53, 53, 58]
    assert labels["who_drew"].tolist()[:3] == ["girl", "boy", "girl"]
    assert labels["who_is_drawn"].tolist()[:4] == ["female", "male", "female", "male"]
    assert labels["figure"].tolist()[:2] == ["woman", "self"]


def test_fifteen_combinations_of_the_four_paper_groups():
    combos = all_group_combinations()
    assert len(combos) == 15 and len(set(combos)) == 15
    assert ("age_category", "age", "who_drew", "who_is_drawn") in combos


@pytest.mark.parametrize("groups", all_group_combinations(PAPER_GROUPS + ("age_months",)))
def test_every_combination_counts_and_round_trips(labels, groups):
    idx, table = encode(labels, groups)
    assert idx.dtype == np.int32 and idx.shape == (len(NAMES),)
    expected = {tuple(labels[g][i].item() for g in table.groups) for i in range(len(NAMES))}
    assert table.n_classes == len(expected) == len(table.names) == len(set(table.names))
    assert set(table.values) == expected
    back = table.decode(idx)
    for g in groups:
        np.testing.assert_array_equal(back[g], labels[g])
    oh, table2 = encode_one_hot(labels, groups)
    assert table2 == table and oh.dtype == np.float32 and oh.shape == (len(NAMES), table.n_classes)
    np.testing.assert_array_equal(oh.sum(1), 1.0)
    np.testing.assert_array_equal(oh.argmax(1), idx)
    for k in range(len(NAMES)):
        assert table.index(table.values[idx[k]]) == idx[k]


def test_group_order_is_canonical(labels):
    idx1, t1 = encode(labels, ("who_is_drawn", "age", "who_drew"))
    idx2, t2 = encode(labels, ("age", "who_drew", "who_is_drawn"))
    assert t1.groups == ("age", "who_drew", "who_is_drawn")
    assert t1 == t2
    np.testing.assert_array_equal(idx1, idx2)
    assert canonical_groups(("zeta", "alpha", "who_drew")) == ("who_drew", "alpha", "zeta")


def test_class_table_names_and_natural_order(labels):
    _, t = encode(labels, "age")
    assert t.names == ("4.5", "4.10", "5.2", "6.0", "6.7", "6.11", "7.4")
    _, t = encode(labels, ("age_category", "who_drew"))
    assert t.names == ("nu/boy", "nu/girl", "p1/boy", "p1/girl", "p2/boy", "p2/girl", "p3/boy", "p3/girl")
    _, t = encode(labels, "age_months")
    assert [v[0] for v in t.values] == sorted({int(v) for v in labels["age_months"]})


def test_all_four_groups_class_count(labels):
    _, t = encode(labels)  # default: the paper's four groups
    assert t.groups == PAPER_GROUPS
    # 12 drawings, 10 classes: a boy's self-portrait and his drawing of a boy (p1, 5.2) fall in one class, and so
    # do a girl's self-portrait and her drawing of a woman (p3, 6.7): both draw a figure of the same sex.
    assert t.n_classes == 10
    assert "p3/6.7/girl/female" in t.names


def test_reuse_a_table_and_reject_unseen_classes(labels):
    _, table = encode(labels, ("age_category", "who_drew"))
    other = labels_from_names(["p1-9s-5.5f.jpeg", "nu-1w-3.9m.jpeg"])
    idx, t = encode(other, ("age_category", "who_drew"), table=table)
    assert t is table and table.names[idx[0]] == "p1/girl" and table.names[idx[1]] == "nu/boy"
    with pytest.raises(ValueError, match="not a class of the given table"):
        encode(labels_from_names(["p5-1s-9.5f.jpeg"]), ("age_category", "who_drew"), table=table)
    with pytest.raises(ValueError, match="table has groups"):
        encode(other, "age", table=table)


def test_generic_columns_reuse_the_machinery():
    labels = {"colour": np.array(["red", "blue", "red", "green"]), "size": np.array([2, 10, 2, 1])}
    idx, t = encode(labels, ("size", "colour"))
    assert t.groups == ("colour", "size")
    assert t.names == ("blue/10", "green/1", "red/2")
    np.testing.assert_array_equal(idx, [2, 0, 2, 1])


def test_bad_groups(labels):
    with pytest.raises(KeyError, match="'nope'"):
        encode(labels, ("age", "nope"))
    with pytest.raises(ValueError, match="duplicates"):
        encode(labels, ("age", "age"))
    with pytest.raises(ValueError, match="at least one"):
        encode(labels, ())
    with pytest.raises(ValueError, match="different lengths"):
        encode({"a": np.array([1, 2]), "b": np.array([1])}, ("a", "b"))


def test_one_hot_and_decode_range_checks():
    np.testing.assert_array_equal(one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match="out of range"):
        one_hot(np.array([3]), 3)


def test_regression_target(labels):
    y = regression_target(labels)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y[:4], [79.0, 53.0, 53.0, 58.0])
    with pytest.raises(TypeError, match="not numeric"):
        regression_target(labels, "age")
    with pytest.raises(KeyError):
        regression_target(labels, "height")
