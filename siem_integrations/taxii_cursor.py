"""Resume point of a TAXII 2.1 Get Objects poll that neither skips nor repeats objects.

TAXII 2.1 (section 3.4, "Pagination") pages with ``limit``, ``more`` and an optional
``next``. A server that sets ``more`` without ``next`` expects the client to continue with
``added_after`` from the ``X-TAXII-Date-Added-Last`` header. ``added_after`` is exclusive and
many objects can share one ``date_added``, so continuing from that time skips the objects of
that ``date_added`` that did not fit in the page. The cursor therefore stores the time and
the keys (``<id>@<modified>``) of the objects already delivered that may carry it. It
requests objects added after one microsecond before that time and drops those keys from
the response.

The objects of a page are ordered by ``date_added`` and the page's last object has the
page's ``X-TAXII-Date-Added-Last``. So the objects that may share it are the current page's
objects, plus the remembered keys when the previous page ended at the same time.

A caller writes a page's new objects first and saves ``to_dict()`` after that. A crash
between the two makes the next run read that page again. Delivery is therefore at least
once, with repeats limited to that one page, and nothing is skipped except in the case
under Notes.

This module uses the standard library only, because the Splunk add-on ships it too.

Notes
-----
A server without ``next`` that contains more objects of one ``date_added`` than its largest
page cannot be read past them without skipping. The cursor raises ``limit`` by the number
of objects already delivered at that time, up to ``max_limit_factor`` times the page size.
Past that it continues after that time and stores the time it gave up in ``skipped_at``
for the caller to log. Servers that store
``date_added`` more precisely than microseconds may return a few objects again, which the
sinks drop by key.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

DATE_ADDED_LAST = "X-TAXII-Date-Added-Last"


class CursorError(ValueError):
    """The server's response leaves no way to continue paging."""


def object_key(obj: dict[str, Any]) -> str:
    """Return ``<id>@<modified>`` of a STIX object, one key per object version."""
    version = obj.get("modified") or obj.get("created") or ""
    return f"{obj.get('id', '')}@{version}"


def envelope_indicators(envelope: Any) -> list[dict[str, Any]]:
    """Return the ``indicator`` objects of a TAXII 2.1 envelope, in page order.

    Raises
    ------
    CursorError
        If the envelope is not a JSON object, its ``objects`` is not a list, or an item of
        ``objects`` is not a JSON object (TAXII 2.1 section 3.7, "Envelope").
    """
    if not isinstance(envelope, dict):
        raise CursorError(f"the response is not a TAXII envelope but {type(envelope).__name__}")
    objects = envelope.get("objects", [])
    if not isinstance(objects, list):
        raise CursorError(f"the envelope's objects is {type(objects).__name__}, not a list")
    for number, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise CursorError(f"object {number} of the envelope is {type(obj).__name__}, "
                              "not a STIX object")
    return [obj for obj in objects if obj.get("type") == "indicator"]


def just_before(timestamp: str) -> str | None:
    """Return ``timestamp`` minus one microsecond in TAXII form, or None if it is unreadable."""
    text = timestamp.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # datetime before Python 3.11 reads at most 6 fractional digits.
    head, dot, rest = text.partition(".")
    if dot:
        length = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:length][:6].ljust(6, '0')}{rest[length:]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = (moment - timedelta(microseconds=1)).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TaxiiCursor:
    """Start point of the next Get Objects request, and the objects it must drop.

    Parameters
    ----------
    state : dict or None
        A dict from ``to_dict()``, or None to start at the beginning of the collection. A
        state without ``delivered`` (written by older versions) re-reads the objects of its
        ``added_after`` instead of skipping them.
    page_size : int, default 500
        New objects wanted per request. Paging by ``added_after`` requests that many more
        than the objects already delivered at ``added_after``, because those come back too.
    max_limit_factor : int, default 16
        Cap of ``limit`` as a multiple of ``page_size``.
    """

    def __init__(self, state: dict[str, Any] | None = None, *, page_size: int = 500,
                 max_limit_factor: int = 16) -> None:
        if page_size < 1 or max_limit_factor < 1:
            raise ValueError(f"page_size and max_limit_factor must be >= 1; got {page_size} "
                             f"and {max_limit_factor}")
        state = state or {}
        self.next: str | None = state.get("next") or None
        self.added_after: str | None = state.get("added_after") or None
        self.delivered: set[str] = set(state.get("delivered") or ())
        # True once the objects of added_after are given up (see Notes), so the next request
        # continues strictly after added_after.
        self.past_added_after = bool(state.get("past_added_after", False))
        self.page_size = page_size
        self.max_limit = page_size * max_limit_factor
        self._requested_limit = page_size
        # The date_added whose remaining objects the last advance gave up, or None.
        self.skipped_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the state to store as the checkpoint, JSON-serialisable."""
        return {"next": self.next, "added_after": self.added_after,
                "delivered": sorted(self.delivered), "past_added_after": self.past_added_after}

    def query(self) -> dict[str, str]:
        """Return ``limit`` and either ``next`` or ``added_after`` for the next request."""
        limit = self.page_size
        after = None
        if not self.next and self.added_after:
            after = None if self.past_added_after else just_before(self.added_after)
            if after is None:
                after = self.added_after
            else:
                limit = min(self.page_size + len(self.delivered), self.max_limit)
        self._requested_limit = limit

        query = {"limit": str(limit)}
        if self.next:
            query["next"] = self.next
        elif after:
            query["added_after"] = after
        return query

    def drop_next(self) -> None:
        """Forget a ``next`` value the server rejected, so paging resumes from ``added_after``."""
        self.next = None

    def new_objects(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Return the objects of a page that were not delivered before, in page order."""
        return [obj for obj in objects if object_key(obj) not in self.delivered]

    def advance(self, objects: list[dict[str, Any]], *, more: bool, next_value: str | None,
                date_added_last: str | None) -> bool:
        """Move past a page whose new objects were written; return whether to request again.

        Parameters
        ----------
        objects : list of dict
            Every object of the page, those delivered before included.
        more, next_value : bool, str or None
            ``more`` and ``next`` of the envelope.
        date_added_last : str or None
            The page's ``X-TAXII-Date-Added-Last`` header.

        Raises
        ------
        CursorError
            If ``more`` is true but the page has neither ``next`` nor the header.
        """
        fresh = self.new_objects(objects)
        self.skipped_at = None

        # Objects sharing the page's last date_added are on this page, or on the pages before
        # it that ended at that same time.
        if date_added_last:
            if date_added_last != self.added_after:
                self.added_after = date_added_last
                self.delivered = set()
                self.past_added_after = False
            self.delivered.update(object_key(obj) for obj in objects)

        if more and next_value:
            self.next = str(next_value)
            return True
        self.next = None
        if not more:
            return False
        if not date_added_last:
            raise CursorError(f"the server set more without next or {DATE_ADDED_LAST}, so "
                              "paging cannot continue")

        # Nothing new although the page was full: the next larger request can reach past the
        # objects already delivered. A short page, or one at the cap, cannot.
        if not fresh and (len(objects) < self._requested_limit
                          or self._requested_limit >= self.max_limit):
            self.past_added_after = True
            self.skipped_at = date_added_last
        return True
