"""The secure-aggregation gate: sketches summed by privacy.secagg mark widely seen observables."""

from __future__ import annotations

import pytest

from agent.config import PrivacySection
from agent.detector import ScoredWindow
from evaluation.secure import heavy_observables, sketch_noise
from privacy.random import seeded_random


PRIVACY = PrivacySection(unit="entity-window", epsilon_per_round=1.0, delta_per_round=1e-5,
                         max_observables_per_entity=1, max_windows_per_entity=1)


def _windows(site: str, *, common: int, rare: bool) -> list[ScoredWindow]:
    windows = [ScoredWindow(f"{site}-host", 60 * i, 0.9, {"8.8.4.4": 3}) for i in range(common)]
    if rare:
        windows.append(ScoredWindow(f"{site}-host", 60 * common, 0.99, {"1.1.1.1": 1}))
    return windows


@pytest.mark.parametrize("seed", range(3))
def test_heavy_observables_marks_common_not_rare(seed: int) -> None:
    """30 windows at each of three sites clear a threshold of 24; one window never does."""
    by_site = {site: _windows(site, common=30, rare=site == "a") for site in ("a", "b", "c")}
    noise = sketch_noise(epsilon=2.0, delta=1e-5, min_sites=3, max_observables_per_unit=1)

    sketch, heavy = heavy_observables("round-0", by_site, privacy=PRIVACY, threshold=24,
                                      noise=noise, rng=seeded_random(seed))

    assert sketch.candidates(["8.8.4.4", "1.1.1.1"], heavy) == ["8.8.4.4"]


def test_heavy_observables_counts_each_window_once() -> None:
    """Ten windows at one site stay below a threshold of 24 however often they contact it."""
    by_site = {"a": [ScoredWindow("h", 60 * i, 0.9, {"9.9.9.9": 500}) for i in range(10)],
               "b": _windows("b", common=0, rare=False), "c": _windows("c", common=0, rare=False)}
    noise = sketch_noise(epsilon=2.0, delta=1e-5, min_sites=3, max_observables_per_unit=1)

    sketch, heavy = heavy_observables("round-1", by_site, privacy=PRIVACY, threshold=24,
                                      noise=noise, rng=seeded_random(5))

    assert sketch.candidates(["9.9.9.9"], heavy) == []
