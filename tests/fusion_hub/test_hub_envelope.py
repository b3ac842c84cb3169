"""Tests of splitting a TAXII envelope while keeping each object's source text."""

from __future__ import annotations

from typing import Any

import pytest

from fusion_hub.envelope import MAX_MEMBER_DEPTH, split_envelope, split_envelope_strict
from fusion_hub.envelope_fast import split_members_fast
from fusion_hub.errors import EnvelopeInvalid, EnvelopeTooManyObjects


def test_split_keeps_member_text_verbatim() -> None:
    body = b'{ "more" : false , "objects": [ {"a": 12.70, "t": "2024-05-01T10:00:00.000Z"},{"b":1e2} ] }'

    objects = split_envelope(body)

    assert [o.text for o in objects] == [
        '{"a": 12.70, "t": "2024-05-01T10:00:00.000Z"}', '{"b":1e2}']
    assert objects[0].value == {"a": 12.7, "t": "2024-05-01T10:00:00.000Z"}
    assert objects[1].error is None


def test_split_bad_member_fails_alone() -> None:
    objects = split_envelope(b'{"objects": [{"id": 1, "id": 2}, {"n": NaN}, {"ok": true}]}')

    assert [o.error for o in objects] == [
        "key 'id' appears twice in one object", "NaN is not a JSON number", None]
    assert objects[2].value == {"ok": True}


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"type": "bundle", "id": "bundle--1", "objects": [{}]}', "the body is a STIX bundle"),
    (b'{"more": false}', 'it has no "objects" list'),
    (b'{"objects": []}', 'its "objects" list is empty'),
    (b'[{"objects": []}]', "expected '{' at offset 0"),
    (b'{"objects": [{}]} trailing', "unexpected data after the envelope"),
    (b'{"objects": [{}], "objects": [{}]}', "member 'objects' appears twice"),
    (b'\xff\xfe', "not UTF-8 at byte 0"),
    (b'{"objects": [{"a": ]}', "Expecting value"),
])
def test_split_invalid_envelope_rejected(body: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeInvalid) as excinfo:
        split_envelope(body)

    assert reason in excinfo.value.reason


@pytest.mark.parametrize("split", [split_envelope, split_envelope_strict])
def test_split_stops_past_object_limit(split: Any) -> None:
    # The third member is not JSON: only a parse that stops after the second member reports
    # the object limit instead of the bad JSON.
    body = b'{"objects": [{"a": 1}, {"b": 2}, {"c": ]}'

    with pytest.raises(EnvelopeTooManyObjects) as excinfo:
        split(body, max_objects=2)

    assert excinfo.value.limit == 2
    assert "more than 2 objects" in str(excinfo.value)


def test_split_accepts_exact_object_limit() -> None:
    objects = split_envelope(b'{"objects": [{"a": 1}, {"b": 2}]}', max_objects=2)

    assert [o.value for o in objects] == [{"a": 1}, {"b": 2}]


def test_fast_path_defers_over_object_limit() -> None:
    body = b'{"objects": [{"a": 1}, {"b": 2}, {"c": 3}]}'

    over = split_members_fast(body, max_depth=MAX_MEMBER_DEPTH, depth_of=len, max_objects=2)
    at_limit = split_members_fast(body, max_depth=MAX_MEMBER_DEPTH, depth_of=len, max_objects=3)

    assert over is None
    assert at_limit is not None
