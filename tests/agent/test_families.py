"""Feature families on real files: windows per family, evidence kinds, snapshots and the budget split."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import DEFAULT_INTERNAL_NETWORKS, PrivacySection, load_agent_config
from agent.detector import ScoredWindow
from agent.errors import ConfigError
from agent.events import Event, EventStats
from agent.families import configured_families
from agent.families.feeding import FamilyFeeder
from agent.families.network import connection_from_flow
from agent.families.release import summarise_families
from agent.network import InternalNetworks
from agent.observables import split_observable_key
from agent.sources import iter_file_events
from agent.zeek import iter_zeek_records
from privacy.random import seeded_random

SLIPS = "slips/test9-mixed-zeek-dir"
SYSMON = "evtx-attack-samples/automatedtestingtools/PanacheSysmon_vs_AtomicRedTeam01.evtx"


def feed_real_files(data: Path) -> FamilyFeeder:
    feeder = FamilyFeeder(("network", "authentication", "process"), window_seconds=60,
                          internal_networks=DEFAULT_INTERNAL_NETWORKS)
    for name in ("conn", "dns", "http", "ssl", "files", "x509", "notice"):
        feeder.feed(feeder.parse_zeek(iter_zeek_records(data / SLIPS / f"{name}.log")), families=("network",))
    feeder.feed(list(iter_file_events(data / "loghub/OpenSSH_2k.log", "sshd", stats=EventStats())),
                families=("authentication",))
    feeder.feed(list(iter_file_events(data / SYSMON, "sysmon", stats=EventStats())), families=("process",))
    return feeder


def kinds_of(windows: list) -> dict[str, int]:
    return dict(Counter(split_observable_key(key)[0] for window in windows for key in window.remotes))


def test_families_real_files_windows_and_evidence(shared_data_dir: Path) -> None:
    feeder = feed_real_files(shared_data_dir)

    windows = feeder.close()

    assert {family: len(found) for family, found in windows.items()} == {
        "network": 10, "authentication": 55, "process": 18}
    assert {window.entity for window in windows["authentication"]} == {"LabSZ"}
    assert kinds_of(windows["network"]) == {"ipv4-addr": 132, "domain-name": 179, "url": 325, "sha1": 341,
                                            "ja3": 2, "ja3s": 1, "x509-sha1": 107}
    assert kinds_of(windows["authentication"]) == {"ipv4-addr": 65}
    assert kinds_of(windows["process"]) == {"sha256": 67, "ipv4-addr": 4, "domain-name": 1}
    assert all(len(w.features) == 8 for w in windows["authentication"])
    assert all(len(w.features) == 10 for w in windows["process"])


def test_families_snapshot_round_trip_closes_same_windows(shared_data_dir: Path) -> None:
    """A snapshot written to JSON and read back closes into the very windows it came from."""
    original = feed_real_files(shared_data_dir)
    text = json.dumps(original.to_state(), separators=(",", ":"))
    restored = FamilyFeeder(("network", "authentication", "process"), window_seconds=60,
                            internal_networks=DEFAULT_INTERNAL_NETWORKS)

    restored.load_state(json.loads(text))

    assert restored.close() == original.close()


def test_families_unconfigured_family_counted_not_fed(shared_data_dir: Path) -> None:
    feeder = FamilyFeeder(("network",), window_seconds=60, internal_networks=DEFAULT_INTERNAL_NETWORKS)

    feeder.feed(list(iter_file_events(shared_data_dir / "loghub/OpenSSH_2k.log", "sshd", stats=EventStats())),
                families=("authentication",))

    assert feeder.close() == {"network": []}
    assert feeder.unused["sshd"] == 638


def scored(entity: str, start: int, score: float, remotes: dict[str, int]) -> ScoredWindow:
    return ScoredWindow(entity, start, score, remotes)


def test_summarise_families_empty_family() -> None:
    privacy = PrivacySection(epsilon_per_round=1.0, delta_per_round=1e-6, max_observables_per_entity=2)
    windows = {"network": [scored(f"10.0.0.{i}", 60, 0.9, {"ja3:" + "ab" * 16: 1}) for i in range(200)]}

    release = summarise_families(windows, ("network", "process"), round_start=0, round_seconds=3600,
                                 privacy=privacy, rng=seeded_random(3))

    assert list(release.families) == ["network", "process"]
    assert release.epsilon == 1.0
    assert release.delta == 1e-6
    assert release.families["network"].epsilon == 0.5
    assert release.families["process"].evidence == ()
    assert len(release.families["process"].histogram) == 10
    assert [(e.observable_type, e.value) for e in release.families["network"].evidence] == [("ja3", "ab" * 16)]


def write_config(tmp_path: Path, sources: list[dict]) -> Path:
    config = {"site": {"id": "site-f", "signing_key": "site.key"},
              "hub": {"url": "http://127.0.0.1:9/taxii2/", "username": "site-f", "password": "pw"},
              "sources": sources, "state_dir": "state"}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_config_source_types_map_to_families(tmp_path: Path) -> None:
    path = write_config(tmp_path, [{"type": "zeek", "paths": ["z/*.log"], "families": ["network", "authentication"]},
                                   {"type": "sysmon", "paths": ["s/*.evtx"]},
                                   {"type": "suricata", "paths": ["eve.json"]}])

    config = load_agent_config(path)

    assert configured_families(config.sources) == ("network", "authentication", "process")


def test_config_unfed_family_rejected(tmp_path: Path) -> None:
    path = write_config(tmp_path, [{"type": "sshd", "paths": ["auth.log"], "families": ["process"]}])

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(path)

    assert excinfo.value.key == "sources[0].families"
    assert "a sshd source feeds only: authentication" in str(excinfo.value)


def test_families_suricata_flows_windowed_by_flow_start(shared_data_dir: Path) -> None:
    """slips' offline Suricata run stamps its flow events alike, but flow.start spreads them over 1701 windows."""
    feeder = FamilyFeeder(("network",), window_seconds=60, internal_networks=DEFAULT_INTERNAL_NETWORKS)
    events = list(iter_file_events(shared_data_dir / "slips/suricata/test6-malicious.suricata.json", "suricata",
                                   stats=EventStats()))

    feeder.feed(events, families=("network",))
    windows = feeder.close()["network"]

    assert len(windows) == 1701
    assert {w.entity for w in windows} == {"192.168.1.129", "192.168.1.132"}
    assert sum(w.features[0] for w in windows) == 3512  # every flow event
    assert feeder.unused == {"suricata:alert": 745}
    assert kinds_of(windows) == {"ipv4-addr": 2265, "domain-name": 105, "url": 14, "ja3": 1, "ja3s": 1,
                                 "x509-sha1": 1}


