"""TAXII error resources for the requests that the HTTP servers reject themselves.

Waitress (plain HTTP) and cheroot (TLS) reject some requests before the Flask application
sees them: a body past the server's own size cap, a malformed chunked body, oversized
headers. Both write those answers as ``text/plain``, but TAXII 2.1 requires its media type
and an error resource on every response. The classes here make each server write a TAXII
error resource instead, with an ``error_id`` that the hub logs along with the client address.

cheroot also reads a chunk-size line without a length limit, so a client could make it
buffer gigabytes. ``BoundedChunkedRFile`` reads that line up to ``MAX_CHUNK_LINE_BYTES`` and
reports a chunk past the size cap as ``MaxSizeExceeded``, which the application turns into
a 413.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from cheroot.errors import MaxSizeExceeded
from cheroot.server import ChunkedRFile, HTTPConnection, HTTPRequest, KnownLengthRFile
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from fusion_hub.taxii import TAXII_MEDIA_TYPE, drain_input, too_large_description

log = logging.getLogger(__name__)

# Maximum length of a chunk-size line, extensions included. The size itself takes at most 16 hex
# digits.
MAX_CHUNK_LINE_BYTES = 4096
# Trailer fields read after the last chunk, and dropped.
MAX_TRAILER_LINES = 100
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def error_body(status: int, title: str, description: str, error_id: str) -> bytes:
    """Return a TAXII 2.1 error resource (section 3.6.1) as JSON bytes."""
    return json.dumps({"title": title, "description": description, "error_id": error_id,
                       "http_status": str(status)}).encode("utf-8")


def _describe(status: int, detail: str, max_content_length: int) -> str:
    if status == 413:
        return too_large_description(max_content_length)
    return f"the HTTP server rejected the request: {detail}"


def _new_error_id() -> str:
    return uuid.uuid4().hex[:16]


# Waitress.

def taxii_channel(max_content_length: int) -> type[HTTPChannel]:
    """Return a waitress channel class that answers waitress's own errors in TAXII form."""

    class TaxiiErrorTask(ErrorTask):
        def execute(self) -> None:
            error = self.request.error
            error_id = _new_error_id()
            log.info("request %s from %s rejected by waitress: %d %s: %s", error_id,
                     self.channel.addr[0] if self.channel.addr else "-", error.code,
                     error.reason, error.body)
            body = error_body(error.code, error.reason,
                              _describe(error.code, error.body, max_content_length), error_id)
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", TAXII_MEDIA_TYPE))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class TaxiiChannel(HTTPChannel):
        error_task_class = TaxiiErrorTask

    return TaxiiChannel


# cheroot.

class BoundedChunkedRFile(ChunkedRFile):
    """cheroot's chunked body reader with a bounded chunk-size line and strict framing.

    Errors in the framing raise ``ValueError``, which Werkzeug turns into a client error. A
    chunk that would take the body past ``maxlen`` raises ``MaxSizeExceeded`` before it is
    read.
    """

    def _fetch(self) -> None:
        if self.closed:
            return
        size_text = self._read_line("chunk-size line").split(b";", 1)[0].strip()
        if not size_text or not set(size_text) <= _HEX_DIGITS or len(size_text) > 16:
            raise ValueError(f"invalid chunk size {size_text[:40]!r}")
        size = int(size_text, 16)
        if size == 0:
            self._skip_trailer()
            self.closed = True
            return
        if self.maxlen and self.bytes_read + size > self.maxlen:
            raise MaxSizeExceeded("Request Entity Too Large", self.maxlen)
        chunk = self.rfile.read(size)
        self.bytes_read += len(chunk)
        if len(chunk) < size:
            raise ValueError("the body ended inside a chunk")
        ending = self.rfile.read(2)
        self.bytes_read += len(ending)
        if ending != b"\r\n":
            raise ValueError(f"a chunk ends with {ending!r} instead of CRLF")
        self.buffer += chunk

    def _read_line(self, what: str) -> bytes:
        line = self.rfile.readline(MAX_CHUNK_LINE_BYTES + 1)
        self.bytes_read += len(line)
        if self.maxlen and self.bytes_read > self.maxlen:
            raise MaxSizeExceeded("Request Entity Too Large", self.maxlen)
        if not line.endswith(b"\n"):
            if len(line) > MAX_CHUNK_LINE_BYTES:
                raise ValueError(f"{what} longer than {MAX_CHUNK_LINE_BYTES} bytes")
            raise ValueError(f"the body ended inside a {what}")
        return line

    def _skip_trailer(self) -> None:
        for _ in range(MAX_TRAILER_LINES):
            if self._read_line("trailer line").strip() == b"":
                return
        raise ValueError(f"more than {MAX_TRAILER_LINES} trailer lines")


class _TaxiiRequest(HTTPRequest):
    # Set by taxii_connection().
    max_content_length = 0

    def respond(self) -> None:
        if not self.chunked_read:
            # A body over the cap gets 413 through simple_response below.
            super().respond()
            return
        self.rfile = BoundedChunkedRFile(self.conn.rfile, self.server.max_request_body_size)
        self.server.gateway(self).respond()
        if self.ready:
            self.ensure_headers_sent()
        if self.chunked_write:
            self.conn.wfile.write(b"0\r\n\r\n")

    def send_headers(self) -> None:
        # cheroot skips the unread rest of a Content-Length body, but not of a chunked one,
        # which it would then parse as the next request.
        if self.chunked_read and not self.rfile.closed:
            self.close_connection = True
        super().send_headers()

    def simple_response(self, status: Any, msg: Any = "") -> None:
        """Write cheroot's own error response as a TAXII error resource."""
        code_text, _, reason = str(status).partition(" ")
        code = int(code_text)
        detail = msg.decode("iso-8859-1") if isinstance(msg, bytes) else str(msg)
        error_id = _new_error_id()
        address = self.conn.remote_addr or "-"
        log.info("request %s from %s rejected by cheroot: %s: %s", error_id, address, status,
                 detail)
        if code == 413:
            self._drain_known_length(error_id, address)
        body = error_body(code, reason, _describe(code, detail, self.max_content_length),
                          error_id)
        head = [f"{self.server.protocol} {status}", f"Content-Length: {len(body)}",
                f"Content-Type: {TAXII_MEDIA_TYPE}"]
        if code in (413, 414):
            self.close_connection = True
            head.append("Connection: close")
        try:
            self.conn.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("iso-8859-1") + body)
        except OSError as err:
            log.info("request %s: could not send the %s to %s: %s", error_id, code, address,
                     err)

    def _drain_known_length(self, error_id: str, address: str) -> None:
        """Read the rest of a Content-Length body, so the client sees the 413, not a reset."""
        length = self.inheaders.get(b"Content-Length")
        if self.chunked_read or not length or not length.isdigit():
            return
        # A client that asked for 100 Continue has not sent the body and waits for an answer.
        if self.inheaders.get(b"Expect", b"").lower() == b"100-continue":
            return
        drain_input({"wsgi.input": KnownLengthRFile(self.conn.rfile, int(length)),
                     "REMOTE_ADDR": address}, error_id)


def taxii_connection(max_content_length: int) -> type[HTTPConnection]:
    """Return a cheroot connection class whose requests use the classes above."""

    class TaxiiRequest(_TaxiiRequest):
        pass

    TaxiiRequest.max_content_length = max_content_length

    class TaxiiConnection(HTTPConnection):
        RequestHandlerClass = TaxiiRequest

    return TaxiiConnection
