"""A minimal TAXII 2.1 collection on 127.0.0.1 for the sync tests.

It serves the collection resource and Get Objects of TAXII 2.1 with
``limit``, ``added_after``, ``next`` and ``match[type]``, the
``application/taxii+json;version=2.1`` media type and the ``X-TAXII-Date-Added-First`` and
``X-TAXII-Date-Added-Last`` headers. ``with_next=False`` makes it page like servers that set
``more: true`` but return no ``next``, so the client must continue with ``added_after``.
``max_page_size`` caps ``limit``, as TAXII 2.1 lets servers do. Objects sharing
a ``date_added`` keep the order they were added in.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MEDIA_TYPE = "application/taxii+json;version=2.1"


@dataclass
class TaxiiState:
    """Objects with their ``date_added``, paging mode and the queries received."""

    collection_id: str
    credentials: tuple[str, str]
    with_next: bool = True
    max_page_size: int = 1000
    entries: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    queries: list[dict[str, list[str]]] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, date_added: str, obj: dict[str, Any]) -> None:
        self.entries.append((date_added, obj))
        self.entries.sort(key=lambda entry: entry[0])


class _TaxiiHandler(BaseHTTPRequestHandler):
    server: "_TaxiiHttpServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        state = self.server.state
        parts = urlsplit(self.path)
        user, password = state.credentials
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        with state.lock:
            if self.headers.get("Authorization") != expected:
                self._send(401, {"title": "Unauthorized", "http_status": "401"}, {})
                return
            base = f"/api/collections/{state.collection_id}/"
            if parts.path == base:
                self._send(200, {"id": state.collection_id, "title": "indicators",
                                 "can_read": True, "can_write": False,
                                 "media_types": [MEDIA_TYPE]}, {})
            elif parts.path == base + "objects/":
                query = parse_qs(parts.query)
                state.queries.append(query)
                self._objects(state, query)
            else:
                self._send(404, {"title": "Not found", "http_status": "404"}, {})

    def _objects(self, state: TaxiiState, query: dict[str, list[str]]) -> None:
        limit = min(int(query.get("limit", ["100"])[0]), state.max_page_size)
        entries = state.entries
        if "match[type]" in query:
            wanted = query["match[type]"][0].split(",")
            entries = [e for e in entries if e[1]["type"] in wanted]
        start = 0
        if "next" in query:
            token = query["next"][0]
            if token not in state.cursors:
                self._send(400, {"title": "Unknown next value", "http_status": "400"}, {})
                return
            start = state.cursors.pop(token)
        elif "added_after" in query:
            after = query["added_after"][0]
            entries = [e for e in entries if e[0] > after]
        page = entries[start:start + limit]
        more = start + limit < len(entries)
        envelope: dict[str, Any] = {"more": more}
        if page:
            envelope["objects"] = [obj for _, obj in page]
        if more and state.with_next:
            token = f"cursor-{len(state.queries)}"
            state.cursors[token] = start + limit
            envelope["next"] = token
        headers = {}
        if page:
            headers = {"X-TAXII-Date-Added-First": page[0][0],
                       "X-TAXII-Date-Added-Last": page[-1][0]}
        self._send(200, envelope, headers)

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", MEDIA_TYPE)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _TaxiiHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: TaxiiState) -> None:
        super().__init__(("127.0.0.1", 0), _TaxiiHandler)
        self.state = state


class TaxiiServer:
    """Run the collection on a free port of 127.0.0.1; use as a context manager."""

    def __init__(self, collection_id: str, *, credentials: tuple[str, str],
                 with_next: bool = True) -> None:
        self.state = TaxiiState(collection_id=collection_id, credentials=credentials,
                                with_next=with_next)
        self._server = _TaxiiHttpServer(self.state)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def api_root(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/"

    def __enter__(self) -> "TaxiiServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
