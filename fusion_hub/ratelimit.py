"""Per-credential request rate limit of the TAXII server (token bucket).

Each credential has a bucket of ``requests_per_minute`` tokens that refills continuously at
``requests_per_minute / 60`` tokens a second; a request takes one token. An empty bucket gets
429 Too Many Requests with ``Retry-After`` (RFC 6585, section 4), so a looping client or a
stolen credential cannot monopolise the hub, while a burst of up to one minute's allowance
passes at once.

The buckets live in the memory of one hub process. Behind a load balancer with N hub
processes, a credential may therefore make up to N times the configured rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Token buckets keyed by credential name.

    Parameters
    ----------
    requests_per_minute : int
        Sustained rate and burst size per credential; 0 disables the limit.
    clock : callable returning float, optional
        Monotonic seconds; tests pass a controllable clock.
    """

    def __init__(self, requests_per_minute: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if requests_per_minute < 0:
            raise ValueError(f"requests_per_minute must be >= 0; got {requests_per_minute}")
        self.requests_per_minute = requests_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        # name -> (tokens left, time of the last refill)
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, name: str) -> float:
        """Take one token for ``name``; return 0 when allowed, else seconds until one is free."""
        if self.requests_per_minute == 0:
            return 0.0
        capacity = float(self.requests_per_minute)
        per_second = capacity / 60.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(name, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * per_second)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / per_second


def retry_after_header(wait_secs: float) -> str:
    """Format a ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(wait_secs)))
