"""Orientation of conn records into connections, and the address classification cache."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timezone

import pytest

from agent.config import DEFAULT_INTERNAL_NETWORKS
from agent.network import InternalNetworks, OrientationStats, orient_connections
from agent.zeek_records import ZeekRecord

TS = datetime(2024, 5, 1, 10, tzinfo=timezone.utc)


def record(orig: object, resp: object) -> ZeekRecord:
    fields = {"ts": TS, "id.orig_h": orig, "id.orig_p": 40000, "id.resp_h": resp, "id.resp_p": 443,
              "orig_bytes": 10, "resp_bytes": 20, "conn_state": "SF"}
    return ZeekRecord("conn", fields, "conn.log", 1)


@pytest.mark.parametrize(
    ("orig", "resp", "entity", "peer", "remote", "outbound"),
    [
        ("10.0.0.5", "185.220.101.1", "10.0.0.5", "185.220.101.1", "185.220.101.1", True),
        ("185.220.101.1", "10.0.0.5", "10.0.0.5", "185.220.101.1", "185.220.101.1", False),
        ("10.0.0.5", "10.0.0.6", "10.0.0.5", "10.0.0.6", None, True),
        ("fd00::0001", "2001:4860:4860:0:0:0:0:8888", "fd00::1", "2001:4860:4860::8888",
         "2001:4860:4860::8888", True),
    ],
)
def test_orientation_entity_peer_and_remote(orig: str, resp: str, entity: str, peer: str, remote: str | None,
                                            outbound: bool) -> None:
    internal = InternalNetworks(DEFAULT_INTERNAL_NETWORKS)

    connections = [list(orient_connections([record(orig, resp)], internal))[0] for _ in range(2)]

    for connection in connections:
        assert (connection.entity, connection.peer, connection.remote, connection.outbound) == (
            entity, peer, remote, outbound)


@pytest.mark.parametrize("bad", ["not-an-ip", ["10.0.0.1"], None, 3.5])
def test_orientation_invalid_address_counted(bad: object) -> None:
    stats = OrientationStats()

    connections = list(orient_connections([record("10.0.0.5", bad)], InternalNetworks(DEFAULT_INTERNAL_NETWORKS),
                                          stats=stats))

    assert connections == []
    assert stats.missing_fields == 1


def test_two_external_endpoints_skipped() -> None:
    stats = OrientationStats()

    list(orient_connections([record("185.220.101.1", "185.220.101.2")], InternalNetworks(DEFAULT_INTERNAL_NETWORKS),
                            stats=stats))

    assert stats.both_external == 1


def test_classify_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.network.MAX_CACHED_ADDRESSES", 4)
    internal = InternalNetworks(DEFAULT_INTERNAL_NETWORKS)

    results = [internal.classify(f"10.0.0.{n}") for n in range(10)]

    assert results[9] == ("10.0.0.9", True, False)
    assert len(internal._classified) <= 4


@pytest.mark.parametrize("address", [
    "::ffff:10.1.2.3",
    "::ffff:81.2.69.5",
    "64:ff9b::10.1.2.3",
    "64:ff9b::81.2.69.5",
    "2002:a01:203::1",
    "::10.1.2.3",
    "2001:0:4136:e378:8000:63bf:f5fe:fdfc",
    "::ffff:0:a01:203",
    "::ffff:0:5102:4505",
])
def test_ipv6_forms_of_internal_ipv4_are_withheld(address: str) -> None:
    """An internal IPv4 address wrapped in an IPv6 form must never be shared."""
    internal = InternalNetworks(["10.0.0.0/8", "81.2.69.0/24"])

    assert not internal.is_shareable(ipaddress.ip_address(address))


def test_ipv6_form_of_site_range_is_internal() -> None:
    internal = InternalNetworks(["81.2.69.0/24"])

    assert internal.is_internal(ipaddress.ip_address("::ffff:81.2.69.5"))
    assert internal.is_internal(ipaddress.ip_address("64:ff9b::81.2.69.5"))
    assert internal.is_internal(ipaddress.ip_address("::ffff:0:5102:4505"))


def test_ipv6_form_of_public_ipv4_is_shareable() -> None:
    internal = InternalNetworks(["10.0.0.0/8"])

    assert internal.is_shareable(ipaddress.ip_address("64:ff9b::8.8.8.8"))
    assert internal.is_shareable(ipaddress.ip_address("2001:4860:4860::8888"))
