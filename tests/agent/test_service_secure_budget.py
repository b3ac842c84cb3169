"""Budget stop in secure mode: a site whose budget is spent leaves rounds and logs why, through a real hub."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest

from agent.config import AgentConfig, load_agent_config
from agent.detector import ScoredWindow
from agent.secure_round import SecureRoundRunner
from agent.service import Agent, RunReport
from agent.summariser import bound_round
from fusion_hub.config import AuthSettings, HubConfig, RoundSettings, SecureSettings, ServerSettings, StorageSettings
from fusion_hub.server import HubServer
from fusion_hub.storage import ObjectQuery
from privacy.ledger import BudgetStatus, PrivacyLedger
from privacy.random import seeded_random
from privacy.signing import generate_signing_key
from stix_mappings.ids import collection_id
from stix_mappings.secagg_objects import SECAGG_ROUND_TYPE
from stix_mappings.timestamps import format_timestamp
from tests.agent.test_config import VALID, write

ROUND_SECONDS = 3600
FIRST, SECOND = 1_717_372_800, 1_717_372_800 + ROUND_SECONDS
TARGET = "198.51.100.7"
SITES = ("site-a", "site-b", "site-c")


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[tuple[HubServer, str]]:
    """A hub in secure mode whose rounds go on with two sites after a ten-second stage timeout."""
    # Cheap password hashing, with room for three sites logging in at once from one address,
    # which gets half of the concurrent checks.
    auth = AuthSettings(argon2_time_cost=1, argon2_memory_cost_kib=1024, argon2_parallelism=1,
                        max_concurrent_verifications=2 * len(SITES))
    config = HubConfig(hub=ServerSettings(host="127.0.0.1", port=0, tick_seconds=0.2), auth=auth,
                       storage=StorageSettings(path=tmp_path / "hub.sqlite3"),
                       rounds=RoundSettings(round_seconds=ROUND_SECONDS, quorum_sites=2, deadline_seconds=3600,
                                            retention_days=100_000),
                       secure=SecureSettings(mode="secure", min_sites=2, sketch_rows=2, sketch_width=64,
                                             sketch_threshold=30, stage_timeout_seconds=10.0,
                                             epsilon_per_round=10, max_observables_per_entity=2))
    server = HubServer(config)
    port = server.start().rstrip("/").rsplit(":", 1)[1]
    yield server, f"http://127.0.0.1:{port}/taxii2/"
    server.stop()


def site_config(tmp_path: Path, server: HubServer, hub_url: str, site: str) -> AgentConfig:
    """Enrol ``site`` and return its secure-mode configuration: 10 per round out of a budget of 15."""
    folder = tmp_path / site
    (folder / "keys").mkdir(parents=True)
    key = generate_signing_key()
    key.to_file(folder / "keys" / "site.key")
    (folder / "hub.password").write_text(server.registry.enroll_site(site, key.public_key_b64))
    text = VALID.replace("site-a", site).replace("http://127.0.0.1:8443/taxii2/", hub_url).replace(
        "epsilon_per_round: 0.5", "epsilon_per_round: 10")
    return load_agent_config(write(folder, text + "  mode: secure\n  budget_epsilon: 15\n  secure_min_sites: 2\n"
                                   "  max_observables_per_entity: 2\n  secure_stage_timeout_secs: 30\n"))


def windows(round_start: int, hosts: int = 60) -> list[ScoredWindow]:
    """Return two windows of each of ``hosts`` hosts, enough for a site's reveal to clear its threshold."""
    return [ScoredWindow(f"10.0.0.{n}", round_start + 60 * minute, 0.9, {TARGET: 2})
            for n in range(hosts) for minute in range(2)]


def stored_round_ids(server: HubServer) -> set[str]:
    """Return the ids of the rounds the hub opened, from its round objects in ``keys``."""
    page = server.storage.query_objects(ObjectQuery(collection_id=collection_id("keys"), limit=1000,
                                                    types=(SECAGG_ROUND_TYPE,)))
    return {json.loads(stored.raw)["round_id"] for stored in page.objects}


