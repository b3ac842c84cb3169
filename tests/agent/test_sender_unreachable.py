"""A run against a hub that cannot be reached stops after the first summary's retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_agent_config
from agent.service import Agent
from agent.state import AgentState
from privacy.random import seeded_random
from tests.agent.test_service import make_site
from tests.support.loopback import unused_port


def test_unreachable_hub_stops_delivery_early(tmp_path: Path, site_key) -> None:  # type: ignore[no-untyped-def]
    config = load_agent_config(make_site(tmp_path, f"http://127.0.0.1:{unused_port()}", "pw", tmp_path / "site.key"))
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
