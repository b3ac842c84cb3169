"""Add Objects to a collection stored per envelope, over real HTTP on 127.0.0.1.

Objects outside ``summaries`` are checked one by one and stored in one transaction with the
status resource. Each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fusion_hub import intake as intake_module
from fusion_hub.errors import StorageError
from fusion_hub.intake import OVERLAP_AFTER
from fusion_hub.postgres_storage import PIPELINE_BATCH_ROWS
from fusion_hub.server import HubServer
from stix_mappings.ids import collection_id, site_identity_id
from tests.fusion_hub.hub_testing import (
    TAXII,
    Site,
    enroll,
    make_config,
    postgres_settings,
    running_hub,
)

KEYS = collection_id("keys")
CREATED = "2024-06-03T00:00:00.000Z"


def note(site: Site, **changes: Any) -> dict[str, Any]:
    """Return a STIX note created by the site's identity, with ``changes`` applied."""
    obj = {
        "type": "note", "spec_version": "2.1", "id": f"note--{uuid.uuid4()}",
        "created": CREATED, "modified": CREATED,
        "created_by_ref": site_identity_id(site.site_id),
        "content": "batch test", "object_refs": [site_identity_id(site.site_id)],
    }
    obj.update(changes)
    return obj


def post_text(hub: HubServer, site: Site, body: str) -> requests.Response:
    return requests.post(f"{hub.api_root_url}collections/{KEYS}/objects/",
                         data=body.encode("utf-8"), auth=site.auth, timeout=30,
                         headers={"Accept": TAXII, "Content-Type": TAXII})


def stored_ids(hub: HubServer, site: Site) -> set[str]:
    response = requests.get(f"{hub.api_root_url}collections/{KEYS}/objects/", auth=site.auth,
                            headers={"Accept": TAXII}, timeout=30)
    assert response.status_code == 200
    return {obj["id"] for obj in response.json().get("objects", [])}


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HubServer]:
    storage = None
    if request.param == "postgresql":
        dsn = request.getfixturevalue("postgres_dsn")
        storage = postgres_settings(dsn, request.getfixturevalue("postgres_schema"))
    with running_hub(make_config(tmp_path, storage=storage)) as server:
        yield server


def test_envelope_reports_each_object(hub: HubServer) -> None:
    """Good objects are stored and every bad one gets its own failure entry."""
    site = enroll(hub, "site-a")
    good = [note(site) for _ in range(3)]
    conflict_first = note(site)
    wrong_creator = note(site, created_by_ref=site_identity_id("site-b"))
    bad_time = note(site, modified="2024-06-03T00:00:00Z\n")
    impossible_date = note(site, modified="2024-02-30T00:00:00.000Z")
    conflict_second = dict(conflict_first, content="other content, same version")
    repeated_key = note(site)
    repeated_key_text = json.dumps(repeated_key)[:-1] + ', "content": "again"}'
    members = [json.dumps(obj) for obj in (*good, conflict_first, wrong_creator, bad_time,
                                           impossible_date, conflict_second)]
    members.append(repeated_key_text)
    response = post_text(hub, site, '{"objects": [' + ", ".join(members) + "]}")

    assert response.status_code == 202
    status = response.json()
    assert status["total_count"] == 9
    assert status["success_count"] == 4
    assert status["failure_count"] == 5
    assert [entry["id"] for entry in status["successes"]] == [
        obj["id"] for obj in (*good, conflict_first)]
    failures = {entry["id"]: entry["message"] for entry in status["failures"]}
    assert "created_by_ref must be" in failures[wrong_creator["id"]]
    assert "timestamp must look like" in failures[bad_time["id"]]
    assert "not a valid date and time" in failures[impossible_date["id"]]
    assert "stored with different content" in failures[conflict_second["id"]]
    # A member that fails the strict parse has no id to report, so its position is reported.
    assert "appears twice" in failures["objects[8]"]
    assert stored_ids(hub, site) == {obj["id"] for obj in (*good, conflict_first)}


