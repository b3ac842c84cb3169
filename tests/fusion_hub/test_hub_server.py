"""HubServer start and stop, /metrics, and the functions behind ``fti hub``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from fusion_hub.cli import add_consumer, enroll, revoke
from fusion_hub.errors import HubError, RegistryError
from fusion_hub.metrics import METRICS_CONTENT_TYPE
from fusion_hub.server import HubServer
from privacy.signing import generate_signing_key
from tests.fusion_hub.hub_testing import TAXII, make_config, running_hub

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_start_returns_loopback_url_and_stop_closes_port(tmp_path: Path) -> None:
    hub = HubServer(make_config(tmp_path))
    threads_before = set(threading.enumerate())

    url = hub.start()
    port = int(url.rsplit(":", 1)[1])
    response = requests.get(f"{url}/taxii2/", headers={"Accept": TAXII}, timeout=10)
    hub.stop()
    hub.stop()

    assert url.startswith("http://127.0.0.1:")
    assert response.status_code == 401
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    leftover = [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert leftover == []


def test_start_twice_raises(tmp_path: Path) -> None:
    with running_hub(make_config(tmp_path)) as hub:
        with pytest.raises(HubError, match="hub already running at http://127.0.0.1:"):
            hub.start()


def test_metrics_count_requests_and_rejections(tmp_path: Path) -> None:
    with running_hub(make_config(tmp_path)) as hub:
        requests.get(f"{hub.base_url}/taxii2/", headers={"Accept": TAXII}, timeout=10)

        response = requests.get(f"{hub.base_url}/metrics", timeout=10)

    text = response.text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert response.headers["Content-Type"] == METRICS_CONTENT_TYPE
    assert {"fti_hub_requests", "fti_hub_rounds_closed", "fti_hub_indicators_published",
            "fti_hub_indicators_refused", "fti_hub_summaries_rejected"} <= names
    assert ('fti_hub_requests_total{endpoint="/taxii2/",method="GET",status="401"} 1.0'
            in text)
    assert 'fti_hub_auth_failures_total{reason="missing"} 1.0' in text
    assert "fti_hub_summaries_accepted_total 0.0" in text


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(
        "hub:\n  name: cli-hub\n  port: 0\n"
        "auth:\n  argon2_time_cost: 1\n  argon2_memory_cost_kib: 1024\n"
        "  argon2_parallelism: 1\n"
        "storage:\n  path: state/hub.sqlite3\n",
        encoding="utf-8",
    )
    return path


def test_cli_enroll_consumer_revoke(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    key = generate_signing_key()

    password = enroll(config_path, "site-a", key.public_key_b64)
    reader = add_consumer(config_path, "reader", ["fused-indicators"])
    revoke(config_path, "reader")

    with pytest.raises(RegistryError, match="already enrolled"):
        enroll(config_path, "site-a", key.public_key_b64)
    assert (tmp_path / "state" / "hub.sqlite3").exists()
    assert password != reader


def test_cli_serve_runs_until_sigterm(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    password = enroll(config_path, "site-a", generate_signing_key().public_key_b64)
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from fusion_hub.cli import serve; "
                               "sys.exit(serve(sys.argv[1]))", str(config_path)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = banner.split(" at ", 1)[1].split(" ", 1)[0]
        response = requests.get(url, auth=("site-a", password), headers={"Accept": TAXII},
                                timeout=10)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()

    assert banner.startswith("fti hub serving TAXII 2.1 at http://127.0.0.1:")
    assert response.json()["title"] == "fti fusion hub"
    assert process.returncode == 0
    assert "signal SIGTERM received; stopping" in stderr
    assert "hub cli-hub stopped" in stderr
