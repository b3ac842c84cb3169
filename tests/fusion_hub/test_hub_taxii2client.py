"""taxii2-client 2.3 against the hub: every endpoint and filter, as a TAXII consumer sees them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from taxii2client.v21 import ApiRoot, Collection, Server, as_pages

from fusion_hub.server import HubServer
from stix_mappings.ids import collection_id, site_identity_id
from tests.fusion_hub.hub_testing import (
    ROUND_SECONDS,
    ROUND_START,
    Site,
    enroll,
    evidence,
    make_config,
    running_hub,
    signed_summary,
)

ROUNDS = 4


@pytest.fixture
def hub_and_site(tmp_path: Path) -> Iterator[tuple[HubServer, Site]]:
    config = make_config(tmp_path, rounds={"quorum_sites": 3})
    with running_hub(config) as hub:
        yield hub, enroll(hub, "site-a")


def site_identity(modified: str, name: str) -> dict[str, object]:
    return {"type": "identity", "spec_version": "2.1", "id": site_identity_id("site-a"),
            "created": "2024-06-01T00:00:00.000Z", "modified": modified, "name": name,
            "identity_class": "organization"}


def test_taxii2client_every_endpoint_and_filter(hub_and_site: tuple[HubServer, Site]) -> None:
    hub, site = hub_and_site
    credentials = {"user": site.site_id, "password": site.password}

    # Discovery, API root and collections.
    server = Server(hub.discovery_url, **credentials)
    api_root: ApiRoot = server.default
    summaries: Collection = next(c for c in api_root.collections if c.title == "summaries")
    assert server.title == "fti fusion hub"
    assert [root.url for root in server.api_roots] == [hub.api_root_url]
    assert api_root.versions == ["application/taxii+json;version=2.1"]
    assert api_root.max_content_length == hub.config.hub.max_content_length_bytes
    assert sorted(c.title for c in api_root.collections) == [
        "feedback", "fused-indicators", "keys", "summaries"]
    assert (summaries.id, summaries.can_read, summaries.can_write) == (
        collection_id("summaries"), True, True)

    # Add Objects and the status resource.
    posted = [signed_summary(site, round_start=ROUND_START + timedelta(seconds=i * ROUND_SECONDS),
                             items=[evidence("203.0.113.9", 0.5)]) for i in range(ROUNDS)]
    status = summaries.add_objects({"objects": posted})
    identity_status = summaries.add_objects({"objects": [
        site_identity("2024-06-01T00:00:00.000Z", "site-a"),
        site_identity("2024-06-02T00:00:00.000Z", "site-a (renamed)")]})
    polled = api_root.get_status(status.id)
    assert (status.status, status.success_count, status.failure_count) == ("complete", ROUNDS, 0)
    assert identity_status.success_count == 2
    assert polled.total_count == ROUNDS
    summary_ids = [s["id"] for s in posted]

    # Get Objects: paging and each filter.
    pages = list(as_pages(summaries.get_objects, per_request=3))
    everything = [o["id"] for page in pages for o in page.get("objects", [])]
    by_type = summaries.get_objects(type="x-fti-round-summary")
    by_id = summaries.get_objects(id=summary_ids[2])
    first_date = summaries.get_objects(limit=1)["objects"][0]["id"]
    manifest = summaries.get_manifest(type="x-fti-round-summary", limit=2)
    added_after = summaries.get_objects(
        added_after=summaries.get_manifest(limit=1)["objects"][0]["date_added"])
    spec = summaries.get_objects(spec_version="2.0")
    assert everything == [*summary_ids, site_identity_id("site-a")]
    assert [o["id"] for o in by_type["objects"]] == summary_ids
    assert [o["id"] for o in by_id["objects"]] == [summary_ids[2]]
    assert first_date == summary_ids[0]
    assert [entry["id"] for entry in manifest["objects"]] == summary_ids[:2]
    assert manifest["more"] is True
    assert [o["id"] for o in added_after["objects"]] == [*summary_ids[1:],
                                                          site_identity_id("site-a")]
    assert "objects" not in spec

    # One object, match[version], versions and delete.
    identity_id = site_identity_id("site-a")
    latest = summaries.get_object(identity_id)
    first = summaries.get_object(identity_id, version="first")
    every = summaries.get_object(identity_id, version="all")
    exact = summaries.get_object(identity_id, version="2024-06-02T00:00:00.000Z")
    versions = summaries.object_versions(identity_id)
    summaries.delete_object(identity_id, version="first")
    after_delete = summaries.object_versions(identity_id)
    assert [o["name"] for o in latest["objects"]] == ["site-a (renamed)"]
    assert [o["name"] for o in first["objects"]] == ["site-a"]
    assert [o["name"] for o in every["objects"]] == ["site-a", "site-a (renamed)"]
    assert [o["name"] for o in exact["objects"]] == ["site-a (renamed)"]
    assert versions["versions"] == ["2024-06-01T00:00:00.000Z", "2024-06-02T00:00:00.000Z"]
    assert after_delete["versions"] == ["2024-06-02T00:00:00.000Z"]
