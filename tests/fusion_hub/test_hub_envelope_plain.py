"""The plain JSON flag of envelope members, which lets the digest skip the RFC 8785 walk."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion_hub.envelope import split_envelope
from privacy.signing import canonical_json
from tests.privacy.test_signing import _FLOAT_FREE_DOCUMENTS, _JSON_DOCUMENTS


def only_member(text: str) -> Any:
    objects = split_envelope(('{"objects": [' + text + "]}").encode("utf-8"))
    assert len(objects) == 1
    return objects[0]


@pytest.mark.parametrize(("text", "plain"), [
    ('{"type": "indicator", "name": "x", "n": 12, "ok": true, "none": null, "l": [1, "a"]}',
     True),
    ('{"n": 123456789012345}', True),
    ('{"n": -123456789012345}', True),
    ('{"n": 1234567890123456}', False),
    ('{"score": 0.5}', False),
    ('{"score": 1e2}', False),
    ('{"score": 1E2}', False),
    ('{"name": "caf\u00e9 \uffff"}', True),
    ('{"name": "caf\\u00e9"}', True),
    ('{"\U0001f600": 1}', False),
    ('{"\\ud83d\\ude00": 1}', False),
    ('{"name": "\\uD83D\\uDE00"}', False),
])
def test_member_plain_flag(text: str, plain: bool) -> None:
    member = only_member(text)
    assert member.error is None
    assert member.plain_json is plain


def test_failed_member_is_not_plain() -> None:
    member = only_member('{"id": 1, "id": 2}')
    assert member.error is not None
    assert member.plain_json is False


@settings(max_examples=300, deadline=None)
@given(st.one_of(_JSON_DOCUMENTS, _FLOAT_FREE_DOCUMENTS), st.booleans())
def test_plain_member_digest_matches_rfc8785(document: Any, ascii_only: bool) -> None:
    """A member flagged plain gets from orjson exactly the bytes of the rfc8785 package."""
    text = json.dumps(document, ensure_ascii=ascii_only)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate written raw is not UTF-8, so no envelope can carry it.
        text = json.dumps(document, ensure_ascii=True)
    member = only_member(text)
    if not member.plain_json:
        return

    assert member.error is None
    expected = rfc8785.dumps(member.value)
    assert orjson.dumps(member.value, option=orjson.OPT_SORT_KEYS) == expected
    assert canonical_json(member.value, plain=True) == expected
    assert member.canonical in (None, expected)
