"""Send fused indicators to Splunk's HTTP Event Collector (HEC) over HTTP.

Wire format (Splunk Enterprise 9.x, "Format events for HTTP Event Collector" and "About HTTP
Event Collector Indexer Acknowledgment"):

- ``POST /services/collector/event`` with ``Authorization: Splunk <token>``; the body is HEC
  event objects one after another, newline-separated, never a JSON array (an array is
  rejected with 400 "Invalid data format", code 6). Bodies may be gzip-compressed
  (``Content-Encoding: gzip``).
- Every request carries ``X-Splunk-Request-Channel: <GUID>``. A token with indexer
  acknowledgment enabled rejects a request without it (400 "Data channel is missing",
  code 10) and answers success with ``{"text": "Success", "code": 0, "ackId": N}``. The
  events count as indexed only once ``POST /services/collector/ack`` with ``{"acks": [N]}``
  answers ``{"acks": {"N": true}}``.
- A 400 for a batch names the first bad event in ``invalid-event-number``, with Splunk's
  ``text`` and ``code``. That event goes to the dead-letter table and the rest of the batch
  is sent again, so one bad event neither blocks the queue nor takes good events down with it.
- A 413 (body over the server's ``max_content_length``), or a 400 about the events (codes 6,
  7, 12, 13 and 15) that names no event, splits the batch in halves, each sent on its own.
  A single event that still gets the error goes to the dead-letter table with Splunk's text,
  so the batch never comes back unchanged. A 400 with any other code concerns the request
  (no data, channel, ack settings: codes 5, 10, 11 and 14) and is raised instead, because
  every half would fail alike.
- The ack endpoint returns ``{"acks": {"<ackId>": true|false}}``. Any other body counts as
  no ack yet: the events wait, and are sent again after ``ack_timeout_secs``.
- 401 and 403 (token required, invalid or disabled) stop the client: nothing more is sent,
  documents stay in the spool, and the error names the endpoint, never the token.
- 429, 5xx (503 "Server is busy", code 9) and connection failures are retried with
  exponential backoff and jitter; after the last attempt the documents stay in the spool and
  the next ``flush`` sends them.

Events are checked before they are queued: a blank ``event`` is rejected locally, nested
objects under ``fields`` are flattened (``window.start`` becomes ``window_start``) and an
event larger than ``max_batch_bytes`` is rejected with a clear error. The spool deduplicates
by indicator id and version, so each version is sent once.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from siem_integrations.errors import (SiemAuthFailed, SiemRequestRejected, SinkEventInvalid,
                                      TransportFailed)
from siem_integrations.ndjson_file import dump_line
from siem_integrations.retry import Backoff, RetryPolicy
from siem_integrations.sink import SinkResult
from siem_integrations.splunk_hec_file import validate_hec_event
from siem_integrations.spool import Spool, SpooledDocument, split_batches
from siem_integrations.transport import HttpResponse, Transport
from stix_mappings.ecs import ecs_document_id
from stix_mappings.splunk import indicator_to_hec_event

log = logging.getLogger(__name__)

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
CHANNEL_HEADER = "X-Splunk-Request-Channel"
# Statuses worth a retry: Splunk busy or failing, or a proxy in front of it rate-limiting.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# HEC codes of a 400 caused by the events themselves: 6 Invalid data format, 7 Incorrect
# index, 12 Event field is required, 13 Event field cannot be blank, 15 Error in handling
# indexed fields.
_EVENT_ERROR_CODES = frozenset({6, 7, 12, 13, 15})


@dataclass
class BatchOutcome:
    """Events of one batch confirmed, awaiting their ack and dead-lettered, and whether Splunk
    stayed unavailable."""

    delivered: int = 0
    awaiting_ack: int = 0
    dead_lettered: int = 0
    unavailable: bool = False


@dataclass(frozen=True)
class FlushReport:
    """Outcome of one flush: documents confirmed, dead-lettered and still queued."""

    delivered: int
    dead_lettered: int
    queued: int


def flatten_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``fields`` with nested objects flattened into ``parent_child`` names.

    HEC indexed fields must be flat (400 "Error in handling indexed fields", code 15 for a
    nested object); ``{"window": {"start": a}}`` becomes ``{"window_start": a}``. Lists of
    scalars stay as they are, and any other value becomes its JSON text.
    """
    flat: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, Mapping):
            for child, child_value in flatten_fields(value).items():
                flat[f"{name}_{child}"] = child_value
        elif isinstance(value, list) and all(isinstance(item, (str, int, float))
                                             and not isinstance(item, bool) for item in value):
            flat[name] = value
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, sort_keys=True)
    return flat


