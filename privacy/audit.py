"""Empirical lower bounds on epsilon from repeated runs of a mechanism.

A mechanism M is (ε, δ)-DP only if every event S and neighbouring inputs D, D' satisfy
P[M(D) ∈ S] <= e^ε · P[M(D') ∈ S] + δ. Running M many times on D and on D' and counting
how often S occurs gives Clopper-Pearson confidence intervals for both probabilities; the
smallest ε compatible with them is a lower bound on the mechanism's true ε that holds with
the chosen confidence (Jagielski, Ullman and Oprea, "Auditing Differentially Private
Machine Learning: How Private is Private SGD?", NeurIPS 2020). If that bound exceeds the
ε the mechanism claims, the implementation is broken. A bound below the claim proves
nothing by itself, but the audit catches a missing, too small or wrongly summed noise.
"""

from __future__ import annotations

import math

from scipy.stats import beta

__all__ = ["clopper_pearson", "epsilon_lower_bound"]


def clopper_pearson(successes: int, trials: int, *, alpha: float) -> tuple[float, float]:
    """Return the two-sided (1 - alpha) Clopper-Pearson interval of a binomial proportion."""
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials] with trials >= 1; got {successes}, {trials}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}")
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def epsilon_lower_bound(
    hits_first: int, hits_second: int, trials: int, *, delta: float, alpha: float = 0.05
) -> float:
    """Return the ε lower bound from event counts on two neighbouring inputs.

    Parameters
    ----------
    hits_first, hits_second : int
        How often the event occurred in ``trials`` runs on each input.
    trials : int
        Runs per input.
    delta : float
        The mechanism's claimed δ, in [0, 1).
    alpha : float, default 0.05
        Total probability that the bound is wrong; each of the four one-sided limits
        gets alpha / 4 (the two-sided intervals at alpha / 2 each).

    Returns
    -------
    float
        max over both directions and the event's complement of
        ln((lower(p) - δ) / upper(q)), and 0.0 when no direction gives a positive bound.
    """
    first = clopper_pearson(hits_first, trials, alpha=alpha / 2)
    second = clopper_pearson(hits_second, trials, alpha=alpha / 2)
    complement_first = (1 - first[1], 1 - first[0])
    complement_second = (1 - second[1], 1 - second[0])

    bound = 0.0
    for p, q in ((first, second), (second, first), (complement_first, complement_second),
                 (complement_second, complement_first)):
        numerator, denominator = p[0] - delta, q[1]
        if numerator > 0 and denominator > 0:
            bound = max(bound, math.log(numerator / denominator))
    return bound
