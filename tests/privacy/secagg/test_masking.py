"""Tests for privacy.secagg.masking: ChaCha20 masks, pairwise seeds and the modular encoding."""

from __future__ import annotations

import nacl.bindings
import numpy as np
import pytest

from privacy.secagg.masking import (
    agree_pairwise_seed,
    decode_signed,
    encode_fixed_point,
    encode_signed,
    expand_mask,
)

# RFC 8439, appendix A.1, test vector #2: ChaCha20 with an all-zero key and nonce at block 1.
RFC8439_BLOCK_1 = bytes.fromhex(
    "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed"
    "29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f"
)


def test_expand_mask_matches_rfc8439_keystream() -> None:
    mask = expand_mask(bytes(32), 16)

    assert mask.astype("<u4").tobytes() == RFC8439_BLOCK_1


def test_expand_mask_prefix_is_stable_across_lengths() -> None:
    seed = bytes(range(32))

    assert expand_mask(seed, 1000)[:10].tolist() == expand_mask(seed, 10).tolist()


@pytest.mark.parametrize(("seed", "length"), [(b"short", 4), (bytes(32), -1), (bytes(32), 1 << 25)])
def test_expand_mask_invalid_arguments_raise(seed: bytes, length: int) -> None:
    with pytest.raises(ValueError):
        expand_mask(seed, length)


def test_pairwise_seed_is_symmetric_and_bound_to_round() -> None:
    secret_a, secret_b = bytes([1] * 32), bytes([2] * 32)
    public_a = nacl.bindings.crypto_scalarmult_base(secret_a)
    public_b = nacl.bindings.crypto_scalarmult_base(secret_b)

    ab = agree_pairwise_seed(secret_a, public_b, round_id="r1", site_a="a", site_b="b")
    ba = agree_pairwise_seed(secret_b, public_a, round_id="r1", site_a="b", site_b="a")
    other_round = agree_pairwise_seed(secret_a, public_b, round_id="r2", site_a="a", site_b="b")

    assert ab == ba
    assert ab != other_round


def test_pairwise_seed_with_low_order_key_raises() -> None:
    with pytest.raises(ValueError, match="invalid X25519 public key"):
        agree_pairwise_seed(bytes([1] * 32), bytes(32), round_id="r", site_a="a", site_b="b")


def test_signed_encoding_round_trips_extremes() -> None:
    values = [-(2**31), -1, 0, 1, 2**31 - 1]

    assert decode_signed(encode_signed(values)).tolist() == values


@pytest.mark.parametrize("values", [[2**31], [-(2**31) - 1], [[1, 2]], [0.5]])
def test_signed_encoding_out_of_range_raises(values: list[object]) -> None:
    with pytest.raises(ValueError):
        encode_signed(values)  # type: ignore[arg-type]


def test_fixed_point_encoding_sums_to_scaled_total() -> None:
    parts = [encode_fixed_point([0.25, -1.5], fraction_bits=8) for _ in range(3)]

    total = decode_signed(np.sum(parts, axis=0, dtype=np.uint32))

    assert total.tolist() == [3 * 64, 3 * -384]
