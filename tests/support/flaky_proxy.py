"""An HTTP proxy on 127.0.0.1 that fails chosen requests before it forwards the rest to a hub.

Tests of retries put it between an agent and a real hub. Each planned failure is used once,
by the next request with its method, and is a status code (sent with a ``Retry-After``
header when it is 429) or ``"reset"``, which closes the connection without a response.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

# Headers not passed on: hop-by-hop ones, and those that the forwarding request sets itself.
_SKIPPED_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


class FlakyProxy:
    """Forward requests to ``target`` (a base URL like ``http://127.0.0.1:8000``), failing planned ones.

    ``failures`` lists (method, failure) pairs, or (method, failure, count) for a failure that
    repeats; ``count`` None repeats it for every later request with that method.
    """

    def __init__(self, target: str, failures: Iterable[tuple[str, int | str] | tuple[str, int | str, int | None]],
                 *, retry_after: str = "0") -> None:
        self.target = target.rstrip("/")
        self.retry_after = retry_after
        self._plan: list[list[object]] = [[item[0], item[1], item[2] if len(item) > 2 else 1] for item in failures]
        self._lock = threading.Lock()
        self.failed: list[tuple[str, str, int | str]] = []
        self.forwarded: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._handle(self)

            def do_POST(self) -> None:
                proxy._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next_failure(self, method: str) -> int | str | None:
        with self._lock:
            for entry in self._plan:
                if entry[0] == method and (entry[2] is None or int(entry[2]) > 0):
                    if entry[2] is not None:
                        entry[2] = int(entry[2]) - 1
                    return entry[1]  # type: ignore[return-value]
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        failure = self._next_failure(handler.command)

        if failure is not None:
            with self._lock:
                self.failed.append((handler.command, handler.path, failure))
            if failure == "reset":
                handler.close_connection = True
                return
            handler.send_response(int(failure))
            handler.send_header("Content-Type", "application/taxii+json;version=2.1")
            if failure == 429:
                handler.send_header("Retry-After", self.retry_after)
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"{}")
            return

        with self._lock:
            self.forwarded.append((handler.command, handler.path))
        # The Host header stays the proxy's, so the hub's discovery resource names the proxy.
        headers = {name: value for name, value in handler.headers.items() if name.lower() not in _SKIPPED_HEADERS}
        response = requests.request(handler.command, self.target + handler.path, headers=headers, data=body,
                                    timeout=30)
        handler.send_response(response.status_code)
        for name, value in response.headers.items():
            if name.lower() not in _SKIPPED_HEADERS | {"content-encoding", "server", "date"}:
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(response.content)))
        handler.end_headers()
        handler.wfile.write(response.content)
