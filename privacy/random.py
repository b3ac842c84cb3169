"""Sources of random integers for DP noise and sampling.

Every mechanism in this package takes its generator as an argument and draws only
integers from it (``randbelow`` and ``getrandbits``), never floats. Production code
passes :func:`system_random`, which reads the operating system's CSPRNG
(``os.urandom``) through :class:`secrets.SystemRandom`, so an observer of released
values cannot predict or reconstruct the noise. Tests pass :func:`seeded_random`
for reproducible draws. A seeded Mersenne Twister is predictable from its output,
so it must never produce a release.
"""

from __future__ import annotations

import random
import secrets
from typing import Protocol, runtime_checkable

__all__ = ["RandomSource", "seeded_random", "system_random"]


@runtime_checkable
class RandomSource(Protocol):
    """Generator of uniform random integers."""

    def randbelow(self, n: int) -> int:
        """Return a uniform integer in ``[0, n)``; ``n`` must be positive."""
        ...

    def getrandbits(self, k: int) -> int:
        """Return a uniform integer with ``k`` random bits."""
        ...


class _SystemRandomSource(secrets.SystemRandom):
    """:class:`secrets.SystemRandom` with a public ``randbelow``."""

    def randbelow(self, n: int) -> int:
        return self.randrange(n)


class _SeededRandomSource(random.Random):
    """:class:`random.Random` with a public ``randbelow``, for tests only."""

    def randbelow(self, n: int) -> int:
        return self.randrange(n)


def system_random() -> RandomSource:
    """Return the production source: the operating system's CSPRNG.

    Returns
    -------
    RandomSource
        An instance of :class:`secrets.SystemRandom` (``os.urandom`` underneath).
        Seeding it has no effect.
    """
    return _SystemRandomSource()


def seeded_random(seed: int) -> RandomSource:
    """Return a reproducible source for tests.

    Parameters
    ----------
    seed : int
        Seed of the Mersenne Twister.

    Returns
    -------
    RandomSource
        A :class:`random.Random` seeded with ``seed``. Its output is predictable,
        so it must not produce noise for a real release.
    """
    return _SeededRandomSource(seed)
