"""Serve the agent's metrics over HTTP for Prometheus to scrape.

The text is rendered by the agent's loop and handed over whole, so the server thread never
reads counters the loop is changing. Only ``GET /metrics`` is served. The address is
checked by the configuration loader: loopback unless ``metrics.allow_non_loopback`` is set.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE", "MetricsServer"]

# The Prometheus text exposition format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsServer:
    """An HTTP server in a background thread that returns the latest metrics text.

    Parameters
    ----------
    address : str
        IP address to listen on.
    port : int
        TCP port; 0 lets the system pick one, which :attr:`port` then holds.

    Raises
    ------
    OSError
        If the address cannot be bound, for example because the port is taken.
    """

    def __init__(self, address: str, port: int) -> None:
        self._text = b""
        server_class = _IPv6Server if ipaddress.ip_address(address).version == 6 else ThreadingHTTPServer
        self._server = server_class((address, port), self._handler_class())
        self._server.daemon_threads = True
        self.address = address
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="fti-agent-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("serving metrics at http://%s/metrics", _host_port(self.address, self.port))

    def update(self, text: str) -> None:
        """Replace the text served from now on."""
        self._text = text.encode("utf-8")

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = server._text
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base signature
                # One line per scrape would drown the agent's log. Failures still reach log_error.
                return

            def log_error(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("metrics request from %s: " + format, self.client_address[0], *args)

        return Handler


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
