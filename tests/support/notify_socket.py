"""A datagram socket that plays systemd's notification socket, for tests of Type=notify services.

The test binds it in its own folder and passes the path in ``NOTIFY_SOCKET``, exactly as
systemd passes its own.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def notify_socket(folder: Path, *, timeout_secs: float = 20) -> Iterator[tuple[socket.socket, str]]:
    """Bind ``notify.sock`` in ``folder``; yield the socket and its path, and close it after."""
    path = str(folder / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(timeout_secs)
    try:
        yield server, path
    finally:
        server.close()


def receive_until(server: socket.socket, field: str, *, limit: int = 2000) -> list[str]:
    """Return every message up to and including the first that contains ``field``."""
    messages: list[str] = []
    for _ in range(limit):
        message = server.recv(4096).decode("utf-8")
        messages.append(message)
        if field in message.split("\n"):
            return messages
    raise AssertionError(f"{field} not among {limit} messages: {messages[-5:]}")
