"""Label groups, joint one-hot encoding over any combination of groups, and the class table.

The encoding is generic: any label column (the paper's groups, or a manifest's columns) can
take part. A joint class is one combination of group values that occurs in the data, as the
paper's on-the-fly one-hot encoding did (186 classes with all four groups on the real set).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from jigcnn.data.names import DEFAULT_WHO_TABLE, WhoIsDrawn, parse_name

PAPER_GROUPS = ("age_category", "age", "who_drew", "who_is_drawn")
GROUP_ORDER = ("age_category", "age", "age_months", "who_drew", "who_is_drawn")


def labels_from_names(
    files: Iterable[str | os.PathLike], who_table: Mapping[str, WhoIsDrawn] | None = None
) -> dict[str, np.ndarray]:
    """Label arrays (one entry per file) parsed from file names in the paper's convention."""
    parsed = [parse_name(f, who_table or DEFAULT_WHO_TABLE) for f in files]
    return {
        "age_category": np.array([p.age_category for p in parsed], dtype=str),
        "age": np.array([p.age for p in parsed], dtype=str),
        "age_months": np.array([p.age_months for p in parsed], dtype=np.int32),
        "who_drew": np.array([p.who_drew for p in parsed], dtype=str),
        "who_is_drawn": np.array([p.who_is_drawn for p in parsed], dtype=str),
        "figure": np.array([p.figure for p in parsed], dtype=str),
        "number": np.array([p.number for p in parsed], dtype=np.int32),
    }


def canonical_groups(groups: str | Sequence[str]) -> tuple[str, ...]:
    """Groups in canonical order: the paper's groups first (GROUP_ORDER), then others by name."""
    if isinstance(groups, str):
        groups = (groups,)
    groups = tuple(groups)
    if not groups:
        raise ValueError("groups must name at least one label group")
    if len(set(groups)) != len(groups):
        raise ValueError(f"groups has duplicates: {groups}")
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    return tuple(sorted(groups, key=lambda g: (rank.get(g, len(rank)), g)))


def all_group_combinations(groups: Sequence[str] = PAPER_GROUPS) -> list[tuple[str, ...]]:
    """Every non-empty combination of ``groups``, each in canonical order (15 for the paper's four)."""
    out = []
    for r in range(1, len(groups) + 1):
        out.extend(canonical_groups(c) for c in itertools.combinations(groups, r))
    return out


def _natural_key(v):
    if isinstance(v, str):
        return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", v))
    return ((0, v, ""),)


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _fmt(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


@dataclasses.dataclass(frozen=True)
class ClassTable:
    """The joint classes of an encoding: ``values[k]`` is class k's value per group, ``names[k]`` readable."""

    groups: tuple[str, ...]
    values: tuple[tuple, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Readable class names, e.g. ``'p3/6.7/girl/female'`` (values joined by '/')."""
        return tuple("/".join(_fmt(x) for x in v) for v in self.values)

    @property
    def n_classes(self) -> int:
        """Number of joint classes."""
        return len(self.values)

    def index(self, values: Sequence) -> int:
        """Class index of one combination of group values (in the table's group order)."""
        try:
            return self._lookup()[tuple(values)]
        except KeyError:
            raise KeyError(f"{tuple(values)!r} is not a class of this table (groups {self.groups})") from None

    def decode(self, class_index) -> dict[str, np.ndarray]:
        """Group values of class indices, one array per group."""
        idx = np.asarray(class_index)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_classes):
            raise ValueError(f"class index out of range 0..{self.n_classes - 1}")
        return {g: np.array([self.values[k][j] for k in idx.ravel()]).reshape(idx.shape) for j, g in enumerate(self.groups)}

    def _lookup(self) -> dict:
        cache = self.__dict__.get("_lookup_cache")
        if cache is None:
            cache = {v: k for k, v in enumerate(self.values)}
            object.__setattr__(self, "_lookup_cache", cache)
        return cache


def encode(
    labels: Mapping[str, np.ndarray], groups: str | Sequence[str] = PAPER_GROUPS, table: ClassTable | None = None
) -> tuple[np.ndarray, ClassTable]:
    """Joint class index (N,) int32 over ``groups`` plus the class table; pass ``table`` to reuse one."""
    groups = canonical_groups(groups)
    missing = [g for g in groups if g not in labels]
    if missing:
        raise KeyError(f"label group(s) {missing} not in labels (available: {sorted(labels)})")
    cols = [np.asarray(labels[g]) for g in groups]
    n = {len(c) for c in cols}
    if len(n) != 1:
        raise ValueError(f"label groups {groups} have different lengths {sorted(n)}")
    rows = [tuple(_py(c[i]) for c in cols) for i in range(len(cols[0]))]
    if table is None:
        uniq = sorted(set(rows), key=lambda r: tuple(_natural_key(x) for x in r))
        table = ClassTable(groups, tuple(uniq))
    elif table.groups != groups:
        raise ValueError(f"table has groups {table.groups}, asked for {groups}")
    lookup = table._lookup()
    try:
        idx = np.fromiter((lookup[r] for r in rows), dtype=np.int32, count=len(rows))
    except KeyError as e:
        raise ValueError(f"label combination {e.args[0]!r} is not a class of the given table") from None
    return idx, table


def one_hot(class_index, n_classes: int, dtype=np.float32) -> np.ndarray:
    """One-hot rows (N, n_classes) of class indices."""
    idx = np.asarray(class_index)
    if idx.size and (idx.min() < 0 or idx.max() >= n_classes):
        raise ValueError(f"class index out of range 0..{n_classes - 1}")
    return np.eye(n_classes, dtype=dtype)[idx]


def encode_one_hot(
    labels: Mapping[str, np.ndarray], groups: str | Sequence[str] = PAPER_GROUPS, table: ClassTable | None = None
) -> tuple[np.ndarray, ClassTable]:
    """One-hot targets (N, K) float32 over the joint classes of ``groups``, plus the class table."""
    idx, table = encode(labels, groups, table)
    return one_hot(idx, table.n_classes), table


def regression_target(labels: Mapping[str, np.ndarray], key: str = "age_months") -> np.ndarray:
    """The regression target (N,) float32: age in months by default, or any numeric label."""
    if key not in labels:
        raise KeyError(f"label {key!r} not in labels (available: {sorted(labels)})")
    col = np.asarray(labels[key])
    if not np.issubdtype(col.dtype, np.number):
        raise TypeError(f"label {key!r} is not numeric (dtype {col.dtype})")
    return col.astype(np.float32)
