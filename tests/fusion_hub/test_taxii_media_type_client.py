"""The agent as a TAXII client: which response media types it accepts from a hub.

taxii2-client 2.3 checks the ``Content-Type`` of GET responses. It ignores spaces and extra
parameters, but it compares case-sensitively and requires ``version=2.1``. The agent applies
the same rule to POST responses, which taxii2-client does not check. A response it rejects
leaves the summary in the outbox: one error line names the URL, the received type and the
expected type, and the sender retries with backoff without raising.

A real hub responds with the exact type (first test). The other cases need a server that
misbehaves, so a stub TAXII server on 127.0.0.1 plays the hub, with the media type of its
responses set by each test.
"""

from __future__ import annotations

import http.server
import json
import logging
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import agent.sender
from agent.config import HubSection
from agent.consumer import FusedIndicatorConsumer
from agent.errors import DeliveryError
from agent.sender import SummarySender, backoff_delay_secs
from agent.state import AgentState
from agent.taxii_client import open_collection
from stix_mappings.ids import collection_id
from tests.fusion_hub.hub_testing import (
    ROUND_START,
    TAXII,
    enroll,
    make_config,
    running_hub,
    signed_summary,
)

SUMMARY_ID = "x-fti-round-summary--6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"
DATE_ADDED_LAST = "2024-06-03T01:00:00.000000Z"
# A fused indicator for an address no test site has seen, so polling it writes no alert.
INDICATOR = {
    "type": "indicator", "spec_version": "2.1",
    "id": "indicator--0b9e8a3c-5f1d-4e2a-9c7b-6d5e4f3a2b1c",
    "created": "2024-06-03T00:30:00.000Z", "modified": "2024-06-03T00:30:00.000Z",
    "pattern": "[ipv4-addr:value = '198.51.100.23']", "pattern_type": "stix",
    "valid_from": "2024-06-03T00:30:00Z",
}

# Response media types that taxii2-client 2.3 accepts: spaces and extra parameters pass.
ACCEPTED = [
    "application/taxii+json;version=2.1",
    "application/taxii+json; version=2.1",
    "application/taxii+json; charset=utf-8; version=2.1",
]
# Response media types it rejects: another case, no version, STIX, plain JSON, HTML.
REJECTED = [
    "Application/TAXII+json; Version=2.1",
    "application/taxii+json",
    "application/stix+json;version=2.1",
    "application/json",
    "text/html",
]


@dataclass
class StubBehaviour:
    """The responses of the stub hub. Tests set them before the agent connects."""

    get_media_type: str = TAXII
    objects_media_type: str = TAXII
    post_media_type: str = TAXII
    post_status: int = 202
    post_body: bytes | None = None
    posts: list[bytes] = field(default_factory=list)


