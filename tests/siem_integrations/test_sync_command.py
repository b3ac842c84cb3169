"""Tests of ``fti siem sync`` end to end: a real fti hub or another TAXII server, into a SIEM."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fti.cli import main
from siem_integrations import sync_command
from stix_mappings.ids import collection_id
from tests.fusion_hub.hub_testing import (HUB_NOW, SettableClock, enroll, evidence, make_config,
                                          running_hub)
from tests.siem_integrations.es_server import EsServer
from tests.siem_integrations.hec_server import HecServer, HecToken
from tests.siem_integrations.test_splunk_hec import indicator
from tests.siem_integrations.test_taxii_sync import COLLECTION, CREDENTIALS, added
from tests.siem_integrations.taxii_server import TaxiiServer

FUSED = collection_id("fused-indicators")


@pytest.fixture()
def stopped_elastic_url(monkeypatch: pytest.MonkeyPatch) -> str:
    """Set the sync's TAXII password and Elasticsearch API key, and return the URL of a stopped cluster."""
    monkeypatch.setenv("FTI_TAXII_PASSWORD", CREDENTIALS[1])
    monkeypatch.setenv("FTI_ELASTIC_API_KEY", "ZXM6a2V5")
    with EsServer(authorization="ApiKey ZXM6a2V5") as stopped:
        return stopped.url


def test_sync_real_hub_into_elastic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fusion_hub.test_hub_rounds import Federation

    config = make_config(tmp_path, rounds={"quorum_sites": 2, "deadline_seconds": 600},
                         fusion={"indicator_ttl_seconds": 600, "lookback_rounds": 1})
    with running_hub(config, SettableClock(HUB_NOW)) as hub, \
            EsServer(authorization="ApiKey ZXM6a2V5") as elastic:
        site_a, site_b = enroll(hub, "site-a"), enroll(hub, "site-b")
        federation = Federation(hub, SettableClock(HUB_NOW), [site_a, site_b], tmp_path)
        federation.post(site_a, [evidence("203.0.113.9", 0.6)])
        federation.post(site_b, [evidence("203.0.113.9", 0.9)])
        monkeypatch.setenv("FTI_TAXII_PASSWORD", site_a.auth[1])
        monkeypatch.setenv("FTI_ELASTIC_API_KEY", "ZXM6a2V5")

        status = main(["siem", "sync", "--from", hub.api_root_url, "--collection", FUSED,
                       "--to", "elastic", "--user", site_a.auth[0], "--elastic-url",
                       elastic.url, "--install-templates", "--state-dir",
                       str(tmp_path / "state")])

    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    bulk = [r for r in elastic.state.requests if r["path"] == "/_bulk"]
    document = json.loads(bulk[0]["body"].decode().splitlines()[1])
    assert status == 0
    assert (summary["indicators"], summary["written"], summary["queued"]) == (1, 1, 0)
    assert document["threat"]["indicator"]["ip"] == "203.0.113.9"
    assert document["event"]["module"] == "ti_fti"
    # The hub's clock is in 2024, so by the sync's real clock the indicator has expired
    # (valid_until passed) and the same flush deleted it again.
    assert elastic.state.documents["logs-ti_fti.indicator-default"] == {}


def test_sync_other_server_into_splunk_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FTI_TAXII_PASSWORD", CREDENTIALS[1])
    monkeypatch.setenv("FTI_SPLUNK_HEC_TOKEN", "hec-token")
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS) as taxii, \
            HecServer(HecToken("hec-token", use_ack=True)) as splunk:
        taxii.state.add(added(1), indicator("203.0.113.9"))
        taxii.state.add(added(2), indicator("203.0.113.10"))

        status = main(["siem", "sync", "--from", taxii.api_root, "--collection", COLLECTION,
                       "--to", "splunk", "--user", CREDENTIALS[0], "--splunk-url", splunk.url,
                       "--splunk-ack", "--rounds", "2", "--interval-secs", "0",
                       "--state-dir", str(tmp_path / "state")])

    rounds = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0
    assert [(r["indicators"], r["written"]) for r in rounds] == [(2, 2), (0, 0)]
    assert [e["event"]["ip"] for e in splunk.state.events] == ["203.0.113.9", "203.0.113.10"]
    # added_after is exclusive, so the second poll requests objects from just before the last date_added
    # and drops the object it already wrote there.
    assert taxii.state.queries[-1]["added_after"] == ["2024-06-03T02:00:01.999999Z"]


