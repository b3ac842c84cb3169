"""Exponential backoff with full jitter for retrying a SIEM that is busy or down.

The delay before retry ``n`` (1-based) is uniform in ``[0, min(cap, base * 2**(n-1))]``
("full jitter", M. Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015):
many hubs and sync jobs retrying one busy indexer then spread out instead of arriving
together. The random source and the sleep function are arguments, so tests run instantly and
deterministically.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
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
        Cap of every delay; 30 s keeps a flush bounded at a few minutes in the worst case.
    """

    max_attempts: int = 5
    base_delay_secs: float = 0.5
    max_delay_secs: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1; got {self.max_attempts}")
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
    """

    def __init__(self, policy: RetryPolicy, *, rng: random.Random | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.policy = policy
        self.rng = rng or random.Random()
        self.sleep = sleep

    def wait(self, retry: int) -> float:
        """Sleep before retry ``retry`` and return the delay slept."""
        delay = self.policy.delay_secs(retry, self.rng)
        self.sleep(delay)
        return delay
