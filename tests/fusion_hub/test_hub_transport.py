"""Requests that the HTTP servers reject before the application runs.

Each rejection must be a TAXII error resource, and cheroot must read chunked bodies with
bounded lines. Each case runs against waitress (plain HTTP) and cheroot (HTTPS) on 127.0.0.1,
over a raw socket so that the test controls the framing byte by byte.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import io
import json
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cheroot.errors import MaxSizeExceeded

from fusion_hub.transport import MAX_CHUNK_LINE_BYTES, MAX_TRAILER_LINES, BoundedChunkedRFile
from stix_mappings.ids import collection_id
from tests.fusion_hub.hub_testing import TAXII, enroll, make_config, running_hub
from tests.fusion_hub.test_hub_tls import Pki, pki, tls_config  # noqa: F401 (fixture)

LIMIT = 4096


@dataclass
class Target:
    scheme: str
    port: int
    head: str
    context: ssl.SSLContext | None


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    rest: bytes
    closed: bool

    def error(self) -> dict[str, str]:
        return json.loads(self.body)


@contextmanager
def started_target(scheme: str, tmp_path: Path, pki: Pki, limit: int) -> Iterator[Target]:
    """Start a hub over ``scheme`` with ``max_content_length`` set to ``limit``."""
    config = make_config(tmp_path) if scheme == "http" else tls_config(tmp_path, pki)
    config = dataclasses.replace(config, hub=dataclasses.replace(
        config.hub, max_content_length_bytes=limit))
    context = None
    if scheme == "https":
        context = ssl.create_default_context(cafile=str(pki.ca_file))
    with running_hub(config) as hub:
        site = enroll(hub, "site-a")
        port = int(hub.base_url.rsplit(":", 1)[1])
        path = hub.api_root_url.split(str(port), 1)[1]
        token = base64.b64encode(":".join(site.auth).encode()).decode()
        head = (f"POST {path}collections/{collection_id('summaries')}/objects/ HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nAuthorization: Basic {token}\r\nAccept: {TAXII}\r\n"
                f"Content-Type: {TAXII}\r\n")
        yield Target(scheme, port, head, context)


@pytest.fixture(params=["http", "https"])
def target(request: pytest.FixtureRequest, tmp_path: Path, pki: Pki) -> Iterator[Target]:
    with started_target(request.param, tmp_path, pki, LIMIT) as started:
        yield started


def exchange(target: Target, *parts: bytes, wait_secs: float = 10.0) -> Answer:
    """Send ``parts`` on one connection and read until the server closes it or goes quiet."""
    raw = socket.create_connection(("127.0.0.1", target.port), timeout=wait_secs)
    sock = target.context.wrap_socket(raw, server_hostname="127.0.0.1") if target.context \
        else raw
    received = b""
    closed = False
    with sock:
        for part in parts:
            try:
                sock.sendall(part)
            except OSError:
                # The server may respond and close before it has read everything.
                break
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except (ssl.SSLError, ConnectionResetError):
                closed = True
                break
            if not data:
                closed = True
                break
            received += data
    head, _, after = received.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int(headers.get("Content-Length", len(after)))
    return Answer(int(lines[0].split()[1]), headers, after[:length], after[length:], closed)


def assert_taxii_error(answer: Answer, status: int) -> dict[str, str]:
    assert answer.status == status
    assert answer.headers["Content-Type"] == TAXII
    error = answer.error()
    assert error["http_status"] == str(status)
    assert len(error["error_id"]) == 16
    return error


def test_content_length_over_server_cap(target: Target,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """A body far above max_content_length hits the server's own cap and gets a TAXII 413."""
    size = 100 * LIMIT
    with caplog.at_level(logging.INFO, logger="fusion_hub.transport"):
        answer = exchange(target, (target.head + f"Content-Length: {size}\r\n\r\n").encode(),
                          b"x" * size)

    error = assert_taxii_error(answer, 413)
    assert error["description"] == (f"the request body is larger than max_content_length "
                                    f"({LIMIT} bytes); send fewer objects per request")
    assert answer.closed
    assert answer.rest == b""
    logged = [message for message in caplog.messages if error["error_id"] in message]
    assert len(logged) == 1
    assert "from 127.0.0.1" in logged[0]


def test_expect_continue_over_cap_answered_at_once(target: Target) -> None:
    """A client that waits for 100 Continue gets the 413 without sending its body."""
    head = target.head + f"Content-Length: {100 * LIMIT}\r\nExpect: 100-continue\r\n\r\n"
    answer = exchange(target, head.encode(), wait_secs=2.0)

    assert_taxii_error(answer, 413)
    assert answer.closed


