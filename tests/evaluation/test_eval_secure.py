"""The secure variant: a real hub in secure mode on 127.0.0.1 and the agent's secure rounds."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from agent.config import PrivacySection
from agent.detector import ScoredWindow
from evaluation.plain import build_opinion
from evaluation.secure import SecureFederation, heavy_threshold, poison_windows
from fusion_hub.config import FusionSettings
from privacy.random import seeded_random

# Each test starts a hub and waits out one stage timeout for an absent site.
pytestmark = pytest.mark.slow

# At epsilon 4 a bucket is heavy from 22 summed windows and a site reveals a value from 14 of
# its own, so the rounds stay small.
PRIVACY = PrivacySection(unit="entity-window", epsilon_per_round=4.0, delta_per_round=1e-5,
                         max_observables_per_entity=1, max_windows_per_entity=1)
FUSION = FusionSettings(lookback_rounds=1, publish_threshold=0.5, min_corroborating_sites=3)
SITES = ("site-a", "site-b", "site-c", "site-d")
ROUND_START = 1_717_372_800  # 2024-06-03T00:00:00Z, a multiple of the round length


def _windows(site: str, *, common: int, rare: bool) -> list[ScoredWindow]:
    windows = [ScoredWindow(f"{site}-host-{i}", ROUND_START + 60 * i, 0.99, {"8.8.4.4": 1})
               for i in range(common)]
    if rare:
        windows.append(ScoredWindow(f"{site}-host-rare", ROUND_START, 0.99, {"1.1.1.1": 1}))
    return windows


def _run(present: dict[str, list[ScoredWindow]], *, seed: int) -> tuple[dict, object]:
    charged: dict[str, tuple[float, float]] = {}
    rngs = {site: seeded_random(seed * 10 + i) for i, site in enumerate(SITES)}
    with SecureFederation(SITES, privacy=PRIVACY, fusion=FUSION, round_seconds=3600, min_sites=3,
                          stage_timeout_secs=2.0) as federation:
        report = federation.run_round(ROUND_START, present, rngs=rngs,
                                      charge=lambda site, e, d: charged.__setitem__(site, (e, d)))
    return charged, report


def test_secure_round_publishes_only_common_observable() -> None:
    """Three of four sites take part and pay; the fourth drops out at the first stage."""
    present = {site: _windows(site, common=60, rare=site == "site-a") for site in SITES[:3]}

    charged, report = _run(present, seed=1)

    assert report.aborted_sites == ()
    assert set(report.published) == {"8.8.4.4"}
    assert report.published["8.8.4.4"] > 0.5
    assert charged == {site: (4.0, 1e-5) for site in SITES[:3]}
    assert sorted(report.bytes_by_site) == list(SITES[:3])
    # Every site posts at least its masked vector: 2,058 words of 32 bits.
    assert min(report.bytes_by_site.values()) > 4 * 2058
    assert all(seconds > 0 for seconds in report.seconds_by_site.values())


def test_secure_round_same_seed_same_indicators() -> None:
    present = {site: _windows(site, common=40 + 10 * i, rare=True) for i, site in enumerate(SITES[:3])}

    _, first = _run(present, seed=3)
    _, second = _run(present, seed=3)

    assert first.published == second.published
    assert first.published


def test_secure_round_below_min_sites_aborted() -> None:
    """Two of four sites cannot make a round that needs three: both record an abort."""
    present = {site: _windows(site, common=60, rare=False) for site in SITES[:2]}

    charged, report = _run(present, seed=4)

    assert report.aborted_sites == ("site-a", "site-b")
    assert report.published == {}
    assert charged == {}


def test_heavy_threshold_falls_with_epsilon() -> None:
    strict, loose = (heavy_threshold(PrivacySection(epsilon_per_round=epsilon, delta_per_round=1e-5,
                                                    max_observables_per_entity=1, secure_min_sites=3))
                     for epsilon in (1.0, 4.0))

    assert (strict, loose) == (86, 22)


def test_poison_windows_one_unit_each() -> None:
    windows = poison_windows(["9.9.9.9", "4.4.4.4", "5.5.5.5"], count=2, windows_per_decoy=3,
                             round_start=ROUND_START, rng=np.random.default_rng(0))

    assert len(windows) == 6
    assert len({w.entity for w in windows}) == 6
    assert {w.score for w in windows} == {1.0}
    assert len({next(iter(w.remotes)) for w in windows}) == 2


def test_secure_opinions_move_trust() -> None:
    """A refuted indicator lowers the trust of the sites whose reveals produced it."""
    present = {site: _windows(site, common=60, rare=False) for site in SITES[:3]}
    rngs = {site: seeded_random(20 + i) for i, site in enumerate(SITES)}
    created = datetime.fromtimestamp(ROUND_START + 3600, tz=timezone.utc)
    with SecureFederation(SITES, privacy=PRIVACY, fusion=FUSION, round_seconds=3600, min_sites=3,
                          stage_timeout_secs=2.0) as federation:
        report = federation.run_round(ROUND_START, present, rngs=rngs, charge=lambda *args: None)
        sent = federation.post_opinions("site-d", [build_opinion(
            "site-d", report.indicator_ids["8.8.4.4"], agree=False, created=created)])
        trust = federation.trust_weights()

    assert sent > 0
    # Each contributor's prior Beta(2, 1) gains one refutation; the fourth site contributed nothing.
    assert {site: round(trust[site], 4) for site in SITES[:3]} == dict.fromkeys(SITES[:3], 0.5)
    assert trust["site-d"] == pytest.approx(2 / 3)
