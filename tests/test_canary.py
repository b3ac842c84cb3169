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


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def enroll_site(folder: Path, server: HubServer, site_id: str) -> None:
    """Write a new signing key to ``folder`` and the password the hub enrolled it with."""
    key = generate_signing_key()
    key.to_file(folder / "site.key")
    (folder / "hub.password").write_text(server.registry.enroll_site(site_id, key.public_key_b64))


def run_agent(folder: Path, config: dict) -> RunReport:
    """Write ``config`` as ``agent.yaml`` in ``folder`` and run the agent once with a fixed seed."""
    (folder / "agent.yaml").write_text(yaml.safe_dump(config))
    agent = Agent(load_agent_config(folder / "agent.yaml"), rng=seeded_random(7))
    report = agent.run_once(poll=True)
    agent.close()
    return report


def test_canaries_never_leave_the_agent(tmp_path: Path, hub: tuple[HubServer, str]) -> None:
    server, base_url = hub
    capture = tmp_path / "canary-secret-path-conn.log"
    write_capture(capture)
    enroll_site(tmp_path, server, "site-canary")
    port = port_of(base_url)

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
        report = run_agent(tmp_path, config)
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
def test_canaries_stay_in_secure_mode(tmp_path: Path) -> None:
    """Three sites sum their rounds by secure aggregation. Only the canary site's bytes are recorded."""
    config = HubConfig(
        hub=ServerSettings(host="127.0.0.1", port=0, tick_seconds=0.2),
        storage=StorageSettings(path=tmp_path / "hub.sqlite3"),
        rounds=RoundSettings(round_seconds=ROUND_SECONDS, quorum_sites=3, deadline_seconds=3600,
                             retention_days=100_000),
        # The sites read Zeek conn logs only, so the rounds sum the network family alone.
        secure=SecureSettings(mode="secure", min_sites=3, sketch_rows=2, sketch_width=256, sketch_threshold=60,
                              stage_timeout_seconds=30.0, families=("network",), epsilon_per_round=2.0,
                              max_observables_per_entity=2),
    )
    server = HubServer(config)
    port = port_of(server.start())
    sites = ("site-canary", "site-b", "site-c")
    try:
        with RecordingProxy("127.0.0.1", port) as proxy:
            paths = []
            for index, site_id in enumerate(sites):
                site_dir = tmp_path / site_id
                site_dir.mkdir()
                capture = site_dir / "canary-secret-path-conn.log"
                write_capture(capture)
                enroll_site(site_dir, server, site_id)
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
    assert b'"stage":"mask_input"' in sent
    assert b'"stage":"reveal"' in sent
    assert b"x-fti-round-summary" not in sent
    assert any(scanner.encode() in sent for scanner in SCANNERS), "no observable was revealed"
    canaries = CANARY_HOSTS + [CANARY_INTERNAL_PEER, CANARY_UID, "canary-secret-path", "10.1.0."]
    for canary in canaries:
        assert canary.encode() not in sent, f"{canary} left the agent in secure mode"


CANARY_DOMAIN = "corp-canary.example"
EVIL_DOMAIN = "evil-c2.example"
EVIL_JA3 = "e7d705a3286e19ea42f587b344ee6865"
EVIL_SHA256 = "5f" * 32
# Names that must stay on the site: the site's own zone, a bare host name, mDNS, a reverse
# lookup of a canary host, a URL path, the sshd host, a user and a program.
NAME_CANARIES = [CANARY_DOMAIN, "CANARYHOST", "printer.canary.local", "88.77.66.10.in-addr.arpa",
                 "canary-secret-uri", "canary-sshd-host", "canaryuser", "canary-secret-binary"]


