"""Round summaries: contribution bounds, partition selection and the budget split."""

from __future__ import annotations

import pytest

from agent.config import PrivacySection
from agent.detector import ScoredWindow
from agent.summariser import HISTOGRAM_BINS, summarise_round
from privacy.partition import partition_threshold
from privacy.random import seeded_random

ROUND = 3600


def window(entity: str, minute: int, score: float, remotes: dict[str, int]) -> ScoredWindow:
    return ScoredWindow(entity=entity, start=minute * 60, score=score, remotes=remotes)


def test_single_host_observable_is_never_released() -> None:
    """One entity contacting an address in every window must not reveal it (entity unit)."""
    windows = [window("10.0.0.1", m, 0.99, {"198.51.100.7": 5}) for m in range(60)]
    privacy = PrivacySection(epsilon_per_round=1.0, max_observables_per_entity=1)

    for seed in range(20):
        release = summarise_round(windows, round_start=0, round_seconds=ROUND, privacy=privacy,
                                  rng=seeded_random(seed))
        assert release.evidence == ()


def test_widely_seen_observable_is_released_with_score() -> None:
    windows = [window(f"10.0.{i // 200}.{i % 200}", 0, 0.9, {"203.0.113.50": 1}) for i in range(300)]
    privacy = PrivacySection(epsilon_per_round=1.0, max_observables_per_entity=1)

    release = summarise_round(windows, round_start=0, round_seconds=ROUND, privacy=privacy, rng=seeded_random(1))

    assert [e.value for e in release.evidence] == ["203.0.113.50"]
    evidence = release.evidence[0]
    assert evidence.observable_type == "ipv4-addr"
    assert abs(evidence.noised_unit_count - 300) < 60
    assert evidence.noised_mean_score == pytest.approx(0.9, abs=0.15)


def test_each_entity_counts_for_at_most_k_observables() -> None:
    """Every host contacts ten addresses; with k = 2 only its two most anomalous count."""
    remotes = {f"203.0.113.{i}": 1 for i in range(10)}
    windows = []
    for host in range(400):
        windows.append(window(f"10.1.{host // 200}.{host % 200}", 0, 0.2, remotes))
        windows.append(window(f"10.1.{host // 200}.{host % 200}", 1, 0.95,
                              {"203.0.113.3": 1, "203.0.113.7": 1}))
    privacy = PrivacySection(epsilon_per_round=2.0, max_observables_per_entity=2)

    release = summarise_round(windows, round_start=0, round_seconds=ROUND, privacy=privacy, rng=seeded_random(3))

    assert sorted(e.value for e in release.evidence) == ["203.0.113.3", "203.0.113.7"]


def test_threshold_matches_privacy_formula() -> None:
    privacy = PrivacySection(epsilon_per_round=2.0, delta_per_round=1e-6, max_observables_per_entity=4,
                             count_share=0.5, histogram_share=0.2, score_share=0.3)

    release = summarise_round([], round_start=0, round_seconds=ROUND, privacy=privacy, rng=seeded_random(0))

    expected = partition_threshold(epsilon=1.0, delta=1e-6, max_partitions_per_unit=4)
    assert release.partition_threshold == expected
    assert (release.epsilon, release.delta) == (2.0, 1e-6)


def test_windows_per_entity_are_bounded() -> None:
    """A host with 60 windows contributes at most max_windows_per_entity to the histogram."""
    windows = [window("10.0.0.1", m, 0.05, {}) for m in range(60)]
    privacy = PrivacySection(epsilon_per_round=10.0, max_windows_per_entity=5, histogram_share=0.98,
                             count_share=0.01, score_share=0.01)

    totals = [
        summarise_round(windows, round_start=0, round_seconds=ROUND, privacy=privacy,
                        rng=seeded_random(seed)).histogram[0]
        for seed in range(30)
    ]

    # Noise scale is 5 / 9.8, so the bin stays within a few counts of the bounded 5.
    assert sum(totals) / len(totals) == pytest.approx(5, abs=1.0)
    assert max(totals) < 15


def test_histogram_has_ten_bins_and_sums_to_window_count() -> None:
    windows = [window(f"10.0.0.{i}", 0, i / 50, {}) for i in range(50)]

    release = summarise_round(windows, round_start=0, round_seconds=ROUND, privacy=PrivacySection(),
                              rng=seeded_random(5))

    assert len(release.histogram) == HISTOGRAM_BINS
    assert all(count >= 0 for count in release.histogram)
    assert release.noised_window_count == sum(release.histogram)


def test_entity_window_unit_counts_windows() -> None:
    """With the weaker entity-window unit, one host seen in many windows is released."""
    windows = [window("147.32.81.167", m, 0.9, {"79.124.62.34": 2}) for m in range(240)]
    privacy = PrivacySection(unit="entity-window", epsilon_per_round=4.0, delta_per_round=1e-5,
                             max_observables_per_entity=4)

    release = summarise_round(windows, round_start=0, round_seconds=4 * ROUND, privacy=privacy,
                              rng=seeded_random(11))

    assert [e.value for e in release.evidence] == ["79.124.62.34"]
