"""The ``fti hub`` operator commands on SQLite and PostgreSQL: sites, rounds, tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import yaml

from fti.cli import main
from fusion_hub.config import load_hub_config
from fusion_hub.server import HubServer
from stix_mappings.ids import collection_id
from tests.fusion_hub.hub_testing import (
    HUB_NOW,
    ROUND_SECONDS,
    ROUND_START,
    TAXII,
    SettableClock,
    enroll,
    evidence,
    running_hub,
    signed_summary,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def config_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    storage: dict[str, str] = {"path": "hub.sqlite3"}
    if request.param == "postgresql":
        storage = {"backend": "postgresql",
                   "postgresql_dsn": request.getfixturevalue("postgres_dsn"),
                   "postgresql_schema": request.getfixturevalue("postgres_schema")}
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump({
        "storage": storage,
        "auth": {"argon2_time_cost": 1, "argon2_memory_cost_kib": 1024,
                 "argon2_parallelism": 1},
        "rounds": {"quorum_sites": 2, "max_clock_skew_seconds": 60},
    }), encoding="utf-8")
    yield path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_sites_lists_every_credential(config_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    hub = HubServer(load_hub_config(config_path), clock=SettableClock(HUB_NOW))
    try:
        enroll(hub, "site-a")
        enroll(hub, "site-b")
        hub.registry.add_consumer("splunk", read=["fused-indicators"])
        hub.registry.revoke("site-b")
    finally:
        hub.stop()

    status, out, _ = run(capsys, "hub", "sites", "--config", str(config_path))

    lines = out.splitlines()
    assert status == 0
    assert lines[0].split() == ["NAME", "KIND", "STATE", "ENROLLED", "TRUST", "READS"]
    assert lines[1].split() == ["site-a", "site", "active", "2024-06-03T01:00:00Z", "0.667", "-"]
    assert lines[2].split() == ["site-b", "site", "revoked", "2024-06-03T01:00:00Z",
                                "2024-06-03T01:00:00Z", "0.667", "-"]
    assert lines[3].split() == ["splunk", "consumer", "active", "2024-06-03T01:00:00Z", "-",
                                "fused-indicators"]
    assert "argon2" not in out


def test_rounds_lists_open_and_closed(config_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with running_hub(load_hub_config(config_path)) as hub:
        sites = [enroll(hub, "site-a"), enroll(hub, "site-b")]
        url = f"{hub.api_root_url}collections/{collection_id('summaries')}/objects/"
        for site, round_index in ((sites[0], 0), (sites[1], 0), (sites[0], 1)):
            summary = signed_summary(site, items=[evidence("203.0.113.9", 0.9)],
                                     round_start=ROUND_START + timedelta(
                                         seconds=round_index * ROUND_SECONDS))
            response = requests.post(url, data=json.dumps({"objects": [summary]}),
                                     auth=site.auth, timeout=10,
                                     headers={"Accept": TAXII, "Content-Type": TAXII})
            assert response.json()["success_count"] == 1

    status, out, _ = run(capsys, "hub", "rounds", "--config", str(config_path))
    limited = run(capsys, "hub", "rounds", "--config", str(config_path), "--limit", "1")[1]

    lines = out.splitlines()
    assert status == 0
    assert lines[0].split() == ["ROUND", "START", "STATE", "CLOSED", "SITES", "PUBLISHED",
                                "REFUSED", "REVOKED"]
    assert lines[1].split() == ["2024-06-03T00:05:00Z", "open", "-", "1", "-", "-", "-"]
    assert lines[2].split() == ["2024-06-03T00:00:00Z", "closed", "(quorum)",
                                "2024-06-03T01:00:00Z", "2", "1", "0", "0"]
    assert len(lines) == 3
    assert len(limited.splitlines()) == 2


def test_rounds_limit_invalid(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "hub", "rounds", "--config", str(config_path), "--limit", "0")

    assert status == 2
    assert "--limit must be >= 1; got 0" in err


def test_token_issue_use_revoke(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_hub_config(config_path)
    with running_hub(config) as hub:
        hub.registry.add_consumer("splunk", read=["fused-indicators"])

        status, out, _ = run(capsys, "hub", "token", "--config", str(config_path),
                             "--name", "splunk")
        token = out.strip().rsplit(" ", 1)[1]
        url = f"{hub.api_root_url}collections/"
        headers = {"Accept": TAXII, "Authorization": f"Bearer {token}"}
        before = requests.get(url, headers=headers, timeout=10)
        revoked = run(capsys, "hub", "token", "--config", str(config_path), "--revoke",
                      token.split("_")[1])
        after = requests.get(url, headers=headers, timeout=10)

    assert status == 0
    assert before.status_code == 200
    assert revoked[0] == 0
    assert "revoked" in revoked[1]
    assert after.status_code == 401


def test_token_for_unknown_name_fails(config_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "hub", "token", "--config", str(config_path), "--name", "nobody")

    assert status == 2
    assert "nobody" in err
