"""A run against a hub that cannot be reached stops after the first summary's retries."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.config import load_agent_config
from agent.service import Agent
from agent.state import AgentState
from privacy.random import seeded_random
from privacy.signing import generate_signing_key
from tests.agent.test_service import make_site


@pytest.fixture()
def site_key(tmp_path: Path):  # type: ignore[no-untyped-def]
    key = generate_signing_key()
    key.to_file(tmp_path / "site.key")
    return key


def closed_port() -> int:
    """Return a loopback port with no listener, so every connection is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_hub_stops_delivery_early(tmp_path: Path, site_key) -> None:  # type: ignore[no-untyped-def]
    config = load_agent_config(make_site(tmp_path, f"http://127.0.0.1:{closed_port()}", "pw", tmp_path / "site.key"))
    agent = Agent(config, rng=seeded_random(3))
    report = agent.run_once(poll=False)
    agent.close()

    state = AgentState(config.state_dir / "agent.sqlite")
    try:
        attempts = sorted(item.attempts for item in state.pending())
    finally:
        state.close()
    assert report.pending == 3
    assert set(report.rounds.values()) == {"queued"}
    # The first summary used its two attempts; the other two were left for the next run.
    assert attempts == [0, 0, 2]
