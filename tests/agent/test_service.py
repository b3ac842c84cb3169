"""The agent's replay run against a real hub: idempotent reruns, budget stop, crash and outage."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml

from agent.config import load_agent_config
from agent.service import Agent
from agent.state import AgentState
from fusion_hub.config import HubConfig, RoundSettings, ServerSettings, StorageSettings
from fusion_hub.server import HubServer
from privacy.ledger import PrivacyLedger
from privacy.random import seeded_random
from stix_mappings.ids import collection_id

ROUND_SECONDS = 600
START = 1_717_372_800
HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\t"
    "orig_bytes\tresp_bytes\tconn_state\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\n"
)


def write_capture(path: Path, *, minutes: int = 30, hosts: int = 60) -> None:
    """Hosts scanned by three external addresses, with varying internal traffic."""
    lines = [HEADER]
    for minute in range(minutes):
        for host in range(hosts):
            ts = START + minute * 60 + host * 0.5
            address = f"10.2.0.{host + 1}"
            for scanner in ("185.220.101.1", "185.220.101.2", "185.220.101.3"):
                lines.append(f"{ts:.6f}\tC{minute}x{host}\t{scanner}\t4000\t{address}\t22\ttcp\t-\t0.1\t0\t0\tS0\n")
            for extra in range(1 + (host * 7 + minute * 3) % 4):
                sent = 100 + (host * 37 + minute * 11 + extra) % 900
                lines.append(f"{ts + extra:.6f}\tD{minute}x{host}x{extra}\t{address}\t5000\t10.9.9.9\t445\ttcp\t-\t"
                             f"0.5\t{sent}\t800\tSF\n")
    path.write_text("".join(lines), encoding="utf-8")


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[tuple[HubServer, str]]:
    config = HubConfig(
        hub=ServerSettings(host="127.0.0.1", port=0, tick_seconds=3600.0),
        storage=StorageSettings(path=tmp_path / "hub.sqlite3"),
        rounds=RoundSettings(round_seconds=ROUND_SECONDS, quorum_sites=1, deadline_seconds=3600,
                             retention_days=100_000),
    )
    server = HubServer(config)
    base_url = server.start()
    yield server, base_url
    server.stop()


def make_site(tmp_path: Path, hub_url: str, password: str, key_path: Path, **privacy: object) -> Path:
    capture = tmp_path / "conn.log"
    if not capture.exists():
        write_capture(capture)
    (tmp_path / "hub.password").write_text(password)
    config = {
        "site": {"id": "site-t", "signing_key": str(key_path)},
        "hub": {"url": hub_url.rstrip("/") + "/taxii2/", "username": "site-t", "password_file": "hub.password",
                "max_send_attempts": 2, "retry_backoff_secs": 0.01, "timeout_secs": 5.0},
        "sources": [{"type": "zeek", "paths": [str(capture)]}],
        "state_dir": "state",
        "windows": {"window_seconds": 60, "round_seconds": ROUND_SECONDS},
        "detector": {"name": "ecod", "baseline_rounds": 1},
        "privacy": {"epsilon_per_round": 2.0, "max_observables_per_entity": 2, **privacy},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def pending_bodies(state_dir: Path) -> list[str]:
    state = AgentState(state_dir / "agent.sqlite")
    try:
        return [item.body for item in state.pending()]
    finally:
        state.close()


def test_rerun_sends_nothing_twice(tmp_path: Path, hub: tuple[HubServer, str], site_key) -> None:  # type: ignore[no-untyped-def]
    server, base_url = hub
    password = server.registry.enroll_site("site-t", site_key.public_key_b64)
    config = load_agent_config(make_site(tmp_path, base_url, password, tmp_path / "site.key"))

    first = Agent(config, rng=seeded_random(1))
    first_report = first.run_once(poll=False)
    first.close()
    second = Agent(config, rng=seeded_random(2))
    second_report = second.run_once(poll=False)
    second.close()

    assert first_report.delivered == 3
    assert set(first_report.rounds.values()) == {"sent"}
    assert second_report.delivered == 0
    assert second_report.released == {}
    assert set(second_report.rounds.values()) == {"sent"}


def test_budget_stop_halts_releases(tmp_path: Path, hub: tuple[HubServer, str], site_key,  # type: ignore[no-untyped-def]
                                    caplog: pytest.LogCaptureFixture) -> None:
    server, base_url = hub
    password = server.registry.enroll_site("site-t", site_key.public_key_b64)
    config = load_agent_config(make_site(tmp_path, base_url, password, tmp_path / "site.key", budget_epsilon=4.5))

    agent = Agent(config, rng=seeded_random(3))
    with caplog.at_level(logging.WARNING, logger="agent.service"):
        report = agent.run_once(poll=False)
    agent.close()

    assert list(report.rounds.values()) == ["sent", "sent", "budget_exhausted"]
    assert report.epsilon_spent <= 4.5
    assert any("not released" in r.getMessage() and "epsilon" in r.getMessage() for r in caplog.records)
    metrics = (config.state_dir / "metrics.prom").read_text()
    assert 'fti_agent_privacy_budget_exhausted{site="site-t"} 1' in metrics
    assert 'fti_agent_rounds_budget_exhausted_total{site="site-t"} 1' in metrics


def test_round_charged_before_crash_is_not_released_again(tmp_path: Path, hub: tuple[HubServer, str],  # type: ignore[no-untyped-def]
                                                         site_key) -> None:
    server, base_url = hub
    password = server.registry.enroll_site("site-t", site_key.public_key_b64)
    config = load_agent_config(make_site(tmp_path, base_url, password, tmp_path / "site.key"))
    config.state_dir.mkdir(parents=True)
    ledger = PrivacyLedger(config.state_dir / "privacy-ledger.sqlite", site_id="site-t", budget_epsilon=10.0,
                           budget_delta=1e-4, period_seconds=30 * 86400)
    ledger.charge(START, 2.0, 1e-6, "discrete-laplace/entity")
    ledger.close()

    agent = Agent(config, rng=seeded_random(4))
    report = agent.run_once(poll=False)
    agent.close()

    assert report.rounds[START] == "lost"
    assert report.delivered == 2


def test_hub_outage_keeps_summaries_queued(tmp_path: Path, hub: tuple[HubServer, str], site_key) -> None:  # type: ignore[no-untyped-def]
    server, base_url = hub
    password = server.registry.enroll_site("site-t", site_key.public_key_b64)
    config_path = make_site(tmp_path, "http://127.0.0.1:9", password, tmp_path / "site.key")
    agent = Agent(load_agent_config(config_path), rng=seeded_random(5))
    offline = agent.run_once(poll=False)
    agent.close()
    queued = pending_bodies(load_agent_config(config_path).state_dir)

    make_site(tmp_path, base_url, password, tmp_path / "site.key")
    agent = Agent(load_agent_config(config_path), rng=seeded_random(6))
    online = agent.run_once(poll=False)
    agent.close()
    response = requests.get(
        f"{base_url.rstrip('/')}/fti/collections/{collection_id('summaries')}/objects/",
        auth=("site-t", password), headers={"Accept": "application/taxii+json;version=2.1"}, timeout=10,
    )
    received = {o["id"]: o for o in response.json()["objects"]}

    assert offline.pending == 3
    assert offline.delivered == 0
    assert set(offline.rounds.values()) == {"queued"}
    assert online.delivered == 3
    assert online.released == {}
    assert sorted(received) == sorted(json.loads(body)["id"] for body in queued)
    for body in queued:
        summary = json.loads(body)
        assert received[summary["id"]]["signature"] == summary["signature"]


class _ProxyErrorHandler(http.server.BaseHTTPRequestHandler):
    """Play a proxy in front of the hub that answers every request with an HTML 502 page."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"<html><body>502 Bad Gateway</body></html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        return


def test_proxy_error_page_is_transient(tmp_path: Path, site_key) -> None:  # type: ignore[no-untyped-def]
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ProxyErrorHandler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        config = load_agent_config(make_site(tmp_path, f"http://127.0.0.1:{proxy.server_address[1]}", "pw",
                                             tmp_path / "site.key"))
        agent = Agent(config, rng=seeded_random(7))
        report = agent.run_once(poll=False)
        agent.close()
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(timeout=5)

    assert report.pending == 3
    assert set(report.rounds.values()) == {"queued"}
    assert len(pending_bodies(config.state_dir)) == 3
