"""File-name labels: the paper's two examples, a table of malformed names, overrides, round trips."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jigcnn.data.names import DEFAULT_WHO_TABLE, FileNameError, WhoIsDrawn, format_name, parse_name


def test_paper_example_p3():
    p = parse_name("p3-67w-6.7f.jpeg")
    assert (p.age_category, p.number, p.who_letter, p.figure) == ("p3", 67, "w", "woman")
    assert (p.years, p.months, p.age, p.age_months) == (6, 7, "6.7", 79)
    assert (p.who_drew, p.who_is_drawn) == ("girl", "female")


def test_paper_example_nursery_self_portrait_of_a_boy():
    p = parse_name("nu-21s-4.5m.jpeg")
    assert (p.age_category, p.number, p.figure, p.age, p.age_months) == ("nu", 21, "self", "4.5", 53)
    assert (p.who_drew, p.who_is_drawn) == ("boy", "male")


def test_self_portrait_of_a_girl_draws_a_female():
    assert parse_name("p1-3s-5.0f.jpg").who_is_drawn == "female"


@pytest.mark.parametrize("name", ["P3-67W-6.7F.JPEG", "p3-67w-6.7f.JPG", "p3-67w-6.7f.Jpeg", "some/dir/p3-67w-6.7f.jpg"])
def test_extensions_any_case_and_paths(name):
    p = parse_name(name)
    assert (p.age_category, p.age, p.who_drew, p.who_is_drawn) == ("p3", "6.7", "girl", "female")


MALFORMED = [
    ("nu-21x-4.13m.jpeg", "nu-21x-4.13m.jpeg: months must be 0..11, got 13"),
    ("p3-67w-6.7f.png", "p3-67w-6.7f.png: extension must be .jpeg or .jpg"),
    ("p3-67w-6.7f", "p3-67w-6.7f: extension must be"),
    ("p8-67w-6.7f.jpeg", "p8-67w-6.7f.jpeg: age category must be 'nu' or 'p1'..'p7', got 'p8'"),
    ("px-67w-6.7f.jpeg", "age category must be"),
    ("p3-w-6.7f.jpeg", "p3-w-6.7f.jpeg: expected drawing number then one who-is-drawn letter"),
    ("p3-67-6.7f.jpeg", "got '67'"),
    ("p3-67ww-6.7f.jpeg", "got '67ww'"),
    ("p3-67w-6f.jpeg", "p3-67w-6f.jpeg: expected age years.months then author sex"),
    ("p3-67w-6.7.jpeg", "got '6.7'"),
    ("p3-67w-6.7x.jpeg", "p3-67w-6.7x.jpeg: author sex must be 'm' or 'f', got 'x'"),
    ("p3-67q-6.7f.jpeg", "p3-67q-6.7f.jpeg: unknown who-is-drawn letter 'q'"),
    ("p3-67w.jpeg", "p3-67w.jpeg: expected 3 parts"),
    ("p3-67w-6.7f-2.jpeg", "expected 3 parts separated by '-'"),
    ("p3-67w-6.12f.jpeg", "months must be 0..11, got 12"),
]


@pytest.mark.parametrize("name,message", MALFORMED)
def test_malformed_names_name_the_file_and_the_part(name, message):
    with pytest.raises(FileNameError) as e:
        parse_name(name)
    assert message in str(e.value)
    assert str(e.value).startswith(name + ":")


def test_file_name_error_is_a_value_error():
    assert issubclass(FileNameError, ValueError)


def test_who_table_is_overridable():
    with pytest.raises(FileNameError):
        parse_name("p2-5t-6.3m.jpeg")
    table = dict(DEFAULT_WHO_TABLE, t=WhoIsDrawn("teacher", "female"))
    p = parse_name("p2-5t-6.3m.jpeg", who_table=table)
    assert (p.figure, p.who_is_drawn, p.who_drew) == ("teacher", "female", "boy")
    # A table can also take letters away.
    with pytest.raises(FileNameError, match="unknown who-is-drawn letter 'w'"):
        parse_name("p3-67w-6.7f.jpeg", who_table={"s": DEFAULT_WHO_TABLE["s"]})


def test_default_table_entries():
    assert {k: (v.name, v.sex) for k, v in DEFAULT_WHO_TABLE.items()} == {
        "s": ("self", "author"), "w": ("woman", "female"), "m": ("man", "male"),
        "g": ("girl", "female"), "b": ("boy", "male"),
    }
    with pytest.raises(ValueError, match="sex must be"):
        WhoIsDrawn("x", "other")


@settings(deadline=None, max_examples=60)  # no per-example deadline: the machine is shared and loaded
@given(
    cat=st.sampled_from(["nu"] + [f"p{i}" for i in range(1, 8)]),
    number=st.integers(0, 9999),
    who=st.sampled_from(sorted(DEFAULT_WHO_TABLE)),
    years=st.integers(2, 13),
    months=st.integers(0, 11),
    author=st.sampled_from(["m", "f"]),
    ext=st.sampled_from(["jpeg", "jpg", "JPEG"]),
)
def test_format_parse_round_trip(cat, number, who, years, months, author, ext):
    p = parse_name(format_name(cat, number, who, years, months, author, ext))
    assert (p.age_category, p.number, p.who_letter, p.years, p.months) == (cat, number, who, years, months)
    assert p.who_drew == {"m": "boy", "f": "girl"}[author]
    assert p.age_months == 12 * years + months


def test_format_name_rejects_bad_parts():
    with pytest.raises(FileNameError, match="months must be 0..11"):
        format_name("p1", 3, "s", 5, 12, "m")
