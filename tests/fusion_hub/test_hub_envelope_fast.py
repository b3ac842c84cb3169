"""The C path of envelope splitting gives what the strict parser gives, or leaves it the body.

The generated envelopes are JSON text, not Python values, so that they contain what a
serialiser never writes: repeated keys at every level, NaN, numbers spelled in odd ways,
escapes of colons, surrogates and other characters, and whitespace anywhere.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion_hub.envelope import (
    MAX_MEMBER_DEPTH,
    RawObject,
    StrictParseNeeded,
    _depth,
    read_envelope,
    split_envelope,
    split_envelope_strict,
)
from fusion_hub.envelope_fast import split_members_fast
from fusion_hub.errors import EnvelopeInvalid
from privacy.signing import canonical_json

_WHITESPACE = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])
_NUMBERS = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(["0", "-0", "12.70", "1e2", "1E+2", "-0.0", "1.5e-3", "1E400",
                     "123456789012345", "1234567890123456", "NaN", "Infinity", "-Infinity",
                     "01", "1."]),
)
_STRINGS = st.one_of(
    st.text(max_size=8).map(lambda text: json.dumps(text, ensure_ascii=False)),
    st.text(max_size=8).map(json.dumps),
    st.sampled_from([r'"a\u003ab"', r'"a\u003Ab"', '"a:b"', '"::"', r'"\ud83d\ude00"',
                     r'"\ud800"', '"\U0001f600"', r'"caf\u00e9"', r'"\"\\"', '"1234567890123456"',
                     '"\x01"', '"\x7f"', r'"\/"']),
)
# Few key names, so that objects often repeat one.
_KEYS = st.one_of(st.sampled_from(['"id"', '"type"', '"a"', '"a:b"', r'"\u0061"']), _STRINGS)
_SCALARS = st.one_of(_NUMBERS, _STRINGS, st.sampled_from(["true", "false", "null"]))


def _array(items: list[str], space: str) -> str:
    return "[" + space + ("," + space).join(items) + space + "]"


def _object(pairs: list[tuple[str, str]], space: str) -> str:
    return "{" + space + ("," + space).join(f"{key}{space}:{space}{value}"
                                            for key, value in pairs) + space + "}"


_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.builds(_array, st.lists(children, max_size=4), _WHITESPACE),
        st.builds(_object, st.lists(st.tuples(_KEYS, children), max_size=4), _WHITESPACE),
    ),
    max_leaves=20,
)
_MEMBERS = st.one_of(
    st.builds(_object, st.lists(st.tuples(_KEYS, _VALUES), max_size=5), _WHITESPACE), _VALUES)
_EXTRA_ENVELOPE_MEMBERS = st.lists(st.sampled_from([
    '"more": false', '"more": true', '"next": "a:b"', '"more": 1', '"type": "bundle"',
    '"objects": [{}]', '"spec_version": "2.1"',
]), max_size=2)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    space = draw(_WHITESPACE)
    members = draw(st.lists(_MEMBERS, max_size=4))
    parts = [f'"objects"{space}:{space}' + _array(members, space)]
    parts += draw(_EXTRA_ENVELOPE_MEMBERS)
    text = space + _object([], space)[:-1] + ("," + space).join(parts) + space + "}"
    return text.encode("utf-8", errors="surrogatepass")


def read_one_by_one(body: bytes) -> list[RawObject]:
    """Read the objects as the hub's intake does, starting again from the strict parser when
    the one-by-one reading stops part-way."""
    envelope = read_envelope(body)
    read: list[RawObject] = []
    try:
        for raw in envelope:
            read.append(raw)
    except StrictParseNeeded:
        return envelope.strict()
    assert len(read) == len(envelope)
    return read


def split_or_error(split: Any, body: bytes) -> Any:
    try:
        return [(o.text, repr(o.value), o.error) for o in split(body)]
    except EnvelopeInvalid as err:
        return f"invalid: {err}"


@settings(max_examples=1500, deadline=None)
@given(envelopes())
def test_fast_split_matches_strict_parser(body: bytes) -> None:
    """Members, values (types included) and errors equal; the plain flag is never wider."""
    assert split_or_error(split_envelope, body) == split_or_error(split_envelope_strict, body)
    assert split_or_error(read_one_by_one, body) == split_or_error(split_envelope_strict, body)

    fast = split_members_fast(body, max_depth=MAX_MEMBER_DEPTH, depth_of=_depth)
    if fast is None:
        return
    strict = split_envelope_strict(body)
    for (_, value, plain, canonical), reference in zip(fast, strict):
        assert not plain or reference.plain_json
        if plain:
            assert canonical == rfc8785.dumps(value)
            assert canonical == canonical_json(value, plain=False)
        else:
            assert canonical is None


def test_fast_split_vouches_for_ordinary_envelope() -> None:
    body = (b'{"objects": [{"type": "indicator", "n": 12, "s": "a:b \\u00e9", "l": [1.5]}, '
            b'{"b": {"c": null}}], "more": false}')

    members = split_members_fast(body, max_depth=MAX_MEMBER_DEPTH, depth_of=_depth)

    assert members is not None
    assert [text for text, _, _, _ in members] == [
        '{"type": "indicator", "n": 12, "s": "a:b \\u00e9", "l": [1.5]}', '{"b": {"c": null}}']
    assert [plain for _, _, plain, _ in members] == [False, True]
    assert members[1][3] == b'{"b":{"c":null}}'


@pytest.mark.parametrize("body", [
    b'{"objects": [{"id": 1, "id": 2}]}',
    b'{"objects": [{"a": {"id": 1, "id": 1}}]}',
    b'{"objects": [{"a": "x", "a": "x"}]}',
    b'{"objects": [{"a:": 1, "a:": 1}]}',
    b'{"objects": [{"id": 1}], "objects": [{"id": 1}]}',
    b'{"objects": [{"id": 1}], "more": false, "more": false}',
    b'{"objects": [{"a": "\\u003a", "b": 1, "b": 1}]}',
    b'{"objects": [{"a": NaN}]}',
    b'{"objects": [{"a": "\\ud800"}]}',
    b'{"objects": [{"a": "\xff"}]}',
    b'{"objects": []}',
    b'{"objects": [{}], "type": "bundle"}',
])
def test_fast_split_leaves_doubtful_envelope_to_strict_parser(body: bytes) -> None:
    assert split_members_fast(body, max_depth=MAX_MEMBER_DEPTH, depth_of=_depth) is None


def test_fast_split_leaves_deep_member_to_strict_parser() -> None:
    deep = b'{"a":' * (MAX_MEMBER_DEPTH + 1) + b"1" + b"}" * (MAX_MEMBER_DEPTH + 1)
    wide = b"[" + b",".join([b"{}"] * (MAX_MEMBER_DEPTH + 5)) + b"]"

    assert split_members_fast(b'{"objects": [' + deep + b"]}", max_depth=MAX_MEMBER_DEPTH,
                              depth_of=_depth) is None
    assert split_members_fast(b'{"objects": [' + wide + b"]}", max_depth=MAX_MEMBER_DEPTH,
                              depth_of=_depth) is not None