def test_envelope_status_matches_stored_status(hub: HubServer) -> None:
    """The status returned by Add Objects is the one Get Status serves afterwards."""
    site = enroll(hub, "site-a")
    response = post_text(hub, site, json.dumps({"objects": [note(site), note(site)]}))
    assert response.status_code == 202
    status = response.json()

    stored = requests.get(f"{hub.api_root_url}status/{status['id']}/", auth=site.auth,
                          headers={"Accept": TAXII}, timeout=30)
    assert stored.status_code == 200
    assert stored.json() == status


def test_envelope_resend_is_duplicate(hub: HubServer) -> None:
    """Resending an envelope stores nothing twice and reports every object as a success."""
    site = enroll(hub, "site-a")
    body = json.dumps({"objects": [note(site) for _ in range(5)]})
    assert post_text(hub, site, body).status_code == 202

    again = post_text(hub, site, body).json()
    assert again["success_count"] == 5
    assert all(entry["message"] == "already stored; no change" for entry in again["successes"])
    assert len(stored_ids(hub, site)) == 5


def test_status_save_failure_stores_nothing(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The objects and the status resource commit together or not at all."""
    site = enroll(hub, "site-a")

    def fail_save_status(status_id: str, owner: str, body: str) -> None:
        raise StorageError(f"status {status_id} not saved (test)")

    monkeypatch.setattr(hub.storage, "save_status", fail_save_status)
    response = post_text(hub, site, json.dumps({"objects": [note(site) for _ in range(3)]}))
    assert response.status_code >= 500
    monkeypatch.undo()

    assert stored_ids(hub, site) == set()
    retry = post_text(hub, site, json.dumps({"objects": [note(site)]}))
    assert retry.status_code == 202
    assert len(stored_ids(hub, site)) == 1


def test_failure_text_cut_to_bound(hub: HubServer) -> None:
    """A failure repeats posted values only up to a bound, since the status is stored."""
    site = enroll(hub, "site-a")
    long_type = note(site, type="X" * 5000)
    long_id = note(site, id="note--" + "0" * 5000)

    response = post_text(hub, site, json.dumps({"objects": [long_type, long_id]}))

    failures = response.json()["failures"]
    type_message = failures[0]["message"]
    assert type_message.startswith("type must be 3-250 lower-case letters")
    assert type_message.endswith(" more characters)")
    assert len(type_message) < 1100
    assert failures[1]["id"] == "note--" + "0" * 994 + "... (4006 more characters)"
    assert len(failures[1]["message"]) < 1100
    stored = hub.storage.load_status(response.json()["id"])
    assert stored is not None
    assert len(stored[1]) < 5000


# More objects than PostgreSQL receives in one batch, so that several batches are stored
# before the last member shows that the envelope needs the strict parser.
MANY = 2 * PIPELINE_BATCH_ROWS + 10


def test_repeated_key_in_last_member(hub: HubServer) -> None:
    """A repeated key that only the last member shows sends the envelope to the strict
    parser: the objects already sent are rolled back and stored once, and the bad member
    fails alone."""
    site = enroll(hub, "site-a")
    good = [note(site) for _ in range(MANY)]
    repeated = json.dumps(note(site))[:-1] + ', "content": "again"}'
    body = '{"objects": [' + ", ".join([*map(json.dumps, good), repeated]) + "]}"

    response = post_text(hub, site, body)

    assert response.status_code == 202
    status = response.json()
    assert status["success_count"] == MANY
    assert status["failure_count"] == 1
    assert status["failures"][0]["id"] == f"objects[{MANY}]"
    assert "appears twice" in status["failures"][0]["message"]
    assert [entry["id"] for entry in status["successes"]] == [obj["id"] for obj in good]
    assert hub.storage.count_objects(KEYS) == MANY


def test_repeated_objects_key_rejected(hub: HubServer) -> None:
    """An envelope with two "objects" lists passes the first checks and fails only after
    its members are read: it gets 400 and stores nothing."""
    site = enroll(hub, "site-a")
    first = ", ".join(json.dumps(note(site)) for _ in range(MANY))
    body = '{"objects": [' + first + '], "objects": [' + json.dumps(note(site)) + "]}"

    response = post_text(hub, site, body)

    assert response.status_code == 400
    assert response.headers["Content-Type"] == TAXII
    assert "appears twice" in response.json()["description"]
    assert hub.storage.count_objects(KEYS) == 0


@pytest.mark.parametrize("first_member", ["plain", "float"])
def test_overlap_only_for_plain_objects(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch, first_member: str
) -> None:
    """Objects are handed to storage while later ones are still checked only where storage
    can use that (PostgreSQL) and the first objects had a plain JSON form. Otherwise every
    check runs before the transaction opens."""
    site = enroll(hub, "site-a")
    objects = [note(site) for _ in range(MANY)]
    if first_member == "float":
        objects[0]["x_score"] = 0.5
    handed: list[str] = []
    add_objects = hub.storage.add_objects

    def recording(collection: str, new_objects: Any, *, at_most: int) -> Any:
        handed.append(type(new_objects).__name__)
        return add_objects(collection, new_objects, at_most=at_most)

    monkeypatch.setattr(hub.storage, "add_objects", recording)

    response = post_text(hub, site, json.dumps({"objects": objects}))

    assert response.status_code == 202
    assert response.json()["success_count"] == MANY
    overlaps = hub.storage.pipelines_inserts and first_member == "plain"
    assert handed == (["chain"] if overlaps else ["list"])
    assert hub.storage.count_objects(KEYS) == MANY


@pytest.mark.parametrize("slow_at", [OVERLAP_AFTER + 5, MANY - 1])
def test_slow_object_checked_outside_lock(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch, slow_at: int
) -> None:
    """An object on the slow RFC 8785 path after the first plain ones is never checked while
    the transaction holds the collection's lock, and the whole envelope is stored once."""
    site = enroll(hub, "site-a")
    objects = [note(site) for _ in range(MANY)]
    objects[slow_at]["x_score"] = 0.5
    depths: list[int] = []
    handed: list[str] = []
    slow_form = intake_module.canonical_json
    add_objects = hub.storage.add_objects

    def recording_form(obj: Any, *, plain: bool) -> bytes:
        if not plain:
            depths.append(hub.storage._depth)
        return slow_form(obj, plain=plain)

    def recording_add(collection: str, new_objects: Any, *, at_most: int) -> Any:
        handed.append(type(new_objects).__name__)
        return add_objects(collection, new_objects, at_most=at_most)

    monkeypatch.setattr(intake_module, "canonical_json", recording_form)
    monkeypatch.setattr(hub.storage, "add_objects", recording_add)

    response = post_text(hub, site, json.dumps({"objects": objects}))

    assert response.status_code == 202
    assert response.json()["success_count"] == MANY
    assert depths == [0]
    assert handed == (["chain", "list"] if hub.storage.pipelines_inserts else ["list"])
    assert hub.storage.count_objects(KEYS) == MANY


def test_resend_then_slow_object_repeated(
    hub: HubServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An envelope that both resends a stored object and meets a slow one inside the
    transaction leaves the connection fit for the next envelopes, however often it comes."""
    site = enroll(hub, "site-a")
    stored = note(site)
    assert post_text(hub, site, json.dumps({"objects": [stored]})).status_code == 202
    statuses = []

    with caplog.at_level(logging.WARNING):
        for _ in range(6):
            objects = [stored] + [note(site) for _ in range(OVERLAP_AFTER + 9)]
            objects[OVERLAP_AFTER + 5]["x_score"] = 0.5
            mixed = post_text(hub, site, json.dumps({"objects": objects}))
            statuses.append(mixed.status_code)
            assert mixed.json()["success_count"] == len(objects)
            for _ in range(3):
                small = [note(site) for _ in range(3)]
                statuses.append(post_text(hub, site, json.dumps({"objects": small})).status_code)

    assert statuses == [202] * 24
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []
