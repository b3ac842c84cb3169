"""The agent's TAXII client side against medallion, the OASIS reference TAXII 2.1 server.

The hub tests show that the agent and the hub agree. Here the agent's sender, its collection
lookup and its fused-indicator consumer talk to medallion 3.0 (memory backend) on 127.0.0.1,
so they are shown to follow TAXII 2.1 and not only fti's own server.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from taxii2client.v21 import Collection, as_pages

from agent.config import HubSection
from agent.consumer import FusedIndicatorConsumer
from agent.sender import SummarySender
from agent.state import AgentState, Contact
from agent.taxii_client import open_collection

SITE = "site-a"
BAD_IP = "203.0.113.9"
ROUND_SECONDS = 300
FIRST_ROUND = 1_717_372_800  # 2024-06-03T00:00:00Z
SUMMARIES = 5


def load_medallion_helper() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "medallion_server.py"
    spec = importlib.util.spec_from_file_location("medallion_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["medallion_server"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def medallion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    helper = load_medallion_helper()
    folder = tmp_path_factory.mktemp("medallion")
    # A page size of 2 makes every read below span several pages.
    with helper.running_medallion(folder, ["summaries", "fused-indicators"],
                                  max_page_size=2) as server:
        yield server


def hub_section(server: Any) -> HubSection:
    return HubSection(url=server.discovery_url, username=server.user, password=server.password,
                      timeout_secs=10.0, max_send_attempts=1, retry_backoff_secs=0.0)


def summary(round_start: int) -> dict[str, Any]:
    """Return a STIX 2.1 object in place of a round summary, because medallion checks no schema."""
    stamp = f"2024-06-03T00:{(round_start - FIRST_ROUND) // 60:02d}:00.000Z"
    return {"type": "x-fti-round-summary", "spec_version": "2.1",
            "id": f"x-fti-round-summary--{uuid.uuid4()}", "created": stamp, "modified": stamp,
            "site": SITE, "round_start": round_start}


def indicator(value: str) -> dict[str, Any]:
    return {"type": "indicator", "spec_version": "2.1", "id": f"indicator--{uuid.uuid4()}",
            "created": "2024-06-03T01:00:00.000Z", "modified": "2024-06-03T01:00:00.000Z",
            "pattern": f"[ipv4-addr:value = '{value}']", "pattern_type": "stix",
            "valid_from": "2024-06-03T01:00:00Z", "confidence": 80}


def test_sender_delivers_outbox_to_medallion(tmp_path: Path, medallion: Any) -> None:
    state = AgentState(tmp_path / "state.sqlite3")
    sent = [summary(FIRST_ROUND + i * ROUND_SECONDS) for i in range(SUMMARIES)]
    for item in sent:
        state.queue_summary(item["round_start"], item, [])

    report = SummarySender(hub_section(medallion), medallion.password, state,
                           site_id=SITE).deliver_pending()

    assert report.delivered == SUMMARIES
    assert report.rejected == 0
    assert report.pending == 0
    assert state.pending() == []

    # Read back through the agent's own collection lookup, page by page.
    collection = open_collection(hub_section(medallion), medallion.password, "summaries")
    pages = list(as_pages(collection.get_objects, per_request=2))
    stored = [obj for page in pages for obj in page.get("objects", [])]
    assert len(pages) == 3
    assert sorted(o["id"] for o in stored) == sorted(o["id"] for o in sent)
    by_id = {o["id"]: o for o in stored}
    for item in sent:
        assert by_id[item["id"]] == item
    state.close()


def test_added_after_returns_only_later_objects(medallion: Any) -> None:
    collection = open_collection(hub_section(medallion), medallion.password,
                                 "fused-indicators")
    first = [indicator(f"198.51.100.{i}") for i in range(3)]
    later = [indicator(f"198.51.100.{i}") for i in range(10, 13)]
    collection.add_objects(json.dumps({"objects": first}))
    manifest = collection.get_manifest()["objects"]
    checkpoint = max(entry["date_added"] for entry in manifest)
    collection.add_objects(json.dumps({"objects": later}))

    pages = list(as_pages(collection.get_objects, per_request=2, added_after=checkpoint))

    seen = [obj["id"] for page in pages for obj in page.get("objects", [])]
    assert sorted(seen) == sorted(obj["id"] for obj in later)
    assert len(seen) == len(set(seen))


def test_consumer_alerts_once_per_indicator(tmp_path: Path, medallion: Any) -> None:
    state = AgentState(tmp_path / "state.sqlite3")
    contact = Contact(round_start=FIRST_ROUND, observable=BAD_IP, entity="10.0.0.5",
                      connections=4, max_score=0.9, first_seen=FIRST_ROUND,
                      last_seen=FIRST_ROUND + 60)
    state.queue_summary(FIRST_ROUND, summary(FIRST_ROUND), [contact])
    collection = Collection(medallion.collection_url("fused-indicators"), user=medallion.user,
                            password=medallion.password)
    collection.add_objects(json.dumps({"objects": [indicator(BAD_IP)]}))
    consumer = FusedIndicatorConsumer(hub_section(medallion), medallion.password, state,
                                      site_id=SITE, alerts_path=tmp_path / "alerts.ndjson")

    first_poll = consumer.poll()
    second_poll = consumer.poll()

    assert first_poll == 1
    assert second_poll == 0
    alerts = [json.loads(line) for line in
              (tmp_path / "alerts.ndjson").read_text(encoding="utf-8").splitlines()]
    assert [(a["observable"], a["entity"]) for a in alerts] == [(BAD_IP, "10.0.0.5")]
    state.close()


def test_consumer_checkpoint_follows_date_added_not_modified(tmp_path: Path, medallion: Any) -> None:
    """A version whose modified lies ahead of the server's clock must not hide later additions."""
    state = AgentState(tmp_path / "state.sqlite3")
    early, late = "203.0.113.20", "203.0.113.21"
    contacts = [Contact(round_start=FIRST_ROUND, observable=value, entity="10.0.0.7", connections=1,
                        max_score=0.9, first_seen=FIRST_ROUND, last_seen=FIRST_ROUND + 60)
                for value in (early, late)]
    state.queue_summary(FIRST_ROUND, summary(FIRST_ROUND), contacts)
    collection = Collection(medallion.collection_url("fused-indicators"), user=medallion.user,
                            password=medallion.password)
    ahead = {**indicator(early), "created": "2099-01-01T00:00:00.000Z", "modified": "2099-01-01T00:00:00.000Z"}
    collection.add_objects(json.dumps({"objects": [ahead]}))
    consumer = FusedIndicatorConsumer(hub_section(medallion), medallion.password, state,
                                      site_id=SITE, alerts_path=tmp_path / "alerts.ndjson")
    consumer.poll()
    collection.add_objects(json.dumps({"objects": [indicator(late)]}))

    assert consumer.poll() == 1
    alerts = [json.loads(line) for line in
              (tmp_path / "alerts.ndjson").read_text(encoding="utf-8").splitlines()]
    assert [a["observable"] for a in alerts][-1] == late
    assert state.checkpoint("fused_indicators_added_after") < "2099"
    state.close()
