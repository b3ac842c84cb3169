"""TAXII 2.1 HTTP behaviour of the hub over real HTTP on 127.0.0.1.

Covers the media-type matrix M1-M6 (exact Content-Type on every response, errors included;
406 and 415), authentication and rights (401, 403), errors (404, 405, 413, 400), filters and
paging with ``limit``, ``next`` and ``more``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from taxii2client.v21 import Collection, as_pages

from fusion_hub.server import HubServer
from fusion_hub.taxii import MAX_FILTER_VALUES
from stix_mappings.ids import collection_id, site_identity_id
from tests.fusion_hub.hub_testing import (
    ROUND_SECONDS,
    ROUND_START,
    TAXII,
    Site,
    enroll,
    evidence,
    make_config,
    running_hub,
    signed_summary,
)

SUMMARIES = collection_id("summaries")
FUSED = collection_id("fused-indicators")
MICROSECOND_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


@dataclass
class Hub:
    server: HubServer
    site_a: Site
    site_b: Site
    reader: tuple[str, str]
    status_id: str
    summary_ids: list[str]

    @property
    def root(self) -> str:
        return self.server.api_root_url

    def objects_url(self, collection: str = SUMMARIES) -> str:
        return f"{self.root}collections/{collection}/objects/"


def get(url: str, auth: tuple[str, str] | None, accept: str | None = TAXII,
        **params: Any) -> requests.Response:
    headers = {"Accept": accept} if accept is not None else {}
    return requests.get(url, headers=headers, auth=auth, params=params, timeout=10)


def post(url: str, auth: tuple[str, str], body: bytes | dict[str, Any],
         content_type: str = TAXII) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    return requests.post(url, data=data, auth=auth, timeout=10,
                         headers={"Accept": TAXII, "Content-Type": content_type})


def assert_taxii_error(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["Content-Type"] == TAXII
    body = response.json()
    assert body["http_status"] == str(status)
    assert isinstance(body["title"], str) and body["title"]
    assert body["error_id"] == response.headers["X-Request-ID"]
    return body


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """A hub where site-a posted five summaries (five rounds) in one envelope."""
    config = make_config(tmp_path, hub={"max_content_length_bytes": 64 * 1024},
                         rounds={"quorum_sites": 3})
    with running_hub(config) as server:
        site_a, site_b = enroll(server, "site-a"), enroll(server, "site-b")
        reader = ("reader", server.registry.add_consumer("reader", read=["fused-indicators"]))
        summaries = [
            signed_summary(site_a, round_start=ROUND_START + timedelta(seconds=i * ROUND_SECONDS),
                           items=[evidence("203.0.113.9", 0.5)])
            for i in range(5)
        ]
        response = post(f"{server.api_root_url}collections/{SUMMARIES}/objects/", site_a.auth,
                        {"objects": summaries})
        assert response.status_code == 202
        yield Hub(server, site_a, site_b, reader, response.json()["id"],
                  [s["id"] for s in summaries])


def test_get_every_endpoint_exact_media_type(hub: Hub) -> None:
    """M1: 200 and exactly application/taxii+json;version=2.1 on every endpoint."""
    base = hub.server.base_url
    urls = [
        f"{base}/taxii2/", hub.root, f"{hub.root}collections/",
        f"{hub.root}collections/{SUMMARIES}/", hub.objects_url(),
        f"{hub.root}collections/{SUMMARIES}/manifest/", f"{hub.root}status/{hub.status_id}/",
        f"{hub.objects_url()}{hub.summary_ids[0]}/",
        f"{hub.objects_url()}{hub.summary_ids[0]}/versions/",
    ]

    for url in urls:
        response = get(url, hub.site_a.auth)
        assert (url, response.status_code) == (url, 200)
        assert (url, response.headers["Content-Type"]) == (url, TAXII)


def test_get_accept_without_version_served(hub: Hub) -> None:
    """M2: application/taxii+json without a version is read as 2.1."""
    response = get(f"{hub.root}collections/", hub.site_a.auth, accept="application/taxii+json")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == TAXII
    assert [c["title"] for c in response.json()["collections"]] == [
        "summaries", "fused-indicators", "feedback", "keys"]


@pytest.mark.parametrize("accept", [
    "application/taxii+json;version=2.0",
    "application/json",
    "application/stix+json;version=2.1",
    "application/taxii+json;version=2.1;q=0",
])
def test_get_unsupported_accept_406(hub: Hub, accept: str) -> None:
    """M3: a 2.0 (or non-TAXII) Accept gets 406 with a TAXII error resource."""
    response = get(f"{hub.root}collections/", hub.site_a.auth, accept=accept)

    body = assert_taxii_error(response, 406)
    assert "TAXII 2.1 only" in body["description"]


def test_get_accept_list_with_taxii21_served(hub: Hub) -> None:
    response = get(f"{hub.root}collections/", hub.site_a.auth,
                   accept="text/html, application/taxii+json; version=2.1")

    assert response.status_code == 200


def test_get_unknown_collection_404(hub: Hub) -> None:
    """M4: unknown collection gives a TAXII error resource, never HTML."""
    response = get(f"{hub.root}collections/00000000-0000-4000-8000-000000000000/objects/",
                   hub.site_a.auth)

    body = assert_taxii_error(response, 404)
    assert body["title"] == "Collection Not Found"


def test_get_unknown_object_and_path_404(hub: Hub) -> None:
    missing = get(f"{hub.objects_url()}indicator--00000000-0000-4000-8000-000000000000/",
                  hub.site_a.auth)
    no_route = get(f"{hub.server.base_url}/nowhere/", hub.site_a.auth)

    assert assert_taxii_error(missing, 404)["title"] == "Object Not Found"
    assert_taxii_error(no_route, 404)


@pytest.mark.parametrize("auth", [None, ("site-a", "wrong"), ("nobody", "x")])
def test_get_bad_credentials_401_with_challenge(hub: Hub, auth: tuple[str, str] | None) -> None:
    """M4: missing or bad credentials give 401, a Basic challenge and a TAXII error."""
    response = get(f"{hub.root}collections/", auth)

    assert_taxii_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


def test_auth_failure_logged_without_password(hub: Hub,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fusion_hub.auth")

    get(f"{hub.root}collections/", ("site-a", "s3cret-guess"))

    assert "authentication failed from 127.0.0.1 for username 'site-a': password" in caplog.text
    assert "s3cret-guess" not in caplog.text


def test_revoked_site_401(hub: Hub) -> None:
    hub.server.registry.revoke("site-b")

    response = get(f"{hub.root}collections/", hub.site_b.auth)

    assert_taxii_error(response, 401)


def test_post_envelope_202_status_resource(hub: Hub) -> None:
    """M5: an envelope sent as TAXII gets 202 and a status resource."""
    summary = signed_summary(hub.site_b, items=[evidence("203.0.113.9", 0.4)])

    response = post(hub.objects_url(), hub.site_b.auth, {"objects": [summary]})

    assert response.status_code == 202
    assert response.headers["Content-Type"] == TAXII
    status = response.json()
    assert (status["status"], status["total_count"], status["success_count"],
            status["failure_count"], status["pending_count"]) == ("complete", 1, 1, 0, 0)
    assert status["successes"] == [{"id": summary["id"], "version": summary["modified"]}]


def test_post_stix_bundle_media_type_415(hub: Hub) -> None:
    """M6: a STIX bundle sent as application/stix+json is rejected, never stored."""
    summary = signed_summary(hub.site_b)
    bundle = {"type": "bundle", "id": "bundle--6f1c2a4e-8d3b-4c7a-9e0f-1a2b3c4d5e6f",
              "objects": [summary]}
    before = hub.server.storage.count_objects(SUMMARIES)

    response = post(hub.objects_url(), hub.site_b.auth, bundle,
                    content_type="application/stix+json;version=2.1")

    body = assert_taxii_error(response, 415)
    assert "application/stix+json;version=2.1" in body["description"]
    assert hub.server.storage.count_objects(SUMMARIES) == before


def test_post_bundle_body_as_taxii_400(hub: Hub) -> None:
    bundle = {"type": "bundle", "id": "bundle--6f1c2a4e-8d3b-4c7a-9e0f-1a2b3c4d5e6f",
              "objects": [signed_summary(hub.site_b)]}

    response = post(hub.objects_url(), hub.site_b.auth, bundle)

    assert "the body is a STIX bundle" in assert_taxii_error(response, 400)["description"]


def test_post_over_max_content_length_413(hub: Hub) -> None:
    body = b'{"objects": [' + b'{"pad": "' + b"x" * 70_000 + b'"}]}'

    response = post(hub.objects_url(), hub.site_b.auth, body)

    assert "max_content_length (65536 bytes)" in assert_taxii_error(response, 413)["description"]


def test_consumer_forbidden_on_summaries(hub: Hub) -> None:
    read = get(hub.objects_url(), hub.reader)
    write = post(hub.objects_url(), hub.reader, {"objects": [signed_summary(hub.site_b)]})
    fused = get(hub.objects_url(FUSED), hub.reader)

    assert "reader may not read collection summaries" in assert_taxii_error(read, 403)[
        "description"]
    assert_taxii_error(write, 403)
    assert fused.status_code == 200


def test_site_cannot_write_fused_indicators(hub: Hub) -> None:
    response = post(hub.objects_url(FUSED), hub.site_a.auth, {"objects": [{"type": "x"}]})

    assert_taxii_error(response, 403)


def test_unsupported_method_405_taxii_error(hub: Hub) -> None:
    response = requests.put(f"{hub.objects_url()}{hub.summary_ids[0]}/",
                            auth=hub.site_a.auth, headers={"Accept": TAXII}, timeout=10)

    assert_taxii_error(response, 405)
    assert "GET" in response.headers["Allow"]
    assert "DELETE" in response.headers["Allow"]


def key_note(site_id: str, modified: str) -> dict[str, Any]:
    return {
        "type": "note", "spec_version": "2.1", "id": "note--6f2d0c9e-1f1b-4a9e-9d55-0c6c8f1d2a10",
        "created": "2024-06-03T00:00:00.000Z", "modified": modified, "content": "key share",
        "object_refs": [site_identity_id(site_id)], "created_by_ref": site_identity_id(site_id),
    }


def delete(url: str, auth: tuple[str, str], **params: str) -> requests.Response:
    return requests.delete(url, auth=auth, params=params, headers={"Accept": TAXII},
                           timeout=10)


def test_delete_own_object_versions(hub: Hub) -> None:
    keys_url = hub.objects_url(collection_id("keys"))
    for modified in ("2024-06-03T00:00:00.000Z", "2024-06-03T00:01:00.000Z"):
        assert post(keys_url, hub.site_a.auth, {"objects": [key_note("site-a", modified)]}
                    ).json()["success_count"] == 1
    note_url = f"{keys_url}note--6f2d0c9e-1f1b-4a9e-9d55-0c6c8f1d2a10/"

    first = delete(note_url, hub.site_a.auth, **{"match[version]": "first"})
    remaining = get(f"{note_url}versions/", hub.site_a.auth).json()["versions"]
    rest = delete(note_url, hub.site_a.auth)
    gone = get(note_url, hub.site_a.auth)

    assert first.status_code == 200
    assert first.headers["Content-Type"] == TAXII
    assert remaining == ["2024-06-03T00:01:00.000Z"]
    assert rest.status_code == 200
    assert_taxii_error(gone, 404)


def test_taxii2client_deletes_object(hub: Hub) -> None:
    keys_url = hub.objects_url(collection_id("keys"))
    collection = Collection(keys_url[: -len("objects/")], user=hub.site_a.site_id,
                            password=hub.site_a.password)
    collection.add_objects({"objects": [key_note("site-a", "2024-06-03T00:00:00.000Z")]})
    note_id = "note--6f2d0c9e-1f1b-4a9e-9d55-0c6c8f1d2a10"
    before = collection.object_versions(note_id)["versions"]

    collection.delete_object(note_id)

    assert before == ["2024-06-03T00:00:00.000Z"]
    with pytest.raises(requests.HTTPError) as excinfo:
        collection.get_object(note_id)
    assert excinfo.value.response.status_code == 404


def test_delete_unmatched_version_404(hub: Hub) -> None:
    keys_url = hub.objects_url(collection_id("keys"))
    post(keys_url, hub.site_a.auth, {"objects": [key_note("site-a", "2024-06-03T00:00:00.000Z")]})
    note_url = f"{keys_url}note--6f2d0c9e-1f1b-4a9e-9d55-0c6c8f1d2a10/"

    response = delete(note_url, hub.site_a.auth,
                      **{"match[version]": "2030-01-01T00:00:00.000Z"})

    body = assert_taxii_error(response, 404)
    assert "no version of note--6f2d0c9e" in body["description"]
    assert get(note_url, hub.site_a.auth).status_code == 200


def test_delete_other_sites_key_403(hub: Hub) -> None:
    keys_url = hub.objects_url(collection_id("keys"))
    post(keys_url, hub.site_a.auth, {"objects": [key_note("site-a", "2024-06-03T00:00:00.000Z")]})

    response = delete(f"{keys_url}note--6f2d0c9e-1f1b-4a9e-9d55-0c6c8f1d2a10/", hub.site_b.auth)

    body = assert_taxii_error(response, 403)
    assert "may delete only versions it posted" in body["description"]


def test_other_site_cannot_version_key(hub: Hub) -> None:
    keys_url = hub.objects_url(collection_id("keys"))
    original = key_note("site-a", "2024-06-03T00:00:00.000Z")
    post(keys_url, hub.site_a.auth, {"objects": [original]})
    newer = dict(key_note("site-b", "2024-06-03T00:05:00.000Z"), content="replaced")

    status = post(keys_url, hub.site_b.auth, {"objects": [newer]}).json()
    latest = get(f"{keys_url}{original['id']}/", hub.site_b.auth).json()["objects"]
    versions = get(f"{keys_url}{original['id']}/versions/", hub.site_a.auth).json()

    assert status["failure_count"] == 1
    assert status["failures"][0]["id"] == original["id"]
    assert "only an object's creator may add versions" in status["failures"][0]["message"]
    assert [o["content"] for o in latest] == ["key share"]
    assert versions["versions"] == ["2024-06-03T00:00:00.000Z"]


def test_delete_round_summary_403(hub: Hub) -> None:
    response = delete(f"{hub.objects_url()}{hub.summary_ids[0]}/", hub.site_a.auth)

    body = assert_taxii_error(response, 403)
    assert "round evidence cannot be deleted" in body["description"]
    assert get(f"{hub.objects_url()}{hub.summary_ids[0]}/", hub.site_a.auth).status_code == 200


def test_delete_by_consumer_or_unknown_rejected(hub: Hub) -> None:
    consumer = delete(f"{hub.objects_url(FUSED)}indicator--00000000-0000-4000-8000-000000000000/",
                      hub.reader)
    unknown = delete(f"{hub.objects_url()}x-fti-round-summary--00000000-0000-4000-8000-"
                     "000000000000/", hub.site_a.auth)
    other_site = delete(f"{hub.objects_url()}{hub.summary_ids[0]}/", hub.site_b.auth)

    assert_taxii_error(consumer, 403)
    assert_taxii_error(unknown, 404)
    assert_taxii_error(other_site, 404)


def test_status_of_other_caller_404(hub: Hub) -> None:
    response = get(f"{hub.root}status/{hub.status_id}/", hub.site_b.auth)

    assert_taxii_error(response, 404)


def test_status_expires_after_retention(hub: Hub) -> None:
    """A status resource is served for hub.status_retention_days (7 by default), then 404."""
    url = f"{hub.root}status/{hub.status_id}/"
    posted_at = hub.server._clock()

    kept = hub.server.purge_statuses(posted_at + timedelta(days=6, hours=23))
    still_there = get(url, hub.site_a.auth).status_code
    deleted = hub.server.purge_statuses(posted_at + timedelta(days=7, seconds=1))

    assert (kept, still_there, deleted) == (0, 200, 1)
    assert_taxii_error(get(url, hub.site_a.auth), 404)


def test_status_without_trailing_slash_served(hub: Hub) -> None:
    """taxii2-client builds the status URL without the trailing slash."""
    response = get(f"{hub.root}status/{hub.status_id}", hub.site_a.auth)

    assert response.status_code == 200
    assert response.json()["success_count"] == 5


def test_get_objects_pages_with_next_and_headers(hub: Hub) -> None:
    first = get(hub.objects_url(), hub.site_a.auth, limit=2)
    second = get(hub.objects_url(), hub.site_a.auth, limit=2, next=first.json()["next"])
    third = get(hub.objects_url(), hub.site_a.auth, limit=2, next=second.json()["next"])

    pages = [first.json(), second.json(), third.json()]
    assert [page["more"] for page in pages] == [True, True, False]
    assert "next" not in pages[2]
    assert [o["id"] for page in pages for o in page["objects"]] == hub.summary_ids
    for response in (first, second, third):
        assert MICROSECOND_STAMP.match(response.headers["X-TAXII-Date-Added-First"])
        assert MICROSECOND_STAMP.match(response.headers["X-TAXII-Date-Added-Last"])
    assert first.headers["X-TAXII-Date-Added-Last"] < second.headers["X-TAXII-Date-Added-First"]


def test_next_token_bound_to_query_and_caller(hub: Hub) -> None:
    token = get(hub.objects_url(), hub.site_a.auth, limit=2).json()["next"]

    other_filter = get(hub.objects_url(), hub.site_a.auth, limit=2, next=token,
                       **{"match[type]": "x-fti-round-summary"})
    other_caller = get(hub.objects_url(), hub.site_b.auth, limit=2, next=token)
    # A character inside the MAC changes, because each carries six of its bits. The last one
    # may carry only two, so changing its other bits can decode to the same MAC.
    payload, mac = token.split(".")
    changed = "B" if mac[10] != "B" else "C"
    forged = get(hub.objects_url(), hub.site_a.auth, limit=2,
                 next=f"{payload}.{mac[:10]}{changed}{mac[11:]}")

    assert "other filters or another caller" in assert_taxii_error(other_filter, 400)[
        "description"]
    assert "other filters or another caller" in assert_taxii_error(other_caller, 400)[
        "description"]
    assert "not a token issued by this hub" in assert_taxii_error(forged, 400)["description"]


def test_taxii2client_as_pages_reads_every_summary(hub: Hub) -> None:
    collection = Collection(hub.objects_url()[: -len("objects/")], user=hub.site_a.site_id,
                            password=hub.site_a.password)

    pages = list(as_pages(collection.get_objects, per_request=2))

    assert [len(page.get("objects", [])) for page in pages] == [2, 2, 1]
    assert [o["id"] for page in pages for o in page["objects"]] == hub.summary_ids


def test_site_reads_only_its_own_summaries(hub: Hub) -> None:
    own = get(hub.objects_url(), hub.site_a.auth)
    other = get(hub.objects_url(), hub.site_b.auth)
    direct = get(f"{hub.objects_url()}{hub.summary_ids[0]}/", hub.site_b.auth)

    assert len(own.json()["objects"]) == 5
    assert other.json() == {"more": False}
    assert_taxii_error(direct, 404)


def test_filters_match_id_type_added_after(hub: Hub) -> None:
    by_id = get(hub.objects_url(), hub.site_a.auth,
                **{"match[id]": f"{hub.summary_ids[3]},{hub.summary_ids[1]}"})
    by_type = get(hub.objects_url(), hub.site_a.auth, **{"match[type]": "identity"})
    first_page = get(hub.objects_url(), hub.site_a.auth, limit=1)
    after = get(hub.objects_url(), hub.site_a.auth,
                added_after=first_page.headers["X-TAXII-Date-Added-First"])
    bad = get(hub.objects_url(), hub.site_a.auth, added_after="yesterday")

    assert [o["id"] for o in by_id.json()["objects"]] == [hub.summary_ids[1],
                                                          hub.summary_ids[3]]
    assert by_type.json() == {"more": False}
    assert [o["id"] for o in after.json()["objects"]] == hub.summary_ids[1:]
    assert "added_after must be a timestamp" in assert_taxii_error(bad, 400)["description"]


def test_match_version_first_last_all(hub: Hub) -> None:
    identity = {"type": "identity", "spec_version": "2.1", "id": site_identity_id("site-a"),
                "created": "2024-06-01T00:00:00.000Z", "modified": "2024-06-01T00:00:00.000Z",
                "name": "site-a", "identity_class": "organization"}
    newer = dict(identity, modified="2024-06-02T00:00:00.000Z", name="site-a (renamed)")
    post(hub.objects_url(), hub.site_a.auth, {"objects": [identity, newer]})
    url = f"{hub.objects_url()}{identity['id']}/"

    last = get(url, hub.site_a.auth)
    first = get(url, hub.site_a.auth, **{"match[version]": "first"})
    every = get(url, hub.site_a.auth, **{"match[version]": "all"})
    exact = get(url, hub.site_a.auth, **{"match[version]": "2024-06-01T00:00:00Z"})
    versions = get(f"{url}versions/", hub.site_a.auth)

    assert [o["name"] for o in last.json()["objects"]] == ["site-a (renamed)"]
    assert [o["name"] for o in first.json()["objects"]] == ["site-a"]
    assert [o["name"] for o in every.json()["objects"]] == ["site-a", "site-a (renamed)"]
    assert [o["name"] for o in exact.json()["objects"]] == ["site-a"]
    assert versions.json() == {"more": False, "versions": ["2024-06-01T00:00:00.000Z",
                                                           "2024-06-02T00:00:00.000Z"]}


def test_manifest_lists_versions_and_media_type(hub: Hub) -> None:
    response = get(f"{hub.root}collections/{SUMMARIES}/manifest/", hub.site_a.auth, limit=1)

    body = response.json()
    assert body["more"] is True
    entry = body["objects"][0]
    assert entry["id"] == hub.summary_ids[0]
    assert entry["media_type"] == "application/stix+json;version=2.1"
    assert entry["date_added"] == response.headers["X-TAXII-Date-Added-First"]


@pytest.mark.parametrize("limit", ["0", "\u0663", "1_0", " 5", "+5", "5.0"])
def test_limit_invalid_400(hub: Hub, limit: str) -> None:
    response = get(hub.objects_url(), hub.site_a.auth, limit=limit)

    assert "limit must be a whole number >= 1" in assert_taxii_error(response, 400)[
        "description"]


@pytest.mark.parametrize(("limit", "count"), [("0002", 2), ("9" * 5000, 5)])
def test_limit_long_digits_read(hub: Hub, limit: str, count: int) -> None:
    response = get(hub.objects_url(), hub.site_a.auth, limit=limit)

    assert response.status_code == 200
    assert len(response.json()["objects"]) == count


@pytest.mark.parametrize("spec_versions", ["", " , ",
                                           ",".join(f"2.{n}" for n in range(1001))])
def test_delete_list_filter_checked(hub: Hub, spec_versions: str) -> None:
    keys_url = hub.objects_url(collection_id("keys"))
    post(keys_url, hub.site_a.auth, {"objects": [key_note("site-a", "2024-06-03T00:00:00.000Z")]})
    note_url = f"{keys_url}note--6f2d0c9e-1f1b-4a9e-9d55-0c6c8f1d2a10/"

    response = delete(note_url, hub.site_a.auth, **{"match[spec_version]": spec_versions})

    assert_taxii_error(response, 400)
    assert get(note_url, hub.site_a.auth).status_code == 200


@pytest.mark.parametrize("name", ["match[id]", "match[type]", "match[spec_version]"])
@pytest.mark.parametrize("value", ["", ",", " , "])
def test_empty_list_filter_400(hub: Hub, name: str, value: str) -> None:
    response = get(hub.objects_url(), hub.site_a.auth, **{name: value})

    body = assert_taxii_error(response, 400)
    assert f"{name} must list at least one value" in body["description"]


@pytest.mark.parametrize("name", ["match[id]", "match[version]"])
def test_list_filter_over_cap_400(hub: Hub, name: str) -> None:
    if name == "match[id]":
        values = [f"indicator--{index:08x}-0000-4000-8000-000000000000"
                  for index in range(MAX_FILTER_VALUES + 1)]
    else:
        values = [f"2024-06-03T00:00:00.{index:06d}Z" for index in range(MAX_FILTER_VALUES + 1)]

    response = get(hub.objects_url(), hub.site_a.auth, **{name: ",".join(values)})

    body = assert_taxii_error(response, 400)
    assert f"{name} lists {MAX_FILTER_VALUES + 1} values; at most {MAX_FILTER_VALUES}" in body[
        "description"]


def test_list_filter_repeats_counted_once(hub: Hub) -> None:
    repeated = ",".join([hub.summary_ids[0]] * (3 * MAX_FILTER_VALUES))

    response = get(hub.objects_url(), hub.site_a.auth, **{"match[id]": repeated})

    assert response.status_code == 200
    assert [o["id"] for o in response.json()["objects"]] == [hub.summary_ids[0]]


def test_empty_match_version_400(hub: Hub) -> None:
    response = get(hub.objects_url(), hub.site_a.auth, **{"match[version]": ""})

    body = assert_taxii_error(response, 400)
    assert "match[version] must list first, last, all or timestamps" in body["description"]


def test_collections_flags_per_caller(hub: Hub) -> None:
    as_reader = get(f"{hub.root}collections/", hub.reader).json()["collections"]

    flags = {c["title"]: (c["can_read"], c["can_write"]) for c in as_reader}
    assert flags == {"summaries": (False, False), "fused-indicators": (True, False),
                     "feedback": (False, False), "keys": (False, False)}


def test_request_logged_once_with_id(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fusion_hub.taxii")

    response = get(f"{hub.root}collections/", hub.site_a.auth)

    lines = [r.getMessage() for r in caplog.records if r.name == "fusion_hub.taxii"]
    assert len(lines) == 1
    assert re.fullmatch(
        rf"request {response.headers['X-Request-ID']} site-a GET /fti/collections/ 200 "
        r"\d+\.\d ms", lines[0])


def test_keys_envelope_failures_reported_rest_stored(hub: Hub) -> None:
    """On a plain hub, objects outside summaries share one transaction, but a bad one fails alone."""
    keys_url = hub.objects_url(collection_id("keys"))
    stored = key_note("site-a", "2024-06-03T00:00:00.000Z")
    assert post(keys_url, hub.site_a.auth, {"objects": [stored]}).status_code == 202
    changed = dict(stored, content="other share")
    other_sites = dict(key_note("site-b", "2024-06-03T00:00:01.000Z"),
                       id="note--0b0e4c64-4c1f-4d0c-8f6e-3f2a8a6c1e01")
    fresh = dict(stored, id="note--5d1c7a52-9a0e-4f55-a7f4-2f0b9c8e3d02")

    response = post(keys_url, hub.site_a.auth,
                    {"objects": [changed, other_sites, {"type": "note"}, fresh]})

    status = response.json()
    assert response.status_code == 202
    assert status["total_count"] == 4
    assert status["success_count"] == 1
    assert status["failure_count"] == 3
    assert [s["id"] for s in status["successes"]] == [fresh["id"]]
    assert [f["id"] for f in status["failures"]] == [stored["id"], other_sites["id"],
                                                     "objects[2]"]
    listed = get(keys_url, hub.site_a.auth).json()["objects"]
    assert sorted(o["id"] for o in listed) == sorted([stored["id"], fresh["id"]])
    assert next(o for o in listed if o["id"] == stored["id"])["content"] == "key share"


def test_lone_surrogate_key_fails_alone(hub: Hub) -> None:
    """A key with a lone surrogate has no RFC 8785 form, so its object fails and the rest is stored."""
    keys_url = hub.objects_url(collection_id("keys"))
    unencodable = dict(key_note("site-a", "2024-06-03T00:00:00.000Z"),
                       **{"\ud800": 1, "x_other": 2})
    fresh = dict(key_note("site-a", "2024-06-03T00:00:00.000Z"),
                 id="note--6e2d8b63-0b1f-4a66-b8a5-3a1c0d9f4e03")

    response = post(keys_url, hub.site_a.auth, {"objects": [unencodable, fresh]})

    status = response.json()
    assert response.status_code == 202
    assert [s["id"] for s in status["successes"]] == [fresh["id"]]
    assert [f["id"] for f in status["failures"]] == [unencodable["id"]]
    assert "no RFC 8785 canonical form" in status["failures"][0]["message"]