def test_expect_continue_answered_with_100(target: Target) -> None:
    body = b'{"objects": []}'
    head = (target.head + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n"
            "Connection: close\r\n\r\n")
    answer = exchange(target, head.encode(), body)

    # The 100 Continue comes first, then the final response to the body.
    assert answer.status == 100
    assert answer.body.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("start", ["POST {path} HTTP/1.1", "GET {path} HTTP/1.1",
                                   "DELETE {path}indicator--0 HTTP/1.1"],
                         ids=["post", "get", "delete"])
def test_expect_continue_without_body_answered(target: Target, start: str) -> None:
    """A request with nothing to send after its headers gets its response at once."""
    first, rest = target.head.split("\r\n", 1)
    path = first.split()[1]
    head = (start.format(path=path) + "\r\n" + rest
            + "Content-Length: 0\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
    answer = exchange(target, head.encode(), wait_secs=3.0)

    assert answer.status >= 200
    assert answer.closed


def test_expect_continue_over_max_content_length(target: Target) -> None:
    """Below the server's cap but above the hub's limit: 413 before the body, no 100."""
    if target.scheme == "http":
        pytest.skip("waitress reads the body in its event loop and sends the 413 after it")
    head = target.head + f"Content-Length: {LIMIT + 10}\r\nExpect: 100-continue\r\n\r\n"
    answer = exchange(target, head.encode(), wait_secs=3.0)

    error = assert_taxii_error(answer, 413)
    assert error["description"] == (f"the request body is larger than max_content_length "
                                    f"({LIMIT} bytes); send fewer objects per request")
    assert answer.closed


def post_at_once(target: Target, body: bytes, *, expect: bool) -> tuple[int, bytes]:
    """POST ``body`` with http.client, which sends it without waiting for 100 Continue."""
    first, rest = target.head.split("\r\n", 1)
    headers = dict(line.split(": ", 1) for line in rest.split("\r\n") if line)
    if expect:
        headers["Expect"] = "100-continue"
    if target.context is None:
        conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", target.port, timeout=10,
                                           context=target.context)
    try:
        conn.request("POST", first.split()[1], body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_413_read_by_client_not_waiting(scheme: str, tmp_path: Path, pki: Pki) -> None:
    """A client that sends a large body at once, as RFC 9110 allows, still reads the 413.

    Over TLS that is true above the server's own cap too. Waitress closes at once there.
    """
    limit = 1024 * 1024
    cap = 2 * limit + 65536
    sizes = [limit + 1, cap] + ([cap + 1, 3 * cap] if scheme == "https" else [])
    with started_target(scheme, tmp_path, pki, limit) as large:
        for size in sizes:
            for expect in (True, False):
                status, body = post_at_once(large, b"x" * size, expect=expect)

                assert status == 413, (size, expect)
                assert json.loads(body)["http_status"] == "413"


def test_expect_continue_repeated_lines(target: Target) -> None:
    """Expect is a list: two lines of 100-continue still get 100 Continue."""
    body = b'{"objects": []}'
    head = (target.head + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n"
            "Expect: 100-continue\r\nConnection: close\r\n\r\n")
    answer = exchange(target, head.encode(), body, wait_secs=3.0)

    assert answer.status == 100
    assert answer.body.startswith(b"HTTP/1.1 400 ")


def test_expect_continue_ignored_in_http10(target: Target) -> None:
    """RFC 9110 section 10.1.1: an HTTP/1.0 request never gets 100 Continue."""
    body = b'{"objects": []}'
    head = (target.head.replace(" HTTP/1.1\r\n", " HTTP/1.0\r\n", 1)
            + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n")
    answer = exchange(target, head.encode(), body)

    assert answer.status == 400
    assert b"100 Continue" not in answer.body + answer.rest


@pytest.mark.parametrize("value", ["+15", "1_5"])
def test_expect_continue_invalid_length_answered(target: Target, value: str) -> None:
    """A rejected request that expects 100 Continue gets its 400 instead, and no 100."""
    head = target.head + f"Content-Length: {value}\r\nExpect: 100-continue\r\n\r\n"
    answer = exchange(target, head.encode(), wait_secs=2.0)

    error = assert_taxii_error(answer, 400)
    assert "Content-Length" in error["description"]
    assert answer.closed


def test_single_chunk_over_server_cap(target: Target) -> None:
    size = 256 * LIMIT
    answer = exchange(target, (target.head + "Transfer-Encoding: chunked\r\n\r\n").encode(),
                      f"{size:x}\r\n".encode(), b"x" * size, b"\r\n0\r\n\r\n")

    error = assert_taxii_error(answer, 413)
    assert f"max_content_length ({LIMIT} bytes)" in error["description"]
    assert answer.rest == b""


def test_invalid_chunk_size(target: Target) -> None:
    answer = exchange(target, (target.head + "Transfer-Encoding: chunked\r\n\r\n").encode(),
                      b"zz\r\nx\r\n0\r\n\r\n")

    error = assert_taxii_error(answer, 400)
    assert "chunk size" in error["description"].lower()
    assert answer.closed
    assert answer.rest == b""


def test_endless_chunk_size_line(target: Target) -> None:
    """A chunk-size line without an end is rejected once it passes a bound, not buffered."""
    answer = exchange(target, (target.head + "Transfer-Encoding: chunked\r\n\r\n").encode(),
                      b"0" * (25 * LIMIT))

    if target.scheme == "https":
        error = assert_taxii_error(answer, 400)
        assert error["description"] == ("the request body could not be read: chunk-size line "
                                        f"longer than {MAX_CHUNK_LINE_BYTES} bytes")
    else:
        # Waitress counts the line against its body cap, twice max_content_length plus 64 KiB.
        assert_taxii_error(answer, 413)
    assert answer.closed


def test_unread_chunked_body_closes_connection(target: Target) -> None:
    """After a response that left a chunked body unread, the rest is not read as a request."""
    if target.scheme == "http":
        pytest.skip("waitress reads every body whole before the application runs")
    head = target.head.replace("Authorization", "X-Not-Authorization")
    answer = exchange(target, (head + "Transfer-Encoding: chunked\r\n\r\n").encode(),
                      b"5\r\nhello\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    assert_taxii_error(answer, 401)
    assert answer.headers["Connection"] == "close"
    assert answer.closed
    assert answer.rest == b""


def test_chunked_body_read_keeps_connection(target: Target) -> None:
    """A chunked body read to its end leaves the connection open for the next request."""
    body = b'{"objects": []}'
    answer = exchange(target, (target.head + "Transfer-Encoding: chunked\r\n\r\n").encode(),
                      f"{len(body):x};ext=1\r\n".encode(), body,
                      b"\r\n0\r\nX-Trailer: 1\r\n\r\n", wait_secs=1.0)

    error = assert_taxii_error(answer, 400)
    assert "objects" in error["description"]
    assert answer.closed is False


def read_all(framed: bytes, maxlen: int = 0) -> tuple[bytes, io.BytesIO]:
    source = io.BytesIO(framed)
    return BoundedChunkedRFile(source, maxlen).read(), source


def test_chunk_reader_extensions_and_trailer() -> None:
    data, source = read_all(b"3 ;name=value\r\nabc\r\n1\r\nd\r\n0\r\nA: 1\r\nB: 2\r\n\r\nNEXT")

    assert data == b"abcd"
    assert source.read() == b"NEXT"


@pytest.mark.parametrize(("framed", "message"), [
    (b"+3\r\nabc\r\n0\r\n\r\n", "invalid chunk size b'+3'"),
    (b" 3\r\nabc\r\n0\r\n\r\n", "invalid chunk size b' 3'"),
    (b"1_0\r\nabc\r\n0\r\n\r\n", "invalid chunk size b'1_0'"),
    (b"\r\nabc\r\n", "invalid chunk size b''"),
    (b"1" + b"0" * 16 + b"\r\n", "invalid chunk size"),
    (b"3\r\nabcXY0\r\n\r\n", "a chunk ends with b'XY' instead of CRLF"),
    (b"5\r\nabc", "the body ended inside a chunk"),
    (b"3\r\nab", "the body ended inside a chunk"),
    (b"3", "the body ended inside a chunk-size line"),
    (b"0\r\n" + b"A: 1\r\n" * (MAX_TRAILER_LINES + 1) + b"\r\n",
     f"more than {MAX_TRAILER_LINES} trailer lines"),
])
def test_chunk_reader_rejects_framing(framed: bytes, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        read_all(framed)

    assert message in str(excinfo.value)


def test_chunk_reader_bounds_size_line() -> None:
    with pytest.raises(ValueError) as excinfo:
        read_all(b"0" * (10 * MAX_CHUNK_LINE_BYTES))

    assert str(excinfo.value) == f"chunk-size line longer than {MAX_CHUNK_LINE_BYTES} bytes"


def test_chunk_reader_rejects_chunk_past_cap_unread() -> None:
    reader = BoundedChunkedRFile(io.BytesIO(b"64\r\n" + b"x" * 100 + b"\r\n0\r\n\r\n"), 50)

    with pytest.raises(MaxSizeExceeded):
        reader.read()

    assert reader.bytes_read == 4


@pytest.mark.parametrize("lengths", [("15", "0"), ("15", "15")], ids=["differ", "same"])
def test_repeated_content_length_rejected(target: Target, lengths: tuple[str, str]) -> None:
    """Two Content-Length headers are refused, not resolved, so no smuggled request runs."""
    smuggled = b"GET /taxii2/ HTTP/1.1\r\nHost: x\r\n\r\n"
    head = target.head + "".join(f"Content-Length: {n}\r\n" for n in lengths) + "\r\n"
    answer = exchange(target, head.encode() + smuggled[:15] + smuggled[15:])

    error = assert_taxii_error(answer, 400)
    assert "Content-Length" in error["description"]
    assert answer.closed
    assert answer.rest == b""


@pytest.mark.parametrize("value", ["+15", "1_5", " 0x1"])
def test_malformed_content_length_rejected(target: Target, value: str) -> None:
    answer = exchange(target, (target.head + f"Content-Length: {value}\r\n\r\n").encode()
                      + b"x" * 15)

    error = assert_taxii_error(answer, 400)
    assert "Content-Length" in error["description"]
    assert answer.closed


def test_length_and_chunked_together_rejected(target: Target) -> None:
    head = target.head + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = exchange(target, head.encode(), b"0\r\n\r\n")

    error = assert_taxii_error(answer, 400)
    assert answer.closed
    assert answer.rest == b""
    assert error["description"]


def test_endless_header_line_rejected(target: Target) -> None:
    """A header line without an end is rejected once it passes 256 KiB, not buffered."""
    answer = exchange(target, (target.head + "X-Pad: ").encode(), b"a" * (300 * 1024))

    assert answer.status in (413, 431)
    error = assert_taxii_error(answer, answer.status)
    assert "header" in error["description"].lower()
    assert answer.closed


def test_unknown_transfer_coding_titled(target: Target) -> None:
    answer = exchange(target, (target.head + "Transfer-Encoding: gzip\r\n\r\n").encode())

    error = assert_taxii_error(answer, 501)
    assert error["title"] == "Not Implemented"
    assert error["description"].startswith("the HTTP server rejected the request")
    assert answer.closed


def test_silent_chunk_over_cap_answered_at_once(target: Target) -> None:
    """A chunk declared past the cap gets its 413 without waiting for the chunk's data."""
    if target.scheme == "http":
        pytest.skip("waitress counts a chunk against its cap as the data arrives, in its "
                    "event loop, so no worker waits")
    head = target.head + "Transfer-Encoding: chunked\r\n\r\n"
    answer = exchange(target, head.encode(), f"{256 * LIMIT:x}\r\n".encode(), wait_secs=3.0)

    assert_taxii_error(answer, 413)
    assert answer.closed


@pytest.mark.parametrize("line", ["Content-Length : 15", "X-Note: a\r\n folded",
                                  "X-Note: a\x00b", ": no name"],
                         ids=["space-before-colon", "folded", "nul", "empty-name"])
def test_malformed_header_line_rejected(target: Target, line: str) -> None:
    """Header lines that RFC 9112 section 5 forbids get 400, not a guess at their meaning."""
    if target.scheme == "http" and "\r\n " in line:
        pytest.skip("waitress unfolds a folded line into one, which RFC 9112 also allows")
    answer = exchange(target, (target.head + line + "\r\n\r\n").encode("latin-1") + b"x" * 15)

    assert_taxii_error(answer, 400)
    assert answer.closed
    assert answer.rest == b""


@pytest.mark.parametrize("version", ["1.0", "1.2"])
def test_transfer_encoding_outside_http11_rejected(target: Target, version: str) -> None:
    """Only HTTP/1.1 has chunked framing, so a Transfer-Encoding elsewhere is faulty framing."""
    smuggled = b"GET /taxii2/ HTTP/1.1\r\nHost: x\r\n\r\n"
    chunk = f"{len(smuggled):x}\r\n".encode() + smuggled + b"\r\n0\r\n\r\n"
    head = (target.head.replace("HTTP/1.1", f"HTTP/{version}")
            + "Connection: Keep-Alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n")
    answer = exchange(target, head.encode() + chunk)

    # cheroot responds with 505 to a version it does not serve.
    assert answer.status == (505 if (target.scheme, version) == ("https", "1.2") else 400)
    assert_taxii_error(answer, answer.status)
    assert answer.closed
    assert answer.rest == b""


@pytest.mark.parametrize("name", [b"Content-Length\x0b", b"Content-Length\x00",
                                  b"Content-Length\xa0", b"Content\x0cLength"])
def test_header_name_not_token_rejected(target: Target, name: bytes) -> None:
    answer = exchange(target, target.head.encode() + name + b": 4\r\n\r\nabcd"
                      + b"GET /taxii2/ HTTP/1.1\r\nHost: x\r\n\r\n")

    assert_taxii_error(answer, 400)
    assert answer.closed
    assert answer.rest == b""


@pytest.mark.parametrize("lines", ["Connection:\r\nConnection: close",
                                   "Connection: keep-alive, close", "Connection: Close",
                                   "Connection: close\r\nConnection:"],
                         ids=["empty-then-close", "list", "case", "close-then-empty"])
def test_close_anywhere_in_connection_list(target: Target, lines: str) -> None:
    """RFC 9112 section 9.6: a "close" option anywhere in Connection ends the connection."""
    body = b'{"objects": []}'
    head = target.head + f"Content-Length: {len(body)}\r\n{lines}\r\n\r\n"
    answer = exchange(target, head.encode(), body, wait_secs=5.0)

    assert answer.status == 400
    assert answer.closed


def test_bad_header_line_closes_at_once(target: Target) -> None:
    """Only a 413 makes the TLS server read on. A 400 closes without waiting."""
    head = target.head + "Content-Length: 10000000\r\nBad Header: x\r\n\r\n"
    started = time.monotonic()
    answer = exchange(target, head.encode(), wait_secs=5.0)

    assert_taxii_error(answer, 400)
    assert answer.closed
    assert time.monotonic() - started < 0.4


def test_chunked_applied_twice_rejected(target: Target) -> None:
    """RFC 9112 section 6.1: chunked may be applied to a body only once."""
    head = target.head.encode() + b"Transfer-Encoding: chunked, chunked\r\n\r\n"
    answer = exchange(target, head + b"5\r\n0\r\n\r\n\r\n0\r\n\r\n")

    assert_taxii_error(answer, 400)
    assert answer.closed
    assert answer.rest == b""


@pytest.mark.parametrize("lines", [b"Transfer-Encoding:\r\nTransfer-Encoding: chunked\r\n",
                                   b"Transfer-Encoding: chunked\r\n , chunked\r\n"],
                         ids=["empty-then-chunked", "folded"])
def test_transfer_encoding_over_lines_rejected(target: Target, lines: bytes) -> None:
    """Values split over lines are read together, as the servers frame them."""
    answer = exchange(target, target.head.encode() + lines + b"\r\n0\r\n\r\n")

    assert_taxii_error(answer, 400)
    assert answer.closed


@pytest.mark.parametrize("coding", [b"chunked, chunked", b"\x0bchunked", b"chunked\x0c", b"",
                                    b",", b"gzip, chunked"])
def test_transfer_encoding_other_than_chunked_rejected(target: Target, coding: bytes) -> None:
    head = target.head.encode() + b"Transfer-Encoding: " + coding + b"\r\nContent-Length: 4\r\n\r\n"
    answer = exchange(target, head + b"0\r\n\r\n")

    assert answer.status in (400, 501)
    assert_taxii_error(answer, answer.status)
    assert answer.closed
    assert answer.rest == b""


def test_tls_close_mid_body_logged_quietly(target: Target, caplog: pytest.LogCaptureFixture,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    """A TLS client that drops its connection inside a body leaves one line and no traceback."""
    if target.scheme == "http":
        pytest.skip("waitress reads the whole body before the application runs")
    with caplog.at_level(logging.INFO):
        raw = socket.create_connection(("127.0.0.1", target.port), timeout=10)
        assert target.context is not None
        sock = target.context.wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall((target.head + "Content-Length: 1000\r\n\r\n").encode() + b"{" * 100)
        # Closing without a TLS close_notify, as a client that crashes does.
        sock.close()
        deadline = time.monotonic() + 10
        while not any("in the middle of a request" in m for m in caplog.messages):
            assert time.monotonic() < deadline, caplog.messages
            time.sleep(0.05)

    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
