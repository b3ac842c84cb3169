"""Tests of the Splunk HEC client against canned HEC responses and a local HEC server.

The canned responses R1 to R6 and the batch come from the field case
``tests/cases/015-splunk-hec-400-invalid-event``; each expected behaviour listed there has a
test here.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from siem_integrations.errors import (SiemAuthFailed, SiemRequestRejected, SinkEventInvalid,
                                      TransportFailed)
from siem_integrations.retry import Backoff, RetryPolicy
from siem_integrations.splunk_hec import SplunkHecClient, flatten_fields, prepare_event
from siem_integrations.spool import Spool
from siem_integrations.transport import HttpResponse, RequestsTransport
from stix_mappings.indicator import build_fused_indicator
from tests.siem_integrations.hec_server import HecServer, HecToken

TOKEN = "8b5e4c3a-1f2d-4e6b-9a7c-0d1e2f3a4b5c"
MOMENT = datetime(2024, 6, 3, 1, 0, tzinfo=timezone.utc)


def load_case(cases_dir: Path) -> tuple[list[dict[str, Any]], dict[str, tuple[int, dict[str, Any]]]]:
    """Return the case's three events and its canned responses by name (R1 ... R6)."""
    text = (cases_dir / "015-splunk-hec-400-invalid-event.input.txt").read_text()
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    answers = {}
    for match in re.finditer(r"^(R\d+b?)\s+(\d{3})\s+(\{.*\})$", text, re.MULTILINE):
        answers[match.group(1)] = (int(match.group(2)), json.loads(match.group(3)))
    return events, answers


def case_key(event: Mapping[str, Any], number: int) -> str:
    body = event.get("event")
    return body["summary_id"] if isinstance(body, dict) else f"case-event-{number}"