class SpentAfterCheckLedger(PrivacyLedger):
    """A ledger whose budget another writer of the same file spends right after each check passes.

    This is the race in which the agent's check before a round passes, but its charge just
    before the masked input is rejected.
    """

    def check(self, round_start: datetime | int, epsilon: float, delta: float) -> BudgetStatus:
        status = super().check(round_start, epsilon, delta)
        start = int(round_start.timestamp()) if isinstance(round_start, datetime) else round_start
        with PrivacyLedger(self.path, site_id=self.site_id, budget_epsilon=self.budget_epsilon,
                           budget_delta=self.budget_delta, period_seconds=self.period_seconds) as other:
            other.charge(start - 10 * ROUND_SECONDS, epsilon, delta, "another-writer")
        return status


def test_spent_budget_joins_no_round(tmp_path: Path, hub: tuple[HubServer, str],
                                     caplog: pytest.LogCaptureFixture) -> None:
    """With the budget spent before the round, the site never joins it and charges nothing."""
    server, hub_url = hub
    agent = Agent(site_config(tmp_path, server, hub_url, "site-a"), rng=seeded_random(1))
    agent.ledger.charge(FIRST - 10 * ROUND_SECONDS, 10.0, 1e-6, "earlier-round")
    report = RunReport(site_id="site-a")

    try:
        with caplog.at_level(logging.WARNING, logger="agent.service"):
            agent.release_rounds({"network": windows(FIRST) + windows(SECOND)}, report)
        charged = agent.ledger.spent(SECOND).rounds_charged
    finally:
        agent.close()

    assert report.rounds == {FIRST: "budget_exhausted", SECOND: "budget_exhausted"}
    assert charged == 1
    assert agent.metrics.rounds_budget_exhausted == 2
    assert [r.getMessage().split(": ")[1] for r in caplog.records] == [
        f"round {FIRST} not released", f"round {SECOND} not released"]
    assert "privacy.budget_epsilon" in caplog.records[0].getMessage()
    assert stored_round_ids(server) == set()


@pytest.mark.slow
def test_rejected_charge_leaves_round_before_masked_input(tmp_path: Path, hub: tuple[HubServer, str],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A charge rejected at the masked input stage sends nothing more, and the next round is not joined."""
    server, hub_url = hub
    configs = {site: site_config(tmp_path, server, hub_url, site) for site in SITES}
    agent = Agent(configs["site-a"], rng=seeded_random(1))
    ledger_path = agent.ledger.path
    agent.ledger.close()
    agent.ledger = SpentAfterCheckLedger(ledger_path, site_id="site-a", budget_epsilon=15.0,
                                         budget_delta=configs["site-a"].privacy.budget_delta,
                                         period_seconds=30 * 86400)
    others = {site: SecureRoundRunner(configs[site], configs[site].read_hub_password(), rng=seeded_random(index),
                                      charge=None) for index, site in enumerate(SITES[1:], start=2)}
    report = RunReport(site_id="site-a")

    # The agent's state database belongs to this thread, so the other sites run in the pool.
    try:
        with caplog.at_level(logging.WARNING, logger="agent.service"), ThreadPoolExecutor(max_workers=2) as pool:
            revealed = {site: pool.submit(runner.run, FIRST, bound_round(windows(FIRST),
                                                                        privacy=configs[site].privacy,
                                                                        rng=seeded_random(0)))
                        for site, runner in others.items()}
            agent.release_rounds({"network": windows(FIRST) + windows(SECOND)}, report)
            revealed_values = {site: future.result(timeout=120) for site, future in revealed.items()}
        status = agent.ledger.spent(SECOND)
        first_charged = agent.ledger.is_charged(FIRST)
    finally:
        agent.close()

    # Site A left the first round at its charge and did not join the second.
    assert report.rounds == {FIRST: "budget_exhausted", SECOND: "budget_exhausted"}
    assert agent.metrics.rounds_budget_exhausted == 2
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith(f"site site-a: round {FIRST} left before its masked input: ")
    assert messages[1].startswith(f"site site-a: round {SECOND} not released: ")

    # Only the other writer's round is charged: the rejected charge and the skipped round cost nothing.
    assert first_charged is False
    assert status.rounds_charged == 1

    # The hub summed the two other sites alone, and site A revealed nothing.
    round_id = format_timestamp(datetime.fromtimestamp(FIRST, tz=timezone.utc))
    assert server.secure is not None
    assert server.secure.results_[round_id].survivors == ("site-b", "site-c")
    assert {e.site_id for e in server.secure._evidence[round_id]} == {"site-b", "site-c"}
    assert stored_round_ids(server) == {round_id}
    assert set(revealed_values) == {"site-b", "site-c"}
