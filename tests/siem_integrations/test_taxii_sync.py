"""Tests of the TAXII 2.1 to SIEM sync against a local TAXII collection and SIEM servers."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from siem_integrations.elastic_bulk import DEFAULT_DATA_STREAM, ElasticBulkClient
from siem_integrations.errors import SyncFailed
from siem_integrations.retry import Backoff, RetryPolicy
from siem_integrations.sink import SinkResult
from siem_integrations.splunk_hec import SplunkHecClient
from siem_integrations.spool import Spool
from siem_integrations.taxii_sync import CheckpointFile, SyncCheckpoint, TaxiiSync
from siem_integrations.transport import RequestsTransport
from stix_mappings.indicator import build_fused_indicator
from tests.siem_integrations.es_server import EsServer
from tests.siem_integrations.hec_server import HecServer, HecToken
from tests.siem_integrations.taxii_server import TaxiiServer

MOMENT = datetime(2024, 6, 3, 1, 0, tzinfo=timezone.utc)
CREDENTIALS = ("splunk-es", "consumer-secret")
COLLECTION = "3f0c6a53-58a4-5b25-bc2a-7c3cfe1d8a8c"


def indicator(value: str, *, revoked: bool = False, hours: int = 0) -> dict[str, Any]:
    moment = MOMENT + timedelta(hours=hours)
    return build_fused_indicator(
        observable_type="ipv4-addr", value=value, fused_score=0.76, corroborating_sites=2,
        strategy="trust-weighted-noisy-or", round_start=moment - timedelta(hours=1),
        valid_from=moment, valid_until=moment + timedelta(days=1), created=MOMENT,
        modified=moment, hub_identity="identity--6f1c2a4e-8d3b-4c7a-9e0f-1a2b3c4d5e6f",
        revoked=revoked,
    )


def key(obj: Mapping[str, Any]) -> str:
    return f"{obj['id']}@{obj['modified']}"


def added(n: int) -> str:
    return f"2024-06-03T02:00:{n:02d}.000000Z"


class RecordingSink:
    """Record each batch; fail the batch numbered ``fail_on`` (1-based) once."""

    name = "recording"

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    def write_indicators(self, indicators: Sequence[Mapping[str, Any]]) -> SinkResult:
        if self.fail_on is not None and len(self.batches) + 1 == self.fail_on:
            self.fail_on = None
            raise OSError("sink unavailable")
        self.batches.append([str(i["id"]) for i in indicators])
        return SinkResult(written=len(indicators))


def make_sync(server: TaxiiServer, sink: Any, tmp_path: Path, **options: Any) -> TaxiiSync:
    return TaxiiSync(server.api_root, COLLECTION, sink=sink,
                     checkpoint=CheckpointFile(tmp_path / "checkpoint.json"),
                     user=CREDENTIALS[0], password=CREDENTIALS[1], **options)


def fill(server: TaxiiServer, count: int) -> list[dict[str, Any]]:
    objects = [indicator(f"203.0.113.{n + 1}") for n in range(count)]
    for n, obj in enumerate(objects):
        server.state.add(added(n), obj)
    server.state.add(added(count), {"type": "identity", "spec_version": "2.1",
                                    "id": "identity--6f1c2a4e-8d3b-4c7a-9e0f-1a2b3c4d5e6f"})
    return objects


def test_sync_follows_next_pages(tmp_path: Path) -> None:
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS) as server:
        objects = fill(server, 5)
        sink = RecordingSink()

        report = make_sync(server, sink, tmp_path, page_size=2).poll_once()

    assert (report.pages, report.indicators, report.written) == (3, 5, 5)
    assert [len(batch) for batch in sink.batches] == [2, 2, 1]
    assert [q.get("next") for q in server.state.queries] == [None, ["cursor-1"], ["cursor-2"]]
    assert all(q["match[type]"] == ["indicator"] for q in server.state.queries)
    assert sum(sink.batches, []) == [o["id"] for o in objects]
    assert CheckpointFile(tmp_path / "checkpoint.json").load() == SyncCheckpoint(
        next=None, added_after=added(4), delivered=(key(objects[4]),))


def test_sync_more_without_next_uses_date_added_last(tmp_path: Path) -> None:
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS, with_next=False) as server:
        fill(server, 5)
        sink = RecordingSink()

        report = make_sync(server, sink, tmp_path, page_size=2).poll_once()

    # added_after is exclusive, so the next request starts one microsecond before the last
    # date_added read, requests as many more objects as it read there, and drops them.
    assert report.indicators == 5
    assert [(q.get("added_after"), q["limit"]) for q in server.state.queries] == [
        (None, ["2"]), (["2024-06-03T02:00:00.999999Z"], ["4"])]
    assert len(sum(sink.batches, [])) == 5
    assert all("next" not in q for q in server.state.queries)


def test_sync_resumes_from_checkpoint(tmp_path: Path) -> None:
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS) as server:
        fill(server, 3)
        sink = RecordingSink()
        make_sync(server, sink, tmp_path).poll_once()
        server.state.add(added(10), indicator("198.51.100.7"))

        second = make_sync(server, sink, tmp_path).poll_once()

    assert second.indicators == 1
    # The identity added at added(3) is filtered out by match[type], so it is not the last.
    assert server.state.queries[-1]["added_after"] == ["2024-06-03T02:00:01.999999Z"]
    assert sink.batches[-1] == [indicator("198.51.100.7")["id"]]


def test_sync_sink_failure_keeps_checkpoint(tmp_path: Path) -> None:
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS) as server:
        objects = fill(server, 4)
        sink = RecordingSink(fail_on=2)
        with pytest.raises(OSError):
            make_sync(server, sink, tmp_path, page_size=2).poll_once()
        saved = CheckpointFile(tmp_path / "checkpoint.json").load()

        make_sync(server, sink, tmp_path, page_size=2).poll_once()

    assert saved == SyncCheckpoint(next="cursor-1", added_after=added(1),
                                   delivered=tuple(sorted(key(o) for o in objects[:2])))
    # The server accepts each next value only once, so the resumed poll falls back to added_after.
    stale = [n for n, q in enumerate(server.state.queries) if q.get("next") == ["cursor-1"]][-1]
    assert server.state.queries[stale + 1]["added_after"] == ["2024-06-03T02:00:00.999999Z"]
    assert sum(sink.batches, []) == [o["id"] for o in objects]


def test_sync_stale_next_falls_back(tmp_path: Path) -> None:
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS) as server:
        objects = fill(server, 2)
        CheckpointFile(tmp_path / "checkpoint.json").save(
            SyncCheckpoint(next="forgotten", added_after=added(0), delivered=(key(objects[0]),)))
        sink = RecordingSink()

        report = make_sync(server, sink, tmp_path).poll_once()

    assert report.indicators == 1
    assert sink.batches == [[objects[1]["id"]]]
    assert server.state.queries[-1]["added_after"] == ["2024-06-03T01:59:59.999999Z"]


def test_sync_wrong_password_raises(tmp_path: Path) -> None:
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS) as server:
        sync = TaxiiSync(server.api_root, COLLECTION, sink=RecordingSink(),
                         checkpoint=CheckpointFile(tmp_path / "c.json"), user="splunk-es",
                         password="wrong")

        with pytest.raises(SyncFailed) as excinfo:
            sync.poll_once()

    assert "wrong" not in str(excinfo.value)
    assert excinfo.value.source.endswith(f"/collections/{COLLECTION}/")


def test_checkpoint_invalid_json_raises(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    path.write_text("{not json")

    with pytest.raises(SyncFailed, match="checkpoint is not valid JSON"):
        CheckpointFile(path).load()


def fast_backoff() -> Backoff:
    return Backoff(RetryPolicy(max_attempts=2, base_delay_secs=0.01), rng=random.Random(1),
                   sleep=lambda _: None)


def test_sync_into_elastic_removes_revoked(tmp_path: Path) -> None:
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS) as taxii, \
            EsServer(authorization="ApiKey a2V5") as elastic:
        client = ElasticBulkClient(elastic.url, spool=Spool(tmp_path / "es.sqlite"),
                                   transport=RequestsTransport(), api_key="a2V5",
                                   backoff=fast_backoff(),
                                   clock=lambda: MOMENT + timedelta(hours=3))
        client.install_templates()
        fill(taxii, 3)
        make_sync(taxii, client, tmp_path).poll_once()
        taxii.state.add(added(20), indicator("203.0.113.2", revoked=True, hours=1))

        make_sync(taxii, client, tmp_path).poll_once()

    ips = sorted(d["threat"]["indicator"]["ip"]
                 for d in elastic.state.documents[DEFAULT_DATA_STREAM].values())
    assert ips == ["203.0.113.1", "203.0.113.3"]


def test_sync_into_splunk_marks_revoked(tmp_path: Path) -> None:
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS) as taxii, \
            HecServer(HecToken("hec-token")) as splunk:
        client = SplunkHecClient(splunk.url, token="hec-token",
                                 spool=Spool(tmp_path / "hec.sqlite"),
                                 transport=RequestsTransport(), backoff=fast_backoff())
        fill(taxii, 2)
        taxii.state.add(added(20), indicator("203.0.113.2", revoked=True, hours=1))

        report = make_sync(taxii, client, tmp_path).poll_once()

    events = [(e["event"]["ip"], e["fields"]["revoked"]) for e in splunk.state.events]
    assert report.written == 3
    assert events == [("203.0.113.1", "false"), ("203.0.113.2", "false"),
                      ("203.0.113.2", "true")]
    assert json.loads(json.dumps(splunk.state.events[-1]))["event"]["revoked"] is True


def test_sync_keeps_shared_date_added_objects(tmp_path: Path) -> None:
    # added_after is exclusive, so continuing from the last date_added of a page would skip
    # the objects of that same date_added that did not fit in the page.
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS, with_next=False) as server:
        objects = [indicator(f"203.0.113.{n + 1}") for n in range(5)]
        server.state.add(added(0), objects[0])
        for obj in objects[1:4]:
            server.state.add(added(1), obj)
        server.state.add(added(2), objects[4])
        sink = RecordingSink()

        report = make_sync(server, sink, tmp_path, page_size=2).poll_once()

    assert sorted(sum(sink.batches, [])) == sorted(o["id"] for o in objects)
    assert report.indicators == 5
    assert CheckpointFile(tmp_path / "checkpoint.json").load().added_after == added(2)


def test_sync_full_pages_one_date_added(tmp_path: Path) -> None:
    # More objects share one date_added than fit in a page: the sync must not loop on it.
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS, with_next=False) as server:
        objects = [indicator(f"203.0.113.{n + 1}") for n in range(4)]
        for obj in objects[:3]:
            server.state.add(added(1), obj)
        server.state.add(added(2), objects[3])
        sink = RecordingSink()

        report = make_sync(server, sink, tmp_path, page_size=2, max_pages=10).poll_once()

    assert report.pages < 10
    assert objects[3]["id"] in sum(sink.batches, [])
    assert len(set(sum(sink.batches, []))) == len(sum(sink.batches, []))


class CrashingCheckpoint(CheckpointFile):
    """A checkpoint file whose ``save`` number ``crash_on`` fails as a killed process would."""

    def __init__(self, path: Path, crash_on: int) -> None:
        super().__init__(path)
        self.crash_on = crash_on
        self.saves = 0

    def save(self, checkpoint: SyncCheckpoint) -> None:
        self.saves += 1
        if self.saves == self.crash_on:
            raise KeyboardInterrupt("killed between the sink write and the checkpoint")
        super().save(checkpoint)


@pytest.mark.parametrize("with_next", [True, False])
def test_sync_crash_before_checkpoint_rereads_page(tmp_path: Path,
                                                   with_next: bool) -> None:
    """Objects sharing date_added across pages and polls are all written, none skipped."""
    objects = [indicator(f"203.0.113.{n + 1}") for n in range(12)]
    sink = RecordingSink()
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS, with_next=with_next) as server:
        server.state.add(added(0), objects[0])
        for obj in objects[1:8]:
            server.state.add(added(1), obj)
        crashing = CrashingCheckpoint(tmp_path / "checkpoint.json", crash_on=2)
        with pytest.raises(KeyboardInterrupt):
            TaxiiSync(server.api_root, COLLECTION, sink=sink, checkpoint=crashing,
                      user=CREDENTIALS[0], password=CREDENTIALS[1], page_size=3).poll_once()
        crashed_page = sink.batches[1]

        make_sync(server, sink, tmp_path, page_size=3).poll_once()
        for obj in objects[8:11]:
            server.state.add(added(1), obj)
        server.state.add(added(2), objects[11])
        make_sync(server, sink, tmp_path, page_size=3).poll_once()

    written = sum(sink.batches, [])
    assert sorted(set(written)) == sorted(o["id"] for o in objects)
    assert sorted(i for i in set(written) if written.count(i) > 1) == sorted(crashed_page)
    assert len(written) == len(objects) + len(crashed_page)


def test_sync_page_cap_below_shared_time(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """A server capping limit below one date_added's objects and without next: warn, go on."""
    objects = [indicator(f"203.0.113.{n + 1}") for n in range(6)]
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS, with_next=False) as server:
        server.state.max_page_size = 2
        for obj in objects[:5]:
            server.state.add(added(1), obj)
        server.state.add(added(2), objects[5])
        sink = RecordingSink()

        report = make_sync(server, sink, tmp_path, page_size=2, max_pages=10).poll_once()

    written = sum(sink.batches, [])
    assert report.pages < 10
    assert written == [objects[0]["id"], objects[1]["id"], objects[5]["id"]]
    assert (f"more objects share date_added {added(1)} than one page holds and the server "
            "sets no next; the rest of them are skipped") in caplog.text


def test_sync_malformed_envelope_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page whose objects are not STIX objects fails the poll and keeps the checkpoint."""
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS) as server:
        sync = make_sync(server, RecordingSink(), tmp_path)
        monkeypatch.setattr(sync, "_get_objects", lambda query: {"objects": [1, None]})

        with pytest.raises(SyncFailed) as excinfo:
            sync.poll_once()

    assert excinfo.value.reason == "object 0 of the envelope is int, not a STIX object"
    assert not (tmp_path / "checkpoint.json").exists()
