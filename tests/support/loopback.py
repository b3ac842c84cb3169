"""Loopback ports for tests that need an address with no server behind it."""

from __future__ import annotations

import socket


def unused_port() -> int:
    """Return a loopback TCP port that nothing listens on, so a connection to it is refused at once.

    The port is free when this returns; another process may take it before the caller does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