class CannedTransport:
    """Play HEC responses in order and record every request."""

    def __init__(self, *answers: tuple[int, dict[str, Any]] | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []

    def __call__(self, method: str, url: str, *, headers: Mapping[str, str],
                 body: bytes | None = None) -> HttpResponse:
        raw = body or b""
        if headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        self.requests.append({"url": url, "headers": dict(headers), "body": raw})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, payload = answer
        return HttpResponse(status=status, body=json.dumps(payload).encode())

    def event_bodies(self) -> list[list[dict[str, Any]]]:
        return [[json.loads(line) for line in r["body"].decode().splitlines()]
                for r in self.requests if r["url"].endswith("/services/collector/event")]


def make_client(tmp_path: Path, transport: Any, *, sleeps: list[float] | None = None,
                **options: Any) -> SplunkHecClient:
    recorded = sleeps if sleeps is not None else []
    backoff = Backoff(options.pop("retry", RetryPolicy(max_attempts=3, base_delay_secs=0.5)),
                      rng=random.Random(7), sleep=recorded.append)
    return SplunkHecClient("https://splunk.example.org:8088", token=TOKEN,
                           spool=Spool(tmp_path / "spool.sqlite"), transport=transport,
                           backoff=backoff, **options)


def indicator(value: str, *, hours: int = 0, revoked: bool = False) -> dict[str, Any]:
    moment = MOMENT + timedelta(hours=hours)
    return build_fused_indicator(
        observable_type="ipv4-addr", value=value, fused_score=0.76, corroborating_sites=2,
        strategy="trust-weighted-noisy-or", round_start=moment - timedelta(hours=1),
        valid_from=moment, valid_until=moment + timedelta(days=1), created=MOMENT,
        modified=moment, hub_identity="identity--6f1c2a4e-8d3b-4c7a-9e0f-1a2b3c4d5e6f",
        revoked=revoked,
    )


# -- local checks before sending ------------------------------------------------------------

def test_case_blank_event_rejected_before_post(tmp_path: Path, cases_dir: Path) -> None:
    events, _ = load_case(cases_dir)
    transport = CannedTransport((200, {"text": "Success", "code": 0}))
    client = make_client(tmp_path, transport)

    rejected = client.queue_events([(case_key(e, i), e) for i, e in enumerate(events)])
    client.flush()

    assert rejected == [("case-event-1", "event must not be blank (HEC code 13)")]
    assert [d.key for d in client.spool.dead_letters()] == ["case-event-1"]
    sent = transport.event_bodies()
    assert len(sent) == 1
    assert [e["event"]["summary_id"] for e in sent[0]] == [
        "x-anomaly-summary--5b8e2f61-3c4d-4a5b-9c6d-7e8f9a0b1c2d",
        "x-anomaly-summary--6c9f3a72-4d5e-4b6c-8d7e-8f9a0b1c2d3e"]


def test_case_nested_fields_flattened_before_post(tmp_path: Path, cases_dir: Path) -> None:
    events, _ = load_case(cases_dir)
    transport = CannedTransport((200, {"text": "Success", "code": 0}))
    client = make_client(tmp_path, transport)

    client.queue_events([(case_key(events[2], 2), events[2])])
    client.flush()

    fields = transport.event_bodies()[0][0]["fields"]
    assert fields == {"source_type": "suricata", "window_start": "2024-05-01T09:55:00Z",
                      "window_end": "2024-05-01T10:00:00Z"}


def test_flatten_fields_nested_levels_and_lists() -> None:
    flat = flatten_fields({"a": {"b": {"c": 1}}, "tags": ["x", "y"], "odd": [{"k": 1}],
                           "flag": True})

    assert flat == {"a_b_c": 1, "tags": ["x", "y"], "odd": '[{"k": 1}]', "flag": "true"}


def test_prepare_event_unknown_key_rejected() -> None:
    with pytest.raises(SinkEventInvalid, match="HEC accepts no top-level key 'severity'"):
        prepare_event({"event": {"a": 1}, "severity": "high"}, event_id="e1")


def test_batch_body_concatenated_objects_never_array(tmp_path: Path) -> None:
    transport = CannedTransport((200, {"text": "Success", "code": 0}))
    client = make_client(tmp_path, transport)

    client.write_indicators([indicator("203.0.113.9"), indicator("203.0.113.10")])

    body = transport.requests[0]["body"].decode()
    assert body.startswith("{")
    assert body.endswith("}\n")
    assert len(body.splitlines()) == 2
    assert all(isinstance(json.loads(line), dict) for line in body.splitlines())


def test_batches_stay_under_max_batch_bytes(tmp_path: Path) -> None:
    transport = CannedTransport(*[(200, {"text": "Success", "code": 0})] * 10)
    client = make_client(tmp_path, transport, max_batch_bytes=2048)

    client.write_indicators([indicator(f"203.0.113.{n}") for n in range(1, 7)])

    sizes = [len(r["body"]) for r in transport.requests]
    assert len(sizes) > 1
    assert max(sizes) <= 2048
    assert sum(len(b) for b in transport.event_bodies()) == 6


def test_event_over_max_batch_bytes_rejected_locally(tmp_path: Path) -> None:
    transport = CannedTransport()
    client = make_client(tmp_path, transport, max_batch_bytes=1024)

    rejected = client.queue_events([("big", {"event": {"blob": "x" * 2000}})])

    assert rejected[0][0] == "big"
    assert re.fullmatch(r"event is \d+ bytes, over max_batch_bytes 1024", rejected[0][1])
    assert transport.requests == []
    assert client.spool.queued_count() == 0


# -- canned responses R1 to R6 ----------------------------------------------------------------

@pytest.mark.parametrize("name, bad_index", [("R1", 1), ("R2", 2), ("R2b", 0)])
def test_invalid_event_number_dead_letters_that_event(tmp_path: Path, cases_dir: Path,
                                                      name: str, bad_index: int) -> None:
    _, answers = load_case(cases_dir)
    transport = CannedTransport(answers[name], (200, {"text": "Success", "code": 0}))
    client = make_client(tmp_path, transport)
    keys = ["ev-0", "ev-1", "ev-2"]
    client.queue_events([(key, {"event": {"n": n}}) for n, key in enumerate(keys)])

    report = client.flush()

    dead = client.spool.dead_letters()
    assert [(d.key, d.reason, d.code) for d in dead] == [
        (keys[bad_index], answers[name][1]["text"], str(answers[name][1]["code"]))]
    resent = transport.event_bodies()[1]
    assert [e["event"]["n"] for e in resent] == [n for n in range(3) if n != bad_index]
    assert (report.delivered, report.dead_lettered, report.queued) == (2, 1, 0)


def test_unchanged_batch_never_resent(tmp_path: Path, cases_dir: Path) -> None:
    _, answers = load_case(cases_dir)
    # Splunk names event 0 every time: each answer must shrink the batch by one.
    transport = CannedTransport(*[(400, {"text": "Event field cannot be blank", "code": 13,
                                         "invalid-event-number": 0})] * 3)
    client = make_client(tmp_path, transport)
    client.queue_events([(f"ev-{n}", {"event": {"n": n}}) for n in range(3)])

    client.flush()

    sizes = [len(body) for body in transport.event_bodies()]
    assert sizes == [3, 2, 1]
    assert len(client.spool.dead_letters()) == 3


def test_r3_channel_header_on_every_request(tmp_path: Path, cases_dir: Path) -> None:
    _, answers = load_case(cases_dir)
    transport = CannedTransport((200, {"text": "Success", "code": 0, "ackId": 0}),
                                (200, {"acks": {"0": True}}))
    client = make_client(tmp_path, transport, use_ack=True)

    client.write_indicators([indicator("203.0.113.9")])

    channels = {r["headers"]["X-Splunk-Request-Channel"] for r in transport.requests}
    assert channels == {client.channel}
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        client.channel)


