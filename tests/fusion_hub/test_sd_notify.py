"""systemd notifications: the client alone, then ``fti hub serve`` under a fake service manager.

The fake manager is a datagram socket bound in the test's folder and passed to the hub in
``NOTIFY_SOCKET``, exactly as systemd passes its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fti.sd_notify import SystemdNotifier
from tests.support.notify_socket import notify_socket, receive_until

FTI = [sys.executable, "-m", "fti.cli"]


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    with notify_socket(tmp_path) as bound:
        yield bound


def test_notifier_sends_fields_as_one_datagram(manager: tuple[socket.socket, str]) -> None:
    server, path = manager
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})

    sent = notifier.notify("READY=1", "STATUS=serving")
    notifier.close()

    assert sent is True
    assert server.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notifier_reaches_abstract_socket() -> None:
    name = f"fti-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(b"\0" + name.encode())
    server.settimeout(5)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})

        notifier.notify("WATCHDOG=1")
        notifier.close()

        assert server.recv(4096) == b"WATCHDOG=1"
    finally:
        server.close()


def test_notifier_without_socket_does_nothing() -> None:
    notifier = SystemdNotifier({})

    assert notifier.enabled is False
    assert notifier.notify("READY=1") is False
    assert notifier.watchdog_interval_secs is None


def test_notifier_watchdog_interval_is_half_timeout(manager: tuple[socket.socket, str]) -> None:
    _, path = manager

    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000",
                                "WATCHDOG_PID": str(os.getpid())})

    assert notifier.watchdog_interval_secs == 15.0


def test_notifier_watchdog_for_other_pid_is_off(manager: tuple[socket.socket, str]) -> None:
    _, path = manager

    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})

    assert notifier.watchdog_interval_secs is None


def test_notifier_send_failure_returns_false(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})

    sent = notifier.notify("READY=1")
    notifier.close()

    assert sent is False


@pytest.mark.slow
def test_hub_serve_notifies_reloads_and_stops(tmp_path: Path, manager: tuple[socket.socket, str]) -> None:
    """Readiness, watchdog, a good and a bad SIGHUP, then SIGTERM, as systemd would see them."""
    server, path = manager
    config = tmp_path / "hub.yaml"
    config.write_text("hub:\n  port: 0\nstorage:\n  path: hub.sqlite3\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    hub = subprocess.Popen([*FTI, "hub", "serve", "--config", str(config)], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = receive_until(server, "READY=1")
        watchdog = receive_until(server, "WATCHDOG=1")

        config.write_text("hub:\n  port: 0\nstorage:\n  path: hub.sqlite3\nfusion:\n  publish_threshold: 0.7\n")
        hub.send_signal(signal.SIGHUP)
        good_reload = receive_until(server, "READY=1")

        config.write_text("hub:\n  port: 0\n  colour: red\n")
        hub.send_signal(signal.SIGHUP)
        bad_reload = receive_until(server, "READY=1")
        still_alive = hub.poll() is None

        started = time.monotonic()
        hub.send_signal(signal.SIGTERM)
        stopping = receive_until(server, "STOPPING=1")
        status = hub.wait(timeout=30)
        stop_secs = time.monotonic() - started
    finally:
        if hub.poll() is None:
            hub.kill()
        banners, log = hub.communicate(timeout=30)

    assert ready[-1].startswith("READY=1\nSTATUS=serving TAXII 2.1 at http://127.0.0.1:")
    assert watchdog[-1] == "WATCHDOG=1"
    assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in good_reload)
    assert "threshold 0.7" in log
    assert any(m.startswith("RELOADING=1") for m in bad_reload)
    assert "reload failed; the previous configuration keeps serving" in log
    assert "hub.colour" in log
    assert still_alive
    assert stopping[-1] == "STOPPING=1\nSTATUS=stopping"
    assert status == 0
    assert stop_secs < 20
    assert banners.count("fti hub serving TAXII 2.1 at") == 2
    assert "signal SIGTERM received; stopping" in log