def zeek_log(path: Path, log_path: str, fields: list[tuple[str, str]], rows: list[list[str]]) -> None:
    header = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
              f"#path\t{log_path}\n#open\t2024-06-03-00-00-00\n"
              "#fields\t" + "\t".join(name for name, _ in fields) + "\n"
              "#types\t" + "\t".join(kind for _, kind in fields) + "\n")
    path.write_text(header + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")


ENDPOINTS = [("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"),
             ("id.resp_h", "addr"), ("id.resp_p", "port")]


def write_family_inputs(folder: Path) -> None:
    """Zeek dns, http and ssl logs, an auth.log and Sysmon for Linux lines, all planted with canaries."""
    hosts = [f"10.1.0.{i}" for i in range(1, 61)] + CANARY_HOSTS
    dns, http, ssl = [], [], []
    for minute in range(30):
        for index, host in enumerate(hosts):
            ts = f"{START + minute * 60 + index * 0.7 + 0.3:.6f}"
            endpoints = [ts, CANARY_UID, host, "53000", "8.8.8.8"]
            # The evil name and fingerprint come thrice a window, so they rank first among a
            # host's observables, ahead of the scanners.
            for query in (EVIL_DOMAIN, EVIL_DOMAIN, EVIL_DOMAIN, f"fileserver.{CANARY_DOMAIN}", "CANARYHOST",
                          "printer.canary.local", "88.77.66.10.in-addr.arpa"):
                dns.append([*endpoints, "53", query])
            http.append([ts, CANARY_UID, host, "53001", SCANNERS[0], "80", f"intranet.{CANARY_DOMAIN}",
                         "/canary-secret-uri"])
            http.append([ts, CANARY_UID, host, "53002", SCANNERS[0], "80", "10.66.77.88", "/canary-secret-uri"])
            ssl.extend([ts, CANARY_UID, host, "53003", SCANNERS[1], "443", EVIL_DOMAIN, EVIL_JA3] for _ in range(3))
    zeek_log(folder / "dns.log", "dns", [*ENDPOINTS, ("query", "string")], dns)
    zeek_log(folder / "http.log", "http", [*ENDPOINTS, ("host", "string"), ("uri", "string")], http)
    zeek_log(folder / "ssl.log", "ssl", [*ENDPOINTS, ("server_name", "string"), ("ja3", "string")], ssl)

    auth, sysmon = [], []
    for minute in range(30):
        clock = f"{minute // 60:02d}:{minute % 60:02d}"
        for index in range(40):
            host = "canary-sshd-host" if index == 0 else f"srv{index:02d}"
            for scanner in SCANNERS[: 1 + (index + minute) % 5]:
                auth.append(f"2024-06-03T00:{clock[3:]}:{index:02d}+00:00 {host} sshd[{1000 + index}]: Failed password for "
                            f"canaryuser from {scanner} port {40000 + minute} ssh2\n")
            computer = f"ws{index:02d}.{CANARY_DOMAIN}"
            system = (f'<Provider Name="Linux-Sysmon"/><EventID>{{event_id}}</EventID><TimeCreated '
                      f'SystemTime="2024-06-03T00:{clock[3:]}:{index:02d}.000000000Z"/><Computer>{computer}</Computer>')
            for event_id, data in (
                    (1, f'<Data Name="Image">/usr/bin/canary-secret-binary</Data><Data Name="User">canaryuser</Data>'
                        f'<Data Name="Hashes">SHA256={EVIL_SHA256}</Data>'),
                    (3, f'<Data Name="Image">/usr/bin/canary-secret-binary</Data><Data Name="DestinationIp">'
                        f'{SCANNERS[2 + index % 3]}</Data><Data Name="DestinationHostname">db.{CANARY_DOMAIN}</Data>'),
                    (22, f'<Data Name="QueryName">CANARYHOST</Data>')):
                for _ in range(1 + (index * 3 + minute + event_id) % 3):
                    sysmon.append(f"Jun  3 00:{clock[3:]}:{index:02d} {computer} sysmon: <Event><System>"
                                  f"{system.format(event_id=event_id)}</System><EventData>{data}</EventData>"
                                  "</Event>\n")
    (folder / "auth.syslog").write_text("".join(auth), encoding="utf-8")
    (folder / "sysmon.syslog").write_text("".join(sysmon), encoding="utf-8")


def test_canaries_stay_in_every_family(tmp_path: Path, hub: tuple[HubServer, str]) -> None:
    """Names planted in dns, http, ssl, sshd and Sysmon input stay on the site, but evidence of each kind leaves."""
    server, base_url = hub
    logs = tmp_path / "logs"
    logs.mkdir()
    write_capture(logs / "conn.log")
    write_family_inputs(logs)
    enroll_site(tmp_path, server, "site-canary")
    port = port_of(base_url)

    with RecordingProxy("127.0.0.1", port) as proxy:
        config = {
            "site": {"id": "site-canary", "signing_key": "site.key",
                     "internal_networks": ["10.0.0.0/8", "81.2.69.0/24"], "internal_domains": [CANARY_DOMAIN]},
            "hub": {"url": f"http://127.0.0.1:{proxy.port}/taxii2/", "username": "site-canary",
                    "password_file": "hub.password"},
            "sources": [{"type": "zeek", "paths": [str(logs / "*.log")]},
                        {"type": "sshd", "paths": [str(logs / "auth.syslog")]},
                        {"type": "sysmon", "paths": [str(logs / "sysmon.syslog")]}],
            "state_dir": "state",
            "windows": {"window_seconds": 60, "round_seconds": ROUND_SECONDS},
            "detector": {"name": "hbos", "baseline_rounds": 1},
            # Three families share the round's epsilon, and this much lets each release its evidence.
            "privacy": {"epsilon_per_round": 10.0, "max_observables_per_entity": 3, "budget_epsilon": 100.0},
        }
        report = run_agent(tmp_path, config)
        sent = proxy.client_bytes()

    released = {(e["family"], e["observable_type"]) for items in report.released.values() for e in items}
    assert report.delivered == 3
    assert {("network", "domain-name"), ("network", "ja3"), ("authentication", "ipv4-addr"),
            ("process", "sha256")} <= released
    assert EVIL_DOMAIN.encode() in sent
    assert EVIL_JA3.encode() in sent
    assert EVIL_SHA256.encode() in sent
    canaries = CANARY_HOSTS + [CANARY_INTERNAL_PEER, CANARY_UID, "10.1.0.", *NAME_CANARIES]
    for canary in canaries:
        assert canary.encode() not in sent, f"{canary} left the agent"