def test_families_zeek_ssh_feeds_authentication(shared_data_dir: Path) -> None:
    feeder = FamilyFeeder(("network", "authentication"), window_seconds=60,
                          internal_networks=DEFAULT_INTERNAL_NETWORKS)

    feeder.feed(feeder.parse_zeek(iter_zeek_records(shared_data_dir / "zed-sample-data/zeek-default/ssh.log.gz")),
                families=("network", "authentication"))
    windows = feeder.close()

    # 22 records: 5 accepted and 2 failed logins, and 15 sessions without an attempt.
    assert windows["network"] == []
    assert len(windows["authentication"]) == 5
    assert sum(w.features[0] for w in windows["authentication"]) == 7
    assert sum(w.features[1] for w in windows["authentication"]) == 2
    assert sum(w.features[2] for w in windows["authentication"]) == 5


FLOW_FIELDS = ("src_ip", "dest_ip", "src_port", "dest_port", "flow.bytes_toserver", "flow.bytes_toclient",
               "flow.pkts_toclient", "flow.start", "flow.end", "tcp.state")
JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                        st.lists(st.integers(), max_size=2), st.sampled_from(["10.0.0.5", "8.8.8.8", "S0",
                                                                               "2024-01-01T00:00:00.5+0000"]))


@settings(max_examples=300, deadline=None)
@given(values=st.fixed_dictionaries({name: JSON_VALUES for name in FLOW_FIELDS}))
def test_suricata_flow_of_any_values_oriented_without_raising(values: dict[str, object]) -> None:
    """EVE flow fields hold whatever a line held (flattening leaves only scalars and lists)."""
    fields = {"src_ip": "10.0.0.5", "dest_ip": "8.8.8.8"} | {k: v for k, v in values.items() if v is not None}
    event = Event("suricata", "flow", datetime(2024, 1, 1, tzinfo=timezone.utc), fields, "eve.json", 1)

    connection = connection_from_flow(event, InternalNetworks(DEFAULT_INTERNAL_NETWORKS))

    if connection is not None:
        assert isinstance(connection.failed, bool)
        port = connection.remote_port
        assert port is None or (type(port) is int and 0 <= port <= 65535)


@pytest.mark.parametrize(("port", "kept"), [(0, 0), (443, 443), (65535, 65535), (65536, None), (-1, None),
                                             (True, None), (443.0, None), ("443", None)])
def test_suricata_flow_port_kept_only_in_range(port: object, kept: int | None) -> None:
    """A port outside 0 to 65535, or not an integer, is unknown rather than counted."""
    fields = {"src_ip": "10.0.0.5", "dest_ip": "8.8.8.8", "src_port": 50000, "dest_port": port}
    event = Event("suricata", "flow", datetime(2024, 1, 1, tzinfo=timezone.utc), fields, "eve.json", 1)

    connection = connection_from_flow(event, InternalNetworks(DEFAULT_INTERNAL_NETWORKS))

    assert connection is not None
    assert connection.remote_port == kept
