"""Tests of the Elasticsearch bulk client against a local server that plays Elasticsearch."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from siem_integrations.elastic_bulk import (DEFAULT_DATA_STREAM, ElasticBulkClient,
                                            load_bundled_json)
from siem_integrations.errors import SiemAuthFailed, SiemResponseInvalid, TransportFailed
from siem_integrations.retry import Backoff, RetryPolicy
from siem_integrations.spool import Spool, SpooledDocument
from siem_integrations.transport import HttpResponse, RequestsTransport
from stix_mappings.indicator import build_fused_indicator
from tests.siem_integrations.es_server import EsServer

API_KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
MOMENT = datetime(2024, 6, 3, 1, 0, tzinfo=timezone.utc)


def indicator(value: str, *, hours: int = 0, revoked: bool = False,
              ttl_hours: int = 24) -> dict[str, Any]:
    moment = MOMENT + timedelta(hours=hours)
    return build_fused_indicator(
        observable_type="ipv4-addr", value=value, fused_score=0.76, corroborating_sites=2,
        strategy="trust-weighted-noisy-or", round_start=moment - timedelta(hours=1),
        valid_from=moment, valid_until=moment + timedelta(hours=ttl_hours), created=MOMENT,
        modified=moment, hub_identity="identity--6f1c2a4e-8d3b-4c7a-9e0f-1a2b3c4d5e6f",
        revoked=revoked,
    )


@pytest.fixture
def server() -> Iterator[EsServer]:
    with EsServer(authorization=f"ApiKey {API_KEY}") as running:
        yield running


def make_client(tmp_path: Path, url: str, *, now: datetime = MOMENT + timedelta(hours=2),
                sleeps: list[float] | None = None, **options: Any) -> ElasticBulkClient:
    recorded = sleeps if sleeps is not None else []
    backoff = Backoff(RetryPolicy(max_attempts=3, base_delay_secs=0.01), rng=random.Random(5),
                      sleep=recorded.append)
    options.setdefault("api_key", API_KEY)
    return ElasticBulkClient(url, spool=Spool(tmp_path / "spool.sqlite"),
                             transport=RequestsTransport(timeout_secs=5.0), backoff=backoff,
                             clock=lambda: now, **options)


def stream_documents(server: EsServer) -> dict[str, dict[str, Any]]:
    return server.state.documents.get(DEFAULT_DATA_STREAM, {})


def test_install_templates_puts_policy_and_template(tmp_path: Path, server: EsServer) -> None:
    client = make_client(tmp_path, server.url)

    client.install_templates()

    assert server.state.policies == {"logs-ti_fti.indicator": load_bundled_json("ilm-policy.json")}
    template = server.state.templates["logs-ti_fti.indicator"]
    assert template["index_patterns"] == ["logs-ti_fti.indicator-*"]
    assert template["data_stream"] == {}
    assert template["template"]["settings"]["index.lifecycle.name"] == "logs-ti_fti.indicator"


def test_bulk_creates_with_fixed_ids(tmp_path: Path, server: EsServer) -> None:
    client = make_client(tmp_path, server.url)
    client.install_templates()

    result = client.write_indicators([indicator("203.0.113.9"), indicator("203.0.113.10")])

    bulk = [r for r in server.state.requests if r["path"] == "/_bulk"][0]
    lines = bulk["body"].decode().splitlines()
    assert result.written == 2
    assert bulk["body"].endswith(b"\n")
    assert json.loads(lines[0]) == {"create": {"_index": DEFAULT_DATA_STREAM,
                                               "_id": indicator("203.0.113.9")["id"]
                                               + "@2024-06-03T01:00:00.000Z"}}
    assert sorted(d["threat"]["indicator"]["ip"] for d in stream_documents(server).values()) == [
        "203.0.113.10", "203.0.113.9"]


def test_413_split_and_oversized_dead_lettered(tmp_path: Path, server: EsServer) -> None:
    client = make_client(tmp_path, server.url)
    client.install_templates()
    server.state.max_content_length = 3000
    huge = indicator("203.0.113.99")
    huge["description"] = "x" * 4000

    result = client.write_indicators([indicator(f"203.0.113.{n}") for n in range(1, 5)]
                                     + [huge])

    dead = client.spool.dead_letters()
    assert result.written == 4
    assert len(stream_documents(server)) == 4
    assert [(d.code, d.reason) for d in dead] == [("413", "request too large (413): no body")]
    assert client.spool.queued_count() == 0


def test_resent_version_conflict_counts_delivered(tmp_path: Path, server: EsServer) -> None:
    """A second sender with its own spool gets 409 for the version the first one created."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = make_client(tmp_path / "first", server.url)
    second = make_client(tmp_path / "second", server.url)

    first.write_indicators([indicator("203.0.113.9")])
    report = second.write_indicators([indicator("203.0.113.9")])

    assert report.written == 1
    assert second.spool.dead_letters() == []
    assert len(stream_documents(server)) == 1


