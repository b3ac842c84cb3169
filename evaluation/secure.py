"""Secure-aggregation gate of the evaluation: a summed count-min sketch before any reveal.

This runs the library of ``privacy.secagg`` directly on each round's windows, not the
agent's and hub's secure mode, which runs over a live hub's ``keys`` collection. Each
participating site sketches the observables of its privacy units, bounded by the agent's own
``bound_round``. It adds its share of distributed discrete Gaussian noise, and the
pairwise-masking protocol (``run_local_round``) sums the sites' sketches. A site then reveals an
observable from its plain DP release only when the summed sketch marks it heavy in every
row, so the hub sees a value only when the cross-site count clears the threshold too.

The sketch is a second release of the round, so it spends its own epsilon next to the
summary's. The poisoning site sketches its true windows: only its released evidence is
forged.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.config import PrivacySection
from agent.detector import ScoredWindow
from agent.summariser import bound_round
from privacy.random import RandomSource
from privacy.secagg import SecAggConfig, decode_signed, encode_signed, run_local_round
from privacy.secagg.noise import DistributedGaussian, calibrate_distributed_gaussian
from privacy.secagg.sketch import CountMinSketch

# Two rows of 1,024 buckets: a round of these scenarios has a few hundred distinct
# observables, so a value shares a bucket in both rows with another value rarely, and the
# per-entry noise sampling stays fast.
SKETCH_ROWS = 2
SKETCH_WIDTH = 1024


def sketch_noise(*, epsilon: float, delta: float, min_sites: int,
                 max_observables_per_unit: int) -> DistributedGaussian:
    """Return each site's noise share for the round's sketch at (epsilon, delta)."""
    shape = CountMinSketch("shape", rows=SKETCH_ROWS, width=SKETCH_WIDTH)
    l1, l2 = shape.sensitivity(max_observables_per_unit)
    return calibrate_distributed_gaussian(epsilon=epsilon, delta=delta, min_sites=min_sites,
                                          l1_sensitivity=l1, l2_sensitivity=l2,
                                          dimension=shape.length)


def heavy_observables(
    round_id: str,
    windows_by_site: Mapping[str, list[ScoredWindow]],
    *,
    privacy: PrivacySection,
    threshold: int,
    noise: DistributedGaussian,
    rng: RandomSource,
) -> tuple[CountMinSketch, frozenset[int]]:
    """Sum the sites' noised sketches by secure aggregation and return the heavy buckets.

    Raises
    ------
    RoundAborted
        If fewer sites take part than the protocol's threshold.
    """
    sketch = CountMinSketch(round_id, rows=SKETCH_ROWS, width=SKETCH_WIDTH)
    inputs = {}
    for site_id, windows in windows_by_site.items():
        bounded = bound_round(windows, privacy=privacy, rng=rng)
        inputs[site_id] = encode_signed(noise.add_noise(sketch.build(bounded.unit_observables), rng))

    site_ids = tuple(sorted(inputs))
    # A strict majority of the sites must survive each stage.
    config = SecAggConfig(round_id=round_id, site_ids=site_ids, threshold=len(site_ids) // 2 + 1,
                          vector_length=sketch.length)
    summed = decode_signed(run_local_round(config, inputs, rng=rng))
    return sketch, sketch.heavy_buckets(summed, threshold=threshold)


def sketch_vector_bytes() -> int:
    """Return the bytes one site's masked sketch occupies (32-bit words)."""
    return 4 * SKETCH_ROWS * SKETCH_WIDTH
