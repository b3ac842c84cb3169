"""Send a service's state to systemd over the ``sd_notify`` datagram protocol.

Both services use it: the hub (``fti hub serve``) and the agent (``fti agent run``). The module
imports only the standard library, so either may import it without importing the other.

A unit with ``Type=notify`` waits for ``READY=1`` before it counts the service as started, and
with ``WatchdogSec=`` it restarts the service when no ``WATCHDOG=1`` arrives in time. systemd
passes the socket in ``NOTIFY_SOCKET``: a file system path, or an abstract socket name written
with a leading ``@``. Each message is one datagram of newline-separated ``KEY=value`` fields
(sd_notify(3), systemd 252). Without ``NOTIFY_SOCKET`` every call does nothing, so the same
code runs in the foreground, in tests and under systemd.

The protocol is small enough that a dependency on libsystemd or a binding adds nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Send state changes to the service manager named by the environment.

    Parameters
    ----------
    environ : Mapping[str, str]
        The process environment (``os.environ``); read once, here.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._address = _socket_address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog_usec = _watchdog_usec(environ)
        self._socket: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens for notifications."""
        return self._address is not None

    @property
    def watchdog_interval_secs(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings, or None when the watchdog is off.

        Half the manager's timeout, as sd_watchdog_enabled(3) recommends, so one late ping
        does not get the service killed.
        """
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (such as ``"READY=1"``) as one datagram; return whether it was sent.

        A failed send is logged once at WARNING and never raised: losing a notification must
        not stop the service, but systemd will then time out the start or fire the watchdog.
        """
        if self._address is None:
            return False
        message = "\n".join(fields).encode("utf-8")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message, self._address)
        except OSError as err:
            if not self._failed:
                log.warning("failed to notify the service manager at %r: %s", self._address, err)
                self._failed = True
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(value: str) -> str | bytes | None:
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        # An abstract socket: the name starts with a NUL byte instead of the '@'.
        return b"\0" + value[1:].encode("utf-8")
    return None


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    # WATCHDOG_PID names the process the watchdog is meant for, so a child that inherited the
    # environment must not ping on the main process's behalf.
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    return usec if usec > 0 else None