def test_item_429_retried_alone(tmp_path: Path, server: EsServer) -> None:
    client = make_client(tmp_path, server.url)
    busy = indicator("203.0.113.10")
    server.state.reject_items_once[busy["id"] + "@2024-06-03T01:00:00.000Z"] = 429

    result = client.write_indicators([indicator("203.0.113.9"), busy])

    bulks = [r["body"].decode().splitlines() for r in server.state.requests
             if r["path"] == "/_bulk"]
    assert result.written == 2
    assert [len(b) for b in bulks] == [4, 2]
    assert json.loads(bulks[1][1])["threat"]["indicator"]["ip"] == "203.0.113.10"


def test_item_400_dead_lettered_with_reason(tmp_path: Path, server: EsServer) -> None:
    client = make_client(tmp_path, server.url)
    client.install_templates()
    # The template maps threat.indicator.ip as ip, which cannot hold a network.
    action = json.dumps({"create": {"_index": DEFAULT_DATA_STREAM, "_id": "bad@1"}})
    document = json.dumps({"@timestamp": "2024-06-03T01:00:00.000Z",
                           "threat": {"indicator": {"ip": "198.51.100.0/24"}}})
    client.spool.enqueue([SpooledDocument("bad@1", action + "\n" + document)])

    result = client.write_indicators([indicator("203.0.113.10")])

    dead = client.spool.dead_letters()
    assert result.written == 1
    assert [(d.key, d.code) for d in dead] == [("bad@1", "400")]
    assert dead[0].reason.startswith("document_parsing_exception: [1:1] failed to parse field "
                                     "[threat.indicator.ip] of type [ip]")
    assert list(stream_documents(server)) == [indicator("203.0.113.10")["id"]
                                              + "@2024-06-03T01:00:00.000Z"]


def test_whole_request_429_retried_with_backoff(tmp_path: Path, server: EsServer) -> None:
    sleeps: list[float] = []
    client = make_client(tmp_path, server.url, sleeps=sleeps)
    server.state.reject_requests = 2

    result = client.write_indicators([indicator("203.0.113.9")])

    assert result.written == 1
    assert len(sleeps) == 2
    assert 0.0 <= sleeps[0] <= 0.01
    assert 0.0 <= sleeps[1] <= 0.02


def test_unreachable_retried_then_spooled(tmp_path: Path) -> None:
    with EsServer(authorization=f"ApiKey {API_KEY}") as stopped:
        down_url = stopped.url
    sleeps: list[float] = []
    client = make_client(tmp_path, down_url, sleeps=sleeps)

    result = client.write_indicators([indicator("203.0.113.9")])

    assert result.written == 0
    assert client.spool.queued_count() == 1
    # Connection refused is retried with jittered delays, then the flush ends.
    assert len(sleeps) == 2
    assert 0.0 <= sleeps[0] <= 0.01
    assert 0.0 <= sleeps[1] <= 0.02

    with EsServer(authorization=f"ApiKey {API_KEY}") as server:
        client.url = server.url
        report = client.flush()

    assert (report.delivered, report.queued) == (1, 0)


class TimingOutTransport:
    """A transport whose every request times out after ``timeout_secs`` of a fake clock."""

    def __init__(self, clock: list[float], timeout_secs: float) -> None:
        self.clock, self.timeout_secs = clock, timeout_secs
        self.urls: list[str] = []

    def __call__(self, method: str, url: str, *, headers: Mapping[str, str],
                 body: bytes | None = None) -> HttpResponse:
        self.urls.append(url)
        self.clock[0] += self.timeout_secs
        raise TransportFailed(url, "ReadTimeout")


