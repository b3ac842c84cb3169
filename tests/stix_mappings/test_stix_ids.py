"""Shared ids: the exact values are part of the wire contract and must never change."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from stix_mappings import ids
from stix_mappings.errors import TimestampInvalid


def test_collection_ids_exact_values() -> None:
    collection_ids = {name: ids.collection_id(name) for name in ids.COLLECTIONS}

    assert collection_ids == {
        "summaries": "7f5b0f70-44c0-5dd5-b6d9-414bc8919563",
        "fused-indicators": "ad6b5779-d669-5be6-af28-8433e6864518",
        "feedback": "e252befd-4a9e-53c8-8de2-4bb4e26d0c5f",
        "keys": "5fdd16b5-3096-562d-9aab-4006d90062a1",
    }


def test_collection_id_is_rfc4122_uuid5_of_name() -> None:
    """Recompute the UUIDv5 from SHA-1 by hand (RFC 4122 section 4.3)."""
    digest = bytearray(hashlib.sha1(ids.FTI_NAMESPACE.bytes + b"collection:summaries").digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80

    assert ids.collection_id("summaries") == str(uuid.UUID(bytes=bytes(digest)))


def test_identity_ids_exact_values() -> None:
    assert ids.site_identity_id("site-a") == "identity--fc3116d0-c734-5b04-b971-a98d250a6c71"
    assert ids.hub_identity_id("hub-1") == "identity--adbb1d5f-7cdf-54fe-a810-88be0665ee88"


def test_site_and_hub_of_same_name_differ() -> None:
    assert ids.site_identity_id("a") != ids.hub_identity_id("a")


def test_summary_id_exact_value() -> None:
    round_start = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)

    assert ids.summary_id("site-a", round_start) == "x-fti-round-summary--2333512d-b4fc-5229-b382-81010d7df142"


def test_summary_id_same_instant_other_zone_same_id() -> None:
    utc = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    plus_two = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))

    assert ids.summary_id("site-a", plus_two) == ids.summary_id("site-a", utc)


def test_summary_id_naive_round_start_raises() -> None:
    with pytest.raises(TimestampInvalid) as excinfo:
        ids.summary_id("site-a", datetime(2024, 5, 1, 10, 0))

    assert excinfo.value.field == "round_start"


def test_indicator_id_exact_value() -> None:
    pattern = "[ipv4-addr:value = '203.0.113.5']"

    assert ids.indicator_id(pattern) == "indicator--38c7720b-5013-55e7-bbbb-91089342cf70"


def test_extension_ids_are_uuid4() -> None:
    for extension_id in (ids.SUMMARY_EXTENSION_ID, ids.FUSION_EXTENSION_ID):
        prefix, _, value = extension_id.partition("--")

        assert prefix == "extension-definition"
        assert uuid.UUID(value).version == 4
