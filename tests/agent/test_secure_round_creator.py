"""A site follows only the round objects its hub created, on a TAXII server that stores what anyone posts.

fti's hub rejects round objects from sites at its intake. medallion, the OASIS reference TAXII
2.1 server, has no such rule, so here another site can store a round object under the
round's id. The site must ignore it, log it and send nothing for it, while an object created by
the identity of ``hub.name`` is still followed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, load_agent_config
from agent.secure_round import SecureRoundAborted, SecureRoundRunner
from agent.summariser import HISTOGRAM_BINS, bound_round
from agent.taxii_client import open_collection
from fusion_hub.config import SecureSettings
from privacy.random import seeded_random
from privacy.signing import generate_signing_key
from stix_mappings.ids import hub_identity_id, site_identity_id
from stix_mappings.secagg_objects import SECAGG_MESSAGE_TYPE, build_secagg_round
from stix_mappings.summary import FAMILIES
from stix_mappings.timestamps import format_timestamp
from tests.agent.test_config import VALID, write
from tests.agent.test_taxii_medallion import load_medallion_helper

SITES = ("site-a", "site-b", "site-c")


@pytest.fixture(scope="module")
def medallion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    helper = load_medallion_helper()
    with helper.running_medallion(tmp_path_factory.mktemp("medallion"), ["keys"]) as server:
        yield server


def site_a_config(tmp_path: Path, server: Any) -> AgentConfig:
    """Return site A's secure-mode configuration against medallion, with a one-second stage timeout."""
    generate_signing_key().to_file(tmp_path / "site.key")
    text = VALID.replace("http://127.0.0.1:8443/taxii2/", server.discovery_url).replace(
        "username: site-a", f"username: {server.user}").replace("keys/site.key", "site.key")
    return load_agent_config(write(tmp_path, text + "  mode: secure\n  secure_min_sites: 2\n"
                                   "  secure_stage_timeout_secs: 1\n"))


def round_object(round_start: int, *, creator: str, stage: str, reason: str | None = None,
                 modified_minutes: int = 2) -> dict[str, Any]:
    """Return a valid round object that invites every site, created by ``creator``."""
    start = datetime.fromtimestamp(round_start, tz=timezone.utc)
    return build_secagg_round(
        round_id=format_timestamp(start), created_by_ref=creator, created=start + timedelta(minutes=1),
        modified=start + timedelta(minutes=modified_minutes), stage=stage, site_ids=SITES, threshold=2, min_sites=2,
        vector_length=len(FAMILIES) * HISTOGRAM_BINS + 2 * 16, histogram_bins=HISTOGRAM_BINS, families=FAMILIES,
        sketch_rows=2, sketch_width=16, participants=SITES, reason=reason,
        privacy=SecureSettings(min_sites=2, epsilon_per_round=0.5).round_privacy())


def post(config: AgentConfig, server: Any, obj: dict[str, Any]) -> None:
    collection = open_collection(config.hub, server.password, "keys")
    collection.add_objects(json.dumps({"objects": [obj]}), wait_for_completion=True, timeout=10)


def site_a_stages(config: AgentConfig, server: Any, round_start: int) -> list[str]:
    """Return the stages of the messages site A stored in ``keys`` for one round."""
    collection = open_collection(config.hub, server.password, "keys")
    round_id = format_timestamp(datetime.fromtimestamp(round_start, tz=timezone.utc))
    objects = collection.get_objects(type=SECAGG_MESSAGE_TYPE).get("objects", [])
    return sorted(o["stage"] for o in objects if o["sender"] == "site-a" and o["round_id"] == round_id)


def run_site_a(config: AgentConfig, server: Any, round_start: int) -> None:
    runner = SecureRoundRunner(config, server.password, rng=seeded_random(0), charge=None)
    runner.run(round_start, bound_round([], privacy=config.privacy, rng=seeded_random(0)))


def test_round_object_from_site_ignored(tmp_path: Path, medallion: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A round object created by site B never gets site A past its join."""
    config = site_a_config(tmp_path, medallion)
    round_start = 1_717_372_800
    post(config, medallion, round_object(round_start, creator=site_identity_id("site-b"), stage="advertise_keys"))

    with caplog.at_level(logging.WARNING, logger="agent.secure_round"), \
            pytest.raises(SecureRoundAborted) as excinfo:
        run_site_a(config, medallion, round_start)

    assert excinfo.value.reason == "stage advertise_keys did not start within 1.0 s"
    assert site_a_stages(config, medallion, round_start) == ["join"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert f"created by {site_identity_id('site-b')}, not by the identity {hub_identity_id('fti-hub')}" in warnings[0]


def test_abort_from_site_ignored(tmp_path: Path, medallion: Any) -> None:
    """Site B cannot end site A's round with an ``aborted`` object of its own."""
    config = site_a_config(tmp_path, medallion)
    round_start = 1_717_372_800 + 3600
    post(config, medallion, round_object(round_start, creator=site_identity_id("site-b"), stage="aborted",
                                         reason="forged by site-b"))

    with pytest.raises(SecureRoundAborted) as excinfo:
        run_site_a(config, medallion, round_start)

    assert excinfo.value.reason == "stage advertise_keys did not start within 1.0 s"


def test_abort_from_hub_followed(tmp_path: Path, medallion: Any) -> None:
    """The same object created by the hub's identity ends the round with the hub's reason."""
    config = site_a_config(tmp_path, medallion)
    round_start = 1_717_372_800 + 7200
    post(config, medallion, round_object(round_start, creator=hub_identity_id("fti-hub"), stage="aborted",
                                         reason="the hub restarted"))

    with pytest.raises(SecureRoundAborted) as excinfo:
        run_site_a(config, medallion, round_start)

    assert excinfo.value.reason == "the hub restarted"


def test_flood_of_versions_ends_round(tmp_path: Path, medallion: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """More versions of the round object than the hub ever writes make the site leave the round."""
    monkeypatch.setattr("agent.secure_round._MAX_ROUND_VERSIONS", 2)
    config = site_a_config(tmp_path, medallion)
    round_start = 1_717_372_800 + 3 * 3600
    for minutes in (2, 3, 4):
        post(config, medallion, round_object(round_start, creator=site_identity_id("site-b"), stage="share_keys",
                                             modified_minutes=minutes))

    with pytest.raises(SecureRoundAborted) as excinfo:
        run_site_a(config, medallion, round_start)

    assert excinfo.value.reason == ("the keys collection contains more than 2 versions of the round object, "
                                    "far more than the hub writes")
    assert site_a_stages(config, medallion, round_start) == ["join"]
