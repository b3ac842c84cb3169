"""Poll a TAXII 2.1 collection and push its indicators into a SIEM, resuming from a checkpoint.

Any TAXII 2.1 server works, the fti hub or another one. Paging follows TAXII 2.1's
pagination rules: an envelope with ``more: true`` and a ``next`` value is continued with
``next``. A server may also set ``more: true`` without ``next``, and the client then
continues with ``added_after`` from the ``X-TAXII-Date-Added-Last`` header.
``siem_integrations.taxii_cursor`` keeps that resume point exact when many objects share one
``date_added``.

The checkpoint (a small JSON file) is written only after the SIEM sink accepted a page, so
a crash re-reads at most one page. The sinks deduplicate by indicator id and version, so a
re-read page adds nothing. A ``next`` the server no longer accepts (400 or 404) is dropped and
the poll falls back to ``added_after``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
from taxii2client.common import _HTTPConnection
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import Collection

from siem_integrations.errors import SyncFailed
from siem_integrations.sink import IndicatorSink
from siem_integrations.taxii_cursor import (DATE_ADDED_LAST, CursorError, TaxiiCursor,
                                             envelope_indicators)

log = logging.getLogger(__name__)


@dataclass
class SyncCheckpoint:
    """Resume point of the next poll, the stored form of a ``TaxiiCursor``.

    ``next`` is a pending ``next`` value. ``added_after`` is the newest ``date_added`` read,
    and ``delivered`` contains the keys of the objects already written that may carry it.
    """

    next: str | None = None
    added_after: str | None = None
    delivered: tuple[str, ...] = ()
    past_added_after: bool = False


@dataclass(frozen=True)
class SyncReport:
    """Outcome of one poll: pages read, indicators seen and written, rejects by id."""

    pages: int
    indicators: int
    written: int
    rejected: tuple[tuple[str, str], ...] = field(default=())


class CheckpointFile:
    """A checkpoint stored as JSON, replaced atomically so a crash never leaves half a file.

    Parameters
    ----------
    path : Path
        The JSON file; its folder is created if missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> SyncCheckpoint:
        """Return the stored checkpoint, or an empty one when the file does not exist.

        Raises
        ------
        SyncFailed
            If the file exists but is not a checkpoint.
        """
        if not self.path.exists():
            return SyncCheckpoint()
        try:
            data = json.loads(self.path.read_text())
            return SyncCheckpoint(next=data.get("next"), added_after=data.get("added_after"),
                                  delivered=tuple(data.get("delivered") or ()),
                                  past_added_after=bool(data.get("past_added_after", False)))
        except (ValueError, AttributeError, TypeError) as err:
            raise SyncFailed(str(self.path), f"checkpoint is not valid JSON ({err}); remove it "
                             "to poll the collection from its start") from err

    def save(self, checkpoint: SyncCheckpoint) -> None:
        """Write the checkpoint to a temporary file, fsync it, then rename it into place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w") as handle:
            json.dump(asdict(checkpoint), handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)


class TaxiiSync:
    """Poll one TAXII 2.1 collection into one SIEM sink.

    Parameters
    ----------
    api_root_url : str
        The TAXII API root, such as ``https://hub.example.org/fti/``.
    collection_id : str
        The collection to poll.
    sink : IndicatorSink
        ``SplunkHecClient`` or ``ElasticBulkClient`` (or a file sink).
    checkpoint : CheckpointFile
    user, password : str, optional
        HTTP basic credentials for the TAXII server; the password is never logged.
    verify_tls : bool or str, default True
    page_size : int, default 500
        ``limit`` of each request; servers may return fewer.
    max_pages : int, default 1000
        Pages per poll at most, so one poll of a huge collection ends and saves its place.
    timeout_secs : float, default 30.0
    """

    def __init__(self, api_root_url: str, collection_id: str, *, sink: IndicatorSink,
                 checkpoint: CheckpointFile, user: str | None = None,
                 password: str | None = None, verify_tls: bool | str = True,
                 page_size: int = 500, max_pages: int = 1000,
                 timeout_secs: float = 30.0) -> None:
        if page_size < 1 or max_pages < 1:
            raise ValueError(f"page_size and max_pages must be >= 1; got {page_size} and "
                             f"{max_pages}")
        self.source = api_root_url.rstrip("/") + f"/collections/{collection_id}/"
        self.sink = sink
        self.checkpoint = checkpoint
        self.page_size = page_size
        self.max_pages = max_pages
        self._last_headers: Mapping[str, str] = {}
        connection = _HTTPConnection(user=user, password=password, verify=verify_tls, version="2.1")
        connection.session.hooks["response"].append(self._remember_headers)
        # taxii2-client passes no timeout, so the session's adapter gets one per request.
        connection.session.request = _with_timeout(connection.session.request, timeout_secs)
        self._collection = Collection(self.source, conn=connection)

    def _remember_headers(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last_headers = response.headers

    def poll_once(self) -> SyncReport:
        """Read every page added since the checkpoint and push its indicators to the sink.

        Raises
        ------
        SyncFailed
            If the TAXII server cannot be read; the checkpoint keeps its last good value.
        SiemError
            From the sink; the checkpoint is not advanced past the page it rejected.
        """
        cursor = TaxiiCursor(asdict(self.checkpoint.load()), page_size=self.page_size)
        pages = seen = written = 0
        flushed = False
        rejected: list[tuple[str, str]] = []

        while pages < self.max_pages:
            envelope = self._fetch(cursor)
            pages += 1
            try:
                page = envelope_indicators(envelope)
            except CursorError as err:
                raise SyncFailed(self.source, str(err)) from err
            indicators = cursor.new_objects(page)
            if indicators:
                result = self.sink.write_indicators(indicators)
                flushed = True
                written += result.written
                rejected.extend(result.rejected)
            seen += len(indicators)

            # Advance only after the sink accepted the page, so a failure re-reads it.
            try:
                more = cursor.advance(page, more=bool(envelope.get("more")),
                                      next_value=envelope.get("next"),
                                      date_added_last=self._last_headers.get(DATE_ADDED_LAST))
            except CursorError as err:
                raise SyncFailed(self.source, str(err)) from err
            if cursor.skipped_at:
                log.warning("sync from %s: more objects share date_added %s than one page "
                            "holds and the server sets no next; the rest of them are skipped",
                            self.source, cursor.skipped_at)
            self.checkpoint.save(SyncCheckpoint(
                next=cursor.next, added_after=cursor.added_after,
                delivered=tuple(sorted(cursor.delivered)),
                past_added_after=cursor.past_added_after))
            if not more:
                break
        else:
            log.warning("sync from %s stopped after %d pages; the next poll continues from the "
                        "checkpoint", self.source, pages)

        # A poll with nothing new still flushes the sink: documents spooled while the SIEM
        # was down go out, and Elasticsearch deletes documents whose valid_until has passed.
        if not flushed:
            result = self.sink.write_indicators([])
            written += result.written

        log.info("sync from %s: %d pages, %d indicators, %d written, %d rejected", self.source,
                 pages, seen, written, len(rejected))
        return SyncReport(pages=pages, indicators=seen, written=written,
                          rejected=tuple(rejected))

    def _fetch(self, cursor: TaxiiCursor) -> dict[str, Any]:
        """Get one page, falling back from a stale ``next`` to ``added_after`` once."""
        try:
            return self._get_objects(cursor.query())
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else None
            if cursor.next is None or status not in (400, 404):
                raise SyncFailed(self.source, f"HTTP {status}") from err
            log.warning("sync from %s: the server rejected the saved next value with %s; "
                        "continuing from added_after %s", self.source, status,
                        cursor.added_after or "(start)")
            cursor.drop_next()
            try:
                return self._get_objects(cursor.query())
            except requests.HTTPError as retry_err:
                status = retry_err.response.status_code if retry_err.response is not None else None
                raise SyncFailed(self.source, f"HTTP {status}") from retry_err

    def _get_objects(self, query: dict[str, str]) -> dict[str, Any]:
        filters: dict[str, Any] = {"type": "indicator", **query}
        try:
            envelope = self._collection.get_objects(**filters)
        except (requests.ConnectionError, requests.Timeout, TAXIIServiceException) as err:
            raise SyncFailed(self.source, f"{type(err).__name__}: {err}") from err
        if not isinstance(envelope, dict):
            raise SyncFailed(self.source, "the response is not a TAXII envelope")
        return envelope


def _with_timeout(request: Any, timeout_secs: float) -> Any:
    def request_with_timeout(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout_secs)
        return request(*args, **kwargs)
    return request_with_timeout
