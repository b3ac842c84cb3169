"""TAXII error resources for the requests that the HTTP servers reject themselves.

Waitress (plain HTTP) and cheroot (TLS) reject some requests before the Flask application
runs: a body past the server's own size cap, a malformed chunked body, oversized headers.
Both write those responses as ``text/plain``, but TAXII 2.1 requires its media type and an
error resource on every response. The classes here make each server write a TAXII error
resource instead, with an ``error_id`` that the hub logs along with the client address.

cheroot also reads a chunk-size line without a length limit, so a client could make it
buffer gigabytes. ``BoundedChunkedRFile`` reads that line up to ``MAX_CHUNK_LINE_BYTES`` and
reports a chunk past the size cap as ``MaxSizeExceeded``, which the application turns into
a 413. ``_TaxiiRequest`` also bounds cheroot's headers and rejects an ambiguous body length.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from http import HTTPStatus
from typing import Any

from cheroot.errors import MaxSizeExceeded
from cheroot.server import (
    ChunkedRFile,
    HTTPConnection,
    HTTPRequest,
    HeaderReader,
    comma_separated_headers,
)
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError, get_header_lines
from waitress.task import ErrorTask

from fusion_hub.taxii import TAXII_MEDIA_TYPE, too_large_description

log = logging.getLogger(__name__)

# Maximum length of a chunk-size line, extensions included. The size itself takes at most 16 hex
# digits.
MAX_CHUNK_LINE_BYTES = 4096
# Maximum size of the request line and headers over TLS, waitress's default for plain HTTP.
MAX_HEADER_BYTES = 262144
# Trailer fields read after the last chunk, and dropped.
MAX_TRAILER_LINES = 100
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
# A field name is a token (RFC 9110 section 5.1).
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# How long the TLS server reads and drops a body that it rejected before the client sent it,
# and the longest wait for one read of it.
LINGER_SECS = 2.0
LINGER_READ_SECS = 0.5
# A Transfer-Encoding field line of a request head, for the value waitress does not keep.
_TRANSFER_ENCODING_LINE = re.compile(rb"transfer-encoding:(.*)", re.IGNORECASE | re.DOTALL)


def error_body(status: int, title: str, description: str, error_id: str) -> bytes:
    """Return a TAXII 2.1 error resource (section 3.6.1) as JSON bytes."""
    return json.dumps({"title": title, "description": description, "error_id": error_id,
                       "http_status": str(status)}).encode("utf-8")


def _describe(status: int, detail: str, max_content_length: int) -> str:
    # cheroot sends 413 for oversized headers too, with a message that names them.
    if status == 413 and "header" not in detail.lower():
        return too_large_description(max_content_length)
    if not detail.strip():
        return f"the HTTP server rejected the request with status {status}"
    return f"the HTTP server rejected the request: {detail}"


def _title(status: int, reason: str) -> str:
    """Return the standard reason phrase of ``status``, else the server's own."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return reason


def _new_error_id() -> str:
    return uuid.uuid4().hex[:16]


# Waitress.

class _StrictRequestParser(HTTPRequestParser):
    """Waitress's request parser, rejecting a body length that a proxy could read otherwise.

    Waitress reads Transfer-Encoding only in HTTP/1.1 and frames a request of any other
    version by its Content-Length, keeping the connection. RFC 9112 section 6.1 calls that
    framing faulty. In HTTP/1.1 waitress lets chunked framing override a Content-Length and
    keeps the connection too, where the RFC requires a close. A proxy in front that reads
    the other header would see another request boundary, so both get 400. So does a
    Transfer-Encoding other than a single ``chunked``: waitress frames ``chunked, chunked``
    as chunked once and an empty value by the Content-Length.

    A Content-Length over ``max_content_length`` still gets 100 Continue here, and its 413
    after the body, which waitress reads in its event loop, outside the request threads.
    A 413 first, as on the TLS server, closed the connection with the body of a client that
    sends it without waiting unread, and the reset that followed could lose the 413.
    """

    def received(self, data: bytes) -> int:
        consumed: int = super().received(data)
        # Waitress sends 100 Continue to a request that expects it as soon as the headers are
        # read, even to one that it has rejected or that has no body, and then waits for a
        # body before it responds. Where none comes, it never responds.
        if self.error is not None or self.completed:
            self.expect_continue = False
        return consumed

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        # Expect and Connection are list fields, and waitress joins repeated lines into one
        # value, which it then compares with "100-continue" or "close" as a whole.
        if self.version == "1.1":
            expectations = self.headers.get("EXPECT", "").lower().split(",")
            self.expect_continue = any(item.strip(" \t") == "100-continue"
                                       for item in expectations)
        options = self.headers.get("CONNECTION", "").lower().split(",")
        if any(option.strip(" \t") == "close" for option in options):
            # Waitress's task reads the header again when it writes the response.
            self.headers["CONNECTION"] = "close"
            self.connection_close = True
        if self.version != "1.1" and "TRANSFER_ENCODING" in self.headers:
            raise ParsingError(f"Transfer-Encoding is not allowed in an HTTP/{self.version} "
                               "request")
        # The lines as waitress reads them, with folded lines joined to the line before.
        lines = get_header_lines(header_plus.partition(b"\r\n")[2])
        codings = [coding.strip(b" \t").lower()
                   for line in lines if (field := _TRANSFER_ENCODING_LINE.fullmatch(line))
                   for coding in field.group(1).split(b",")]
        if codings and codings != [b"chunked"]:
            raise ParsingError("Transfer-Encoding must be chunked alone; got "
                               f"{b', '.join(codings)[:60]!r}")
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            raise ParsingError("a request may carry Content-Length or Transfer-Encoding: "
                               "chunked, not both")


