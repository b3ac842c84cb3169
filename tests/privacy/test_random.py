"""Tests for privacy.random: the production CSPRNG and the seeded test source."""

from __future__ import annotations

import random
import secrets

import pytest

from privacy.random import RandomSource, seeded_random, system_random


def test_system_random_is_secrets_system_random() -> None:
    source = system_random()

    assert isinstance(source, secrets.SystemRandom)
    assert isinstance(source, RandomSource)


def test_system_random_randbelow_stays_in_range() -> None:
    source = system_random()

    draws = [source.randbelow(7) for _ in range(2000)]

    assert set(draws) == set(range(7))


def test_system_random_getrandbits_width() -> None:
    source = system_random()

    draws = [source.getrandbits(3) for _ in range(2000)]

    assert set(draws) == set(range(8))


def test_seeded_random_reproducible_per_seed() -> None:
    first = seeded_random(42)
    second = seeded_random(42)
    other = seeded_random(43)

    sequence = [first.randbelow(1000) for _ in range(50)]

    assert sequence == [second.randbelow(1000) for _ in range(50)]
    assert sequence != [other.randbelow(1000) for _ in range(50)]


def test_seeded_random_is_not_a_system_source() -> None:
    source = seeded_random(1)

    assert isinstance(source, random.Random)
    assert not isinstance(source, secrets.SystemRandom)
    assert isinstance(source, RandomSource)


@pytest.mark.parametrize("bound", [0, -3])
def test_randbelow_rejects_non_positive_bound(bound: int) -> None:
    with pytest.raises(ValueError):
        seeded_random(1).randbelow(bound)
    with pytest.raises(ValueError):
        system_random().randbelow(bound)
