"""``fti agent run`` as a service: a real process, a real hub on loopback, real signals.

The test plays systemd: it binds a datagram socket, passes it in ``NOTIFY_SOCKET`` with a
watchdog in ``WATCHDOG_USEC``, and reads the notifications the agent sends. It writes Zeek
conn lines into a live folder, waits for a round to reach the hub, reloads the agent with an
invalid and then a changed configuration, and stops it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent.config import load_agent_config
from agent.daemon import changed_settings
from fusion_hub.config import HubConfig, RoundSettings, ServerSettings, StorageSettings
from fusion_hub.server import HubServer
from privacy.signing import generate_signing_key
from tests.support.loopback import unused_port
from tests.support.notify_socket import notify_socket, receive_until

ROUND_SECONDS = 600
START = 1_717_372_800
FTI = [sys.executable, "-m", "fti.cli"]


def conn_line(number: int) -> str:
    """The ``number``-th connection: one per second, eight hosts, three external peers."""
    record = {"ts": START + number * 1.0, "uid": f"C{number}", "id.orig_h": f"10.2.0.{number % 8 + 1}",
              "id.orig_p": 40000 + number % 1000, "id.resp_h": f"185.220.101.{number % 3 + 1}", "id.resp_p": 443,
              "proto": "tcp", "duration": 0.5, "orig_bytes": 100 + number % 50, "resp_bytes": 800,
              "conn_state": "SF", "_path": "conn"}
    return json.dumps(record) + "\n"


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[HubServer]:
    config = HubConfig(
        hub=ServerSettings(host="127.0.0.1", port=0, tick_seconds=3600.0),
        storage=StorageSettings(path=tmp_path / "hub.sqlite3"),
        rounds=RoundSettings(round_seconds=ROUND_SECONDS, quorum_sites=1, deadline_seconds=3600,
                             retention_days=100_000),
    )
    server = HubServer(config)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    with notify_socket(tmp_path, timeout_secs=60) as bound:
        yield bound


def write_config(folder: Path, hub_url: str, *, metrics_port: int, **live: object) -> dict:
    config = {
        "site": {"id": "site-d", "signing_key": "site.key"},
        "hub": {"url": hub_url, "username": "site-d", "password_file": "hub.password",
                "retry_backoff_secs": 0.1, "timeout_secs": 5.0},
        "sources": [{"type": "zeek", "paths": [str(folder / "logs" / "conn*.log")]}],
        "state_dir": "state",
        "windows": {"window_seconds": 60, "round_seconds": ROUND_SECONDS},
        "detector": {"name": "ecod", "baseline_rounds": 1},
        "privacy": {"epsilon_per_round": 0.5, "budget_epsilon": 100.0},
        "live": {"poll_interval_secs": 0.1, "round_grace_secs": 30, "commit_interval_secs": 1.0, **live},
        "metrics": {"port": metrics_port},
    }
    (folder / "agent.yaml").write_text(yaml.safe_dump(config))
    return config


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Fetch the metrics over HTTP and return each sample by name and labels."""
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    response.raise_for_status()
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def wait_for_sample(port: int, name: str, labels: dict[str, str], value: float, *, timeout_secs: float = 60) -> None:
    key = (name, tuple(sorted({"site": "site-d", **labels}.items())))
    deadline = time.monotonic() + timeout_secs
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = scrape(port).get(key)
        except requests.ConnectionError:
            seen = None
        if seen == value:
            return
        time.sleep(0.2)
    raise AssertionError(f"{key} is {seen}, expected {value}")


