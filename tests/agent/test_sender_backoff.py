"""Retry waits: exponential, capped at MAX_RETRY_DELAY_SECS, with full jitter."""

from __future__ import annotations

import random

import pytest

from agent.sender import MAX_RETRY_DELAY_SECS, backoff_delay_secs


@pytest.mark.parametrize("seed", range(5))
def test_backoff_stays_under_doubling_ceiling(seed: int) -> None:
    rng = random.Random(seed)

    delays = [backoff_delay_secs(attempt, 0.5, rng=rng) for attempt in range(1, 12)]

    for attempt, delay in enumerate(delays, start=1):
        assert 0.0 <= delay <= min(MAX_RETRY_DELAY_SECS, 0.5 * 2 ** (attempt - 1))


def test_backoff_capped_for_any_attempt_count() -> None:
    rng = random.Random(0)

    delays = [backoff_delay_secs(attempt, 60.0, rng=rng) for attempt in (10, 100, 10_000)]

    assert max(delays) <= MAX_RETRY_DELAY_SECS


def test_backoff_jitter_spreads_agents() -> None:
    """Agents that fail together wait different times: the waits cover the range, not one value."""
    delays = [backoff_delay_secs(4, 1.0, rng=random.Random(seed)) for seed in range(200)]

    assert min(delays) < 1.0
    assert max(delays) > 7.0
    assert len({round(delay, 6) for delay in delays}) == 200


def test_backoff_attempt_below_one_rejected() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1; got 0"):
        backoff_delay_secs(0, 1.0, rng=random.Random(0))
