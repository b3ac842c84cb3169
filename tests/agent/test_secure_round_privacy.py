"""A site leaves a secure round whose privacy settings differ from its own, before it sends anything else."""

from __future__ import annotations

import dataclasses
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.secure_round import ROUND_PRIVACY_KEYS, SecureRoundAborted, SecureRoundRunner, hub_secure_privacy
from agent.service import Agent, RunReport
from agent.summariser import HISTOGRAM_BINS, bound_round
from fusion_hub.config import SecureSettings
from fusion_hub.server import HubServer
from fusion_hub.storage import ObjectQuery
from privacy.random import seeded_random
from stix_mappings.ids import collection_id
from stix_mappings.secagg_objects import SECAGG_MESSAGE_TYPE, build_secagg_round
from stix_mappings.timestamps import format_timestamp
from tests.agent.test_secure_round import RecordingRunner, round_state, secure_config
# The hub fixture runs a real hub whose privacy settings are those of site_config.
from tests.agent.test_service_secure_budget import FIRST, SITES, hub, site_config, windows  # noqa: F401

ROUND_ID = "2024-06-03T00:00:00.000Z"
ROUND_START_DT = datetime.fromtimestamp(FIRST, tz=timezone.utc)

# One value per setting that differs from secure_config's, which the round state carries.
DIFFERENT = {
    "epsilon_per_round": 0.75,
    "delta_per_round": 2e-6,
    "unit": "entity-window",
    "secure_min_sites": 4,
    "max_observables_per_entity": 5,
    "max_windows_per_entity": 30,
    "histogram_share": 0.3,
    "count_share": 0.4,
    "score_share": 0.2,
}


def test_every_round_privacy_key_covered() -> None:
    assert set(DIFFERENT) == set(ROUND_PRIVACY_KEYS)
    assert set(SecureSettings().round_privacy()) == set(ROUND_PRIVACY_KEYS)


@pytest.mark.parametrize("key", sorted(DIFFERENT))
def test_differing_setting_leaves_round(tmp_path: Path, key: str) -> None:
    """The reason names the key, both values and the hub's key to change."""
    runner = SecureRoundRunner(secure_config(tmp_path), "", rng=seeded_random(0), charge=None)
    state = round_state()
    state["privacy"] = {**state["privacy"], key: DIFFERENT[key]}
    own = getattr(runner.config.privacy, key)

    with pytest.raises(SecureRoundAborted) as excinfo:
        runner._check_round(ROUND_ID, state, ("network",))

    reason = excinfo.value.reason
    assert f"privacy.{key} = {DIFFERENT[key]!r}" in reason
    assert f"this site has {own!r}" in reason
    assert ROUND_PRIVACY_KEYS[key] in reason


@pytest.mark.parametrize("privacy", [None, {"epsilon_per_round": 0.5}])
def test_round_without_privacy_rejected(tmp_path: Path, privacy: dict[str, Any] | None) -> None:
    runner = SecureRoundRunner(secure_config(tmp_path), "", rng=seeded_random(0), charge=None)
    state = round_state()
    if privacy is None:
        del state["privacy"]
    else:
        state["privacy"] = privacy

    with pytest.raises(SecureRoundAborted, match="does not carry the round's privacy settings"):
        runner._check_round(ROUND_ID, state, ("network",))


def test_equal_numbers_in_other_forms_match(tmp_path: Path) -> None:
    """A hub that writes ``epsilon_per_round: 1`` and a site that writes ``1.0`` agree, as do 1e-6 and 0.000001."""
    runner = SecureRoundRunner(secure_config(tmp_path, "  delta_per_round: 0.000001\n"), "", rng=seeded_random(0),
                               charge=None)
    runner.config = dataclasses.replace(runner.config, privacy=dataclasses.replace(runner.config.privacy,
                                                                                 epsilon_per_round=1.0))
    state = round_state()
    state["privacy"] = {**state["privacy"], "epsilon_per_round": 1, "delta_per_round": 1e-6}

    assert runner._check_privacy(ROUND_ID, state) is None


def test_hub_round_object_carries_privacy() -> None:
    """The round object with the hub's settings passes the schema and carries the agent's keys."""
    settings = SecureSettings(epsilon_per_round=2.5, unit="entity-window", min_sites=4)
    obj = build_secagg_round(
        round_id=ROUND_ID, created_by_ref="identity--8d2c5b1e-0c1a-5d6e-9f00-0123456789ab",
        created=ROUND_START_DT, modified=ROUND_START_DT, stage="advertise_keys",
        site_ids=["site-a", "site-b", "site-c", "site-d"], threshold=4, min_sites=4, vector_length=30 + 32,
        histogram_bins=HISTOGRAM_BINS, families=["network", "authentication", "process"], sketch_rows=2,
        sketch_width=16, participants=["site-a"], privacy=settings.round_privacy())

    assert obj["privacy"]["epsilon_per_round"] == 2.5
    assert obj["privacy"]["unit"] == "entity-window"
    assert obj["privacy"]["secure_min_sites"] == 4


