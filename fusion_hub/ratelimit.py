"""Per-credential request rate limit of the TAXII server (token bucket).

Each credential has a bucket of ``requests_per_minute`` tokens that refills continuously at
``requests_per_minute / 60`` tokens a second; a request takes one token. An empty bucket gets
429 Too Many Requests with ``Retry-After`` (RFC 6585, section 4), so a looping client or a
stolen credential cannot monopolise the hub, while a burst of up to one minute's allowance
passes at once.

``RateLimiter`` keeps the buckets in the memory of one hub process, which suits SQLite: one
process serves the database. ``SharedRateLimiter`` keeps them in the PostgreSQL database
(``PostgresHubStorage.take_rate_token``), so hub processes behind a load balancer share one
bucket per credential and the configured rate applies to the whole cluster.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol


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


class TokenStore(Protocol):
    """Storage that updates a credential's bucket atomically; see ``SharedRateLimiter``."""

    def take_rate_token(self, name: str, *, capacity: float, per_second: float) -> float:
        """Take one token for ``name``. Return 0 when allowed, else the seconds until one is free."""


class SharedRateLimiter:
    """Token buckets kept in the database, shared by every hub process that uses it.

    Each request costs one ``UPSERT`` round trip. The bucket row is locked only for that
    statement, so requests of one credential through different processes take turns there.

    Parameters
    ----------
    store : TokenStore
        The PostgreSQL storage of the hub.
    requests_per_minute : int
        Sustained rate and burst size per credential for the whole cluster; 0 disables it.
    """

    def __init__(self, store: TokenStore, requests_per_minute: int) -> None:
        if requests_per_minute < 0:
            raise ValueError(f"requests_per_minute must be >= 0; got {requests_per_minute}")
        self.requests_per_minute = requests_per_minute
        self._store = store

    def acquire(self, name: str) -> float:
        """Take one token for ``name``. Return 0 when allowed, else the seconds until one is free."""
        if self.requests_per_minute == 0:
            return 0.0
        capacity = float(self.requests_per_minute)
        return self._store.take_rate_token(name, capacity=capacity, per_second=capacity / 60.0)


def build_rate_limiter(
    storage: object, requests_per_minute: int
) -> RateLimiter | SharedRateLimiter:
    """Return a limiter that shares buckets through the database when the storage supports it."""
    if hasattr(storage, "take_rate_token"):
        return SharedRateLimiter(storage, requests_per_minute)  # type: ignore[arg-type]
    return RateLimiter(requests_per_minute)


def retry_after_header(wait_secs: float) -> str:
    """Format a ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(wait_secs)))
