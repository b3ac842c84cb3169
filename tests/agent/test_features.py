"""Feature windows: exact values of each feature on hand-made connections."""

from __future__ import annotations

import math

import pytest

from agent.features import FEATURE_NAMES, build_windows, burstiness, port_entropy
from agent.network import Connection


def connection(ts: float, *, entity: str = "192.168.1.5", peer: str = "203.0.113.9", port: int = 443,
               failed: bool = False, out: int = 100, into: int = 1000, duration: float = 1.0) -> Connection:
    return Connection(ts=ts, entity=entity, peer=peer, remote=peer, remote_port=port, outbound=True,
                      bytes_out=out, bytes_in=into, duration=duration, failed=failed, source="test", line=1)


def test_port_entropy_uniform_over_four_ports() -> None:
    from collections import Counter

    assert port_entropy(Counter({22: 1, 23: 1, 80: 1, 443: 1})) == pytest.approx(2.0)


def test_port_entropy_single_port_is_zero() -> None:
    from collections import Counter

    assert port_entropy(Counter({443: 7})) == 0.0
    assert port_entropy(Counter()) == 0.0


def test_burstiness_regular_beacon_is_minus_one() -> None:
    assert burstiness([0.0, 10.0, 20.0, 30.0]) == pytest.approx(-1.0)


def test_burstiness_needs_two_gaps() -> None:
    assert burstiness([5.0, 6.0]) == 0.0
    assert burstiness([3.0, 3.0, 3.0]) == 0.0


def test_burstiness_known_value() -> None:
    gaps = [1.0, 1.0, 10.0]
    mean, std = sum(gaps) / 3, math.sqrt(sum((g - 4.0) ** 2 for g in gaps) / 3)

    assert burstiness([0.0, 1.0, 2.0, 12.0]) == pytest.approx((std - mean) / (std + mean))


def test_build_windows_features_exact() -> None:
    connections = [
        connection(60.0, port=22, failed=True, out=0, into=0, duration=0.0),
        connection(70.0, port=23, peer="198.51.100.1", failed=True, out=0, into=0, duration=0.0),
        connection(80.0, port=443, out=300, into=5000, duration=3.0),
        connection(125.0, port=443),
    ]

    windows = build_windows(connections, window_seconds=60)

    assert [(w.entity, w.start) for w in windows] == [("192.168.1.5", 60), ("192.168.1.5", 120)]
    first = dict(zip(FEATURE_NAMES, windows[0].features))
    assert first["connection_count"] == 3
    assert first["distinct_remote_hosts"] == 2
    assert first["distinct_remote_ports"] == 3
    assert first["remote_port_entropy"] == pytest.approx(math.log2(3))
    assert first["bytes_out"] == 300
    assert first["bytes_in"] == 5000
    assert first["failed_connection_ratio"] == pytest.approx(2 / 3)
    assert first["mean_duration"] == pytest.approx(1.0)
    assert first["interarrival_burstiness"] == pytest.approx(-1.0)
    assert windows[0].remotes == {"203.0.113.9": 2, "198.51.100.1": 1}


def test_build_windows_separates_entities() -> None:
    connections = [connection(10.0, entity="10.0.0.1"), connection(11.0, entity="10.0.0.2")]

    windows = build_windows(connections, window_seconds=60)

    assert sorted(w.entity for w in windows) == ["10.0.0.1", "10.0.0.2"]


def test_add_many_equals_add_one_by_one() -> None:
    import random
    from dataclasses import asdict

    from agent.features import WindowAccumulator

    generator = random.Random(3)
    connections = [Connection(ts=1000 + generator.random() * 60, entity="192.168.1.5",
                              peer=f"203.0.113.{generator.randrange(5)}",
                              remote=None if generator.random() < 0.3 else f"203.0.113.{generator.randrange(5)}",
                              remote_port=None if generator.random() < 0.2 else generator.choice([22, 80, 443]),
                              outbound=True, bytes_out=generator.randrange(10**6), bytes_in=generator.randrange(10**6),
                              duration=generator.random() * 3, failed=generator.random() < 0.4, source="test", line=n)
                   for n in range(500)]
    one_by_one, at_once = WindowAccumulator("192.168.1.5", 960), WindowAccumulator("192.168.1.5", 960)

    for item in connections:
        one_by_one.add(item)
    at_once.add_many(connections)

    assert asdict(at_once) == asdict(one_by_one)
    assert list(at_once.ports) == list(one_by_one.ports)
    assert list(at_once.remotes) == list(one_by_one.remotes)
