"""Privacy audit of plain mode: the agent's round release on neighbouring inputs, run many times.

Each trial calls :func:`agent.families.release.summarise_families`, the function the agent
uses to release a plain-mode round. It bounds each host's contribution, noises the score
histogram and selects observables by partition selection. The neighbouring inputs differ by
one host with everything it does in the round: more windows and observables than the bounds
allow, all of them with the target observable and a high score. Events on the released output
(the target released or not, its noised count over thresholds, the top histogram bin over
thresholds) give a Clopper-Pearson lower bound on epsilon, which must stay below the configured
epsilon per round.

Two broken releases show that the audit can fail. Without noise the target's count moves by
exactly one. With ``unit: entity-window`` each window is a unit of its own, so one host moves
the count by its number of windows. The per-host guarantee is then epsilon times that number,
as the summariser's docstring states, and the audit measures far more than the per-round epsilon.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agent.config import PrivacySection
from agent.detector import ScoredWindow
from agent.families.release import FamiliesRelease, summarise_families
from agent.summariser import HISTOGRAM_BINS, bound_round
from privacy.audit import epsilon_lower_bound
from privacy.random import RandomSource, seeded_random

EPSILON, DELTA = 1.0, 1e-5
PRIVACY = PrivacySection(epsilon_per_round=EPSILON, delta_per_round=DELTA, max_observables_per_entity=2,
                         max_windows_per_entity=4)
ROUND_START, ROUND_SECONDS = 1_717_372_800, 3600
TARGET = "198.51.100.7"
# At these settings the partition threshold is 48 (t = 2 / 0.5 = 4): the background puts the
# target right at it, so that its release is most sensitive to one more host.
BACKGROUND_HOSTS = 48
# The audited host tries to contribute 10 windows of 3 observables, and the bounds keep 4 and 2.
AUDITED_WINDOWS = 10


def background_windows() -> list[ScoredWindow]:
    """Return two windows of low score for each background host, each with the target and one other observable."""
    return [ScoredWindow(f"10.0.0.{host}", ROUND_START + 60 * minute, 0.35,
                         {TARGET: 1, f"203.0.113.{host}": 2})
            for host in range(BACKGROUND_HOSTS) for minute in range(2)]


def audited_host_windows() -> list[ScoredWindow]:
    """Return the audited host's windows: every one of them highly anomalous and contacting the target."""
    return [ScoredWindow("10.0.9.9", ROUND_START + 60 * minute, 0.97,
                         {TARGET: 5, "192.0.2.10": 1, "192.0.2.11": 1})
            for minute in range(AUDITED_WINDOWS)]


def release(privacy: PrivacySection, *, with_host: bool, rng: RandomSource) -> FamiliesRelease:
    windows = background_windows() + (audited_host_windows() if with_host else [])
    return summarise_families({"network": windows}, ("network",), round_start=ROUND_START,
                              round_seconds=ROUND_SECONDS, privacy=privacy, rng=rng)


def observe(result: FamiliesRelease) -> tuple[int | None, int]:
    """Return the target's noised count (None when it is not released) and the top histogram bin."""
    part = result.families["network"]
    counts = [e.noised_unit_count for e in part.evidence if e.value == TARGET]
    return (counts[0] if counts else None), part.histogram[HISTOGRAM_BINS - 1]


def audit(privacy: PrivacySection, *, trials: int, seed: int) -> float:
    """Return the largest epsilon lower bound over events fixed before the run."""
    rng = seeded_random(seed)
    with_host = [observe(release(privacy, with_host=True, rng=rng)) for _ in range(trials)]
    without = [observe(release(privacy, with_host=False, rng=rng)) for _ in range(trials)]

    # The target's count events sit at the threshold (released at all) and just above the
    # background's true count. The histogram events count the host's windows in the top bin,
    # which the background never reaches.
    threshold = release(privacy, with_host=False, rng=rng).partition_threshold
    base = bound_round(background_windows(), privacy=privacy, rng=rng).unit_counts[TARGET]
    count_cuts = sorted({threshold} | {base + step for step in (1, 3, 5, 9)})
    bin_cuts = (4, 12)
    events: list[tuple[Sequence[bool], Sequence[bool]]] = [
        ([c is not None and c >= cut for c, _ in with_host], [c is not None and c >= cut for c, _ in without])
        for cut in count_cuts
    ] + [([b >= cut for _, b in with_host], [b >= cut for _, b in without]) for cut in bin_cuts]
    return max(epsilon_lower_bound(sum(first), sum(second), trials, delta=DELTA, alpha=0.05 / len(events))
               for first, second in events)


class NoNoiseMechanism:
    """A mechanism that releases its input unchanged: the bug the audit must catch."""

    def __init__(self, epsilon: float, l1_sensitivity: float) -> None:
        self.epsilon, self.l1_sensitivity = epsilon, l1_sensitivity

    def release(self, values: list[int], rng: RandomSource) -> list[int]:
        return list(values)


def test_audited_host_contribution_bounded() -> None:
    """Without noise the host adds exactly its bounded windows and one unit to the target."""
    rounds = bound_round(background_windows() + audited_host_windows(), privacy=PRIVACY, rng=seeded_random(0))

    assert rounds.unit_counts[TARGET] == BACKGROUND_HOSTS + 1
    assert rounds.histogram[HISTOGRAM_BINS - 1] == PRIVACY.max_windows_per_entity
    assert len(rounds.unit_observables["10.0.9.9"]) == PRIVACY.max_observables_per_entity


def test_plain_release_audit_stays_below_epsilon() -> None:
    bound = audit(PRIVACY, trials=2500, seed=11)

    assert bound < EPSILON


def test_audit_detects_missing_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every noise draw at zero the target's count moves by exactly one host."""
    monkeypatch.setattr("privacy.partition.sample_discrete_laplace", lambda scale, rng: 0)
    monkeypatch.setattr("agent.summariser.DiscreteLaplaceMechanism", NoNoiseMechanism)

    bound = audit(PRIVACY, trials=400, seed=12)

    assert bound > EPSILON


def test_audit_detects_per_window_unit() -> None:
    """With one unit per window a host's windows each add one to the target's count."""
    per_window = PrivacySection(unit="entity-window", epsilon_per_round=EPSILON, delta_per_round=DELTA,
                                max_observables_per_entity=2, max_windows_per_entity=4)

    bound = audit(per_window, trials=400, seed=13)

    assert bound > EPSILON