def test_hub_privacy_from_site_settings(tmp_path: Path) -> None:
    privacy = secure_config(tmp_path).privacy

    settings = SecureSettings(mode="secure", **hub_secure_privacy(privacy))

    assert settings.round_privacy() == {key: getattr(privacy, key) for key in ROUND_PRIVACY_KEYS}


# Through a real hub ------------------------------------------------------------------------------

def stored_stages(server: HubServer, site: str) -> list[str]:
    page = server.storage.query_objects(ObjectQuery(collection_id=collection_id("keys"), limit=1000,
                                                    types=(SECAGG_MESSAGE_TYPE,)))
    return sorted(obj["stage"] for obj in (json.loads(s.raw) for s in page.objects) if obj["sender"] == site)


@pytest.mark.slow
def test_differing_site_leaves_others_sum(tmp_path: Path, hub: tuple[HubServer, str],
                                          caplog: pytest.LogCaptureFixture) -> None:
    """site-c with a larger epsilon leaves at join uncharged, and site-a and site-b still sum exactly."""
    server, hub_url = hub
    configs = {site: site_config(tmp_path, server, hub_url, site) for site in SITES}
    loose = configs["site-c"]
    agent = Agent(dataclasses.replace(loose, privacy=dataclasses.replace(loose.privacy, epsilon_per_round=12.0)),
                  rng=seeded_random(3))
    runners = {site: RecordingRunner(configs[site], configs[site].read_hub_password(), rng=seeded_random(index),
                                     charge=None) for index, site in enumerate(SITES[:2])}
    report = RunReport(site_id="site-c")

    try:
        with caplog.at_level(logging.WARNING, logger="agent.service"), ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(runner.run, FIRST, bound_round(windows(FIRST), privacy=configs[site].privacy,
                                                                  rng=seeded_random(0)))
                       for site, runner in runners.items()]
            agent.release_rounds({"network": windows(FIRST)}, report)
            for future in futures:
                future.result(timeout=120)
        charged = agent.ledger.spent(FIRST).rounds_charged
        statuses = agent.state.round_statuses()
    finally:
        agent.close()
    assert server.secure is not None
    result = server.secure.results_[format_timestamp(ROUND_START_DT)]

    # site-c recorded the round, charged nothing and stored no message beyond its join.
    assert report.rounds == {FIRST: "aborted"}
    assert statuses[FIRST] == "aborted"
    assert charged == 0
    assert stored_stages(server, "site-c") == []
    message = next(r.getMessage() for r in caplog.records if "not summed" in r.getMessage())
    assert "privacy.epsilon_per_round = 10.0" in message
    assert "this site has 12.0" in message
    assert "secure.epsilon_per_round" in message

    # The two matching sites' noised histograms add up to the hub's sum.
    assert result.survivors == ("site-a", "site-b")
    total = runners["site-a"].vector + runners["site-b"].vector
    assert result.histograms["network"] == tuple(int(v) for v in total[:HISTOGRAM_BINS])
    assert np.asarray(result.histograms["network"]).sum() == result.window_counts["network"]



# Values that differ from site_config's, each valid on its own.
DIFFERENT_FROM_SITE_CONFIG = {
    "epsilon_per_round": 5.0,
    "delta_per_round": 2e-6,
    "unit": "entity-window",
    "secure_min_sites": 3,
    "max_observables_per_entity": 3,
    "max_windows_per_entity": 30,
    "histogram_share": 0.3,
    "count_share": 0.4,
    "score_share": 0.2,
}


@pytest.mark.parametrize("key", sorted(DIFFERENT_FROM_SITE_CONFIG))
def test_each_differing_setting_charges_nothing(tmp_path: Path, hub: tuple[HubServer, str], key: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Through a real hub, a site with one differing setting records the round and sends nothing after its join."""
    server, hub_url = hub
    configs = {site: site_config(tmp_path, server, hub_url, site) for site in SITES}
    config = configs["site-a"]
    privacy = dataclasses.replace(config.privacy, **{key: DIFFERENT_FROM_SITE_CONFIG[key]})
    agent = Agent(dataclasses.replace(config, privacy=privacy), rng=seeded_random(1))
    report = RunReport(site_id="site-a")

    try:
        with caplog.at_level(logging.WARNING, logger="agent.service"):
            agent.release_rounds({"network": windows(FIRST)}, report)
        charged = agent.ledger.spent(FIRST).rounds_charged
    finally:
        agent.close()

    assert report.rounds == {FIRST: "aborted"}
    assert charged == 0
    assert stored_stages(server, "site-a") == []
    message = next(r.getMessage() for r in caplog.records if "not summed" in r.getMessage())
    assert f"privacy.{key}" in message