def test_r3_channel_missing_keeps_queue(tmp_path: Path, cases_dir: Path) -> None:
    _, answers = load_case(cases_dir)
    transport = CannedTransport(answers["R3"])
    client = make_client(tmp_path, transport)

    with pytest.raises(SiemRequestRejected) as excinfo:
        client.write_indicators([indicator("203.0.113.9")])

    assert (excinfo.value.status, excinfo.value.code, excinfo.value.text) == (
        400, 10, "Data channel is missing")
    assert client.spool.queued_count() == 1


def test_r6_delivered_only_after_ack_true(tmp_path: Path, cases_dir: Path) -> None:
    _, answers = load_case(cases_dir)
    transport = CannedTransport(answers["R6"], (200, {"acks": {"7": False}}),
                                (200, {"acks": {"7": True}}))
    client = make_client(tmp_path, transport, use_ack=True, ack_poll_attempts=1)
    client.queue_events([("ev-0", {"event": {"n": 0}})])

    first = client.flush()
    second = client.flush()

    assert (first.delivered, first.queued) == (0, 1)
    assert (second.delivered, second.queued) == (1, 0)
    ack_requests = [r for r in transport.requests if r["url"].endswith("/services/collector/ack")]
    assert [json.loads(r["body"]) for r in ack_requests] == [{"acks": [7]}, {"acks": [7]}]
    assert client.spool.is_delivered("ev-0")


@pytest.mark.parametrize("body", [b"<html>Success</html>", b'{"text":"Success","code":0,"ackId":null}'])
def test_ack_unreadable_id_stays_queued(tmp_path: Path, body: bytes) -> None:
    # With acknowledgment on, only a true ack confirms events, never an unreadable 200.
    def transport(method: str, url: str, *, headers: Mapping[str, str],
                  body_sent: bytes | None = None, **kwargs: Any) -> HttpResponse:
        return HttpResponse(status=200, body=body)

    client = make_client(tmp_path, transport, use_ack=True, ack_poll_attempts=1)
    client.queue_events([("ev-0", {"event": {"n": 0}})])

    report = client.flush()

    assert (report.delivered, report.queued) == (0, 1)
    assert not client.spool.is_delivered("ev-0")


@pytest.mark.parametrize("body", [b'{"acks": [7]}', b'{"acks": "7"}', b'{"acks": null}',
                                  b'[true]', b"<html>Bad gateway</html>"])