class _StubTaxiiHandler(http.server.BaseHTTPRequestHandler):
    """Serve discovery, one API root, two collections, Get Objects and Add Objects."""

    behaviour: StubBehaviour
    base_url: str

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        summaries, fused = collection_id("summaries"), collection_id("fused-indicators")
        if self.path == "/taxii2/":
            self._send(200, self.behaviour.get_media_type, {
                "title": "stub hub", "default": f"{self.base_url}/fti/",
                "api_roots": [f"{self.base_url}/fti/"],
            })
        elif self.path == "/fti/":
            self._send(200, self.behaviour.get_media_type, {
                "title": "stub root", "versions": [TAXII], "max_content_length": 10485760,
            })
        elif self.path == "/fti/collections/":
            self._send(200, self.behaviour.get_media_type, {"collections": [
                {"id": summaries, "title": "summaries", "can_read": True, "can_write": True,
                 "media_types": ["application/stix+json;version=2.1"]},
                {"id": fused, "title": "fused-indicators", "can_read": True,
                 "can_write": False, "media_types": ["application/stix+json;version=2.1"]},
            ]})
        elif self.path.startswith(f"/fti/collections/{fused}/objects/"):
            self._send(200, self.behaviour.objects_media_type, {"more": False, "objects": [INDICATOR]},
                       headers={"X-TAXII-Date-Added-First": DATE_ADDED_LAST,
                                "X-TAXII-Date-Added-Last": DATE_ADDED_LAST})
        else:
            self._send(404, TAXII, {"title": "Not Found", "http_status": "404"})

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", "0"))
        envelope = self.rfile.read(length)
        self.behaviour.posts.append(envelope)
        ids = [item["id"] for item in json.loads(envelope)["objects"]]
        body = self.behaviour.post_body
        if body is None:
            body = json.dumps({
                "id": "2d086da7-4bdc-4f91-900e-d77486753710", "status": "complete",
                "total_count": len(ids), "success_count": len(ids), "failure_count": 0,
                "pending_count": 0, "successes": [{"id": item, "version": "x"} for item in ids],
            }).encode()
        self._send_bytes(self.behaviour.post_status, self.behaviour.post_media_type, body)

    def _send(self, status: int, media_type: str, body: dict,
              headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, media_type, json.dumps(body).encode(), headers)

    def _send_bytes(self, status: int, media_type: str, body: bytes,
                    headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        return


@pytest.fixture
def stub_hub() -> Iterator[tuple[str, StubBehaviour]]:
    """Run the stub TAXII server on 127.0.0.1 and yield its base URL and its behaviour."""
    behaviour = StubBehaviour()
    handler = type("Handler", (_StubTaxiiHandler,), {"behaviour": behaviour})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler.base_url, behaviour
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def hub_section(base_url: str, *, attempts: int = 3) -> HubSection:
    return HubSection(url=f"{base_url}/taxii2/", username="site-a", password="pw",
                      timeout_secs=10.0, max_send_attempts=attempts, retry_backoff_secs=0.01)


def queued_state(tmp_path: Path, summary: dict | None = None) -> AgentState:
    state = AgentState(tmp_path / "agent.sqlite3")
    state.queue_summary(1717372800, summary or {"id": SUMMARY_ID, "type": "x-fti-round-summary"},
                        [])
    return state


def test_real_hub_exact_type_delivered(tmp_path: Path) -> None:
    with running_hub(make_config(tmp_path, hub={"rate_limit_per_minute": 0})) as hub:
        site = enroll(hub, "site-a")
        summary = signed_summary(site, round_start=ROUND_START)
        state = queued_state(tmp_path, summary)
        section = HubSection(url=hub.discovery_url, username="site-a", password=site.password)
        sender = SummarySender(section, site.password, state, site_id="site-a")

        report = sender.deliver_pending()

        assert report.delivered == 1
        assert report.pending == 0
        assert state.pending() == []


@pytest.mark.parametrize("media_type", ACCEPTED)
def test_post_response_types_accepted(tmp_path: Path, stub_hub: tuple[str, StubBehaviour],
                                      media_type: str) -> None:
    base_url, behaviour = stub_hub
    behaviour.get_media_type = media_type
    behaviour.post_media_type = media_type
    state = queued_state(tmp_path)
    sender = SummarySender(hub_section(base_url), "pw", state, site_id="site-a")

    report = sender.deliver_pending()

    assert report.delivered == 1
    assert state.pending() == []
    assert len(behaviour.posts) == 1


@pytest.mark.parametrize("media_type", REJECTED)
def test_post_response_types_rejected(tmp_path: Path, stub_hub: tuple[str, StubBehaviour],
                                      media_type: str, caplog: pytest.LogCaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, behaviour = stub_hub
    behaviour.post_media_type = media_type
    state = queued_state(tmp_path)
    delays: list[float] = []
    real_sleep = agent.sender.time.sleep
    monkeypatch.setattr(agent.sender.time, "sleep",
                        lambda secs: (delays.append(secs), real_sleep(secs))[1])
    sender = SummarySender(hub_section(base_url, attempts=3), "pw", state, site_id="site-a",
                           rng=random.Random(11))

    with caplog.at_level(logging.WARNING, logger="agent.sender"):
        report = sender.deliver_pending()

    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    expected_rng = random.Random(11)
    assert report.delivered == 0
    assert report.pending == 1
    assert [item.summary_id for item in state.pending()] == [SUMMARY_ID]
    assert state.pending()[0].attempts == 3
    assert state.round_status(1717372800) == "queued"
    assert len(behaviour.posts) == 3
    assert delays == [backoff_delay_secs(attempt, 0.01, rng=expected_rng) for attempt in (1, 2)]
    assert len(errors) == 1
    assert f"{base_url}/fti/collections/{collection_id('summaries')}/objects/" in errors[0]
    assert repr(media_type) in errors[0]
    assert repr(TAXII) in errors[0]


def test_proxy_html_502_transient(tmp_path: Path, stub_hub: tuple[str, StubBehaviour],
                                  caplog: pytest.LogCaptureFixture) -> None:
    base_url, behaviour = stub_hub
    behaviour.post_status = 502
    behaviour.post_media_type = "text/html"
    behaviour.post_body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    state = queued_state(tmp_path)
    sender = SummarySender(hub_section(base_url, attempts=2), "pw", state, site_id="site-a")

    with caplog.at_level(logging.WARNING, logger="agent.sender"):
        report = sender.deliver_pending()

    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert report.pending == 1
    assert [item.summary_id for item in state.pending()] == [SUMMARY_ID]
    assert len(behaviour.posts) == 2
    assert len(errors) == 1
    assert "will retry" in errors[0]
    assert "HTTP 502 with Content-Type 'text/html'" in errors[0]
    assert repr(TAXII) in errors[0]
    assert base_url in errors[0]


@pytest.mark.parametrize("media_type", ACCEPTED)
def test_get_types_accepted_by_consumer(tmp_path: Path, stub_hub: tuple[str, StubBehaviour],
                                        media_type: str) -> None:
    base_url, behaviour = stub_hub
    behaviour.get_media_type = media_type
    behaviour.objects_media_type = media_type
    state = AgentState(tmp_path / "agent.sqlite3")
    consumer = FusedIndicatorConsumer(hub_section(base_url), "pw", state, site_id="site-a",
                                      alerts_path=tmp_path / "alerts.jsonl")

    alerts = consumer.poll()

    assert alerts == 0
    assert state.checkpoint("fused_indicators_added_after") == DATE_ADDED_LAST


@pytest.mark.parametrize("media_type", REJECTED)
def test_get_types_rejected_by_consumer(tmp_path: Path, stub_hub: tuple[str, StubBehaviour],
                                        media_type: str) -> None:
    base_url, behaviour = stub_hub
    behaviour.objects_media_type = media_type
    state = AgentState(tmp_path / "agent.sqlite3")
    consumer = FusedIndicatorConsumer(hub_section(base_url), "pw", state, site_id="site-a",
                                      alerts_path=tmp_path / "alerts.jsonl")

    with pytest.raises(DeliveryError) as excinfo:
        consumer.poll()

    assert excinfo.value.transient is True
    assert media_type in str(excinfo.value)
    assert state.checkpoint("fused_indicators_added_after") is None


@pytest.mark.parametrize("media_type", REJECTED)
def test_discovery_types_rejected(stub_hub: tuple[str, StubBehaviour], media_type: str) -> None:
    base_url, behaviour = stub_hub
    behaviour.get_media_type = media_type

    with pytest.raises(DeliveryError) as excinfo:
        open_collection(hub_section(base_url), "pw", "summaries")

    assert excinfo.value.transient is True
    assert media_type in str(excinfo.value)
