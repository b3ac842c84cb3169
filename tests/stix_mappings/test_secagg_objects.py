"""The secure aggregation objects pass the OASIS validator and their own schemas."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from stix_mappings.ids import hub_identity_id, site_identity_id
from stix_mappings.indicator import hub_identity
from stix_mappings.secagg_objects import (
    build_secagg_message,
    build_secagg_round,
    secagg_extension_definitions,
    secagg_message_id,
    validate_secagg_object,
)
from stix_mappings.validation import validate_stix

CREATED = datetime(2024, 6, 3, 0, 5, tzinfo=timezone.utc)
ROUND_ID = "2024-06-03T00:00:00.000Z"
HUB = hub_identity_id("fti-hub")
PRIVACY = {"epsilon_per_round": 1.0, "delta_per_round": 1e-6, "unit": "entity", "secure_min_sites": 3,
           "max_observables_per_entity": 4, "max_windows_per_entity": 60, "histogram_share": 0.2,
           "count_share": 0.5, "score_share": 0.3}


def round_object(**changes: object) -> dict:
    fields: dict = dict(round_id=ROUND_ID, created_by_ref=HUB, created=CREATED, modified=CREATED,
                        stage="reveal", site_ids=["site-a", "site-b", "site-c"], threshold=3, min_sites=3,
                        vector_length=10 + 2 * 16, histogram_bins=10, families=["network"], sketch_rows=2,
                        sketch_width=16,
                        participants=["site-a", "site-b", "site-c"], heavy_buckets=[3, 17],
                        privacy=dict(PRIVACY))
    fields.update(changes)
    return build_secagg_round(**fields)


def test_secagg_objects_pass_stix2_validator() -> None:
    message = build_secagg_message(round_id=ROUND_ID, stage="share_keys", sender="site-a", recipient="site-b",
                                   payload={"ciphertext": "AAAA"}, created=CREATED)

    errors = validate_stix([hub_identity("fti-hub"), *secagg_extension_definitions(HUB), message, round_object()])

    assert errors == []


def test_secagg_message_id_names_slot() -> None:
    message = build_secagg_message(round_id=ROUND_ID, stage="advertise_keys", sender="site-a", payload={},
                                   created=CREATED)

    assert message["id"] == secagg_message_id(ROUND_ID, "advertise_keys", "site-a")
    assert message["created_by_ref"] == site_identity_id("site-a")


def test_secagg_round_leaves_out_empty_lists() -> None:
    obj = round_object(stage="advertise_keys", participants=[], heavy_buckets=[])

    assert "participants" not in obj
    assert "heavy_buckets" not in obj
    assert validate_secagg_object(obj) == []


@pytest.mark.parametrize(("change", "message"), [
    ({"stage": "steal"}, "stage must be one of"),
    ({"created_by_ref": site_identity_id("site-b")}, "created_by_ref must be the identity of sender site-a"),
    ({"round_id": "yesterday"}, "round_id must be a UTC timestamp"),
    ({"extra": 1}, "extra is not an allowed property"),
])
def test_secagg_message_rejects_bad_field(change: dict, message: str) -> None:
    obj = build_secagg_message(round_id=ROUND_ID, stage="advertise_keys", sender="site-a", payload={},
                               created=CREATED)
    obj.update(change)

    errors = validate_secagg_object(obj)

    assert any(message in error for error in errors), errors


def test_secagg_share_needs_other_recipient() -> None:
    with pytest.raises(ValueError, match="recipient other than its sender"):
        build_secagg_message(round_id=ROUND_ID, stage="share_keys", sender="site-a", recipient="site-a",
                             payload={}, created=CREATED)


@pytest.mark.parametrize(("key", "value"), [("epsilon_per_round", 0), ("unit", "host"), ("secure_min_sites", 1),
                                            ("score_share", 1.5)])
def test_round_privacy_out_of_range_rejected(key: str, value: object) -> None:
    with pytest.raises(ValueError, match="privacy"):
        round_object(privacy={**PRIVACY, key: value})


def test_round_privacy_missing_key_rejected() -> None:
    privacy = dict(PRIVACY)
    del privacy["count_share"]

    with pytest.raises(ValueError, match="count_share"):
        round_object(privacy=privacy)
