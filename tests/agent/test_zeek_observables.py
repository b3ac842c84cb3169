"""Observables of Zeek application logs on published real files, TSV and JSON alike.

Record counts equal the files' data lines (``grep -vc '^#'`` for TSV, lines for JSON). The
ja3, ja3s and certificate counts equal ``grep -c`` of the field in the file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agent.config import DEFAULT_INTERNAL_NETWORKS
from agent.network import InternalNetworks
from agent.observables import ObservableFilter, split_observable_key
from agent.zeek import iter_zeek_records
from agent.zeek_observables import ObservationStats, ZeekObservation, observe_records

ZED_TSV = "zed-sample-data/zeek-default"
ZED_JSON = "zed-sample-data/zeek-json"
SLIPS = "slips/test9-mixed-zeek-dir"


def observe(path: Path, networks: tuple[str, ...] = DEFAULT_INTERNAL_NETWORKS,
            domains: tuple[str, ...] = ()) -> tuple[list[ZeekObservation], ObservationStats, Counter[str]]:
    stats = ObservationStats()
    observations = list(observe_records(iter_zeek_records(path), ObservableFilter(InternalNetworks(networks), domains),
                                        stats=stats))
    kinds = Counter(split_observable_key(key)[0] for o in observations for key in o.observables)
    return observations, stats, kinds


@pytest.mark.parametrize(
    ("relative", "records", "kinds"),
    [
        (f"{SLIPS}/dns.log", 239, {"domain-name": 190}),
        (f"{SLIPS}/http.log", 516, {"domain-name": 402, "url": 503, "ipv4-addr": 112}),
        (f"{SLIPS}/ssl.log", 205, {"domain-name": 205, "ja3": 2, "ja3s": 1}),
        (f"{SLIPS}/files.log", 936, {"sha1": 535, "x509-sha1": 401}),
        (f"{SLIPS}/notice.log", 18, {}),
        (f"{ZED_TSV}/notice.log.gz", 207, {"ipv4-addr": 155}),
        (f"{ZED_JSON}/notice.json.gz", 207, {"ipv4-addr": 155}),
        (f"{ZED_TSV}/ssh.log.gz", 22, {}),
        (f"{ZED_JSON}/ssh.json.gz", 22, {}),
        ("stratosphere-testing/009-zeek-malicious/data/files.log.labeled", 2029, {"sha1": 2029}),
    ],
)
def test_observables_counts_real_logs(shared_data_dir: Path, relative: str, records: int,
                                      kinds: dict[str, int]) -> None:
    observations, stats, found = observe(shared_data_dir / relative)

    assert len(observations) == records
    assert dict(found) == kinds


@pytest.mark.slow
@pytest.mark.parametrize("relative", [f"{ZED_TSV}/ssl.log.gz", f"{ZED_JSON}/ssl.json.gz"])
def test_observables_ssl_tsv_and_json_agree(shared_data_dir: Path, relative: str) -> None:
    """cert_chain_fps contains 13932 fingerprints. Two repeat within their record and count once."""
    observations, stats, found = observe(shared_data_dir / relative)

    assert len(observations) == 49474
    assert dict(found) == {"x509-sha256": 13930, "domain-name": 11642}
    assert observations[0].ts == 1521911720.615923
    assert observations[0].entity == "10.164.94.120"
    assert observations[0].observables == (
        "x509-sha256:b2dafbcdbc75210672f137f27ce882ccb799887631655d4f11191d5a678e44fe",)


def test_observables_x509_has_no_entity(shared_data_dir: Path) -> None:
    observations, stats, found = observe(shared_data_dir / f"{ZED_TSV}/x509.log.gz")

    assert stats.records == {"x509": 348}
    assert stats.without_entity == {"x509": 348}
    assert not found


def test_observables_ssl_ja3_values(shared_data_dir: Path) -> None:
    observations, _, _ = observe(shared_data_dir / f"{SLIPS}/ssl.log")

    with_ja3 = [o for o in observations if any(k.startswith("ja3") for k in o.observables)]

    assert [(o.line, o.entity, o.observables) for o in with_ja3] == [
        (3, "10.0.2.15", ("netflix.com", "ja3:6734f37431670b3ab4292b8f60f29984")),
        (12, "10.0.2.15", ("mem.gfx.ms", "ja3:8916410db85077a5460817142dcbc8de")),
        (21, "10.0.2.15", ("www.netflix.com", "ja3s:e7d705a3286e19ea42f587b344ee6865")),
    ]


def test_observables_files_without_internal_host(shared_data_dir: Path) -> None:
    """Both endpoints of slips test10 are public until their range is declared internal.

    Four records are certificates, whose hashes are fingerprints. Two are OCSP responses.
    """
    path = shared_data_dir / "slips/test10-mixed-zeek-dir/files.log"

    _, default_stats, default_kinds = observe(path)
    observations, _, kinds = observe(path, ("147.32.0.0/16",))

    assert default_stats.without_entity == {"files": 6}
    assert not default_kinds
    assert {o.entity for o in observations} == {"147.32.83.156"}
    assert dict(kinds) == {"x509-sha256": 4, "sha1": 2}


def test_observables_internal_domains_withheld(shared_data_dir: Path) -> None:
    """A zone listed in site.internal_domains never becomes an observable."""
    path = shared_data_dir / f"{SLIPS}/dns.log"
    _, _, everything = observe(path)

    observations, _, kinds = observe(path, domains=("microsoft.com",))

    assert kinds["domain-name"] < everything["domain-name"]
    assert not any(key == "microsoft.com" or key.endswith(".microsoft.com")
                   for o in observations for key in o.observables)


def test_observables_filter_rejects_local_names() -> None:
    observables = ObservableFilter(InternalNetworks(DEFAULT_INTERNAL_NETWORKS), ("corp.example",))

    assert observables.domain("WPAD") is None
    assert observables.domain("printer.local") is None
    assert observables.domain("5.2.0.10.in-addr.arpa") is None
    assert observables.domain("files.corp.example") is None
    assert observables.domain("10.0.0.5") is None
    assert observables.domain("Example.ORG.") == "example.org"
    assert observables.url("files.corp.example", "/a") is None
    assert observables.url("example.org", "/a", port=8080) == "http://example.org:8080/a"
    assert observables.fingerprint("x509-sha1", "AA:" * 19 + "AA") == "x509-sha1:" + "aa" * 20
    assert observables.fingerprint("ja3", "xyz") is None
