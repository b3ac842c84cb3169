"""Tests of the TAXII paging cursor shared by ``fti siem sync`` and the Splunk add-on."""

from __future__ import annotations

from typing import Any

import pytest

from siem_integrations.taxii_cursor import (CursorError, TaxiiCursor, envelope_indicators,
                                             just_before, object_key)


def obj(n: int) -> dict[str, Any]:
    return {"type": "indicator", "id": f"indicator--{n:08d}-0000-4000-8000-000000000000",
            "modified": "2024-06-03T01:00:00.000Z"}


@pytest.mark.parametrize("timestamp, expected", [
    ("2024-06-03T02:00:01.000000Z", "2024-06-03T02:00:00.999999Z"),
    ("2024-06-03T02:00:01Z", "2024-06-03T02:00:00.999999Z"),
    ("2024-06-03T02:00:01.5Z", "2024-06-03T02:00:01.499999Z"),
    ("2024-06-03T02:00:01.123456789Z", "2024-06-03T02:00:01.123455Z"),
    ("2024-06-03T04:00:01.000+02:00", "2024-06-03T02:00:00.999999Z"),
    ("not a time", None),
])
def test_just_before_formats(timestamp: str, expected: str | None) -> None:
    assert just_before(timestamp) == expected


def test_cursor_pages_shared_date_added_without_next() -> None:
    cursor = TaxiiCursor(None, page_size=2)
    first = cursor.query()

    more = cursor.advance([obj(0), obj(1)], more=True, next_value=None,
                          date_added_last="2024-06-03T02:00:01.000000Z")

    assert first == {"limit": "2"}
    assert more is True
    assert cursor.query() == {"limit": "4", "added_after": "2024-06-03T02:00:00.999999Z"}
    assert cursor.new_objects([obj(0), obj(1), obj(2), obj(3)]) == [obj(2), obj(3)]


def test_cursor_same_date_added_accumulates_delivered() -> None:
    cursor = TaxiiCursor(None, page_size=2)
    cursor.advance([obj(0), obj(1)], more=True, next_value=None,
                   date_added_last="2024-06-03T02:00:01Z")
    cursor.query()

    cursor.advance([obj(0), obj(1), obj(2), obj(3)], more=False, next_value=None,
                   date_added_last="2024-06-03T02:00:01Z")

    assert cursor.delivered == {object_key(obj(n)) for n in range(4)}
    restored = TaxiiCursor(cursor.to_dict(), page_size=2)
    assert restored.query() == {"limit": "6", "added_after": "2024-06-03T02:00:00.999999Z"}


def test_cursor_new_date_added_forgets_older_keys() -> None:
    cursor = TaxiiCursor({"added_after": "2024-06-03T02:00:01Z",
                          "delivered": [object_key(obj(0))]}, page_size=2)
    cursor.query()

    cursor.advance([obj(1)], more=False, next_value=None,
                   date_added_last="2024-06-03T02:00:05Z")

    assert (cursor.added_after, cursor.delivered) == ("2024-06-03T02:00:05Z",
                                                      {object_key(obj(1))})


def test_cursor_legacy_state_rereads_its_date_added() -> None:
    """A checkpoint without delivered keys reads its time again instead of skipping it."""
    cursor = TaxiiCursor({"next": None, "added_after": "2024-06-03T02:00:01.000000Z"})

    assert cursor.query()["added_after"] == "2024-06-03T02:00:00.999999Z"


def test_cursor_next_preferred_and_dropped() -> None:
    cursor = TaxiiCursor({"next": "n-1", "added_after": "2024-06-03T02:00:01Z"}, page_size=3)

    with_next = cursor.query()
    cursor.drop_next()

    assert with_next == {"limit": "3", "next": "n-1"}
    assert cursor.query() == {"limit": "3", "added_after": "2024-06-03T02:00:00.999999Z"}


def test_cursor_more_without_next_or_header_raises() -> None:
    cursor = TaxiiCursor(None, page_size=2)
    cursor.query()

    with pytest.raises(CursorError, match="more without next or X-TAXII-Date-Added-Last"):
        cursor.advance([obj(0)], more=True, next_value=None, date_added_last=None)


def test_cursor_capped_page_skips_date_added() -> None:
    """A server capping limit below the objects of one date_added cannot be read past them."""
    cursor = TaxiiCursor({"added_after": "2024-06-03T02:00:01Z",
                          "delivered": [object_key(obj(n)) for n in range(3)]}, page_size=2)
    assert cursor.query()["limit"] == "5"

    more = cursor.advance([obj(0), obj(1), obj(2)], more=True, next_value=None,
                          date_added_last="2024-06-03T02:00:01Z")

    assert more is True
    assert cursor.skipped_at == "2024-06-03T02:00:01Z"
    assert cursor.query() == {"limit": "2", "added_after": "2024-06-03T02:00:01Z"}


def test_cursor_limit_capped() -> None:
    keys = [object_key(obj(n)) for n in range(100)]
    cursor = TaxiiCursor({"added_after": "2024-06-03T02:00:01Z", "delivered": keys},
                         page_size=2, max_limit_factor=4)

    assert cursor.query()["limit"] == "8"


def test_cursor_invalid_page_size() -> None:
    with pytest.raises(ValueError, match="page_size and max_limit_factor must be >= 1; got 0"):
        TaxiiCursor(None, page_size=0)


def test_envelope_indicators_keeps_indicators() -> None:
    identity = {"type": "identity", "id": "identity--6f1c2a4e-8d3b-4c7a-9e0f-1a2b3c4d5e6f"}

    assert envelope_indicators({"objects": [obj(1), identity, obj(2)], "more": False}) == [
        obj(1), obj(2)]
    assert envelope_indicators({"more": False}) == []


@pytest.mark.parametrize("envelope, message", [
    ([obj(1)], "the response is not a TAXII envelope but list"),
    ({"objects": None}, "the envelope's objects is NoneType, not a list"),
    ({"objects": {"type": "indicator"}}, "the envelope's objects is dict, not a list"),
    ({"objects": [obj(1), 7]}, "object 1 of the envelope is int, not a STIX object"),
    ({"objects": ["indicator"]}, "object 0 of the envelope is str, not a STIX object"),
])
def test_envelope_indicators_malformed_raises(envelope: Any, message: str) -> None:
    with pytest.raises(CursorError) as excinfo:
        envelope_indicators(envelope)

    assert str(excinfo.value) == message
