"""Privacy audit of the reveal stage of a secure round, on neighbouring inputs run many times.

In the reveal stage a site names its own values in the sketch buckets that the unmasked sum
made heavy, each only if it passes the site's own partition selection, with its noised count.
Each trial runs the site's real steps of :class:`agent.secure_round.SecureRoundRunner`. Three
sites build their noised vectors (bounded histogram and count-min sketch with their share of
distributed noise). The hub's step, :meth:`CountMinSketch.heavy_buckets`, runs on their sum,
and site A then builds its reveal. Masking is left out because the unmasked sum equals the sum
of the vectors exactly (tests/privacy/secagg/test_protocol.py). The neighbouring inputs
differ by one host of site A that contacted the target. Events on site A's reveal (the target
revealed, its revealed count over thresholds) must give an epsilon lower bound below the
configured epsilon. A site that reveals its exact counts without its own partition selection
must exceed it, which shows the audit can fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.config import AgentConfig, load_agent_config
from agent.detector import ScoredWindow
from agent.secure_round import SecureBudget, SecureRoundRunner
from agent.summariser import HISTOGRAM_BINS, BoundedRound, bound_round
from privacy.audit import epsilon_lower_bound
from privacy.partition import partition_threshold
from privacy.random import RandomSource, seeded_random
from privacy.secagg.sketch import CountMinSketch
from tests.agent.test_config import VALID, write

EPSILON, DELTA = 1.0, 1e-5
SITES = ("site-a", "site-b", "site-c")
TARGET = "198.51.100.7"
ROUND_START = 1_717_372_800
# Site A's hosts with the target: the threshold of its reveal selection at these settings
# (103), so that its reveal is most sensitive to one more host. Sites B and C add theirs to the
# sketch sum, which clears the hub's threshold in most trials.
TARGET_HOSTS = {"site-a": 103, "site-b": 20, "site-c": 20}
HUB_THRESHOLD = 100
SKETCH = CountMinSketch(round_id="audit", rows=1, width=16)
FAMILIES = ("network",)


def agent_config(folder: Path, site: str) -> AgentConfig:
    folder.mkdir()
    text = VALID.replace("site-a", site).replace("epsilon_per_round: 0.5", f"epsilon_per_round: {EPSILON}")
    return load_agent_config(write(folder, text + f"  delta_per_round: 1.0e-5\n  mode: secure\n"
                                   "  max_observables_per_entity: 2\n  max_windows_per_entity: 4\n"))


def site_round(config: AgentConfig, hosts: int, *, with_host: bool) -> BoundedRound:
    """Return a site's bounded round: ``hosts`` hosts with the target, plus the audited host if asked."""
    windows = [ScoredWindow(f"10.0.0.{n}", ROUND_START + 60 * minute, 0.4, {TARGET: 1, "203.0.113.5": 1})
               for n in range(hosts) for minute in range(2)]
    if with_host:
        windows += [ScoredWindow("10.0.9.9", ROUND_START + 60 * minute, 0.95, {TARGET: 3, "192.0.2.10": 1})
                    for minute in range(6)]
    return bound_round(windows, privacy=config.privacy, rng=seeded_random(0))


class UnselectedSketch(CountMinSketch):
    """A site that reveals every candidate's exact count, skipping its partition selection: the bug."""

    def reveal(self, unit_counts: dict[str, int], heavy: frozenset[int], *, epsilon: float, delta: float,
               max_partitions_per_unit: int, rng: RandomSource) -> dict[str, int]:
        return {value: unit_counts[value] for value in self.candidates(unit_counts, heavy)}


def reveal_counts(runners: dict[str, SecureRoundRunner], rounds: dict[str, BoundedRound], sketch: CountMinSketch,
                  *, trials: int) -> list[int | None]:
    """Return site A's revealed count of the target in each trial, None when it does not reveal it."""
    privacy = runners["site-a"].config.privacy
    budget = SecureBudget.split(epsilon=privacy.epsilon_per_round, delta=privacy.delta_per_round,
                                histogram_share=privacy.histogram_share, count_share=privacy.count_share,
                                score_share=privacy.score_share, families=len(FAMILIES))
    counts = []
    for _ in range(trials):
        total = sum(runners[site]._noised_vector({"network": rounds[site]}, FAMILIES, sketch, budget)
                    for site in SITES)
        heavy = sketch.heavy_buckets(np.asarray(total)[HISTOGRAM_BINS:], threshold=HUB_THRESHOLD)
        revealed, _ = runners["site-a"]._reveal("network", rounds["site-a"], sketch, heavy, budget)
        counts.append(revealed.get(TARGET))
    return counts


def audit(tmp_path: Path, sketch: CountMinSketch, *, trials: int, seed: int) -> float:
    """Return the largest epsilon lower bound over events fixed before the run."""
    configs = {site: agent_config(tmp_path / site, site) for site in SITES}
    runners = {site: SecureRoundRunner(configs[site], "", rng=seeded_random(seed + index), charge=None)
               for index, site in enumerate(SITES)}
    rounds = {site: site_round(configs[site], TARGET_HOSTS[site], with_host=False) for site in SITES}
    with_host = reveal_counts(runners, {**rounds, "site-a": site_round(configs["site-a"], TARGET_HOSTS["site-a"],
                                                                       with_host=True)}, sketch, trials=trials)
    without = reveal_counts(runners, rounds, sketch, trials=trials)

    # The target revealed at all, and its count over cuts just above site A's true count.
    base = TARGET_HOSTS["site-a"]
    cuts = (0, base + 1, base + 3, base + 6)
    return max(epsilon_lower_bound(sum(c is not None and c >= cut for c in with_host),
                                   sum(c is not None and c >= cut for c in without), trials,
                                   delta=DELTA, alpha=0.05 / len(cuts))
               for cut in cuts)


def test_reveal_threshold_matches_site_hosts() -> None:
    """Site A's hosts sit exactly at its reveal threshold, where one host changes the most."""
    budget = SecureBudget.split(epsilon=EPSILON, delta=DELTA, histogram_share=0.2, count_share=0.5,
                                score_share=0.3, families=len(FAMILIES))

    threshold = partition_threshold(epsilon=budget.reveal_epsilon, delta=budget.part_delta,
                                    max_partitions_per_unit=2)

    assert threshold == TARGET_HOSTS["site-a"]


@pytest.mark.slow
def test_reveal_audit_stays_below_epsilon(tmp_path: Path) -> None:
    bound = audit(tmp_path, SKETCH, trials=500, seed=21)

    assert bound < EPSILON


def test_audit_detects_reveal_without_selection(tmp_path: Path) -> None:
    """Exact revealed counts move by one with the host, and the audit must show it."""
    sketch = UnselectedSketch(round_id=SKETCH.round_id, rows=SKETCH.rows, width=SKETCH.width)

    bound = audit(tmp_path, sketch, trials=150, seed=22)

    assert bound > EPSILON
