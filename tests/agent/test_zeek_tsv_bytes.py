"""The byte-level column reader against Python's own rules, value by value."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.zeek_tsv_bytes import split_run

# Any text a field can contain: no separator, newline or lone surrogate.
FIELD_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n"), max_size=12)
DECIMAL_TEXT = st.one_of(
    st.from_regex(r"[0-9]{0,20}(\.[0-9]{0,20})?", fullmatch=True),
    st.from_regex(r"[0-9.\-+e _]{0,10}", fullmatch=True),
    st.floats(allow_nan=True).map(repr),
    st.integers(min_value=0, max_value=1 << 60).map(lambda number: f"{number / 1_000_000:.6f}"),
    FIELD_TEXT,
)
DIGIT_TEXT = st.one_of(st.from_regex(r"[0-9]{0,70}", fullmatch=True), st.sampled_from(["-", "\u0661", "+1", "1 "]),
                       FIELD_TEXT)


def columns_of(first: list[str], second: list[str]) -> list[str]:
    """Return lines of two columns, the second padded with "-"."""
    return [f"{a}\t{b}" for a, b in zip(first, second + ["-"] * (len(first) - len(second)))]


@settings(max_examples=300, deadline=None)
@given(values=st.lists(DECIMAL_TEXT, min_size=1, max_size=30), max_decimals=st.integers(min_value=0, max_value=18))
def test_plain_decimals_match_float(values: list[str], max_decimals: int) -> None:
    run = split_run(columns_of(["x"] * len(values), values), "\t", 2)
    assert run is not None

    converted, plain = run.plain_decimals(1, max_decimals=max_decimals)

    form = re.compile(rf"[0-9]+(\.[0-9]{{0,{max_decimals}}})?")
    for value, number, is_plain in zip(values, converted.tolist(), plain.tolist()):
        digits = value.replace(".", "")
        if is_plain:
            assert form.fullmatch(value) is not None, value
            assert number == float(value), value
        elif form.fullmatch(value) is not None and len(digits) <= 18 and int(digits) <= 1 << 53:
            pytest.fail(f"{value!r} is a plain decimal that converts exactly but was left to the caller")


@settings(max_examples=300, deadline=None)
@given(values=st.lists(DIGIT_TEXT, min_size=1, max_size=30), token=st.sampled_from(["-", "", "(unset)", "\u00e9"]))
def test_digit_checks_match_python(values: list[str], token: str) -> None:
    run = split_run(columns_of(values, ["y"]), "\t", 2)
    assert run is not None

    expected = all(value == token or (value.isdigit() and value.isascii()) for value in values)

    assert run.all_digits_or(0, token) == expected
    assert run.equals(0, token).tolist() == [value == token for value in values]
    if expected and max(map(len, values)) <= 18:
        integers = run.integers(0, token, -1)
        assert integers is not None
        assert integers.tolist() == [-1 if value == token else int(value) for value in values]
    elif expected:
        assert run.integers(0, token, -1) is None


@settings(max_examples=300, deadline=None)
@given(first=st.lists(FIELD_TEXT, min_size=1, max_size=30), second=st.lists(FIELD_TEXT, max_size=30))
def test_factorize_numbers_equal_texts_alike(first: list[str], second: list[str]) -> None:
    run = split_run(columns_of(first, second), "\t", 2)
    assert run is not None
    texts = first + (second + ["-"] * (len(first) - len(second)))[:len(first)]

    codes, distinct = run.factorize([0, 1])

    assert [distinct[code] for code in codes.tolist()] == texts
    assert len(distinct) == len(set(texts))


def test_factorize_long_values_match() -> None:
    """Values longer than a word read, such as an IPv6 address with a long scope, are numbered as text."""
    long_value = "fe80::1%" + "x" * 80
    run = split_run([f"{long_value}\t1", "fe80::1\t2", f"{long_value}\t3"], "\t", 2)
    assert run is not None

    codes, distinct = run.factorize([0])

    assert [distinct[code] for code in codes.tolist()] == [long_value, "fe80::1", long_value]


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(FIELD_TEXT, min_size=1, max_size=4), min_size=1, max_size=10),
       separator=st.sampled_from(["\t", ",", "|", " "]))
def test_split_run_matches_str_split(rows: list[list[str]], separator: str) -> None:
    texts = [separator.join(value.replace(separator, "") for value in row) for row in rows]
    width = len(texts[0].split(separator))

    run = split_run(texts, separator, width)

    if any(len(text.split(separator)) != width for text in texts):
        assert run is None
        return
    assert run is not None
    for row, text in enumerate(texts):
        assert [run.text(column, row) for column in range(width)] == text.split(separator)


@pytest.mark.parametrize(
    ("texts", "separator"),
    [(["a\tb", "c\td\ne\tf"], "\t"), (["a\u00e9b"], "\u00e9"), (["a\nb"], "\n"), ([], "\t"), (["a\tb"], "\t\t")],
    ids=["newline-in-line", "non-ascii-separator", "newline-separator", "no-lines", "long-separator"],
)
def test_split_run_rejects_unsplittable(texts: list[str], separator: str) -> None:
    assert split_run(texts, separator, 2) is None


def test_equals_token_longer_than_padding() -> None:
    """A token longer than the words read before a value's end, such as a long unset token, is compared as text."""
    token = "u" * 200
    run = split_run([f"{token}\t1", "-\t2", f"{token[:-1]}v\t3"], "\t", 2)
    assert run is not None

    same = run.equals(0, token)

    assert same.tolist() == [True, False, False]
    assert run.all_digits_or(0, token) is False
    assert run.all_digits_or(1, token) is True
