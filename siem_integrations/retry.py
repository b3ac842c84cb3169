"""Exponential backoff with full jitter for retrying a SIEM that is busy or down.

The delay before retry ``n`` (1-based) is uniform in ``[0, min(cap, base * 2**(n-1))]``
("full jitter", M. Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015):
many hubs and sync jobs retrying one busy indexer then spread out instead of arriving
together. Retries also stop once ``max_elapsed_secs`` would pass, so a SIEM that is down
costs a flush that long, plus at most one request timeout, before its documents go back
to the spool. The random source, the sleep function and the clock are arguments, so tests
run instantly and deterministically.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before retrying a request.

    Parameters
    ----------
    max_attempts : int, default 5
        Attempts in total, the first included; must be at least 1. After the last one the
        batch stays in the spool for the next flush.
    base_delay_secs : float, default 0.5
        Upper bound of the first delay.
    max_delay_secs : float, default 30.0
        Cap of every delay.
    max_elapsed_secs : float, default 30.0
        No retry starts later than this after the first attempt began, so an unavailable
        SIEM blocks a flush for about this long plus one request timeout, then the batch
        stays in the spool. 30 s is a tenth of the default sync interval.
    """

    max_attempts: int = 5
    base_delay_secs: float = 0.5
    max_delay_secs: float = 30.0
    max_elapsed_secs: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1; got {self.max_attempts}")
        if self.max_elapsed_secs < 0:
            raise ValueError(f"max_elapsed_secs must be >= 0; got {self.max_elapsed_secs}")
        if not 0 <= self.base_delay_secs <= self.max_delay_secs:
            raise ValueError("delays must satisfy 0 <= base_delay_secs <= max_delay_secs; got "
                             f"{self.base_delay_secs} and {self.max_delay_secs}")

    def delay_secs(self, retry: int, rng: random.Random) -> float:
        """Return the delay before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.max_delay_secs, self.base_delay_secs * 2 ** (retry - 1))
        return rng.uniform(0.0, ceiling)


class Backoff:
    """Sleep between attempts according to a policy.

    Parameters
    ----------
    policy : RetryPolicy
    rng : random.Random, optional
        Jitter source; the default is seeded from the OS. Jitter needs no cryptographic
        strength.
    sleep : callable, default time.sleep
        Tests pass a function that records the delays.
    clock : callable returning float, default time.monotonic
        Measures ``max_elapsed_secs``.
    """

    def __init__(self, policy: RetryPolicy, *, rng: random.Random | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.clock = clock

    def attempts(self) -> Iterator[int]:
        """Yield attempt numbers from 1, sleeping before each retry.

        Stops after ``max_attempts``, or early when the next retry would start more than
        ``max_elapsed_secs`` after the first attempt.
        """
        started = self.clock()
        for attempt in range(1, self.policy.max_attempts + 1):
            if attempt > 1:
                delay = self.policy.delay_secs(attempt - 1, self.rng)
                if self.clock() - started + delay > self.policy.max_elapsed_secs:
                    return
                self.sleep(delay)
            yield attempt
