"""File-name labels in the paper's convention, e.g. ``p3-67w-6.7f.jpeg``.

A name is ``<category>-<number><who>-<years>.<months><author>.<ext>``:

* category: ``nu`` (nursery) or ``p1``..``p7`` (primary school year);
* number: the drawing number (digits);
* who: one letter naming who is drawn, looked up in a who-is-drawn table
  (:data:`DEFAULT_WHO_TABLE`, overridable per call);
* years.months: the author's age, months 0..11;
* author: ``m`` (a boy) or ``f`` (a girl);
* ext: ``jpeg`` or ``jpg``, any case.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
from typing import Mapping

from jigcnn.errors import UserError

AGE_CATEGORIES = ("nu", "p1", "p2", "p3", "p4", "p5", "p6", "p7")
AUTHOR_SEX = types.MappingProxyType({"m": "boy", "f": "girl"})
# Sex of the drawn figure as a function of the author, for a self-portrait.
_AUTHOR_TO_FIGURE = {"boy": "male", "girl": "female"}
_EXTENSIONS = (".jpeg", ".jpg")


@dataclasses.dataclass(frozen=True)
class WhoIsDrawn:
    """One entry of the who-is-drawn table: a readable name and the figure's sex."""

    name: str
    sex: str  # "female", "male", or "author" (the author's own sex: a self-portrait)

    def __post_init__(self):
        if self.sex not in ("female", "male", "author"):
            raise ValueError(f"WhoIsDrawn.sex must be 'female', 'male' or 'author', got {self.sex!r}")


# `s` and `w` come from the paper; the others are the letters a user is likely to meet
# in collections of this kind. Pass `who_table=` to override or extend.
DEFAULT_WHO_TABLE: Mapping[str, WhoIsDrawn] = types.MappingProxyType(
    {
        "s": WhoIsDrawn("self", "author"),
        "w": WhoIsDrawn("woman", "female"),
        "m": WhoIsDrawn("man", "male"),
        "g": WhoIsDrawn("girl", "female"),
        "b": WhoIsDrawn("boy", "male"),
    }
)


class FileNameError(UserError):
    """A file name that does not follow the convention; the message names the file and the part."""


@dataclasses.dataclass(frozen=True)
class DrawingLabels:
    """The labels one file name carries."""

    age_category: str  # "nu", "p1".."p7"
    number: int  # drawing number
    who_letter: str  # the raw who-is-drawn letter
    figure: str  # readable who-is-drawn name, e.g. "self", "woman"
    years: int
    months: int
    who_drew: str  # "boy" or "girl"
    who_is_drawn: str  # "female" or "male"

    @property
    def age(self) -> str:
        """Age as the class label ``"years.months"`` (e.g. ``"6.7"``)."""
        return f"{self.years}.{self.months}"

    @property
    def age_months(self) -> int:
        """Age in months (years * 12 + months)."""
        return self.years * 12 + self.months


_CATEGORY_RE = re.compile(r"^(nu|p[1-7])$")
_NUMBER_WHO_RE = re.compile(r"^(\d+)([a-z])$")
_AGE_SEX_RE = re.compile(r"^(\d+)\.(\d+)([a-z])$")


def parse_name(filename: str | os.PathLike, who_table: Mapping[str, WhoIsDrawn] | None = None) -> DrawingLabels:
    """Parse one file name (a path is fine; only its last part is read) into its labels."""
    name = os.path.basename(os.fspath(filename))
    table = DEFAULT_WHO_TABLE if who_table is None else who_table

    def fail(msg: str):
        raise FileNameError(f"{name}: {msg}")

    low = name.lower()
    ext = next((e for e in _EXTENSIONS if low.endswith(e)), None)
    if ext is None:
        fail(f"extension must be .jpeg or .jpg (any case), got {os.path.splitext(name)[1] or 'none'!r}")
    parts = low[: -len(ext)].split("-")
    if len(parts) != 3:
        fail(f"expected 3 parts separated by '-' (category-number+who-age+sex), got {len(parts)}")
    cat, num_who, age_sex = parts
    if not _CATEGORY_RE.match(cat):
        fail(f"age category must be 'nu' or 'p1'..'p7', got {cat!r}")
    m = _NUMBER_WHO_RE.match(num_who)
    if not m:
        fail(f"expected drawing number then one who-is-drawn letter (e.g. '67w'), got {num_who!r}")
    number, letter = int(m.group(1)), m.group(2)
    m = _AGE_SEX_RE.match(age_sex)
    if not m:
        fail(f"expected age years.months then author sex (e.g. '6.7f'), got {age_sex!r}")
    years, months, sex = int(m.group(1)), int(m.group(2)), m.group(3)
    if months > 11:
        fail(f"months must be 0..11, got {months}")
    if sex not in AUTHOR_SEX:
        fail(f"author sex must be 'm' or 'f', got {sex!r}")
    if letter not in table:
        fail(f"unknown who-is-drawn letter {letter!r} (known: {', '.join(sorted(table))}; pass who_table= to add it)")
    entry = table[letter]
    who_drew = AUTHOR_SEX[sex]
    figure_sex = _AUTHOR_TO_FIGURE[who_drew] if entry.sex == "author" else entry.sex
    return DrawingLabels(cat, number, letter, entry.name, years, months, who_drew, figure_sex)


def format_name(
    age_category: str, number: int, who_letter: str, years: int, months: int, author: str, ext: str = "jpeg"
) -> str:
    """Build a file name in the convention; ``author`` is ``'m'``/``'f'`` (or ``'boy'``/``'girl'``)."""
    author = {"boy": "m", "girl": "f"}.get(author, author)
    name = f"{age_category}-{int(number)}{who_letter}-{int(years)}.{int(months)}{author}.{ext}"
    parse_name(name, who_table={who_letter: WhoIsDrawn("any", "author")})  # validate the parts
    return name
