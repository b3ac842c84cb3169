"""A local HTTP server on 127.0.0.1 that responds like Splunk's HTTP Event Collector.

It follows the documented wire format of Splunk Enterprise 9.x: ``/services/collector/event``
with ``Authorization: Splunk <token>``, bodies of concatenated JSON event objects (gzip
allowed), the ``X-Splunk-Request-Channel`` header and ``/services/collector/ack``. Error
answers are HEC's JSON ``{"text", "code"}`` with ``invalid-event-number`` for batches:

====  ======  ==================================
code  status  text
====  ======  ==================================
0     200     Success
1     403     Token disabled
2     401     Token is required
3     401     Invalid authorization
4     403     Invalid token
5     400     No data
6     400     Invalid data format
7     400     Incorrect index
9     503     Server is busy
10    400     Data channel is missing
11    400     Invalid data channel
12    400     Event field is required
13    400     Event field cannot be blank
14    400     ACK is disabled
15    400     Error in handling indexed fields
====  ======  ==================================

A body longer than ``max_content_length`` (``limits.conf`` ``[http_input]``) gets 413 with
the text ``Content-Length of N too large (maximum is M)``. NOTE: that text is the one Splunk
users report; Splunk's status code table does not list 413, so clients should rely on the
status alone.

A rejected batch indexes nothing here. NOTE: real HEC may index the events before the
invalid one; the client under test does not rely on either behaviour, because every event
carries its indicator id and version.
"""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class HecToken:
    """One HEC token's settings, as in Splunk's ``inputs.conf`` ``[http://name]`` stanza."""

    value: str
    use_ack: bool = False
    disabled: bool = False
    # None allows every index, like a token with no ``indexes`` list.
    indexes: tuple[str, ...] | None = None


@dataclass
class HecState:
    """What the server received and how it answers next."""

    tokens: dict[str, HecToken] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    # Answer this many next event requests with 503 "Server is busy".
    busy_requests: int = 0
    # Bytes of the largest request body accepted, as sent (compressed or not), or None for any.
    max_content_length: int | None = None
    # An ack turns true only after this many polls that asked for it.
    ack_after_polls: int = 0
    next_ack_id: dict[str, int] = field(default_factory=dict)
    pending_acks: dict[tuple[str, int], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _answer(status: int, text: str, code: int, **extra: Any) -> tuple[int, dict[str, Any]]:
    return status, {"text": text, "code": code, **extra}


class _HecHandler(BaseHTTPRequestHandler):
    server: "_HecHttpServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            raw = gzip.decompress(raw)
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        with state.lock:
            state.requests.append({"path": parts.path, "headers": dict(self.headers),
                                   "body": raw})
            limit = state.max_content_length
            if limit is not None and length > limit:
                self._send_too_large(length, limit)
                return
            status, payload = self._route(state, parts.path, raw, query)
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_too_large(self, length: int, limit: int) -> None:
        text = f"Content-Length of {length} too large (maximum is {limit})"
        body = text.encode()
        self.send_response(413, text)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, state: HecState, path: str, raw: bytes,
               query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        token, error = self._authenticate(state)
        if error is not None:
            return error
        assert token is not None

        channel = self.headers.get("X-Splunk-Request-Channel") or (query.get("channel") or [None])[0]
        if channel is not None:
            try:
                uuid.UUID(channel)
            except ValueError:
                return _answer(400, "Invalid data channel", 11)

        if path == "/services/collector/ack":
            if not token.use_ack:
                return _answer(400, "ACK is disabled", 14)
            if channel is None:
                return _answer(400, "Data channel is missing", 10)
            return self._ack(state, channel, raw)
        if path not in ("/services/collector/event", "/services/collector"):
            return 404, {"text": "The requested URL was not found on this server.", "code": 404}

        if token.use_ack and channel is None:
            return _answer(400, "Data channel is missing", 10)
        if state.busy_requests > 0:
            state.busy_requests -= 1
            return _answer(503, "Server is busy", 9)
        events, error = _parse_batch(raw, token)
        if error is not None:
            return error
        state.events.extend(events)
        if token.use_ack:
            assert channel is not None
            ack_id = state.next_ack_id.get(channel, 0)
            state.next_ack_id[channel] = ack_id + 1
            state.pending_acks[(channel, ack_id)] = state.ack_after_polls
            return _answer(200, "Success", 0, ackId=ack_id)
        return _answer(200, "Success", 0)

    def _authenticate(self, state: HecState) -> tuple[HecToken | None, tuple[int, dict[str, Any]] | None]:
        header = self.headers.get("Authorization")
        if not header:
            return None, _answer(401, "Token is required", 2)
        scheme, _, value = header.partition(" ")
        if scheme != "Splunk" or not value:
            return None, _answer(401, "Invalid authorization", 3)
        token = state.tokens.get(value)
        if token is None:
            return None, _answer(403, "Invalid token", 4)
        if token.disabled:
            return None, _answer(403, "Token disabled", 1)
        return token, None

    def _ack(self, state: HecState, channel: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        try:
            requested = json.loads(raw)["acks"]
        except (ValueError, KeyError, TypeError):
            return _answer(400, "Invalid data format", 6)
        statuses = {}
        for ack_id in requested:
            remaining = state.pending_acks.get((channel, ack_id))
            if remaining is None:
                statuses[str(ack_id)] = False
                continue
            if remaining <= 0:
                statuses[str(ack_id)] = True
            else:
                state.pending_acks[(channel, ack_id)] = remaining - 1
                statuses[str(ack_id)] = False
        return 200, {"acks": statuses}


def _parse_batch(raw: bytes, token: HecToken) -> tuple[list[dict[str, Any]], tuple[int, dict[str, Any]] | None]:
    text = raw.decode("utf-8", "replace")
    if not text.strip():
        return [], _answer(400, "No data", 5)
    decoder = json.JSONDecoder()
    events: list[dict[str, Any]] = []
    position = 0
    number = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            break
        try:
            event, position = decoder.raw_decode(text, position)
        except ValueError:
            return [], _answer(400, "Invalid data format", 6, **{"invalid-event-number": number})
        if not isinstance(event, dict):
            return [], _answer(400, "Invalid data format", 6, **{"invalid-event-number": number})
        if "event" not in event:
            return [], _answer(400, "Event field is required", 12, **{"invalid-event-number": number})
        if event["event"] in ("", None, {}, []):
            return [], _answer(400, "Event field cannot be blank", 13,
                               **{"invalid-event-number": number})
        fields = event.get("fields", {})
        if not isinstance(fields, dict) or any(
                isinstance(value, dict) or (isinstance(value, list)
                                            and any(isinstance(item, (dict, list)) for item in value))
                for value in fields.values()):
            return [], _answer(400, "Error in handling indexed fields", 15,
                               **{"invalid-event-number": number})
        if "index" in event and token.indexes is not None and event["index"] not in token.indexes:
            return [], _answer(400, "Incorrect index", 7, **{"invalid-event-number": number})
        events.append(event)
        number += 1
    return events, None


class _HecHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: HecState) -> None:
        super().__init__(("127.0.0.1", 0), _HecHandler)
        self.state = state


class HecServer:
    """Run the fake HEC on a free port of 127.0.0.1; use as a context manager."""

    def __init__(self, *tokens: HecToken) -> None:
        self.state = HecState(tokens={token.value: token for token in tokens})
        self._server = _HecHttpServer(self.state)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HecServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
