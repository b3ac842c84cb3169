"""Records the agent reads but cannot use are counted and logged with the file and the fix."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from agent.config import load_agent_config
from agent.service import Agent, RunReport
from privacy.random import seeded_random
from privacy.signing import generate_signing_key


def json_conn_line(ts: float, orig: str, resp: str) -> str:
    return json.dumps({"ts": ts, "uid": "C1", "id.orig_h": orig, "id.orig_p": 50000, "id.resp_h": resp,
                       "id.resp_p": 443, "proto": "tcp", "conn_state": "SF"}) + "\n"


def make_agent(tmp_path: Path, log_name: str, lines: list[str]) -> Agent:
    (tmp_path / log_name).write_text("".join(lines), encoding="utf-8")
    generate_signing_key().to_file(tmp_path / "site.key")
    config = {
        "site": {"id": "site-t", "signing_key": "site.key"},
        "hub": {"url": "http://127.0.0.1:9/taxii2/", "username": "site-t", "password": "pw"},
        "sources": [{"type": "zeek", "paths": [log_name]}],
        "state_dir": "state",
    }
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return Agent(load_agent_config(tmp_path / "agent.yaml"), rng=seeded_random(1))


def warning_about(caplog: pytest.LogCaptureFixture, file_name: str) -> str:
    """Return the one warning that names ``file_name``."""
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and file_name in r.getMessage()]
    assert len(messages) == 1, messages
    return messages[0]


def read(agent: Agent) -> RunReport:
    report = RunReport(site_id="site-t")
    try:
        agent.read_sources(report)
    finally:
        agent.close()
    return report


def test_json_log_without_path_named_otherwise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Zeek's JSON writer adds no _path by default, so the log path comes from the file name.
    lines = [json_conn_line(1_717_372_800 + i, "10.0.0.5", "198.51.100.7") for i in range(3)]
    agent = make_agent(tmp_path, "zeek-today.json", lines)

    with caplog.at_level(logging.WARNING, logger="agent.service"):
        report = read(agent)

    assert report.connections == 0
    message = warning_about(caplog, "zeek-today.json")
    assert "3 records skipped" in message
    assert "log path is 'zeek-today', not conn" in message
    assert "conn*.json" in message


def test_no_internal_host_names_the_setting(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = [json_conn_line(1_717_372_800 + i, "81.2.69.5", "198.51.100.7") for i in range(4)]
    agent = make_agent(tmp_path, "conn.json", lines)

    with caplog.at_level(logging.WARNING, logger="agent.service"):
        report = read(agent)

    assert report.connections == 0
    message = warning_about(caplog, "conn.json")
    assert "none of its 4 connections" in message
    assert "site.internal_networks" in message


def test_records_without_addresses_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = [json_conn_line(1_717_372_800, "10.0.0.5", "198.51.100.7"),
             json.dumps({"ts": 1_717_372_801, "uid": "C2", "id.orig_h": "10.0.0.5"}) + "\n",
             json.dumps({"ts": 1_717_372_802, "uid": "C3", "id.orig_h": "not-an-ip", "id.resp_h": "10.0.0.1"}) + "\n"]
    agent = make_agent(tmp_path, "conn.json", lines)

    with caplog.at_level(logging.WARNING, logger="agent.service"):
        report = read(agent)

    assert report.connections == 1
    message = warning_about(caplog, "conn.json")
    assert "2 conn records skipped" in message
    assert "ts, id.orig_h or id.resp_h" in message