@pytest.mark.slow
def test_agent_service_sends_reloads_and_stops(tmp_path: Path, hub: HubServer,
                                               manager: tuple[socket.socket, str]) -> None:
    key = generate_signing_key()
    key.to_file(tmp_path / "site.key")
    (tmp_path / "hub.password").write_text(hub.registry.enroll_site("site-d", key.public_key_b64))
    (tmp_path / "logs").mkdir()
    log_file = tmp_path / "logs" / "conn.log"
    log_file.write_text("")
    port = unused_port()
    hub_url = f"{hub.base_url}/taxii2/"
    write_config(tmp_path, hub_url, metrics_port=port)
    server, notify_path = manager
    # The agent under test is this tree's, whichever copy of fti the environment installed.
    environment = {**os.environ, "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "1000000",
                   "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    stderr_path = tmp_path / "agent.stderr"

    with stderr_path.open("w") as stderr:
        process = subprocess.Popen([*FTI, "agent", "run", "--config", str(tmp_path / "agent.yaml")],
                                   cwd=tmp_path, env=environment, stderr=stderr, stdout=subprocess.DEVNULL)
    try:
        started = receive_until(server, "READY=1")

        # One round of connections and enough later event time to close it.
        with log_file.open("a") as stream:
            stream.write("".join(conn_line(n) for n in range(ROUND_SECONDS + 31)))
        wait_for_sample(port, "fti_agent_rounds", {"status": "sent"}, 1)
        samples = scrape(port)
        pinged = receive_until(server, "WATCHDOG=1")

        # An invalid configuration is rejected and the running one stays.
        write_config(tmp_path, hub_url, metrics_port=port, start_at="middle")
        process.send_signal(signal.SIGHUP)
        rejected = receive_until(server, "READY=1")

        # A reload whose password file is gone is rejected before the running agent stops.
        (tmp_path / "hub.password").rename(tmp_path / "hub.password.saved")
        write_config(tmp_path, hub_url, metrics_port=port, poll_interval_secs=0.3)
        process.send_signal(signal.SIGHUP)
        no_password = receive_until(server, "READY=1")
        (tmp_path / "hub.password.saved").rename(tmp_path / "hub.password")

        # A valid change is applied; the new live agent releases the next round.
        write_config(tmp_path, hub_url, metrics_port=port, poll_interval_secs=0.2)
        process.send_signal(signal.SIGHUP)
        reloaded = receive_until(server, "READY=1")
        with log_file.open("a") as stream:
            stream.write("".join(conn_line(n) for n in range(ROUND_SECONDS + 31, 2 * ROUND_SECONDS + 31)))
        wait_for_sample(port, "fti_agent_rounds", {"status": "sent"}, 2)

        process.send_signal(signal.SIGTERM)
        stopping = receive_until(server, "STOPPING=1")
        status = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    log_text = stderr_path.read_text()

    assert status == 0, log_text
    assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in started)
    assert any("WATCHDOG=1" in m.split("\n") for m in pinged)
    assert samples[("fti_agent_lines_read_total", (("site", "site-d"), ("source", "sources[0]")))] == \
        ROUND_SECONDS + 31
    assert samples[("fti_agent_records_read_total", (("site", "site-d"),))] == ROUND_SECONDS + 31
    assert samples[("fti_agent_outbox_size", (("site", "site-d"),))] == 0
    assert samples[("fti_agent_bytes_behind", (("file", str(log_file)), ("site", "site-d")))] == 0
    # The accountant composes the round through RDP, which reports slightly below the 0.5 charged.
    assert samples[("fti_agent_privacy_epsilon_spent", (("site", "site-d"),))] == pytest.approx(0.5, rel=1e-2)
    assert any("RELOADING=1" in m.split("\n") for m in rejected)
    assert "STATUS=reload rejected; running the previous configuration" in rejected[-1].split("\n")
    assert "live.start_at = 'middle': choose one of beginning, end" in log_text
    assert "STATUS=reload rejected; running the previous configuration" in no_password[-1].split("\n")
    assert "hub.password_file: cannot read the password file" in log_text
    assert any("RELOADING=1" in m.split("\n") for m in reloaded)
    assert "reload changes live.poll_interval_secs: 0.1 -> 0.2" in log_text
    assert "STOPPING=1" in stopping[-1].split("\n")
    with sqlite3.connect(tmp_path / "state" / "agent.sqlite") as db:
        statuses = dict(db.execute("SELECT round_start, status FROM rounds"))
        snapshot = json.loads(db.execute("SELECT value FROM checkpoints WHERE name = 'live'").fetchone()[0])
    assert statuses == {START: "sent", START + ROUND_SECONDS: "sent"}
    assert snapshot["tail"]


def test_changed_settings_lists_dotted_keys(tmp_path: Path) -> None:
    write_config(tmp_path, "http://127.0.0.1:9/taxii2/", metrics_port=0)
    (tmp_path / "hub.password").write_text("secret")
    old = load_agent_config(tmp_path / "agent.yaml")
    write_config(tmp_path, "http://127.0.0.1:9/taxii2/", metrics_port=0, round_grace_secs=60, start_at="end")
    new = load_agent_config(tmp_path / "agent.yaml")

    changes = changed_settings(old, new)

    assert changes == {"live.round_grace_secs": (30, 60), "live.start_at": ("beginning", "end")}
