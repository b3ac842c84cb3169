"""Tests of splitting a TAXII envelope while keeping each object's source text."""

from __future__ import annotations

import pytest

from fusion_hub.envelope import split_envelope
from fusion_hub.errors import EnvelopeInvalid


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