def taxii_channel(max_content_length: int) -> type[HTTPChannel]:
    """Return a waitress channel class that writes waitress's own errors in TAXII form."""

    class TaxiiErrorTask(ErrorTask):
        def execute(self) -> None:
            error = self.request.error
            error_id = _new_error_id()
            log.info("request %s from %s rejected by waitress: %d %s: %s", error_id,
                     self.channel.addr[0] if self.channel.addr else "-", error.code,
                     error.reason, error.body)
            body = error_body(error.code, _title(error.code, error.reason),
                              _describe(error.code, error.body, max_content_length), error_id)
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", TAXII_MEDIA_TYPE))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class TaxiiChannel(HTTPChannel):
        error_task_class = TaxiiErrorTask
        parser_class = _StrictRequestParser

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
        # Whitespace may come before an extension, not before the size.
        size_text = self._read_line("chunk-size line").split(b";", 1)[0].rstrip(b" \t\r\n")
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

    def _read_line(self, part: str) -> bytes:
        line = self.rfile.readline(MAX_CHUNK_LINE_BYTES + 1)
        self.bytes_read += len(line)
        if self.maxlen and self.bytes_read > self.maxlen:
            raise MaxSizeExceeded("Request Entity Too Large", self.maxlen)
        if not line.endswith(b"\n"):
            if len(line) > MAX_CHUNK_LINE_BYTES:
                raise ValueError(f"{part} longer than {MAX_CHUNK_LINE_BYTES} bytes")
            raise ValueError(f"the body ended inside a {part}")
        return line

    def _skip_trailer(self) -> None:
        for _ in range(MAX_TRAILER_LINES):
            if self._read_line("trailer line").strip() == b"":
                return
        raise ValueError(f"more than {MAX_TRAILER_LINES} trailer lines")


class _StrictHeaderReader(HeaderReader):
    """cheroot's header reader, with the checks of RFC 9112 section 5 that it leaves out.

    It rejects folded lines, a field name that is not a token (whitespace before the
    colon included), NUL or CR in a value and a second Content-Length. Like cheroot's
    reader it raises ``ValueError``, for which cheroot sends 400.

    It also takes the Expect header out of the headers and sets ``expect_continue``, so that
    the request sends 100 Continue itself, after its own checks (see ``_TaxiiRequest``).
    Each request has a reader of its own for that.
    """

    def __init__(self) -> None:
        self.expect_continue = False

    def __call__(self, rfile: Any, hdict: dict[bytes, bytes] | None = None) -> dict[bytes, bytes]:
        headers: dict[bytes, bytes] = {} if hdict is None else hdict
        while True:
            line = rfile.readline()
            if line == b"\r\n":
                # A list field: repeated lines arrive joined by commas.
                expectations = headers.pop(b"Expect", b"").lower().split(b",")
                self.expect_continue = any(item.strip(b" \t") == b"100-continue"
                                           for item in expectations)
                return headers
            if not line:
                raise ValueError("the connection closed inside the headers")
            if not line.endswith(b"\r\n"):
                raise ValueError("header lines must end with CRLF")
            if line[:1] in (b" ", b"\t"):
                raise ValueError("folded header lines are not accepted")
            name, colon, value = line[:-2].partition(b":")
            if not colon or _TOKEN.fullmatch(name) is None:
                raise ValueError(f"invalid header line {line[:60]!r}")
            if b"\x00" in value or b"\r" in value:
                raise ValueError(f"header {name[:60]!r} contains NUL or CR")
            key = name.title()
            value = value.strip(b" \t")
            if key == b"Content-Length" and key in headers:
                raise ValueError("more than one Content-Length header")
            if key == b"Transfer-Encoding" and not value:
                # cheroot's rule replaces an empty value with a later one, which would hide it.
                raise ValueError("empty Transfer-Encoding header")
            if key in comma_separated_headers and headers.get(key):
                value = headers[key] + b", " + value
            headers[key] = value


