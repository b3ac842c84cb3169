"""One agent per state folder.

Two agents sharing a state folder both find a round unreleased, both charge it (the ledger
treats the second, equal charge as a resend) and both draw fresh noise for it: the hub then
sees two releases of the same data while the ledger counts one.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.config import load_agent_config
from agent.errors import AgentError
from agent.service import Agent
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


def test_second_agent_on_state_is_rejected(tmp_path: Path, site_key) -> None:  # type: ignore[no-untyped-def]
    config = load_agent_config(make_site(tmp_path, f"http://127.0.0.1:{closed_port()}", "pw", tmp_path / "site.key"))
    first = Agent(config, rng=seeded_random(1))
    try:
        with pytest.raises(AgentError) as excinfo:
            Agent(config, rng=seeded_random(2))
    finally:
        first.close()

    assert str(config.state_dir) in str(excinfo.value)
    assert "another agent" in str(excinfo.value)


def test_state_is_free_after_close(tmp_path: Path, site_key) -> None:  # type: ignore[no-untyped-def]
    config = load_agent_config(make_site(tmp_path, f"http://127.0.0.1:{closed_port()}", "pw", tmp_path / "site.key"))
    Agent(config, rng=seeded_random(1)).close()

    second = Agent(config, rng=seeded_random(2))
    second.close()
