"""Privacy audit of secure mode: released sums on neighbouring inputs, run many times.

Each trial runs the whole secure path. Three sites build count-min sketches of their
hosts' observables and add their share of distributed discrete Gaussian noise. They then
run a full secure aggregation round in which one site drops out before its masked input. The
neighbouring inputs differ by one host of site A that contacted the target observable. The
Clopper-Pearson lower bound on epsilon from threshold events on the released target bucket
must stay below the configured epsilon. When the sites add no noise, the same audit must
exceed it, which shows the audit can fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from privacy.audit import epsilon_lower_bound
from privacy.random import RandomSource, seeded_random
from privacy.secagg import Dropouts, decode_signed, encode_signed, run_local_round
from privacy.secagg.noise import DistributedGaussian, calibrate_distributed_gaussian
from privacy.secagg.sketch import CountMinSketch
from tests.support.secagg_keys import SITE_KEYS, keyed_config

EPSILON, DELTA = 1.0, 1e-5
SITES = ("site-a", "site-b", "site-c")
TARGET = "198.51.100.7"
SKETCH = CountMinSketch(round_id="audit", rows=1, width=16)
# Hosts of each site with one observable each (k = 1); the target has three background hosts.
BACKGROUND = {
    "site-a": {"host-a1": [TARGET], "host-a2": ["203.0.113.5"]},
    "site-b": {"host-b1": [TARGET], "host-b2": ["203.0.113.9"]},
    "site-c": {"host-c1": [TARGET]},
}
# Site C stays silent after sharing keys, so every release sums two sites' noise.
DROPOUTS = Dropouts.at("mask_input", {"site-c"})
MIN_SITES = 2


class MissingNoise:
    """A site that forgot to add its share of the noise: the bug the audit must catch."""

    def add_noise(self, values: np.ndarray, rng: RandomSource) -> np.ndarray:
        return np.asarray(values, dtype=np.int64)


def release(noise: DistributedGaussian | MissingNoise, *, with_target_host: bool, trial: int, rng: RandomSource) -> int:
    """Run one secure round and return the released count of the target's bucket."""
    inputs = {}
    for site in SITES:
        units = dict(BACKGROUND[site])
        if site == "site-a" and with_target_host:
            units["host-a9"] = [TARGET]
        counts = SKETCH.build(units)
        inputs[site] = encode_signed(noise.add_noise(counts, rng))
    config = keyed_config(round_id=f"audit-{trial}", site_ids=SITES, threshold=2,
                          vector_length=SKETCH.length)

    total = decode_signed(run_local_round(config, inputs, signing_keys=SITE_KEYS, rng=rng, dropouts=DROPOUTS))
    return int(total[SKETCH.buckets(TARGET)[0]])


def audit(noise: DistributedGaussian | MissingNoise, *, trials: int, seed: int) -> float:
    """Return the largest epsilon lower bound over three thresholds fixed in advance."""
    rng = seeded_random(seed)
    with_host = [release(noise, with_target_host=True, trial=t, rng=rng) for t in range(trials)]
    without = [release(noise, with_target_host=False, trial=t, rng=rng) for t in range(trials)]

    # Sites A and B hold two target hosts without the audited one; events sit at and above it.
    base = 2
    thresholds = (base + 1, base + 2, base + 4, base + 7)
    bounds = [
        epsilon_lower_bound(sum(v >= c for v in with_host), sum(v >= c for v in without), trials,
                            delta=DELTA, alpha=0.05 / len(thresholds))
        for c in thresholds
    ]
    return max(bounds)


def test_calibrated_noise_gives_configured_epsilon() -> None:
    l1, l2 = SKETCH.sensitivity(1)
    noise = calibrate_distributed_gaussian(epsilon=EPSILON, delta=DELTA, min_sites=MIN_SITES,
                                           l1_sensitivity=l1, l2_sensitivity=l2, dimension=SKETCH.length)

    assert noise.epsilon(delta=DELTA, l1_sensitivity=l1, l2_sensitivity=l2,
                         dimension=SKETCH.length) <= EPSILON


@pytest.mark.slow
def test_secure_release_audit_stays_below_epsilon() -> None:
    l1, l2 = SKETCH.sensitivity(1)
    noise = calibrate_distributed_gaussian(epsilon=EPSILON, delta=DELTA, min_sites=MIN_SITES,
                                           l1_sensitivity=l1, l2_sensitivity=l2, dimension=SKETCH.length)

    bound = audit(noise, trials=1200, seed=5)

    assert bound < EPSILON


def test_audit_detects_missing_noise() -> None:
    """Without noise the target bucket always moves by one, and the audit must show it."""
    bound = audit(MissingNoise(), trials=300, seed=6)

    assert bound > EPSILON
