"""The hub pushes each round to Splunk HEC and Elasticsearch when their URLs are configured."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fusion_hub.config import HubConfig
from fusion_hub.server import build_sinks
from siem_integrations.elastic_bulk import ElasticBulkClient
from siem_integrations.hub_sinks import SecretFileInvalid, read_secret_file
from siem_integrations.ndjson_file import dump_line
from siem_integrations.splunk_hec import SplunkHecClient, prepare_event
from siem_integrations.spool import Spool, SpooledDocument
from tests.fusion_hub.hub_testing import HUB_NOW, SettableClock, enroll, evidence, make_config
from tests.fusion_hub.hub_testing import running_hub
from tests.siem_integrations.es_server import EsServer
from tests.siem_integrations.hec_server import HecServer, HecToken


def secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def config_pushing_to(tmp_path: Path, splunk: HecServer, elastic: EsServer,
                      **overrides: Any) -> HubConfig:
    config = make_config(tmp_path, rounds={"quorum_sites": 2, "deadline_seconds": 600},
                         fusion={"indicator_ttl_seconds": 600, "lookback_rounds": 1},
                         **overrides)
    siem = dataclasses.replace(
        config.siem, splunk_hec_url=splunk.url, elastic_url=elastic.url,
        splunk_hec_token_file=secret(tmp_path / "hec.token", "hec-token"),
        elastic_api_key_file=secret(tmp_path / "es.key", "ZXM6a2V5"),
        spool_dir=tmp_path / "spool")
    return dataclasses.replace(config, siem=siem)


def test_round_pushed_to_both_siems(tmp_path: Path) -> None:
    from tests.fusion_hub.test_hub_rounds import Federation

    with HecServer(HecToken("hec-token")) as splunk, \
            EsServer(authorization="ApiKey ZXM6a2V5") as elastic:
        config = config_pushing_to(tmp_path, splunk, elastic)
        with running_hub(config, SettableClock(HUB_NOW)) as hub:
            sites = [enroll(hub, "site-a"), enroll(hub, "site-b")]
            federation = Federation(hub, SettableClock(HUB_NOW), sites, tmp_path)
            federation.post(sites[0], [evidence("203.0.113.9", 0.6)])
            federation.post(sites[1], [evidence("203.0.113.9", 0.9)])

    bulk = [r for r in elastic.state.requests if r["path"] == "/_bulk"]
    assert [e["event"]["ip"] for e in splunk.state.events] == ["203.0.113.9"]
    assert splunk.state.events[0]["host"] == "test-hub"
    assert len(bulk) == 1
    assert b'"ip":"203.0.113.9"' in bulk[0]["body"]


def test_build_sinks_adds_http_clients(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    siem = dataclasses.replace(
        config.siem, splunk_hec_url="https://splunk.example.org:8088",
        elastic_url="https://es.example.org:9200",
        splunk_hec_token_file=secret(tmp_path / "hec.token", "t"),
        elastic_api_key_file=secret(tmp_path / "es.key", "k"), spool_dir=tmp_path / "spool")

    sinks = build_sinks(dataclasses.replace(config, siem=siem))

    assert [type(s).__name__ for s in sinks][-2:] == ["SplunkHecClient", "ElasticBulkClient"]
    assert isinstance(sinks[-2], SplunkHecClient)
    assert isinstance(sinks[-1], ElasticBulkClient)


def test_url_without_credential_file_rejected(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    siem = dataclasses.replace(config.siem, elastic_url="https://es.example.org:9200",
                               spool_dir=tmp_path / "spool")

    with pytest.raises(SecretFileInvalid, match="siem.elastic_api_key_file: is required"):
        build_sinks(dataclasses.replace(config, siem=siem))


def test_secret_file_readable_by_others_rejected(tmp_path: Path) -> None:
    path = tmp_path / "hec.token"
    path.write_text("token\n")
    path.chmod(0o644)

    with pytest.raises(SecretFileInvalid, match="mode is 644; run chmod 600"):
        read_secret_file(path)


def test_secret_file_first_line(tmp_path: Path) -> None:
    assert read_secret_file(secret(tmp_path / "k", "abc")) == "abc"


def test_ticker_flushes_sinks_without_rounds(tmp_path: Path) -> None:
    from tests.fusion_hub.test_hub_rounds import Federation

    with HecServer(HecToken("hec-token")) as splunk, \
            EsServer(authorization="ApiKey ZXM6a2V5") as elastic:
        config = config_pushing_to(tmp_path, splunk, elastic, hub={"tick_seconds": 0.05})

        # An event an earlier outage left in the spool, as a restarted hub finds it.
        (tmp_path / "spool").mkdir()
        backlog = Spool(tmp_path / "spool" / "splunk-hec.sqlite")
        backlog.enqueue([SpooledDocument("old-key", dump_line(
            prepare_event({"event": {"ip": "198.51.100.7"}, "time": 1.0}, event_id="old-key")))])
        backlog.close()

        clock = SettableClock(HUB_NOW)
        with running_hub(config, clock) as hub:
            # No site has sent anything yet, so only the ticker can resend the backlog.
            clock.advance(61)
            wait_for(lambda: bool(splunk.state.events))
            backlog_ips = [e["event"]["ip"] for e in splunk.state.events]

            sites = [enroll(hub, "site-a"), enroll(hub, "site-b")]
            federation = Federation(hub, SettableClock(HUB_NOW), sites, tmp_path)
            federation.post(sites[0], [evidence("203.0.113.9", 0.6)])
            federation.post(sites[1], [evidence("203.0.113.9", 0.9)])

            # No site sends again, so only the ticker can remove the expired indicator.
            clock.advance(601)
            wait_for(lambda: any(e["event"].get("revoked") for e in splunk.state.events))

    assert backlog_ips == ["198.51.100.7"]
    revoked = [e["event"] for e in splunk.state.events if e["event"].get("revoked")]
    assert [e["ip"] for e in revoked] == ["203.0.113.9"]
    removals = [r["body"] for r in elastic.state.requests
                if r["path"].endswith("/_delete_by_query") and b'"term"' in r["body"]]
    assert [json.loads(b)["query"]["term"]["fti.indicator.id"] for b in removals] == \
        [revoked[0]["indicator_id"]]


def wait_for(condition: Callable[[], bool], timeout_secs: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_secs
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
