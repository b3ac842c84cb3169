"""One agent per state folder.

Two agents sharing a state folder both find a round unreleased, both charge it (the ledger
treats the second, equal charge as a resend) and both draw fresh noise for it: the hub then
sees two releases of the same data while the ledger counts one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_agent_config
from agent.errors import AgentError
from agent.service import Agent
from privacy.random import seeded_random
from tests.agent.test_service import make_site
from tests.support.loopback import unused_port


def test_second_agent_on_state_is_rejected(tmp_path: Path, site_key) -> None:  # type: ignore[no-untyped-def]
    config = load_agent_config(make_site(tmp_path, f"http://127.0.0.1:{unused_port()}", "pw", tmp_path / "site.key"))
    first = Agent(config, rng=seeded_random(1))
    try:
        with pytest.raises(AgentError) as excinfo:
            Agent(config, rng=seeded_random(2))
    finally:
        first.close()

    assert str(config.state_dir) in str(excinfo.value)
    assert "another agent" in str(excinfo.value)


def test_state_is_free_after_close(tmp_path: Path, site_key) -> None:  # type: ignore[no-untyped-def]
    config = load_agent_config(make_site(tmp_path, f"http://127.0.0.1:{unused_port()}", "pw", tmp_path / "site.key"))
    Agent(config, rng=seeded_random(1)).close()

    second = Agent(config, rng=seeded_random(2))
    second.close()