def prepare_event(event: Mapping[str, Any], *, event_id: str) -> dict[str, Any]:
    """Return ``event`` ready for HEC: ``fields`` flattened, every HEC rule checked.

    Raises
    ------
    SinkEventInvalid
        If the event breaks a rule flattening cannot fix, such as a blank ``event``.
    """
    prepared = dict(event)
    if isinstance(prepared.get("fields"), Mapping):
        prepared["fields"] = flatten_fields(prepared["fields"])
    validate_hec_event(prepared, event_id=event_id)
    return prepared


class SplunkHecClient:
    """An indicator sink that posts HEC events, with spool, retries and acknowledgment.

    Parameters
    ----------
    url : str
        Base URL of the HEC endpoint, such as ``https://splunk.example.org:8088``.
    token : str
        HEC token; sent only in the ``Authorization`` header and never logged.
    spool : Spool
        Durable queue of events not yet confirmed by Splunk.
    transport : Transport
        Sends the HTTP requests; ``RequestsTransport`` in production.
    index : str or None, default None
        Splunk index of every event; None leaves it to the token's default index.
    host : str, default "fti-hub"
        HEC ``host`` of indicator events.
    use_ack : bool, default False
        Wait for indexer acknowledgment; set it when the token has it enabled.
    compress : bool, default True
        gzip the request bodies.
    max_batch_bytes : int, default 1_000_000
        Upper bound of one uncompressed request body. 1 MB stays under HEC's
        ``max_content_length`` on every Splunk version (1 MB was the old default).
    retry : RetryPolicy, default RetryPolicy()
    ack_poll_attempts : int, default 10
        Ack polls per flush before the remaining batches wait for the next flush.
    ack_poll_interval_secs : float, default 1.0
        Pause between two ack polls.
    ack_timeout_secs : float, default 300.0
        A batch still unacknowledged this long after it was sent is sent again; Splunk may
        have lost it. Its events carry their indicator id and version, so a duplicate can
        be removed in searches (``dedup indicator_id modified``).
    backoff : Backoff, optional
        Retry delays; tests pass one with a seeded generator and a recording sleep.
    clock : callable returning float, default time.time
    """

    name = "splunk-hec"

    def __init__(self, url: str, *, token: str, spool: Spool, transport: Transport,
                 index: str | None = None, host: str = "fti-hub", use_ack: bool = False,
                 compress: bool = True, max_batch_bytes: int = 1_000_000,
                 retry: RetryPolicy = RetryPolicy(), ack_poll_attempts: int = 10,
                 ack_poll_interval_secs: float = 1.0, ack_timeout_secs: float = 300.0,
                 backoff: Backoff | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        if not token:
            raise ValueError("token must be a non-empty HEC token; got an empty string")
        if max_batch_bytes < 1024:
            raise ValueError(f"max_batch_bytes must be >= 1024; got {max_batch_bytes}")
        self.url = url.rstrip("/")
        self._token = token
        self.spool = spool
        self.transport = transport
        self.index = index
        self.host = host
        self.use_ack = use_ack
        self.compress = compress
        self.max_batch_bytes = max_batch_bytes
        self.ack_poll_attempts = ack_poll_attempts
        self.ack_poll_interval_secs = ack_poll_interval_secs
        self.ack_timeout_secs = ack_timeout_secs
        self.backoff = backoff or Backoff(retry)
        self.clock = clock or time.time
        self._stopped: SiemAuthFailed | None = None

        # Ack ids count per channel, so the channel must survive a restart with the spool.
        channel = spool.get_state("hec_channel")
        if channel is None:
            channel = str(uuid.uuid4())
            spool.set_state("hec_channel", channel)
        self.channel = channel
        log.info("splunk HEC at %s: index %s, ack %s, gzip %s, batch <= %d bytes, channel %s",
                 self.url, index or "(token default)", "on" if use_ack else "off",
                 "on" if compress else "off", max_batch_bytes, channel)

    def __repr__(self) -> str:
        return f"SplunkHecClient(url={self.url!r}, token='********', index={self.index!r})"

    # -- queueing ----------------------------------------------------------------------

    def write_indicators(self, indicators: Sequence[Mapping[str, Any]]) -> SinkResult:
        """Queue one HEC event per indicator version and flush; return what Splunk confirmed.

        Raises
        ------
        SiemAuthFailed
            If Splunk rejected the token; the events stay queued.
        SiemRequestRejected
            If Splunk rejected the request for a reason no retry fixes.
        """
        events: list[tuple[str, Mapping[str, Any]]] = []
        rejected: list[tuple[str, str]] = []
        for indicator in indicators:
            indicator_id = str(indicator.get("id", "?"))
            try:
                key = ecs_document_id(dict(indicator))
                events.append((key, indicator_to_hec_event(dict(indicator), index=self.index,
                                                           host=self.host)))
            except (ValueError, KeyError, TypeError) as err:
                rejected.append((indicator_id, str(err)))
        rejected.extend(self.queue_events(events))
        report = self.flush()
        return SinkResult(written=report.delivered, rejected=tuple(rejected))

    def queue_events(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, str]]:
        """Check and queue ``(key, event)`` pairs; return ``(key, reason)`` of rejected ones.

        A rejected event is also stored as a dead letter, so the operator finds it beside the
        ones Splunk rejected.
        """
        documents: list[SpooledDocument] = []
        rejected: list[tuple[str, str]] = []
        for key, event in events:
            try:
                line = dump_line(prepare_event(event, event_id=key))
                if len(line.encode()) + 1 > self.max_batch_bytes:
                    raise SinkEventInvalid(self.name, key,
                                           f"event is {len(line.encode())} bytes, over "
                                           f"max_batch_bytes {self.max_batch_bytes}")
            except SinkEventInvalid as err:
                rejected.append((key, err.reason))
                self.spool.record_dead_letter(SpooledDocument(key, json.dumps(event, default=str)),
                                              reason=err.reason, code=None)
                continue
            documents.append(SpooledDocument(key, line))
        added = self.spool.enqueue(documents)
        if rejected:
            log.error("splunk HEC at %s: %d events rejected before sending; first %s: %s",
                      self.url, len(rejected), rejected[0][0], rejected[0][1])
        log.debug("splunk HEC at %s: %d of %d events queued, the rest were sent before",
                  self.url, added, len(documents))
        return rejected

    # -- sending -----------------------------------------------------------------------

    def flush(self) -> FlushReport:
        """Send every queued event and poll acknowledgments; return the counts.

        Raises
        ------
        SiemAuthFailed
            If Splunk rejects the token now or did so earlier; nothing is sent then.
        SiemRequestRejected
            If Splunk rejects a whole request for a reason no retry fixes.
        """
        if self._stopped is not None:
            raise self._stopped
        delivered = dead = 0
        if self.use_ack:
            delivered += self._poll_acks()

        for batch in split_batches(self.spool.pending(), max_batch_bytes=self.max_batch_bytes):
            outcome = self._send_batch(batch)
            delivered += outcome.delivered
            dead += outcome.dead_lettered
            if outcome.unavailable:
                # Splunk stayed unavailable through every retry; keep the rest for later.
                break

        if self.use_ack:
            delivered += self._poll_acks()
        queued = self.spool.queued_count()
        log.info("splunk HEC at %s: %d events confirmed, %d dead-lettered, %d still queued",
                 self.url, delivered, dead, queued)
        return FlushReport(delivered=delivered, dead_lettered=dead, queued=queued)

    def _send_batch(self, batch: list[SpooledDocument]) -> BatchOutcome:
        """Post one batch, splitting it until each event is accepted or dead-lettered.

        Every rejection removes an event or splits the batch, so the loop makes fewer than
        ``3 * len(batch)`` requests and never re-sends an unchanged batch.
        """
        outcome = BatchOutcome()
        # Sub-batches still to send, the next one last.
        todo = [list(batch)]
        while todo:
            remaining = todo.pop()
            body = "".join(document.payload + "\n" for document in remaining).encode()
            response = self._post_with_retry(EVENT_PATH, body)
            if response is None:
                outcome.unavailable = True
                return outcome
            answer = _hec_answer(response)
            keys = [document.key for document in remaining]

            if response.status == 200:
                self._record_success(answer, keys, outcome)
                continue

            if response.status in (401, 403):
                self._stopped = SiemAuthFailed(self.name, self.url + EVENT_PATH, response.status,
                                               str(answer.get("text", "")), _code(answer))
                log.error("%s", self._stopped)
                raise self._stopped

            number = answer.get("invalid-event-number")
            if (response.status == 400 and isinstance(number, int)
                    and not isinstance(number, bool) and 0 <= number < len(remaining)):
                bad = remaining.pop(number)
                self._dead_letter(bad, answer, response.status)
                outcome.dead_lettered += 1
                log.error("splunk HEC at %s rejected event %s (%s, code %s); sending the other "
                          "%d again", self.url, bad.key, answer.get("text"), answer.get("code"),
                          len(remaining))
                if remaining:
                    todo.append(remaining)
                continue

            if response.status == 413 or (response.status == 400
                                          and _code(answer) in _EVENT_ERROR_CODES):
                if len(remaining) == 1:
                    self._dead_letter(remaining[0], answer, response.status)
                    outcome.dead_lettered += 1
                    log.error("splunk HEC at %s rejected event %s alone with %d (%s); it is "
                              "dead-lettered", self.url, remaining[0].key, response.status,
                              str(answer.get("text", ""))[:120])
                    continue
                half = len(remaining) // 2
                log.warning("splunk HEC at %s rejected a batch of %d events with %d (%s) "
                            "naming no event; sending it in two halves", self.url,
                            len(remaining), response.status, str(answer.get("text", ""))[:120])
                todo.extend([remaining[half:], remaining[:half]])
                continue

            error = SiemRequestRejected(self.name, self.url + EVENT_PATH, response.status,
                                        str(answer.get("text", "")), _code(answer))
            log.error("%s", error)
            raise error
        return outcome

    def _record_success(self, answer: dict[str, Any], keys: list[str],
                        outcome: BatchOutcome) -> None:
        """Mark events of a 200 delivered, or awaiting their ack when acknowledgment is on."""
        if not self.use_ack:
            self.spool.mark_delivered(keys)
            outcome.delivered += len(keys)
            return
        ack_id = answer.get("ackId")
        if isinstance(ack_id, int) and not isinstance(ack_id, bool):
            self.spool.mark_awaiting_ack(keys, ack_id, sent_at=self.clock())
            outcome.awaiting_ack += len(keys)
            return
        # Not HEC's success response, so nothing shows the events were indexed.
        log.warning("splunk HEC at %s responded 200 without a readable ackId (%s); "
                    "%d events stay queued", self.url, str(answer.get("text", ""))[:80],
                    len(keys))

    def _dead_letter(self, document: SpooledDocument, answer: dict[str, Any],
                     status: int) -> None:
        reason = str(answer.get("text") or f"HTTP {status}")
        code = _code(answer)
        self.spool.dead_letter(document.key, reason=reason,
                               code=str(status if code is None else code))

    def _post_with_retry(self, path: str, body: bytes) -> HttpResponse | None:
        """Post with retries on 429, 5xx and connection failures; None when all failed."""
        headers = {"Authorization": f"Splunk {self._token}",
                   "Content-Type": "application/json",
                   CHANNEL_HEADER: self.channel}
        if self.compress:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        attempts = self.backoff.policy.max_attempts
        attempt = 0
        for attempt in self.backoff.attempts():
            try:
                response = self.transport("POST", self.url + path, headers=headers, body=body)
            except TransportFailed as err:
                log.debug("splunk HEC at %s: %s; attempt %d of %d", self.url, err.reason,
                          attempt, attempts)
                continue
            if response.status in _RETRY_STATUSES:
                log.debug("splunk HEC at %s responded %d %s; attempt %d of %d", self.url,
                          response.status, _hec_answer(response).get("text", ""), attempt,
                          attempts)
                continue
            return response
        log.warning("splunk HEC at %s unavailable after %d attempts; events stay in the spool",
                    self.url, attempt)
        return None

    def _poll_acks(self) -> int:
        """Poll the ack endpoint until every batch is acknowledged or the poll budget is spent.

        Returns the number of events confirmed. Batches unacknowledged for longer than
        ``ack_timeout_secs`` go back to the queue.
        """
        confirmed = 0
        for poll in range(self.ack_poll_attempts):
            waiting = self.spool.awaiting_ack()
            if not waiting:
                break
            if poll > 0:
                self.backoff.sleep(self.ack_poll_interval_secs)
            response = self._post_with_retry(ACK_PATH,
                                             json.dumps({"acks": sorted(waiting)}).encode())
            if response is None:
                break
            if response.status in (401, 403):
                answer = _hec_answer(response)
                self._stopped = SiemAuthFailed(self.name, self.url + ACK_PATH, response.status,
                                               str(answer.get("text", "")), answer.get("code"))
                log.error("%s", self._stopped)
                raise self._stopped
            if response.status != 200:
                answer = _hec_answer(response)
                error = SiemRequestRejected(self.name, self.url + ACK_PATH, response.status,
                                            str(answer.get("text", "")), answer.get("code"))
                log.error("%s", error)
                raise error
            statuses = _hec_answer(response).get("acks")
            if not isinstance(statuses, dict):
                # Only {"acks": {"<ackId>": true}} confirms events. Polling again now would
                # read the same body.
                log.warning("splunk HEC at %s: ack response has no acks object (%s); %d "
                            "batches stay unconfirmed", self.url,
                            response.body[:80].decode("utf-8", "replace"), len(waiting))
                break
            for ack_id, keys in waiting.items():
                if statuses.get(str(ack_id)) is True:
                    self.spool.mark_delivered(keys)
                    confirmed += len(keys)
        self._requeue_stale_acks()
        return confirmed

    def _requeue_stale_acks(self) -> None:
        stale = self.spool.stale_acks(older_than=self.clock() - self.ack_timeout_secs)
        for ack_id, keys in stale.items():
            log.warning("splunk HEC at %s: ack %d not confirmed within %.0f s; sending its %d "
                        "events again", self.url, ack_id, self.ack_timeout_secs, len(keys))
            self.spool.requeue(keys)


def _code(answer: dict[str, Any]) -> int | None:
    """Return the integer HEC ``code`` of a response body, or None."""
    code = answer.get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _hec_answer(response: HttpResponse) -> dict[str, Any]:
    """Return the JSON body of an HEC response, or a ``text`` containing the raw body when it is not JSON."""
    try:
        answer = json.loads(response.body or b"{}")
    except ValueError:
        return {"text": response.body[:200].decode("utf-8", "replace")}
    return answer if isinstance(answer, dict) else {"text": str(answer)[:200]}
