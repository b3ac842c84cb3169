"""Shamir t-of-n secret sharing over the prime field GF(2^521 - 1).

Shamir, "How to Share a Secret" (CACM 1979): the secret is the constant term of a random
polynomial of degree ``threshold - 1``; share ``i`` is the polynomial's value at ``x = i``.
Any ``threshold`` shares determine the polynomial by Lagrange interpolation, and fewer than
``threshold`` shares are uniformly distributed whatever the secret, so they reveal nothing.

The field is the Mersenne prime 2^521 - 1, so every 32-byte key (a 256-bit integer) is a
field element as it is and no secret needs to be split. The coefficients come from the
caller's :class:`privacy.random.RandomSource` (the operating system's CSPRNG in production).

A share on the wire is ``x`` (1 to 65535) and ``y`` as 66 big-endian bytes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from privacy.random import RandomSource
from privacy.secagg.errors import ShareRejected

__all__ = [
    "MAX_SHARES",
    "PRIME",
    "Share",
    "lagrange_coefficients_at_zero",
    "reconstruct_secret",
    "split_secret",
]

PRIME = 2**521 - 1
SHARE_Y_BYTES = 66  # ceil(521 / 8)
# x fits in two bytes on the wire; 65535 sites is far above any planned federation.
MAX_SHARES = 65535


@dataclass(frozen=True, slots=True)
class Share:
    """One point ``(x, y)`` of a sharing polynomial.

    Attributes
    ----------
    x : int
        Evaluation point, in [1, 65535]; never 0, where the secret sits.
    y : int
        Polynomial value, in [0, PRIME).
    """

    x: int
    y: int

    def to_bytes(self) -> bytes:
        """Encode as 2 bytes of ``x`` and 66 bytes of ``y``, big-endian."""
        return self.x.to_bytes(2, "big") + self.y.to_bytes(SHARE_Y_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes, *, sender: str = "?") -> Share:
        """Decode :meth:`to_bytes`; raise :class:`ShareRejected` on any malformed input."""
        if not isinstance(data, bytes | bytearray) or len(data) != 2 + SHARE_Y_BYTES:
            size = len(data) if isinstance(data, bytes | bytearray) else type(data).__name__
            raise ShareRejected(sender, f"a share must be {2 + SHARE_Y_BYTES} bytes; got {size}")
        x = int.from_bytes(data[:2], "big")
        y = int.from_bytes(data[2:], "big")
        return validate_share(Share(x, y), sender=sender)


def validate_share(share: Share, *, sender: str = "?") -> Share:
    """Return the share if ``x`` is in [1, 65535] and ``y`` in [0, PRIME), else raise."""
    # The exact-type test is the fast path; numpy and other integers go through the ABC.
    if type(share.x) is not int and not isinstance(share.x, numbers.Integral) or not 1 <= share.x <= MAX_SHARES:
        raise ShareRejected(sender, f"share x must be in [1, {MAX_SHARES}]; got {share.x!r}")
    if type(share.y) is not int and not isinstance(share.y, numbers.Integral) or not 0 <= share.y < PRIME:
        raise ShareRejected(sender, "share y must be in [0, 2^521 - 1)")
    return share


def split_secret(
    secret: int, *, threshold: int, xs: Sequence[int], rng: RandomSource
) -> list[Share]:
    """Split ``secret`` into one share per point in ``xs``; any ``threshold`` recover it.

    Parameters
    ----------
    secret : int
        In [0, PRIME).
    threshold : int
        Number of shares needed to reconstruct, in [1, len(xs)].
    xs : sequence of int
        Distinct evaluation points in [1, 65535], one per share holder.
    rng : RandomSource
        Source of the polynomial's coefficients.

    Returns
    -------
    list of Share
        Shares in the order of ``xs``.

    Raises
    ------
    ValueError
        If the secret, threshold or points are out of range or the points repeat.
    """
    if not isinstance(secret, numbers.Integral) or not 0 <= secret < PRIME:
        raise ValueError("secret must be an integer in [0, 2^521 - 1)")
    if len(set(xs)) != len(xs):
        raise ValueError(f"share points must be distinct; got {list(xs)!r}")
    for x in xs:
        if not isinstance(x, numbers.Integral) or not 1 <= x <= MAX_SHARES:
            raise ValueError(f"share points must be in [1, {MAX_SHARES}]; got {x!r}")
    if not isinstance(threshold, numbers.Integral) or not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}]; got {threshold!r}")

    coefficients = [int(secret)] + [rng.randbelow(PRIME) for _ in range(threshold - 1)]
    return [Share(int(x), _evaluate(coefficients, int(x))) for x in xs]


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    # Horner's rule, highest degree first.
    value = 0
    for coefficient in reversed(coefficients):
        value = (value * x + coefficient) % PRIME
    return value


def lagrange_coefficients_at_zero(xs: Sequence[int]) -> list[int]:
    """Return the weights l_i with f(0) = sum_i l_i * f(x_i) for any f of degree < len(xs).

    Computing them once for a set of share holders and reusing them for every secret those
    holders share is what keeps the hub's unmasking linear in the number of secrets.
    """
    if len(set(xs)) != len(xs):
        raise ValueError(f"share points must be distinct; got {list(xs)!r}")
    # The points are small integers, so the products are taken exactly and reduced once:
    # this is several times faster than reducing after every 521-bit multiplication.
    everything = math.prod(xs)
    numerators = [everything // xi % PRIME for xi in xs]
    denominators = [math.prod(xj - xi for xj in xs if xj != xi) % PRIME for xi in xs]
    inverses = _invert_all(denominators)
    return [n * inv % PRIME for n, inv in zip(numerators, inverses, strict=True)]


def _invert_all(values: Sequence[int]) -> list[int]:
    """Invert every value with one modular exponentiation (Montgomery's batch inversion)."""
    prefix = [1]
    for value in values:
        prefix.append(prefix[-1] * value % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    result = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        result[i] = inverse * prefix[i] % PRIME
        inverse = inverse * values[i] % PRIME
    return result


def reconstruct_secret(
    shares: Iterable[Share], *, threshold: int, weights: Sequence[int] | None = None
) -> int:
    """Recover the secret from at least ``threshold`` shares.

    Parameters
    ----------
    shares : iterable of Share
        At least ``threshold`` shares with distinct ``x``. Only the first ``threshold`` are
        interpolated; any further shares are checked against the polynomial they define.
    threshold : int
        Threshold the secret was split with.
    weights : sequence of int, optional
        Output of :func:`lagrange_coefficients_at_zero` for the ``x`` of the first
        ``threshold`` shares, to skip recomputing it.

    Returns
    -------
    int
        The secret.

    Raises
    ------
    ShareRejected
        If fewer than ``threshold`` shares are given, two shares have the same ``x``, or an
        extra share does not lie on the polynomial (a corrupted or forged share).
    """
    points = [validate_share(share) for share in shares]
    if len(points) < threshold:
        raise ShareRejected("?", f"{len(points)} shares given but {threshold} are needed")
    if len({p.x for p in points}) != len(points):
        raise ShareRejected("?", "two shares have the same x")

    basis = points[:threshold]
    if weights is None:
        weights = lagrange_coefficients_at_zero([p.x for p in basis])
    secret = sum(w * p.y for w, p in zip(weights, basis, strict=True)) % PRIME

    # Extra shares must agree with the interpolated polynomial. One that does not was
    # corrupted in transit or forged by a site, and using it would unmask garbage.
    for extra in points[threshold:]:
        if _interpolate_at(basis, extra.x) != extra.y:
            raise ShareRejected("?", f"share at x={extra.x} is inconsistent with the others")
    return secret


def _interpolate_at(points: Sequence[Share], x: int) -> int:
    total = 0
    for i, pi in enumerate(points):
        numerator, denominator = 1, 1
        for j, pj in enumerate(points):
            if i != j:
                numerator = numerator * (x - pj.x) % PRIME
                denominator = denominator * (pi.x - pj.x) % PRIME
        total = (total + pi.y * numerator * pow(denominator, -1, PRIME)) % PRIME
    return total