def test_ack_body_without_acks_object_not_acked(tmp_path: Path, body: bytes,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Only {"acks": {"7": true}} confirms events; any other ack body leaves them waiting."""
    answers: list[HttpResponse] = [
        HttpResponse(status=200, body=b'{"text":"Success","code":0,"ackId":7}'),
        HttpResponse(status=200, body=body),
        HttpResponse(status=200, body=b'{"acks": {"7": true}}')]

    def transport(method: str, url: str, *, headers: Mapping[str, str],
                  body: bytes | None = None) -> HttpResponse:
        return answers.pop(0)

    client = make_client(tmp_path, transport, use_ack=True, ack_poll_attempts=3)
    client.queue_events([("ev-0", {"event": {"n": 0}})])

    first = client.flush()
    second = client.flush()

    assert (first.delivered, first.queued) == (0, 1)
    assert "ack response has no acks object" in caplog.text
    assert (second.delivered, second.queued) == (1, 0)
    assert answers == []


def test_ack_flush_sends_every_batch(tmp_path: Path) -> None:
    """With acknowledgment on, a batch awaiting its ack does not stop the flush."""
    transport = CannedTransport(*[(200, {"text": "Success", "code": 0, "ackId": n})
                                  for n in range(3)],
                                (200, {"acks": {"0": True, "1": True, "2": True}}))
    client = make_client(tmp_path, transport, use_ack=True, max_batch_bytes=1024)
    client.queue_events([(f"ev-{n}", {"event": {"blob": "x" * 600}}) for n in range(3)])

    report = client.flush()

    assert len(transport.event_bodies()) == 3
    assert (report.delivered, report.queued) == (3, 0)


def test_413_batch_split_in_halves(tmp_path: Path) -> None:
    too_large = (413, {"text": "Content-Length of 4000 too large (maximum is 3000)"})
    success = (200, {"text": "Success", "code": 0})
    transport = CannedTransport(too_large, success, success)
    client = make_client(tmp_path, transport)
    client.queue_events([(f"ev-{n}", {"event": {"n": n}}) for n in range(4)])

    report = client.flush()

    assert [[e["event"]["n"] for e in body] for body in transport.event_bodies()] == [
        [0, 1, 2, 3], [0, 1], [2, 3]]
    assert (report.delivered, report.dead_lettered, report.queued) == (4, 0, 0)


def test_400_without_event_number_isolates_bad_event(tmp_path: Path) -> None:
    """A 400 about the events that names none is split down to the one bad event."""
    invalid = (400, {"text": "Invalid data format", "code": 6})
    success = (200, {"text": "Success", "code": 0})
    transport = CannedTransport(invalid, success, invalid, invalid, success)
    client = make_client(tmp_path, transport)
    client.queue_events([(f"ev-{n}", {"event": {"n": n}}) for n in range(4)])

    report = client.flush()

    assert [[e["event"]["n"] for e in body] for body in transport.event_bodies()] == [
        [0, 1, 2, 3], [0, 1], [2, 3], [2], [3]]
    assert [(d.key, d.reason, d.code) for d in client.spool.dead_letters()] == [
        ("ev-2", "Invalid data format", "6")]
    assert (report.delivered, report.dead_lettered, report.queued) == (3, 1, 0)

    assert client.flush().delivered == 0
    assert len(transport.event_bodies()) == 5


def test_400_about_request_not_split(tmp_path: Path, cases_dir: Path) -> None:
    _, answers = load_case(cases_dir)
    transport = CannedTransport(answers["R3"])
    client = make_client(tmp_path, transport)
    client.queue_events([(f"ev-{n}", {"event": {"n": n}}) for n in range(4)])

    with pytest.raises(SiemRequestRejected):
        client.flush()

    assert len(transport.requests) == 1
    assert client.spool.dead_letters() == []
    assert client.spool.queued_count() == 4


def test_unacked_batch_resent_after_ack_timeout(tmp_path: Path) -> None:
    now = [1000.0]
    transport = CannedTransport((200, {"text": "Success", "code": 0, "ackId": 3}),
                                (200, {"acks": {"3": False}}),
                                (200, {"acks": {"3": False}}),
                                (200, {"text": "Success", "code": 0, "ackId": 4}),
                                (200, {"acks": {"4": True}}))
    client = make_client(tmp_path, transport, use_ack=True, ack_poll_attempts=1,
                         ack_timeout_secs=60.0, clock=lambda: now[0])
    client.queue_events([("ev-0", {"event": {"n": 0}})])
    client.flush()

    now[0] += 61.0
    report = client.flush()

    assert report.delivered == 1
    assert len(transport.event_bodies()) == 2


@pytest.mark.parametrize("status, payload", [
    (403, {"text": "Invalid token", "code": 4}),
    (401, {"text": "Token is required", "code": 2}),
    (403, {"text": "Token disabled", "code": 1}),
])
def test_r4_auth_failure_stops_and_keeps_queue(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                               status: int, payload: dict[str, Any]) -> None:
    caplog.set_level(logging.DEBUG)
    transport = CannedTransport((status, payload))
    client = make_client(tmp_path, transport)

    with pytest.raises(SiemAuthFailed) as first:
        client.write_indicators([indicator("203.0.113.9")])
    with pytest.raises(SiemAuthFailed):
        client.flush()

    assert (first.value.status, first.value.code) == (status, payload["code"])
    assert len(transport.requests) == 1
    assert client.spool.queued_count() == 1
    assert TOKEN not in str(first.value)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(client)
    assert "ERROR" in [r.levelname for r in caplog.records]


def test_r5_busy_retried_with_backoff(tmp_path: Path, cases_dir: Path) -> None:
    _, answers = load_case(cases_dir)
    sleeps: list[float] = []
    transport = CannedTransport(answers["R5"], TransportFailed("https://x", "ConnectTimeout"),
                                (200, {"text": "Success", "code": 0}))
    client = make_client(tmp_path, transport, sleeps=sleeps)

    result = client.write_indicators([indicator("203.0.113.9")])

    assert result.written == 1
    assert len(sleeps) == 2
    assert 0.0 <= sleeps[0] <= 0.5
    assert 0.0 <= sleeps[1] <= 1.0
    assert sleeps[0] != sleeps[1]


def test_r5_exhausted_retries_keep_events(tmp_path: Path, cases_dir: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    _, answers = load_case(cases_dir)
    transport = CannedTransport(*[answers["R5"]] * 3, (200, {"text": "Success", "code": 0}))
    client = make_client(tmp_path, transport)

    first = client.write_indicators([indicator("203.0.113.9")])
    later = client.flush()

    assert (first.written, client.spool.queued_count()) == (0, 0)
    assert later.delivered == 1
    assert "unavailable after 3 attempts; events stay in the spool" in caplog.text


def test_retry_policy_delay_bounds() -> None:
    policy = RetryPolicy(max_attempts=8, base_delay_secs=1.0, max_delay_secs=5.0)
    rng = random.Random(1)

    delays = [policy.delay_secs(n, rng) for n in range(1, 8) for _ in range(50)]

    assert max(delays) <= 5.0
    assert min(delays) >= 0.0
    assert max(delays) > 4.0


def test_backoff_attempts_stop_at_elapsed_budget() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(delay: float) -> None:
        sleeps.append(delay)
        now[0] += delay

    backoff = Backoff(RetryPolicy(max_attempts=50, base_delay_secs=1.0, max_delay_secs=4.0,
                                  max_elapsed_secs=10.0),
                      rng=random.Random(2), sleep=sleep, clock=lambda: now[0])

    attempts = list(backoff.attempts())

    assert len(attempts) < 50
    assert attempts == list(range(1, len(attempts) + 1))
    assert now[0] <= 10.0
    assert now[0] + 4.0 > 10.0


def test_retry_policy_negative_elapsed_budget() -> None:
    with pytest.raises(ValueError, match="max_elapsed_secs must be >= 0; got -1"):
        RetryPolicy(max_elapsed_secs=-1)


def test_retry_policy_invalid_attempts() -> None:
    with pytest.raises(ValueError, match="max_attempts must be >= 1; got 0"):
        RetryPolicy(max_attempts=0)


# -- idempotence and time ------------------------------------------------------------------

def test_same_indicator_version_sent_once(tmp_path: Path) -> None:
    transport = CannedTransport(*[(200, {"text": "Success", "code": 0})] * 3)
    client = make_client(tmp_path, transport)

    client.write_indicators([indicator("203.0.113.9")])
    client.write_indicators([indicator("203.0.113.9")])
    client.write_indicators([indicator("203.0.113.9", hours=1)])

    sent = [e for body in transport.event_bodies() for e in body]
    assert [e["event"]["modified"] for e in sent] == ["2024-06-03T01:00:00.000Z",
                                                       "2024-06-03T02:00:00.000Z"]


def test_event_time_epoch_with_milliseconds(tmp_path: Path) -> None:
    transport = CannedTransport(*[(200, {"text": "Success", "code": 0})] * 2)
    client = make_client(tmp_path, transport)
    source = indicator("203.0.113.9")
    source["modified"] = "2024-06-03T01:00:00.250Z"

    client.write_indicators([source])

    event = transport.event_bodies()[0][0]
    assert event["time"] == 1717376400.25
    assert json.dumps(event["time"]) == "1717376400.25"


def test_gzip_body_declared(tmp_path: Path) -> None:
    transport = CannedTransport((200, {"text": "Success", "code": 0}))
    client = make_client(tmp_path, transport)

    client.write_indicators([indicator("203.0.113.9")])

    assert transport.requests[0]["headers"]["Content-Encoding"] == "gzip"
    assert transport.requests[0]["headers"]["Authorization"] == f"Splunk {TOKEN}"


# -- against the local HEC server -----------------------------------------------------------

def real_client(tmp_path: Path, url: str, **options: Any) -> SplunkHecClient:
    backoff = Backoff(RetryPolicy(max_attempts=2, base_delay_secs=0.01), rng=random.Random(3),
                      sleep=lambda _: None)
    return SplunkHecClient(url, token=TOKEN, spool=Spool(tmp_path / "spool.sqlite"),
                           transport=RequestsTransport(timeout_secs=5.0), backoff=backoff,
                           **options)


def test_server_receives_indicators_with_ack(tmp_path: Path) -> None:
    with HecServer(HecToken(TOKEN, use_ack=True, indexes=("threat",))) as server:
        server.state.ack_after_polls = 1
        client = real_client(tmp_path, server.url, index="threat", use_ack=True,
                             ack_poll_interval_secs=0.0)

        result = client.write_indicators([indicator("203.0.113.9"), indicator("203.0.113.10")])

    assert result.written == 2
    assert [e["event"]["ip"] for e in server.state.events] == ["203.0.113.9", "203.0.113.10"]
    assert [r["path"] for r in server.state.requests] == [
        "/services/collector/event", "/services/collector/ack", "/services/collector/ack"]


def test_server_rejects_blank_event_by_number(tmp_path: Path) -> None:
    with HecServer(HecToken(TOKEN)) as server:
        transport = RequestsTransport(timeout_secs=5.0)
        body = b'{"event": {"a": 1}}\n{"event": ""}\n'

        response = transport("POST", server.url + "/services/collector/event",
                             headers={"Authorization": f"Splunk {TOKEN}"}, body=body)

    assert response.status == 400
    assert json.loads(response.body) == {"text": "Event field cannot be blank", "code": 13,
                                         "invalid-event-number": 1}


def test_server_incorrect_index_dead_letters(tmp_path: Path) -> None:
    with HecServer(HecToken(TOKEN, indexes=("threat",))) as server:
        client = real_client(tmp_path, server.url, index="main")

        result = client.write_indicators([indicator("203.0.113.9")])

    assert result.written == 0
    assert [(d.reason, d.code) for d in client.spool.dead_letters()] == [("Incorrect index", "7")]


def test_server_down_spools_until_it_returns(tmp_path: Path) -> None:
    with HecServer(HecToken(TOKEN)) as stopped:
        down_url = stopped.url
    client = real_client(tmp_path, down_url)
    first = client.write_indicators([indicator("203.0.113.9")])
    client.spool.close()

    with HecServer(HecToken(TOKEN)) as server:
        # A restarted sender finds its spool on disk and sends to the recovered Splunk.
        restarted = real_client(tmp_path, server.url)
        report = restarted.flush()

    assert (first.written, report.delivered, report.queued) == (0, 1, 0)
    assert [e["event"]["ip"] for e in server.state.events] == ["203.0.113.9"]


def test_server_413_splits_and_dead_letters_oversized(tmp_path: Path) -> None:
    with HecServer(HecToken(TOKEN)) as server:
        server.state.max_content_length = 3000
        client = real_client(tmp_path, server.url, compress=False)
        client.queue_events([(f"ev-{n}", {"event": {"n": n, "pad": "x" * 700}})
                             for n in range(5)])
        client.queue_events([("huge", {"event": {"pad": "y" * 4000}})])

        report = client.flush()

    dead = client.spool.dead_letters()
    assert sorted(e["event"]["n"] for e in server.state.events) == [0, 1, 2, 3, 4]
    assert (report.delivered, report.dead_lettered, report.queued) == (5, 1, 0)
    assert [(d.key, d.code) for d in dead] == [("huge", "413")]
    assert re.fullmatch(r"Content-Length of \d+ too large \(maximum is 3000\)", dead[0].reason)


def test_server_ack_several_batches_one_flush(tmp_path: Path) -> None:
    with HecServer(HecToken(TOKEN, use_ack=True)) as server:
        client = real_client(tmp_path, server.url, use_ack=True, max_batch_bytes=2048,
                             ack_poll_interval_secs=0.0)

        result = client.write_indicators([indicator(f"203.0.113.{n}") for n in range(1, 7)])

    event_requests = [r for r in server.state.requests if r["path"] == "/services/collector/event"]
    assert len(event_requests) > 1
    assert result.written == 6
    assert client.spool.queued_count() == 0


def test_server_invalid_token_answers_403(tmp_path: Path) -> None:
    with HecServer(HecToken("another-token")) as server:
        client = real_client(tmp_path, server.url)

        with pytest.raises(SiemAuthFailed) as excinfo:
            client.write_indicators([indicator("203.0.113.9")])

    assert (excinfo.value.status, excinfo.value.text, excinfo.value.code) == (
        403, "Invalid token", 4)
    assert server.state.events == []
