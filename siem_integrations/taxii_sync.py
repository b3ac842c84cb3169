"""Poll a TAXII 2.1 collection and push its indicators into a SIEM, resuming from a checkpoint.

Any TAXII 2.1 server works, the fti hub or another one. Paging follows TAXII 2.1's
pagination rules: an envelope with ``more: true`` and a ``next`` value is continued with
``next``. A server may also set ``more: true`` without ``next``. The client then continues
from the ``X-TAXII-Date-Added-Last`` header of the last response, the ``date_added`` of
the newest object returned. ``added_after`` is exclusive and several objects can share a
``date_added``, so it requests objects added after one microsecond before that time and
skips those it already read. When ``more`` is false, the next poll starts from that
``date_added``.

The checkpoint (a small JSON file) is written only after the SIEM sink accepted a page, so
a crash re-reads at most one page. The sinks deduplicate by indicator id and version, so a
re-read page adds nothing. A ``next`` the server no longer knows (400 or 404) is dropped and
the poll falls back to ``added_after``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests
from taxii2client.common import _HTTPConnection
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import Collection

from siem_integrations.errors import SyncFailed
from siem_integrations.sink import IndicatorSink

log = logging.getLogger(__name__)

DATE_ADDED_LAST = "X-TAXII-Date-Added-Last"


@dataclass
class SyncCheckpoint:
    """Resume point of the next poll: a pending ``next`` value or an ``added_after`` time."""

    next: str | None = None
    added_after: str | None = None


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
            return SyncCheckpoint(next=data.get("next"), added_after=data.get("added_after"))
        except (ValueError, AttributeError) as err:
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
        state = self.checkpoint.load()
        pages = seen = written = 0
        rejected: list[tuple[str, str]] = []

        # Paging by added_after alone: added_after is exclusive, so the next request starts
        # just before the page's last date_added and skips the objects already read there.
        # When a whole page repeats, more objects share that date_added than the limit, so
        # the limit doubles (up to 16 times page_size) before giving up on them.
        request_after: str | None = None
        limit = self.page_size
        boundary: str | None = None
        read_at_boundary: set[tuple[str, str]] = set()
        while pages < self.max_pages:
            envelope = self._fetch(state, after=request_after, limit=limit)
            pages += 1
            page = [o for o in envelope.get("objects", []) if o.get("type") == "indicator"]
            keys = [(str(o.get("id")), str(o.get("modified"))) for o in page]
            indicators = [o for o, key in zip(page, keys) if key not in read_at_boundary]
            if indicators:
                result = self.sink.write_indicators(indicators)
                written += result.written
                rejected.extend(result.rejected)
            seen += len(indicators)

            # Advance only after the sink accepted the page, so a failure re-reads it.
            # added_after follows every page too, so a stale next falls back close by.
            date_added_last = self._last_headers.get(DATE_ADDED_LAST)
            if date_added_last:
                state.added_after = date_added_last
            more = bool(envelope.get("more"))
            request_after = None
            if more and envelope.get("next"):
                state.next = str(envelope["next"])
                limit = self.page_size
            else:
                state.next = None
                if more and not date_added_last:
                    raise SyncFailed(self.source, "the server set more without next or "
                                     f"{DATE_ADDED_LAST}, so paging cannot continue")
                if more:
                    if date_added_last != boundary:
                        boundary, read_at_boundary = date_added_last, set()
                        limit = self.page_size
                    read_at_boundary.update(keys)
                    request_after = _just_before(date_added_last)
                    if not indicators and len(page) >= limit and limit < 16 * self.page_size:
                        limit *= 2
                    elif not indicators or request_after is None:
                        log.warning("sync from %s: more objects share date_added %s than one "
                                    "page holds and the server sets no next; some may be "
                                    "skipped", self.source, date_added_last)
                        request_after, read_at_boundary = None, set()
            self.checkpoint.save(state)
            if not more:
                break
        else:
            log.warning("sync from %s stopped after %d pages; the next poll continues from the "
                        "checkpoint", self.source, pages)

        log.info("sync from %s: %d pages, %d indicators, %d written, %d rejected", self.source,
                 pages, seen, written, len(rejected))
        return SyncReport(pages=pages, indicators=seen, written=written,
                          rejected=tuple(rejected))

    def _fetch(self, state: SyncCheckpoint, *, after: str | None = None,
               limit: int | None = None) -> dict[str, Any]:
        """Get one page, falling back from a stale ``next`` to ``added_after`` once.

        ``after`` replaces the checkpoint's ``added_after`` and ``limit`` the page size.
        """
        try:
            return self._get_objects(state, after=after, limit=limit)
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else None
            if state.next is None or status not in (400, 404):
                raise SyncFailed(self.source, f"HTTP {status}") from err
            log.warning("sync from %s: the server rejected the saved next value with %s; "
                        "continuing from added_after %s", self.source, status,
                        state.added_after or "(start)")
            state.next = None
            try:
                return self._get_objects(state)
            except requests.HTTPError as retry_err:
                status = retry_err.response.status_code if retry_err.response is not None else None
                raise SyncFailed(self.source, f"HTTP {status}") from retry_err

    def _get_objects(self, state: SyncCheckpoint, *, after: str | None = None,
                     limit: int | None = None) -> dict[str, Any]:
        filters: dict[str, Any] = {"limit": limit or self.page_size, "type": "indicator"}
        if state.next:
            filters["next"] = state.next
        elif after or state.added_after:
            filters["added_after"] = after or state.added_after
        try:
            envelope = self._collection.get_objects(**filters)
        except (requests.ConnectionError, requests.Timeout, TAXIIServiceException) as err:
            raise SyncFailed(self.source, f"{type(err).__name__}: {err}") from err
        if not isinstance(envelope, dict):
            raise SyncFailed(self.source, "the response is not a TAXII envelope")
        return envelope


def _just_before(timestamp: str) -> str | None:
    """Return ``timestamp`` minus one microsecond in TAXII form, or None if it cannot be read."""
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = (moment - timedelta(microseconds=1)).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _with_timeout(request: Any, timeout_secs: float) -> Any:
    def request_with_timeout(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout_secs)
        return request(*args, **kwargs)
    return request_with_timeout