def test_unavailable_cluster_gives_up_within_budget(tmp_path: Path) -> None:
    """Retries stop at max_elapsed_secs and the other batches wait for the next flush."""
    now = [0.0]
    transport = TimingOutTransport(now, timeout_secs=10.0)

    def sleep(delay: float) -> None:
        now[0] += delay

    backoff = Backoff(RetryPolicy(max_attempts=10, base_delay_secs=1.0, max_elapsed_secs=15.0),
                      rng=random.Random(5), sleep=sleep, clock=lambda: now[0])
    client = ElasticBulkClient("https://es.example.org:9200", api_key=API_KEY,
                               spool=Spool(tmp_path / "spool.sqlite"), transport=transport,
                               backoff=backoff, max_batch_bytes=2048)

    result = client.write_indicators([indicator(f"203.0.113.{n}") for n in range(1, 7)])

    assert result.written == 0
    assert client.spool.queued_count() == 6
    assert transport.urls == ["https://es.example.org:9200/_bulk"] * 2
    assert now[0] <= 15.0 + 10.0


@pytest.mark.parametrize("body, reason", [
    (b"<html><body>OK</body></html>", "not JSON"),
    (b'["created"]', "no items list"),
    (b'{"took": 3, "errors": false}', "no items list"),
    (b'{"took": 3, "errors": false, "items": [{"create": {"status": 201}}]}',
     "1 items for 2 actions"),
    (b'{"took": 3, "errors": false, "items": [{"create": {"status": 201}}, '
     b'{"create": {"_id": "x"}}]}', "item 1 has no integer status"),
    (b'{"took": 3, "errors": false, "items": [{"create": {"status": 201}}, "created"]}',
     "item 1 has no integer status"),
])
def test_malformed_bulk_response_keeps_batch(tmp_path: Path, server: EsServer, body: bytes,
                                             reason: str) -> None:
    client = make_client(tmp_path, server.url)
    server.state.proxy_bodies.append(body)
    indicators = [indicator("203.0.113.9"), indicator("203.0.113.10")]

    with pytest.raises(SiemResponseInvalid) as excinfo:
        client.write_indicators(indicators)
    queued = client.spool.queued_count()
    report = client.flush()

    assert reason in excinfo.value.reason
    assert (excinfo.value.status, excinfo.value.queued) == (200, 2)
    assert "stay queued for the next flush" in str(excinfo.value)
    assert queued == 2
    assert (report.delivered, report.queued) == (2, 0)
    assert len(stream_documents(server)) == 2


def test_wrong_key_stops_without_logging_it(tmp_path: Path, server: EsServer,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(tmp_path, server.url, api_key="d3Jvbmc6a2V5")

    with pytest.raises(SiemAuthFailed) as excinfo:
        client.write_indicators([indicator("203.0.113.9")])
    with pytest.raises(SiemAuthFailed):
        client.flush()

    assert excinfo.value.status == 401
    assert excinfo.value.text.startswith("security_exception: missing authentication")
    assert client.spool.queued_count() == 1
    assert "d3Jvbmc6a2V5" not in caplog.text
    assert "d3Jvbmc6a2V5" not in repr(client)


def test_basic_auth_header(tmp_path: Path) -> None:
    with EsServer(authorization="Basic ZnRpOnMzY3JldA==") as server:
        client = make_client(tmp_path, server.url, api_key=None, username="fti",
                             password="s3cret")

        result = client.write_indicators([indicator("203.0.113.9")])

    assert result.written == 1


def test_revoked_version_removes_indicator(tmp_path: Path, server: EsServer) -> None:
    client = make_client(tmp_path, server.url)
    client.install_templates()
    client.write_indicators([indicator("203.0.113.9"), indicator("203.0.113.9", hours=1),
                             indicator("203.0.113.10")])

    client.write_indicators([indicator("203.0.113.9", hours=2, revoked=True)])

    remaining = [d["threat"]["indicator"]["ip"] for d in stream_documents(server).values()]
    assert remaining == ["203.0.113.10"]


def test_expired_documents_deleted(tmp_path: Path, server: EsServer) -> None:
    client = make_client(tmp_path, server.url, now=MOMENT + timedelta(hours=5))
    client.install_templates()

    report = client.write_indicators([indicator("203.0.113.9", ttl_hours=2),
                                      indicator("203.0.113.10", ttl_hours=24)])

    remaining = [d["threat"]["indicator"]["ip"] for d in stream_documents(server).values()]
    assert report.written == 2
    assert remaining == ["203.0.113.10"]


def test_options_need_one_credential(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of api_key or username"):
        ElasticBulkClient("http://127.0.0.1:9", spool=Spool(tmp_path / "s.sqlite"),
                          transport=RequestsTransport(), api_key=API_KEY, username="fti",
                          password="x")
