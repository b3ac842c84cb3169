"""The STIX 2.1 common-property checks that every posted object passes first."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from fusion_hub.envelope import RawObject
from fusion_hub.errors import ObjectRejected
from fusion_hub.intake import check_stix_object

OBJECT_ID = f"note--{uuid.uuid4()}"
EARLY = "2024-06-03T00:00:00.000Z"
LATE = "2024-06-03T00:00:01.5Z"
EARLY_US = 1_717_372_800_000_000


def raw(**changes: Any) -> RawObject:
    obj: dict[str, Any] = {"type": "note", "spec_version": "2.1", "id": OBJECT_ID,
                           "created": EARLY, "modified": EARLY}
    obj.update(changes)
    obj = {key: value for key, value in obj.items() if value is not None}
    return RawObject(json.dumps(obj), obj)


@pytest.mark.parametrize(("changes", "version", "version_us"), [
    ({}, EARLY, EARLY_US),
    ({"modified": LATE}, LATE, EARLY_US + 1_500_000),
    ({"modified": None}, EARLY, EARLY_US),
    ({"created": None}, EARLY, EARLY_US),
    ({"created": None, "modified": None}, "", None),
])
def test_version_is_modified_else_created(
    changes: dict[str, Any], version: str, version_us: int | None
) -> None:
    _, object_id, found_version, found_us = check_stix_object(raw(**changes), 0)

    assert object_id == OBJECT_ID
    assert (found_version, found_us) == (version, version_us)


@pytest.mark.parametrize(("changes", "message"), [
    ({"created": "2024-06-03"}, "created: timestamp must look like"),
    ({"created": "2024-02-30T00:00:00Z", "modified": LATE}, "created: timestamp '2024-02-30"),
    ({"modified": "2024-06-03T00:00:00.000+00:00"}, "modified: timestamp must look like"),
    ({"modified": 5}, "modified: timestamp must be a string"),
])
def test_invalid_timestamp_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ObjectRejected) as excinfo:
        check_stix_object(raw(**changes), 0)

    assert excinfo.value.object_id == OBJECT_ID
    assert excinfo.value.reason == "not-stix"
    assert excinfo.value.message.startswith(message)


@pytest.mark.parametrize("object_type", ["note\n", "No", "-note", "note-", "n"])
def test_invalid_type_rejected(object_type: str) -> None:
    with pytest.raises(ObjectRejected) as excinfo:
        check_stix_object(raw(type=object_type, id=f"{object_type}--{uuid.uuid4()}"), 3)

    assert excinfo.value.reason == "not-stix"
    assert excinfo.value.message.startswith("type must be 3-250")


def test_member_without_id_named_by_position() -> None:
    with pytest.raises(ObjectRejected) as excinfo:
        check_stix_object(RawObject("[]", []), 7)

    assert excinfo.value.object_id == "objects[7]"
    assert "must be a JSON object; got list" in excinfo.value.message
