"""Send fused indicators to Elasticsearch with the bulk API, into an ECS data stream.

Wire format (Elasticsearch 8.x reference, "Bulk API" and "Data streams"):

- ``POST /_bulk`` with ``Content-Type: application/x-ndjson``; the body is action and
  document lines, each ending in a newline, the last one included.
- The target is the data stream ``logs-ti_fti.indicator-default``. Data streams accept only
  the ``create`` action, and every document needs ``@timestamp``. The ``_id`` is fixed,
  ``<indicator id>@<modified>``, so a version sent twice gets 409
  ``version_conflict_engine_exception``, which counts as delivered.
- A 200 response can still hold failed items (``"errors": true``); each item has its own
  ``status``. Items with 429 or 5xx are retried alone with backoff. Items with another 4xx
  (``document_parsing_exception`` and the like) go to the dead-letter table with their
  ``error.type`` and ``error.reason``.
- A whole request that gets 429, 5xx or no response (connection refused, timed out) is
  retried with backoff and jitter, bounded by ``RetryPolicy.max_elapsed_secs``. A cluster
  still unavailable then ends the flush: the rest stays in the spool for the next one, so
  one flush never waits on every batch in turn. 401 and 403 stop the client without
  logging the credential.
- A 413 (body over ``http.max_content_length`` or a proxy's limit) splits the batch in
  halves; a single document still too large goes to the dead-letter table.
- A 200 whose body is not a bulk response (not JSON, no ``items`` list, a different number
  of items than actions, an item without an integer ``status``) confirms nothing: the
  batch stays queued and ``SiemResponseInvalid`` is raised. Fixed ``_id``s make the
  re-sent documents that were indexed after all come back as 409.

Revoked and expired indicators are removed: for a revoked version the client deletes every
document of that indicator with ``_delete_by_query`` (a ``term`` on ``fti.indicator.id``),
and each flush deletes documents whose ``fti.indicator.valid_until`` has passed. The
revoked version itself is not indexed, because its document still carries the observable
and Elastic's indicator match rules would keep matching it.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from siem_integrations.errors import (SiemAuthFailed, SiemRequestRejected, SiemResponseInvalid,
                                      TransportFailed)
from siem_integrations.ndjson_file import dump_line
from siem_integrations.retry import Backoff, RetryPolicy
from siem_integrations.sink import SinkResult
from siem_integrations.spool import Spool, SpooledDocument, split_batches
from siem_integrations.transport import HttpResponse, Transport
from stix_mappings.ecs import ecs_document_id, indicator_to_ecs
from stix_mappings.indicator import read_fused_indicator

log = logging.getLogger(__name__)

DEFAULT_DATA_STREAM = "logs-ti_fti.indicator-default"
TEMPLATE_NAME = "logs-ti_fti.indicator"
ILM_POLICY_NAME = "logs-ti_fti.indicator"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Spool payload of a removal; a document payload always starts with the create action.
_DELETE_MARK = "delete-indicator "


@dataclass
class BatchOutcome:
    """Documents of one batch delivered and dead-lettered, and whether the cluster stayed
    unavailable."""

    delivered: int = 0
    dead_lettered: int = 0
    unavailable: bool = False


@dataclass(frozen=True)
class BulkReport:
    """Outcome of one flush: documents created (or already there), dead-lettered, queued."""

    delivered: int
    dead_lettered: int
    deleted: int
    queued: int


def load_bundled_json(name: str) -> dict[str, Any]:
    """Return ``index-template.json`` or ``ilm-policy.json`` shipped in the package."""
    text = resources.files("siem_integrations").joinpath(f"elastic/{name}").read_text()
    return json.loads(text)


class ElasticBulkClient:
    """An indicator sink that writes ECS documents to an Elasticsearch data stream.

    Parameters
    ----------
    url : str
        Base URL of Elasticsearch, such as ``https://es.example.org:9200``.
    spool : Spool
        Durable queue of documents not yet confirmed.
    transport : Transport
    api_key : str, optional
        Encoded API key (the ``encoded`` value of the create API key response), sent as
        ``Authorization: ApiKey <key>``. Give either this or ``username`` and ``password``.
    username, password : str, optional
        HTTP basic authentication.
    data_stream : str, default "logs-ti_fti.indicator-default"
        Target; Elastic's indicator match rules read ``logs-ti_*`` indices.
    provider : str, default "fti"
        ``threat.indicator.provider`` of every document.
    max_batch_bytes : int, default 5_000_000
        Upper bound of one request body; Elastic recommends bulk requests of a few MB.
    retry : RetryPolicy, default RetryPolicy()
    backoff : Backoff, optional
    clock : callable returning datetime, optional
        Current time for the expiry removal; tests freeze it.
    """

    name = "elastic-bulk"

    def __init__(self, url: str, *, spool: Spool, transport: Transport,
                 api_key: str | None = None, username: str | None = None,
                 password: str | None = None, data_stream: str = DEFAULT_DATA_STREAM,
                 provider: str = "fti", max_batch_bytes: int = 5_000_000,
                 retry: RetryPolicy = RetryPolicy(), backoff: Backoff | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        if (api_key is None) == (username is None):
            raise ValueError("give exactly one of api_key or username and password")
        if username is not None and not password:
            raise ValueError(f"password is required with username {username!r}")
        if not data_stream.startswith("logs-ti_"):
            log.warning("data stream %s does not match logs-ti_*; Elastic's prebuilt indicator "
                        "match rules will not read it", data_stream)
        self.url = url.rstrip("/")
        if api_key is not None:
            self._authorization = f"ApiKey {api_key}"
        else:
            pair = f"{username}:{password}".encode()
            self._authorization = "Basic " + base64.b64encode(pair).decode()
        self.spool = spool
        self.transport = transport
        self.data_stream = data_stream
        self.provider = provider
        self.max_batch_bytes = max_batch_bytes
        self.backoff = backoff or Backoff(retry)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._stopped: SiemAuthFailed | None = None
        log.info("elasticsearch at %s: data stream %s, batch <= %d bytes", self.url,
                 data_stream, max_batch_bytes)

    def __repr__(self) -> str:
        return f"ElasticBulkClient(url={self.url!r}, credential='********')"

    # -- set-up -------------------------------------------------------------------------

    def install_templates(self) -> None:
        """Create or update the ILM policy and the index template of the data stream.

        Raises
        ------
        SiemAuthFailed, SiemRequestRejected
            If Elasticsearch rejects either request.
        """
        for path, body in ((f"/_ilm/policy/{ILM_POLICY_NAME}", load_bundled_json("ilm-policy.json")),
                           (f"/_index_template/{TEMPLATE_NAME}",
                            load_bundled_json("index-template.json"))):
            response = self._request("PUT", path, json.dumps(body).encode(), "application/json")
            if response is None:
                raise SiemRequestRejected(self.name, self.url + path, 503, "unavailable", None)
            self._raise_for_status(path, response)
        log.info("elasticsearch at %s: ILM policy and index template %s installed", self.url,
                 TEMPLATE_NAME)

    # -- queueing ----------------------------------------------------------------------

    def write_indicators(self, indicators: Sequence[Mapping[str, Any]]) -> SinkResult:
        """Queue one document per indicator version (a removal per revoked one) and flush.

        Raises
        ------
        SiemAuthFailed, SiemRequestRejected
            The documents stay queued.
        """
        documents: list[SpooledDocument] = []
        rejected: list[tuple[str, str]] = []
        for indicator in indicators:
            indicator_id = str(indicator.get("id", "?"))
            try:
                key = ecs_document_id(dict(indicator))
                if read_fused_indicator(dict(indicator)).revoked:
                    documents.append(SpooledDocument(key, _DELETE_MARK + indicator_id))
                    continue
                document = indicator_to_ecs(dict(indicator), provider=self.provider)
            except (ValueError, KeyError, TypeError) as err:
                rejected.append((indicator_id, str(err)))
                continue
            action = {"create": {"_index": self.data_stream, "_id": key}}
            documents.append(SpooledDocument(key, dump_line(action) + "\n" + dump_line(document)))
        self.spool.enqueue(documents)
        report = self.flush()
        return SinkResult(written=report.delivered, rejected=tuple(rejected))

    # -- sending -----------------------------------------------------------------------

    def flush(self) -> BulkReport:
        """Send queued documents, then removals, then delete expired documents.

        Raises
        ------
        SiemAuthFailed
            If Elasticsearch rejects the credential now or did so earlier.
        SiemRequestRejected
            If it rejects a whole request for a reason no retry fixes.
        """
        if self._stopped is not None:
            raise self._stopped
        pending = self.spool.pending()
        creates = [d for d in pending if not d.payload.startswith(_DELETE_MARK)]
        removals = [d for d in pending if d.payload.startswith(_DELETE_MARK)]

        delivered = dead = deleted = 0
        unavailable = False
        for batch in split_batches(creates, max_batch_bytes=self.max_batch_bytes):
            outcome = self._send_batch(batch)
            delivered += outcome.delivered
            dead += outcome.dead_lettered
            if outcome.unavailable:
                unavailable = True
                break

        # Removals follow the creates, so an earlier version sent in this flush goes too.
        for removal in removals if not unavailable else []:
            indicator_id = removal.payload[len(_DELETE_MARK):]
            count = self._delete_by_query({"term": {"fti.indicator.id": indicator_id}})
            if count is None:
                unavailable = True
                break
            deleted += count
            self.spool.mark_delivered([removal.key])
        if not unavailable:
            expired = self._delete_by_query(
                {"range": {"fti.indicator.valid_until": {"lt": self.clock().isoformat()}}})
            deleted += expired or 0

        queued = self.spool.queued_count()
        log.info("elasticsearch at %s: %d documents created, %d dead-lettered, %d deleted, "
                 "%d still queued", self.url, delivered, dead, deleted, queued)
        return BulkReport(delivered=delivered, dead_lettered=dead, deleted=deleted, queued=queued)

    def _send_batch(self, batch: list[SpooledDocument]) -> BatchOutcome:
        """Post one batch and retry its retryable items alone.

        Raises
        ------
        SiemResponseInvalid
            If a 200 response is not a bulk response; the unconfirmed documents stay queued.
        """
        remaining = list(batch)
        outcome = BatchOutcome()
        attempt = 0
        for attempt in self.backoff.attempts():
            body = "".join(document.payload + "\n" for document in remaining).encode()
            response = self._request("POST", "/_bulk", body, "application/x-ndjson")
            if response is None or response.status in _RETRY_STATUSES:
                log.debug("elasticsearch at %s: bulk request failed (%s); attempt %d of %d",
                          self.url, "no response" if response is None else response.status,
                          attempt, self.backoff.policy.max_attempts)
                continue
            if response.status == 413:
                return self._split_too_large(remaining, response, outcome)
            self._raise_for_status("/_bulk", response)

            retry: list[SpooledDocument] = []
            for document, (status, error) in zip(remaining, self._bulk_results(response,
                                                                                remaining)):
                if status in (200, 201, 409):
                    # 409: this version is already indexed, from an earlier send.
                    self.spool.mark_delivered([document.key])
                    outcome.delivered += 1
                elif status in _RETRY_STATUSES:
                    retry.append(document)
                else:
                    self.spool.dead_letter(document.key, reason=error, code=str(status))
                    outcome.dead_lettered += 1
                    log.error("elasticsearch at %s rejected %s with %d %s", self.url,
                              document.key, status, error)
            if not retry:
                return outcome
            log.debug("elasticsearch at %s: %d items to retry alone; attempt %d of %d",
                      self.url, len(retry), attempt, self.backoff.policy.max_attempts)
            remaining = retry
        log.warning("elasticsearch at %s: %d documents not accepted after %d attempts; they "
                    "stay in the spool", self.url, len(remaining), attempt)
        outcome.unavailable = True
        return outcome

    def _split_too_large(self, documents: list[SpooledDocument], response: HttpResponse,
                         outcome: BatchOutcome) -> BatchOutcome:
        """Send a body over ``http.max_content_length`` (or a proxy's limit) in halves.

        A single document still too large is dead-lettered, so the batch never comes back
        unchanged.
        """
        if len(documents) == 1:
            reason = f"request too large (413): {_es_error(response) or 'no body'}"
            self.spool.dead_letter(documents[0].key, reason=reason, code="413")
            outcome.dead_lettered += 1
            log.error("elasticsearch at %s rejected %s alone with 413; it is dead-lettered",
                      self.url, documents[0].key)
            return outcome
        log.warning("elasticsearch at %s rejected a bulk request of %d documents with 413; "
                    "sending it in two halves", self.url, len(documents))
        half = len(documents) // 2
        for part in (documents[:half], documents[half:]):
            result = self._send_batch(part)
            outcome.delivered += result.delivered
            outcome.dead_lettered += result.dead_lettered
            if result.unavailable:
                outcome.unavailable = True
                break
        return outcome

    def _bulk_results(self, response: HttpResponse,
                      documents: list[SpooledDocument]) -> list[tuple[int, str]]:
        """Return ``(status, "type: reason")`` of each item of a 200 bulk response, in order.

        Raises
        ------
        SiemResponseInvalid
            If the body is not a bulk response with one item per document.
        """
        def invalid(reason: str) -> SiemResponseInvalid:
            error = SiemResponseInvalid(self.name, self.url + "/_bulk", response.status, reason,
                                        len(documents))
            log.error("%s", error)
            return error

        try:
            answer = json.loads(response.body)
        except ValueError as err:
            raise invalid(f"not JSON: {response.body[:80]!r}") from err
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise invalid("no items list")
        if len(items) != len(documents):
            raise invalid(f"{len(items)} items for {len(documents)} actions")

        results = []
        for number, item in enumerate(items):
            result = next(iter(item.values()), None) if isinstance(item, dict) and \
                len(item) == 1 else None
            status = result.get("status") if isinstance(result, dict) else None
            if not isinstance(status, int) or isinstance(status, bool):
                raise invalid(f"item {number} has no integer status")
            error = result.get("error")
            if isinstance(error, dict):
                reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
            else:
                reason = str(error or f"HTTP {status}")
            results.append((status, reason))
        return results

    def _delete_by_query(self, query: dict[str, Any]) -> int | None:
        """Delete the data stream's documents matching ``query``; None when unreachable."""
        path = f"/{self.data_stream}/_delete_by_query?conflicts=proceed&refresh=true"
        response = self._request_with_retry("POST", path, json.dumps({"query": query}).encode())
        if response is None:
            return None
        if response.status == 404:
            # The data stream does not exist yet, so there is nothing to delete.
            return 0
        self._raise_for_status(path, response)
        try:
            deleted = json.loads(response.body)["deleted"]
        except (ValueError, KeyError, TypeError) as err:
            error = SiemResponseInvalid(self.name, self.url + path.split("?")[0],
                                        response.status, "no deleted count", 0)
            log.error("%s", error)
            raise error from err
        return int(deleted)

    def _request_with_retry(self, method: str, path: str, body: bytes) -> HttpResponse | None:
        attempt = 0
        for attempt in self.backoff.attempts():
            response = self._request(method, path, body, "application/json")
            if response is not None and response.status not in _RETRY_STATUSES:
                return response
        log.warning("elasticsearch at %s unavailable after %d attempts for %s", self.url,
                    attempt, path.split("?")[0])
        return None

    def _request(self, method: str, path: str, body: bytes,
                 content_type: str) -> HttpResponse | None:
        headers = {"Authorization": self._authorization, "Content-Type": content_type,
                   "Accept": "application/json"}
        try:
            return self.transport(method, self.url + path, headers=headers, body=body)
        except TransportFailed as err:
            log.debug("elasticsearch at %s: %s", self.url, err.reason)
            return None

    def _raise_for_status(self, path: str, response: HttpResponse) -> None:
        if 200 <= response.status < 300:
            return
        error = _es_error(response)
        if response.status in (401, 403):
            self._stopped = SiemAuthFailed(self.name, self.url + path.split("?")[0],
                                           response.status, error, None)
            log.error("%s", self._stopped)
            raise self._stopped
        rejected = SiemRequestRejected(self.name, self.url + path.split("?")[0], response.status,
                                       error, None)
        log.error("%s", rejected)
        raise rejected


def _es_error(response: HttpResponse) -> str:
    """Return ``type: reason`` of an Elasticsearch error body, or the start of the raw body."""
    try:
        error = json.loads(response.body).get("error")
    except (ValueError, AttributeError):
        return response.body[:200].decode("utf-8", "replace")
    if isinstance(error, dict):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}"
    return str(error)
