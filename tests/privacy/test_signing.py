"""Tests for privacy.signing: RFC 8785 vectors, Ed25519 signatures and key files."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import os
import stat
import struct
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.errors import KeyFileInvalid, SignatureInvalid
from privacy.signing import (
    SigningKey,
    canonical_json,
    generate_signing_key,
    key_id_for,
    sign_object,
    verify_object,
)

# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical JSON numbers.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]

# RFC 8032 section 7.1, TEST 1: secret key, public key and signature of the empty message.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
    "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def summary_like() -> dict[str, Any]:
    return {
        "type": "x-fti-round-summary",
        "id": "x-fti-round-summary--0b4b6a0e-2a43-5a4e-9a53-1f0c7cf3f2a1",
        "site": "site-a",
        "round_start": "2024-05-01T00:00:00.000Z",
        "score_histogram": {"bin_edges": [0.0, 0.5, 1.0], "noised_counts": [12, -1]},
        "evidence": [
            {"observable_type": "ipv4-addr", "value": "203.0.113.9", "noised_entity_count": 4,
             "noised_mean_score": 0.91},
        ],
        "privacy": {"epsilon": 1.0, "delta": 1e-06, "unit": "entity"},
        "note": "caf\u00e9 \u20ac",
    }


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey(nacl.signing.SigningKey(RFC8032_SEED))


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_canonical_json_number_vectors(bits: str, expected: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(bits))

    assert canonical_json(value) == expected.encode("ascii")


def test_canonical_json_rfc_example() -> None:
    """RFC 8785 section 3.2.4: whitespace, key order, numbers and string escapes."""
    text = (
        '{\n  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],\n'
        '  "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n'
        '  "literals": [null, true, false]\n}'
    )

    result = canonical_json(json.loads(text))

    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert result == expected.encode("utf-8")


def test_canonical_json_sorts_by_utf16_code_units() -> None:
    """RFC 8785 section 3.2.3: the emoji (surrogate D83D) sorts before U+FB33."""
    obj = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }

    result = canonical_json(obj).decode("utf-8")

    assert result == (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    )


def test_canonical_json_nested_order_and_escapes() -> None:
    obj = {"b": [{"z": 1, "a": -0.0}, [], {}], "a": "tab\there \u0001 \u007f", "c": 1.0}

    assert canonical_json(obj) == b'{"a":"tab\\there \\u0001 \x7f","b":[{"a":0,"z":1},[],{}],"c":1}'


@pytest.mark.parametrize("value", [math.nan, math.inf, 2**53 + 1, "\ud800"])
def test_canonical_json_rejects_unrepresentable(value: object) -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_json({"x": value})


def test_canonical_json_rejects_lone_surrogate_key() -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_json({"\ud800": 1, "a": 2})


# Strings reach every case the orjson fast path must match or hand over: control
# characters, lone surrogates, BMP characters above U+E000 and characters beyond the BMP,
# which sort differently by code point and by UTF-16 code unit.
_JSON_TEXT = st.text(alphabet=st.one_of(
    st.characters(codec=None, categories=None),
    st.sampled_from("\x00\x1f\x7f\"\\/\ud800\udfff\ue000\ufb33\uffff\U00010000\U0001f600"),
), max_size=8)
_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), _JSON_TEXT,
    st.integers(min_value=-(2**53) - 2, max_value=2**53 + 2),
    st.integers(min_value=-(2**64), max_value=2**64),
)
_JSON_DOCUMENTS = st.recursive(
    st.one_of(_JSON_SCALARS, st.floats(allow_nan=True, allow_infinity=True)),
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(_JSON_TEXT, children, max_size=5)),
    max_leaves=30,
)
_FLOAT_FREE_DOCUMENTS = st.recursive(
    _JSON_SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(_JSON_TEXT, children, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_JSON_DOCUMENTS, _FLOAT_FREE_DOCUMENTS))
def test_canonical_json_matches_rfc8785_package(document: Any) -> None:
    """The orjson fast path writes the same bytes as the full implementation, or both fail."""
    try:
        expected = rfc8785.dumps(document)
    except ValueError:
        # rfc8785 raises CanonicalizationError, or UnicodeEncodeError when it sorts a key
        # with a lone surrogate. canonical_json raises CanonicalizationError for both.
        with pytest.raises(rfc8785.CanonicalizationError):
            canonical_json(document)
        return

    assert canonical_json(document) == expected


def test_ed25519_matches_rfc8032_vector(key: SigningKey) -> None:
    assert base64.b64decode(key.public_key_b64) == RFC8032_PUBLIC
    assert key.sign_bytes(b"") == RFC8032_SIGNATURE


def test_sign_verify_round_trip(key: SigningKey) -> None:
    obj = summary_like()

    signed = sign_object(obj, key)

    verify_object(signed, key.public_key_b64)
    assert set(signed["signature"]) == {"alg", "key_id", "value"}
    assert signed["signature"]["alg"] == "Ed25519"
    assert signed["signature"]["key_id"] == hashlib.sha256(RFC8032_PUBLIC).hexdigest()[:16]
    assert len(base64.b64decode(signed["signature"]["value"])) == 64
    assert {k: v for k, v in signed.items() if k != "signature"} == obj


def test_signature_covers_canonical_json_of_rest(key: SigningKey) -> None:
    obj = summary_like()

    signed = sign_object(obj, key)

    verify_key = nacl.signing.VerifyKey(RFC8032_PUBLIC)
    verify_key.verify(canonical_json(obj), base64.b64decode(signed["signature"]["value"]))


def test_sign_object_does_not_modify_input(key: SigningKey) -> None:
    obj = summary_like()
    original = copy.deepcopy(obj)

    signed = sign_object(obj, key)
    signed["privacy"]["epsilon"] = 9.0

    assert obj == original


def test_sign_object_replaces_existing_signature(key: SigningKey) -> None:
    stale = summary_like() | {"signature": {"alg": "Ed25519", "key_id": "0" * 16, "value": "AAAA"}}

    signed = sign_object(stale, key)

    verify_object(signed, key.public_key_b64)


def test_verify_survives_json_round_trip_and_reordering(key: SigningKey) -> None:
    signed = sign_object(summary_like(), key)

    wire = json.dumps(signed, indent=2, ensure_ascii=True, sort_keys=False)
    parsed = json.loads(wire)
    reordered = dict(reversed(list(parsed.items())))

    verify_object(reordered, key.public_key_b64)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _paths(v, prefix + (k,))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _paths(v, prefix + (i,))]
    return [prefix]


def _tampered(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return value + "x"


def test_tampering_any_field_invalidates(key: SigningKey) -> None:
    signed = sign_object(summary_like(), key)
    paths = [p for p in _paths(signed) if p[0] != "signature"]

    for path in paths:
        forged = copy.deepcopy(signed)
        parent = forged
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = _tampered(parent[path[-1]])

        with pytest.raises(SignatureInvalid) as excinfo:
            verify_object(forged, key.public_key_b64)

        assert excinfo.value.reason == "signature does not verify over the object's canonical JSON", path
    assert len(paths) == 17


def test_added_and_removed_members_invalidate(key: SigningKey) -> None:
    signed = sign_object(summary_like(), key)
    added = copy.deepcopy(signed) | {"extra": 1}
    removed = {k: v for k, v in signed.items() if k != "note"}

    for forged in (added, removed):
        with pytest.raises(SignatureInvalid, match="does not verify"):
            verify_object(forged, key.public_key_b64)


def test_wrong_key_rejected_by_key_id(key: SigningKey) -> None:
    signed = sign_object(summary_like(), key)
    other = generate_signing_key()

    with pytest.raises(SignatureInvalid) as excinfo:
        verify_object(signed, other.public_key_b64)

    assert excinfo.value.reason == (
        f"signed by key id {key.key_id!r}, but the enrolled key has id {other.key_id!r}"
    )


def test_forged_key_id_with_other_key_rejected(key: SigningKey) -> None:
    other = generate_signing_key()
    forged = sign_object(summary_like(), other)
    forged["signature"]["key_id"] = key.key_id

    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify_object(forged, key.public_key_b64)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda s: s.pop("signature"), "object has no 'signature' member"),
        (lambda s: s.update(signature="abc"), "'signature' must be an object; got str"),
        (lambda s: s["signature"].pop("value"), "'signature' lacks value"),
        (lambda s: s["signature"].update(extra="1"), "'signature' has unexpected members extra"),
        (lambda s: s["signature"].update(key_id=7), "signature.key_id must be a string; got 7"),
        (lambda s: s["signature"].update(alg="RS256"), "signature.alg must be 'Ed25519'; got 'RS256'"),
        (lambda s: s["signature"].update(value="AAAA"), "signature.value must decode to 64 bytes; got 3"),
    ],
)
def test_malformed_signature_reason(key: SigningKey, mutate: Any, reason: str) -> None:
    signed = sign_object(summary_like(), key)
    mutate(signed)

    with pytest.raises(SignatureInvalid) as excinfo:
        verify_object(signed, key.public_key_b64)

    assert excinfo.value.reason == reason
    assert str(excinfo.value) == f"signature invalid: {reason}"


def test_non_base64_signature_value(key: SigningKey) -> None:
    signed = sign_object(summary_like(), key)
    signed["signature"]["value"] = "not base64!"

    with pytest.raises(SignatureInvalid) as excinfo:
        verify_object(signed, key.public_key_b64)

    assert excinfo.value.reason.startswith("signature.value is not valid base64")


def test_non_object_rejected(key: SigningKey) -> None:
    with pytest.raises(SignatureInvalid) as excinfo:
        verify_object(["not", "an", "object"], key.public_key_b64)  # type: ignore[arg-type]

    assert excinfo.value.reason == "signed object must be a JSON object; got list"


@pytest.mark.parametrize(
    ("public_key", "reason_start"),
    [
        ("%%%", "public key is not valid base64"),
        (base64.b64encode(b"short").decode(), "public key must decode to 32 bytes; got 5"),
    ],
)
def test_bad_public_key_rejected(key: SigningKey, public_key: str, reason_start: str) -> None:
    signed = sign_object(summary_like(), key)

    with pytest.raises(SignatureInvalid) as excinfo:
        verify_object(signed, public_key)

    assert excinfo.value.reason.startswith(reason_start)


def test_unrepresentable_value_in_signed_object(key: SigningKey) -> None:
    signed = sign_object(summary_like(), key)
    signed["privacy"]["epsilon"] = math.nan

    with pytest.raises(SignatureInvalid, match="cannot be canonicalized"):
        verify_object(signed, key.public_key_b64)


def test_key_id_for_matches_key(key: SigningKey) -> None:
    assert key_id_for(key.public_key_b64) == key.key_id


def test_generated_keys_differ() -> None:
    assert generate_signing_key().public_key_b64 != generate_signing_key().public_key_b64


def test_key_file_written_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    previous = os.umask(0)
    try:
        generate_signing_key().to_file(path)
    finally:
        os.umask(previous)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["site.key"]


def test_key_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    original = generate_signing_key()

    original.to_file(path)
    loaded = SigningKey.from_file(path)

    assert loaded.public_key_b64 == original.public_key_b64
    verify_object(sign_object(summary_like(), loaded), original.public_key_b64)


def test_key_file_not_overwritten_by_default(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    first = generate_signing_key()
    first.to_file(path)

    with pytest.raises(FileExistsError):
        generate_signing_key().to_file(path)
    replacement = generate_signing_key()
    replacement.to_file(path, overwrite=True)

    assert SigningKey.from_file(path).public_key_b64 == replacement.public_key_b64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_readable_by_others_rejected(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    generate_signing_key().to_file(path)
    path.chmod(0o644)

    with pytest.raises(KeyFileInvalid) as excinfo:
        SigningKey.from_file(path)

    assert excinfo.value.path == str(path)
    assert excinfo.value.reason.startswith("mode 0644 gives access to group or others")


@pytest.mark.parametrize(
    ("content", "reason_start"),
    [
        ("-----BEGIN PRIVATE KEY-----\n", "does not start with 'ed25519-seed:'"),
        ("ed25519-seed:???\n", "seed is not valid base64"),
        ("ed25519-seed:" + base64.b64encode(b"x" * 16).decode() + "\n", "seed must be 32 bytes; got 16"),
    ],
)
def test_malformed_key_file_rejected(tmp_path: Path, content: str, reason_start: str) -> None:
    path = tmp_path / "site.key"
    path.write_text(content, encoding="ascii")
    path.chmod(0o600)

    with pytest.raises(KeyFileInvalid) as excinfo:
        SigningKey.from_file(path)

    assert excinfo.value.reason.startswith(reason_start)


def test_missing_key_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(KeyFileInvalid, match="cannot be read"):
        SigningKey.from_file(tmp_path / "absent.key")


def test_repr_never_shows_private_key(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "site.key"
    key.to_file(path)
    seed_text = path.read_text(encoding="ascii").strip().split(":", 1)[1]

    shown = [repr(key), str(key), f"{key}", repr([key])]

    for text in shown:
        assert seed_text not in text
        assert "private_key='***'" in text
        assert key.key_id in text