class _TaxiiRequest(HTTPRequest):
    # Set by taxii_connection().
    max_content_length = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_reader = _StrictHeaderReader()
        # Status of the error response that simple_response sent, if any.
        self.rejected_status: int | None = None

    def read_request_headers(self) -> bool:
        """Read the headers as cheroot does, rejecting an ambiguous body length with 400.

        cheroot reads signs and spaces in a Content-Length, and honours one that comes with
        chunked framing. A proxy in front that reads the length another way would see
        another request boundary. A second Content-Length is rejected by the header reader.

        cheroot would send 100 Continue before these checks, so a client sent a body that
        the next check rejected. It also sent 100 Continue to HTTP/1.0 clients, which
        RFC 9110 section 10.1.1 forbids. The 100 Continue is sent here instead, last, and a
        Content-Length over ``max_content_length`` gets 413 in its place.
        """
        if not super().read_request_headers():
            length = self.inheaders.get(b"Content-Length", b"")
            if self.rejected_status == 413 and length.isdigit():
                # cheroot sent its own 413 for a body over its cap, before any of it was read.
                self._discard_sent_body(int(length))
            return False
        if not self._check_body_framing():
            return False
        # Connection is a list field. cheroot closes only for a value of exactly "close".
        options = self.inheaders.get(b"Connection", b"").lower().split(b",")
        if any(option.strip(b" \t") == b"close" for option in options):
            self.close_connection = True
        if not self.header_reader.expect_continue or self.response_protocol != "HTTP/1.1":
            return True
        length = int(self.inheaders.get(b"Content-Length", b"0"))
        if length > self.max_content_length:
            # The hub would reject the body after reading it, so the client need not send it.
            self.simple_response("413 Request Entity Too Large")
            self.close_connection = True
            self._discard_sent_body(length)
            return False
        if length == 0 and not self.chunked_read:
            # No body to wait for, so the final response is the only one.
            return True
        try:
            self.conn.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        except OSError as err:
            log.info("failed to send 100 Continue to %s: %s", self.conn.remote_addr, err)
            self.close_connection = True
            return False
        return True

    def _discard_sent_body(self, length: int) -> None:
        """Read and drop the body that a client sends without waiting, for a short while.

        RFC 9110 lets a client send its body without waiting for 100 Continue. Closing the
        connection with that body unread makes the kernel reset it, and the client may then
        lose the 413 before it reads it. Each read waits at most ``LINGER_READ_SECS``, and
        none starts after ``LINGER_SECS``, so the rejected request keeps the thread for at most
        ``LINGER_SECS`` plus one read.
        """
        deadline = time.monotonic() + LINGER_SECS
        remaining = length
        try:
            self.conn.socket.settimeout(LINGER_READ_SECS)
            while remaining > 0 and time.monotonic() < deadline:
                data = self.conn.rfile.read1(min(remaining, 65536))
                if not data:
                    return
                remaining -= len(data)
        except OSError as err:
            log.debug("stopped reading a rejected body from %s: %s", self.conn.remote_addr,
                      err)

    def _check_body_framing(self) -> bool:
        """Send 400 and return False for a body length that a proxy could read otherwise."""
        coding = self.inheaders.get(b"Transfer-Encoding")
        if coding is not None:
            # cheroot ignores Transfer-Encoding in HTTP/1.0, strips more than whitespace from
            # it and accepts an empty or repeated value. The hub reads chunked bodies only.
            if self.response_protocol != "HTTP/1.1" or coding.lower() != b"chunked":
                self.simple_response("400 Bad Request", "Transfer-Encoding must be chunked, "
                                     f"in an HTTP/1.1 request; got {coding[:60]!r}")
                self.close_connection = True
                return False
        length = self.inheaders.get(b"Content-Length")
        if length is None:
            return True
        if not length.isdigit():
            self.simple_response("400 Bad Request",
                                 f"Content-Length must be a decimal number; got {length!r}")
            return False
        if self.chunked_read:
            self.simple_response("400 Bad Request", "a request may carry Content-Length or "
                                 "Transfer-Encoding: chunked, not both")
            return False
        return True

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
        self.rejected_status = code
        detail = msg.decode("iso-8859-1") if isinstance(msg, bytes) else str(msg)
        error_id = _new_error_id()
        address = self.conn.remote_addr or "-"
        log.info("request %s from %s rejected by cheroot: %s: %s", error_id, address, status,
                 detail)
        # No drain here, unlike after the application's 413: where cheroot sends one before
        # the body, read_request_headers reads what arrives for a bounded time instead.
        body = error_body(code, _title(code, reason),
                          _describe(code, detail, self.max_content_length), error_id)
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


def taxii_connection(max_content_length: int) -> type[HTTPConnection]:
    """Return a cheroot connection class whose requests use the classes above."""

    class TaxiiRequest(_TaxiiRequest):
        pass

    TaxiiRequest.max_content_length = max_content_length

    class TaxiiConnection(HTTPConnection):
        RequestHandlerClass = TaxiiRequest

    return TaxiiConnection
