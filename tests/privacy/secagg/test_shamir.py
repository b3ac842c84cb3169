"""Tests for privacy.secagg.shamir: sharing, reconstruction and rejection of bad shares."""

from __future__ import annotations

import itertools

import pytest

from privacy.random import seeded_random
from privacy.secagg.errors import ShareRejected
from privacy.secagg.shamir import (
    PRIME,
    Share,
    lagrange_coefficients_at_zero,
    reconstruct_secret,
    split_secret,
)

SECRET = int.from_bytes(bytes(range(32)), "big")


def test_prime_is_the_mersenne_prime_2_521_minus_1() -> None:
    assert PRIME == 2**521 - 1
    assert pow(3, PRIME - 1, PRIME) == 1  # Fermat witness; M521 is a known Mersenne prime


@pytest.mark.parametrize("seed", range(5))
def test_reconstruct_every_threshold_subset_recovers_secret(seed: int) -> None:
    shares = split_secret(SECRET, threshold=3, xs=[1, 2, 3, 4, 5], rng=seeded_random(seed))

    for subset in itertools.combinations(shares, 3):
        assert reconstruct_secret(subset, threshold=3) == SECRET


def test_reconstruct_threshold_one_is_the_secret_itself() -> None:
    shares = split_secret(SECRET, threshold=1, xs=[4, 9], rng=seeded_random(0))

    assert [s.y for s in shares] == [SECRET, SECRET]


def test_reconstruct_with_extra_consistent_shares_succeeds() -> None:
    shares = split_secret(SECRET, threshold=3, xs=[1, 2, 3, 4, 5], rng=seeded_random(1))

    assert reconstruct_secret(shares, threshold=3) == SECRET


def test_reconstruct_with_tampered_extra_share_raises() -> None:
    shares = split_secret(SECRET, threshold=3, xs=[1, 2, 3, 4], rng=seeded_random(2))
    tampered = shares[:3] + [Share(shares[3].x, (shares[3].y + 1) % PRIME)]

    with pytest.raises(ShareRejected, match="inconsistent"):
        reconstruct_secret(tampered, threshold=3)


def test_reconstruct_below_threshold_raises() -> None:
    shares = split_secret(SECRET, threshold=3, xs=[1, 2, 3], rng=seeded_random(3))

    with pytest.raises(ShareRejected) as excinfo:
        reconstruct_secret(shares[:2], threshold=3)

    assert "2 shares given but 3 are needed" in str(excinfo.value)


def test_reconstruct_duplicate_point_raises() -> None:
    shares = split_secret(SECRET, threshold=2, xs=[1, 2], rng=seeded_random(4))

    with pytest.raises(ShareRejected, match="same x"):
        reconstruct_secret([shares[0], shares[0]], threshold=2)


def test_lagrange_weights_sum_to_one() -> None:
    weights = lagrange_coefficients_at_zero([3, 7, 11, 40])

    assert sum(weights) % PRIME == 1  # the constant polynomial 1 interpolates to 1


def test_share_bytes_round_trip() -> None:
    share = split_secret(SECRET, threshold=2, xs=[65535, 2], rng=seeded_random(6))[0]

    assert Share.from_bytes(share.to_bytes()) == share
    assert len(share.to_bytes()) == 68


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00" * 67, "must be 68 bytes"),
        (b"\x00\x00" + b"\x00" * 66, "x must be in"),
        (b"\x00\x01" + b"\xff" * 66, "y must be in"),
    ],
)
def test_share_from_bytes_malformed_raises(data: bytes, message: str) -> None:
    with pytest.raises(ShareRejected, match=message):
        Share.from_bytes(data, sender="site-x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secret": PRIME, "threshold": 2, "xs": [1, 2]}, "secret must be"),
        ({"secret": 1, "threshold": 3, "xs": [1, 2]}, "threshold must be in"),
        ({"secret": 1, "threshold": 0, "xs": [1, 2]}, "threshold must be in"),
        ({"secret": 1, "threshold": 2, "xs": [1, 1]}, "distinct"),
        ({"secret": 1, "threshold": 1, "xs": [0]}, "points must be in"),
    ],
)
def test_split_invalid_arguments_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_secret(rng=seeded_random(0), **kwargs)  # type: ignore[arg-type]
