"""Canary test: nothing that identifies a site's hosts leaves the agent.

Internal addresses (private and the site's own public range), connection uids and file names
are planted in the agent's input; a recording proxy between the agent and the hub keeps every
byte the agent sends, and none of the canaries may appear in them. The test also checks that
the agent did send summaries with released observables, so the assertion is not vacuous.

The secure-mode test runs three sites, because a secure round needs at least three, and
records the canary site's bytes: key advertisements, encrypted shares, the masked vector,
unmask shares and the reveal of observables in heavy sketch buckets.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from agent.config import load_agent_config
from agent.service import Agent, RunReport
from fusion_hub.config import HubConfig, RoundSettings, SecureSettings, ServerSettings, StorageSettings
from fusion_hub.server import HubServer
from privacy.random import seeded_random
from privacy.signing import generate_signing_key
from tests.support.recording_proxy import RecordingProxy

ROUND_SECONDS = 600
START = 1_717_372_800  # 2024-06-03T00:00:00Z, a multiple of ROUND_SECONDS
SCANNERS = [f"185.220.101.{i}" for i in range(1, 6)]
CANARY_HOSTS = ["10.66.77.88", "81.2.69.160"]
CANARY_INTERNAL_PEER = "81.2.69.161"
CANARY_UID = "CcanaryUid0042"
HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#open\t2024-06-03-00-00-00\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\t"
    "orig_bytes\tresp_bytes\tconn_state\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\n"
)


def row(ts: float, uid: str, orig: str, orig_port: int, resp: str, resp_port: int, state: str = "SF",
        sent: int = 120) -> str:
    return f"{ts:.6f}\t{uid}\t{orig}\t{orig_port}\t{resp}\t{resp_port}\ttcp\t-\t0.5\t{sent}\t800\t{state}\n"


def write_capture(path: Path) -> None:
    """Sixty hosts and the two canary hosts scanned by five external addresses for 30 minutes."""
    lines = [HEADER]
    hosts = [f"10.1.0.{i}" for i in range(1, 61)] + CANARY_HOSTS
    serial = 0
    for minute in range(30):
        for index, host in enumerate(hosts):
            ts = START + minute * 60 + index * 0.7
            serial += 1
            uid = CANARY_UID if host in CANARY_HOSTS else f"C{serial:012d}"
            for scanner in SCANNERS:
                lines.append(row(ts, uid, scanner, 40000 + minute, host, 22 + index % 5, "S0"))
            # Varying internal traffic gives the detector a baseline with spread.
            for extra in range(1 + (index * 7 + minute * 3) % 4):
                lines.append(row(ts + 0.1 + extra, uid, host, 50000 + minute, CANARY_INTERNAL_PEER, 445,
                                 sent=100 + (index * 37 + minute * 11 + extra) % 900))
    path.write_text("".join(lines), encoding="utf-8")


@pytest.fixture()
def hub(tmp_path: Path):  # type: ignore[no-untyped-def]
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


def test_canaries_never_leave_the_agent(tmp_path: Path, hub: tuple[HubServer, str]) -> None:
    server, base_url = hub
    capture = tmp_path / "canary-secret-path-conn.log"
    write_capture(capture)
    key = generate_signing_key()
    key.to_file(tmp_path / "site.key")
    (tmp_path / "hub.password").write_text(server.registry.enroll_site("site-canary", key.public_key_b64))
    port = int(base_url.rstrip("/").rsplit(":", 1)[1])

    with RecordingProxy("127.0.0.1", port) as proxy:
        config = {
            "site": {"id": "site-canary", "signing_key": "site.key",
                     "internal_networks": ["10.0.0.0/8", "81.2.69.0/24"]},
            "hub": {"url": f"http://127.0.0.1:{proxy.port}/taxii2/", "username": "site-canary",
                    "password_file": "hub.password"},
            "sources": [{"type": "zeek", "paths": [str(capture)]}],
            "state_dir": "state",
            "windows": {"window_seconds": 60, "round_seconds": ROUND_SECONDS},
            "detector": {"name": "hbos", "baseline_rounds": 1},
            "privacy": {"epsilon_per_round": 2.0, "max_observables_per_entity": 2},
        }
        (tmp_path / "agent.yaml").write_text(yaml.safe_dump(config))
        agent = Agent(load_agent_config(tmp_path / "agent.yaml"), rng=seeded_random(7))
        report = agent.run_once(poll=True)
        agent.close()
        sent = proxy.client_bytes()

    assert report.delivered == 3
    assert b"x-fti-round-summary" in sent
    assert any(scanner.encode() in sent for scanner in SCANNERS), "no observable was released"
    canaries = CANARY_HOSTS + [CANARY_INTERNAL_PEER, CANARY_UID, "canary-secret-path", "10.1.0."]
    for canary in canaries:
        assert canary.encode() not in sent, f"{canary} left the agent"


def _site_config(site_id: str, hub_port: int, capture: Path) -> dict:
    return {
        "site": {"id": site_id, "signing_key": "site.key", "internal_networks": ["10.0.0.0/8", "81.2.69.0/24"]},
        "hub": {"url": f"http://127.0.0.1:{hub_port}/taxii2/", "username": site_id, "password_file": "hub.password"},
        "sources": [{"type": "zeek", "paths": [str(capture)]}],
        "state_dir": "state",
        "windows": {"window_seconds": 60, "round_seconds": ROUND_SECONDS},
        "detector": {"name": "hbos", "baseline_rounds": 1},
        "privacy": {"epsilon_per_round": 2.0, "max_observables_per_entity": 2, "mode": "secure",
                    "secure_min_sites": 3, "secure_stage_timeout_secs": 60.0},
    }


@pytest.mark.slow
def test_canaries_never_leave_the_agent_in_secure_mode(tmp_path: Path) -> None:
    """Three sites sum their rounds by secure aggregation; only the canary site's bytes are recorded."""
    config = HubConfig(
        hub=ServerSettings(host="127.0.0.1", port=0, tick_seconds=0.2),
        storage=StorageSettings(path=tmp_path / "hub.sqlite3"),
        rounds=RoundSettings(round_seconds=ROUND_SECONDS, quorum_sites=3, deadline_seconds=3600,
                             retention_days=100_000),
        secure=SecureSettings(mode="secure", min_sites=3, sketch_rows=2, sketch_width=256, sketch_threshold=60,
                              stage_timeout_seconds=30.0),
    )
    server = HubServer(config)
    port = int(server.start().rstrip("/").rsplit(":", 1)[1])
    sites = ("site-canary", "site-b", "site-c")
    try:
        with RecordingProxy("127.0.0.1", port) as proxy:
            paths = []
            for index, site_id in enumerate(sites):
                site_dir = tmp_path / site_id
                site_dir.mkdir()
                capture = site_dir / "canary-secret-path-conn.log"
                write_capture(capture)
                key = generate_signing_key()
                key.to_file(site_dir / "site.key")
                (site_dir / "hub.password").write_text(server.registry.enroll_site(site_id, key.public_key_b64))
                (site_dir / "agent.yaml").write_text(yaml.safe_dump(
                    _site_config(site_id, proxy.port if index == 0 else port, capture)))
                paths.append(site_dir / "agent.yaml")

            def run(path: Path, seed: int) -> RunReport:
                agent = Agent(load_agent_config(path), rng=seeded_random(seed))
                try:
                    return agent.run_once(poll=False)
                finally:
                    agent.close()

            with ThreadPoolExecutor(max_workers=len(paths)) as pool:
                reports = list(pool.map(run, paths, range(len(paths))))
            sent = proxy.client_bytes()
    finally:
        server.stop()

    assert all(status == "sent" for status in reports[0].rounds.values()), reports[0].rounds
    # Each summed round is charged to the site's ledger, composed by the PLD accountant.
    assert 2.0 <= reports[0].epsilon_spent <= 2.0 * len(reports[0].rounds)
    assert b'"stage":"mask_input"' in sent and b'"stage":"reveal"' in sent
    assert b"x-fti-round-summary" not in sent
    assert any(scanner.encode() in sent for scanner in SCANNERS), "no observable was revealed"
    canaries = CANARY_HOSTS + [CANARY_INTERNAL_PEER, CANARY_UID, "canary-secret-path", "10.1.0."]
    for canary in canaries:
        assert canary.encode() not in sent, f"{canary} left the agent in secure mode"
