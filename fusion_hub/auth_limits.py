"""Limits on failed logins and on concurrent argon2id computations of the hub.

Each password or token check that misses the verified-secret cache costs one argon2id
computation, which with the RFC 9106 defaults takes 64 MiB of memory and, by design, much
CPU time. Without limits a flood of wrong passwords is a CPU and memory denial of service
and an unbounded online guessing channel. ``AuthLimits`` therefore runs before every
argon2id computation:

- a token bucket of failures per client address (IPv6 addresses by their /64 prefix, since
  one host usually owns the whole prefix),
- a token bucket of failures per username or API token id, which an address that
  authenticated as that name in the last day skips, so an attacker cannot lock out a
  site's own agent,
- a cap on argon2id computations running at once. An address with failures in its bucket
  may hold at most half of the slots (at least one), so a flood from one address cannot
  take every slot. An address without failures may use any slot and waits longer for
  one, because several sites behind one NAT or proxy log in together when a round
  starts.

Over a limit the check raises ``AuthThrottled`` and no argon2id runs. The HTTP layer then
returns 429 with ``Retry-After``. Requests whose secret is in the verified cache need no
argon2id and pass these limits untouched, so a client with a working credential keeps its
access while its address or name is throttled. Unknown and known usernames meet the same
limits and the same argon2id cost, so the status does not tell them apart and the time is
mostly that of one argon2id computation.

The state lives in the memory of one hub process, so N processes behind a load balancer
allow N times the configured failures.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fusion_hub.config import AuthSettings

# Each table drops its least recently used key beyond this size, so a client rotating
# through many addresses or names costs bounded memory. The concurrency cap still bounds
# the CPU such a client can take.
MAX_TRACKED_KEYS = 65_536

# An address that authenticated as a name skips that name's failure limit for this long.
TRUSTED_ADDRESS_SECS = 24 * 3600.0

# Usernames come from the client, so a key keeps at most this many characters of one, which
# bounds the memory of a table. Credential names have at most 63 (see fusion_hub.registry).
MAX_NAME_KEY_CHARS = 128

# How long a check from an address with failures waits for a free argon2id slot. A flood
# beyond it gets 429 instead of queueing on the worker threads.
SLOT_WAIT_SECS = 0.25

# How long a check from an address without failures waits for a free slot. With the RFC 9106
# defaults one check takes a fraction of a second on one core, so this absorbs a few dozen
# agents that log in together, and it stays under a client's usual 30 s request timeout.
CLEAN_SLOT_WAIT_SECS = 5.0


class AuthThrottled(Exception):
    """A credential check rejected before argon2id ran.

    ``scope`` is ``address``, ``username``, ``address_concurrency`` or ``concurrency``. ``retry_after_secs`` is the
    wait in seconds until the limit lets one more check through.
    """

    def __init__(self, scope: str, retry_after_secs: float, description: str) -> None:
        super().__init__(description)
        self.scope = scope
        self.retry_after_secs = retry_after_secs
        self.description = description


class FailureBuckets:
    """Token buckets of failures, keyed by address or name.

    A bucket contains up to ``max_failures`` tokens and refills at ``max_failures / window_secs`` a
    second, and each failure takes one. An empty bucket blocks further checks until a token
    is back, so a guesser gets ``max_failures`` quick tries and then one per
    ``window_secs / max_failures`` seconds. ``max_failures`` 0 disables the limit.
    """

    def __init__(self, max_failures: int, window_secs: float, *,
                 clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_TRACKED_KEYS) -> None:
        self.max_failures = max_failures
        self.window_secs = window_secs
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        # key -> (tokens left, time of the last refill), least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait_secs(self, key: str) -> float:
        """Return 0 when ``key`` may try again, else the seconds until it may."""
        if self.max_failures == 0:
            return 0.0
        with self._lock:
            tokens = self._refilled(key, self._clock())
        if tokens >= 1.0:
            return 0.0
        return (1.0 - tokens) * self.window_secs / self.max_failures

    def record_failure(self, key: str) -> None:
        """Take one token from the bucket of ``key``."""
        if self.max_failures == 0:
            return
        now = self._clock()
        with self._lock:
            tokens = self._refilled(key, now)
            self._buckets[key] = (max(0.0, tokens - 1.0), now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)

    def has_failures(self, key: str) -> bool:
        """Return whether ``key`` has failures that its bucket has not refilled yet."""
        if self.max_failures == 0:
            return False
        with self._lock:
            return self._refilled(key, self._clock()) < self.max_failures

    def forget(self, key: str) -> None:
        """Drop the failures of ``key``, after it authenticated."""
        with self._lock:
            self._buckets.pop(key, None)

    def _refilled(self, key: str, now: float) -> float:
        capacity = float(self.max_failures)
        entry = self._buckets.get(key)
        if entry is None:
            return capacity
        tokens, last = entry
        return min(capacity, tokens + (now - last) * capacity / self.window_secs)


def address_key(remote_addr: str | None) -> str:
    """Return the key that failures of ``remote_addr`` count under.

    IPv6 addresses count by their /64 prefix. Text that is no IP address (a Unix socket, a
    proxy's placeholder) counts as itself.
    """
    if not remote_addr:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return remote_addr
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class AuthLimits:
    """The failure limits and the argon2id concurrency cap of one hub process.

    Parameters
    ----------
    settings : AuthSettings
        ``max_failures_per_address``, ``max_failures_per_username``,
        ``failure_window_seconds`` and ``max_concurrent_verifications``.
    clock : callable returning float, optional
        Monotonic seconds; tests pass a controllable clock.
    """

    def __init__(self, settings: AuthSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.by_address = FailureBuckets(settings.max_failures_per_address,
                                         settings.failure_window_seconds, clock=clock)
        self.by_username = FailureBuckets(settings.max_failures_per_username,
                                          settings.failure_window_seconds, clock=clock)
        self._slots = threading.BoundedSemaphore(settings.max_concurrent_verifications)
        self._slots_per_address = max(1, settings.max_concurrent_verifications // 2)
        self._in_flight_lock = threading.Lock()
        # address key -> argon2id checks running or waiting for a slot; 0 is deleted
        self._in_flight: dict[str, int] = {}
        self._trusted_lock = threading.Lock()
        # (username, address key) -> time of the last successful authentication
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()

    @contextmanager
    def verification(self, username: str, remote_addr: str | None) -> Iterator[None]:
        """Hold one argon2id slot for a check of ``username`` from ``remote_addr``.

        Raises
        ------
        AuthThrottled
            When the address or the username is over its failure limit, an address with
            failures already has its share of the slots, or every slot stays taken for
            ``SLOT_WAIT_SECS`` (``CLEAN_SLOT_WAIT_SECS`` for an address without failures).
            Nothing is computed then.
        """
        address = address_key(remote_addr)
        username = username[:MAX_NAME_KEY_CHARS]
        wait = self.by_address.wait_secs(address)
        if wait > 0:
            raise AuthThrottled(
                "address", wait,
                f"too many failed logins from {address}; retry after the Retry-After delay")
        if not self._is_trusted(username, address):
            wait = self.by_username.wait_secs(username)
            if wait > 0:
                raise AuthThrottled(
                    "username", wait,
                    "too many failed logins for this username; retry after the Retry-After "
                    "delay")
        suspect = self.by_address.has_failures(address)
        with self._in_flight_lock:
            running = self._in_flight.get(address, 0)
            if suspect and running >= self._slots_per_address:
                raise AuthThrottled(
                    "address_concurrency", 1.0,
                    f"{address} has as many password checks running as one address may "
                    f"({running}); retry after the Retry-After delay")
            self._in_flight[address] = running + 1
        try:
            if not self._slots.acquire(timeout=SLOT_WAIT_SECS if suspect else CLEAN_SLOT_WAIT_SECS):
                raise AuthThrottled(
                    "concurrency", 1.0,
                    "the hub is checking too many passwords at once; retry after the "
                    "Retry-After delay")
            try:
                yield
            finally:
                self._slots.release()
        finally:
            with self._in_flight_lock:
                remaining = self._in_flight[address] - 1
                if remaining:
                    self._in_flight[address] = remaining
                else:
                    del self._in_flight[address]

    def record_failure(self, username: str, remote_addr: str | None) -> None:
        """Count a rejected secret against its address and its username."""
        self.by_address.record_failure(address_key(remote_addr))
        self.by_username.record_failure(username[:MAX_NAME_KEY_CHARS])

    def record_success(self, username: str, remote_addr: str | None) -> None:
        """Clear the failures of ``username`` and trust its address for that name."""
        username = username[:MAX_NAME_KEY_CHARS]
        self.by_username.forget(username)
        key = (username, address_key(remote_addr))
        with self._trusted_lock:
            self._trusted[key] = self._clock()
            self._trusted.move_to_end(key)
            while len(self._trusted) > MAX_TRACKED_KEYS:
                self._trusted.popitem(last=False)

    def _is_trusted(self, username: str, address: str) -> bool:
        with self._trusted_lock:
            since = self._trusted.get((username, address))
        return since is not None and self._clock() - since < TRUSTED_ADDRESS_SECS