def test_sync_without_token_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTI_SPLUNK_HEC_TOKEN", raising=False)

    with pytest.raises(SystemExit) as excinfo:
        main(["siem", "sync", "--from", "http://127.0.0.1:9/api/", "--collection", COLLECTION,
              "--to", "splunk", "--splunk-url", "http://127.0.0.1:9",
              "--state-dir", str(tmp_path / "state")])

    assert str(excinfo.value) == ("fti siem sync: the environment variable FTI_SPLUNK_HEC_TOKEN "
                                  "is required for this target")
    assert "FTI_SPLUNK_HEC_TOKEN" not in os.environ


def test_sync_unavailable_elastic_spools(tmp_path: Path, stopped_elastic_url: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """With --retry-secs 0 an unavailable cluster costs one attempt; the document waits."""
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS) as taxii:
        taxii.state.add(added(1), indicator("203.0.113.9"))

        status = main(["siem", "sync", "--from", taxii.api_root, "--collection", COLLECTION,
                       "--to", "elastic", "--user", CREDENTIALS[0], "--elastic-url", stopped_elastic_url,
                       "--retry-secs", "0", "--state-dir", str(tmp_path / "state")])

    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert status == 3
    assert (summary["indicators"], summary["written"], summary["queued"]) == (1, 0, 1)


def test_sync_negative_retry_secs_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTI_ELASTIC_API_KEY", "ZXM6a2V5")

    with pytest.raises(SystemExit) as excinfo:
        main(["siem", "sync", "--from", "http://127.0.0.1:9/api/", "--collection", COLLECTION,
              "--to", "elastic", "--elastic-url", "http://127.0.0.1:9", "--retry-secs", "-1",
              "--state-dir", str(tmp_path / "state")])

    assert str(excinfo.value) == "fti siem sync: --retry-secs must be >= 0; got -1.0"


def test_sync_quiet_poll_sends_spool(tmp_path: Path, stopped_elastic_url: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A poll that reads nothing new still sends what an outage left in the spool."""
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS) as taxii:
        taxii.state.add(added(1), indicator("203.0.113.9"))
        arguments = ["siem", "sync", "--from", taxii.api_root, "--collection", COLLECTION,
                     "--to", "elastic", "--user", CREDENTIALS[0], "--retry-secs", "0",
                     "--state-dir", str(tmp_path / "state")]
        first_status = main([*arguments, "--elastic-url", stopped_elastic_url])
        with EsServer(authorization="ApiKey ZXM6a2V5") as elastic:
            second_status = main([*arguments, "--elastic-url", elastic.url])

    first, second = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = indicator("203.0.113.9")
    bulk = [r for r in elastic.state.requests if r["path"] == "/_bulk"]
    assert (first_status, first["queued"]) == (3, 1)
    assert (second["indicators"], second["written"], second["queued"]) == (0, 1, 0)
    assert second_status == 0
    assert len(bulk) == 1
    action = json.loads(bulk[0]["body"].decode().splitlines()[0])
    assert action["create"]["_id"] == f"{expected['id']}@{expected['modified']}"
    # valid_until is in 2024, so the same flush deleted the document as expired.
    assert elastic.state.documents["logs-ti_fti.indicator-default"] == {}


def test_sync_failed_round_retried_next_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A TAXII failure in one poll leaves the later polls of the run to try again."""
    monkeypatch.setenv("FTI_TAXII_PASSWORD", CREDENTIALS[1])
    monkeypatch.setenv("FTI_SPLUNK_HEC_TOKEN", "hec-token")
    with TaxiiServer(COLLECTION, credentials=(CREDENTIALS[0], "rotated")) as taxii, \
            HecServer(HecToken("hec-token")) as splunk:
        taxii.state.add(added(1), indicator("203.0.113.9"))
        arguments = ["siem", "sync", "--from", taxii.api_root, "--collection", COLLECTION,
                     "--to", "splunk", "--user", CREDENTIALS[0], "--splunk-url", splunk.url,
                     "--rounds", "2", "--interval-secs", "0",
                     "--state-dir", str(tmp_path / "state")]

        # The server accepts the password again during the pause before the second poll.
        original_run = sync_command.run_sync

        def restore_password(secs: float) -> None:
            taxii.state.credentials = CREDENTIALS

        def run_restoring_password(args: Any, *, env: Mapping[str, str]) -> int:
            return original_run(args, env=env, sleep=restore_password)
        monkeypatch.setattr(sync_command, "run_sync", run_restoring_password)

        status = main(arguments)

    first, second = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert first == {"round": 1, "error": "HTTP 401"}
    assert (second["round"], second["indicators"], second["written"]) == (2, 1, 1)
    assert status == 0
    assert [e["event"]["ip"] for e in splunk.state.events] == ["203.0.113.9"]
