"""Masks and the integer encoding of inputs for secure aggregation.

Inputs are vectors of integers in the ring Z / 2^32 (numpy ``uint32``, whose addition wraps
around exactly). A signed value ``v`` with ``|v| < 2^31`` is stored as ``v mod 2^32`` and
read back from the sum as its two's complement, so a sum is exact as long as the true sum of
all sites stays in [-2^31, 2^31). Real values are scaled by a power of two and rounded first
(:func:`encode_fixed_point`).

A mask is the ChaCha20 keystream under a 32-byte seed, read as little-endian 32-bit words.
libsodium exposes ChaCha20 to Python only inside the IETF ChaCha20-Poly1305 AEAD, and
encrypting zeros with it under a fixed nonce yields exactly the keystream from block 1 on
(RFC 8439, section 2.8), followed by a tag we drop. Each seed is used for one mask only,
so the fixed nonce is safe. Pairwise seeds come from X25519 agreement hashed with BLAKE2b
together with the round and both site ids, so two rounds never share a mask.
"""

from __future__ import annotations

import hashlib
import numbers

import nacl.bindings
import nacl.exceptions
import numpy as np

__all__ = [
    "MODULUS_BITS",
    "SEED_BYTES",
    "agree_pairwise_seed",
    "decode_signed",
    "encode_fixed_point",
    "encode_signed",
    "expand_mask",
]

MODULUS_BITS = 32
SEED_BYTES = 32
_NONCE = bytes(12)
_PAIRWISE_PERSON = b"fti-secagg-pair"  # BLAKE2b personalisation, at most 16 bytes
_MAX_VECTOR_LENGTH = 1 << 24  # 64 MiB of mask per seed is far above any summary


def expand_mask(seed: bytes, length: int) -> np.ndarray:
    """Expand a 32-byte seed to ``length`` uniform 32-bit words with ChaCha20.

    Parameters
    ----------
    seed : bytes
        Exactly 32 bytes.
    length : int
        Number of words, in [0, 2^24].

    Returns
    -------
    numpy.ndarray
        ``uint32`` array of ``length`` words.
    """
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise ValueError(f"mask seed must be {SEED_BYTES} bytes")
    if not isinstance(length, numbers.Integral) or not 0 <= length <= _MAX_VECTOR_LENGTH:
        raise ValueError(f"mask length must be in [0, {_MAX_VECTOR_LENGTH}]; got {length!r}")
    stream = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
        bytes(4 * length), None, _NONCE, seed
    )
    words = np.frombuffer(stream, dtype="<u4", count=length)
    # On little-endian hosts "<u4" is uint32 already and the read-only view needs no copy.
    return words if words.dtype == np.uint32 else words.astype(np.uint32)


def agree_pairwise_seed(
    secret_key: bytes, peer_public_key: bytes, *, round_id: str, site_a: str, site_b: str
) -> bytes:
    """Derive the mask seed two sites share from their X25519 keys.

    Both sites obtain the same seed: the X25519 shared secret is symmetric and the site ids
    enter the hash in sorted order.

    Raises
    ------
    ValueError
        If the peer's key is not a valid X25519 public key (libsodium rejects keys of low
        order, whose shared secret would be zero and known to everyone).
    """
    try:
        shared = nacl.bindings.crypto_scalarmult(secret_key, peer_public_key)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.TypeError, TypeError) as err:
        raise ValueError(f"invalid X25519 public key for the pair {site_a!r}, {site_b!r}") from err
    low, high = sorted((site_a, site_b))
    context = "\x00".join((round_id, low, high)).encode()
    return hashlib.blake2b(shared + context, digest_size=SEED_BYTES, person=_PAIRWISE_PERSON).digest()


def encode_signed(values: np.ndarray | list[int]) -> np.ndarray:
    """Map integers in [-2^31, 2^31) to their residues modulo 2^32.

    Raises
    ------
    ValueError
        If a value is outside [-2^31, 2^31) or not an integer.
    """
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError("input must be a one-dimensional vector of integers")
    wide = array.astype(np.int64)
    if wide.size and (wide.min() < -(1 << 31) or wide.max() >= (1 << 31)):
        raise ValueError("input values must be in [-2^31, 2^31) to survive modular summation")
    return wide.astype(np.uint32)


def decode_signed(residues: np.ndarray) -> np.ndarray:
    """Read residues modulo 2^32 as two's complement integers in [-2^31, 2^31)."""
    return np.asarray(residues, dtype=np.uint32).view(np.int32).astype(np.int64)


def encode_fixed_point(values: np.ndarray | list[float], *, fraction_bits: int) -> np.ndarray:
    """Scale real values by 2^fraction_bits, round to the nearest integer and encode them.

    Parameters
    ----------
    values : array-like of float
        Values whose scaled sum over all sites stays in [-2^31, 2^31).
    fraction_bits : int
        Bits after the binary point, in [0, 30].
    """
    if not isinstance(fraction_bits, numbers.Integral) or not 0 <= fraction_bits <= 30:
        raise ValueError(f"fraction_bits must be in [0, 30]; got {fraction_bits!r}")
    scaled = np.rint(np.asarray(values, dtype=np.float64) * (1 << fraction_bits))
    if not np.all(np.isfinite(scaled)):
        raise ValueError("input values must be finite")
    return encode_signed(scaled.astype(np.int64))
