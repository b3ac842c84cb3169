"""Ed25519 signatures over RFC 8785 canonical JSON.

A site signs each summary so the hub can tell that it came from the enrolled site and
was not changed on the way or at rest. The signature covers the JSON Canonicalization
Scheme (RFC 8785) serialisation of the object without its ``signature`` member.
JCS sorts member names by UTF-16 code units, removes whitespace, escapes strings
minimally and writes numbers in ECMAScript form, so every party that parses and
re-serialises the object gets the same bytes. Signing uses Ed25519 (RFC 8032) through
PyNaCl (libsodium).

The signature member is::

    "signature": {"alg": "Ed25519",
                  "key_id": <first 16 hex digits of SHA-256 of the raw public key>,
                  "value": <standard base64 of the 64-byte signature>}

Numbers must stay within what JCS can represent: integers beyond 2^53 and NaN or
infinite floats are rejected, not rounded.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
import orjson
import rfc8785

from privacy.errors import KeyFileInvalid, SignatureInvalid

__all__ = [
    "SIGNATURE_ALGORITHM",
    "SigningKey",
    "canonical_json",
    "generate_signing_key",
    "key_id_for",
    "sign_object",
    "verify_object",
]

SIGNATURE_ALGORITHM = "Ed25519"

_SIGNATURE_FIELDS = frozenset({"alg", "key_id", "value"})

# Key file: one line, "ed25519-seed:" followed by the base64 of the 32-byte seed. The
# prefix lets a reader reject a file of another kind before decoding it.
_KEY_FILE_PREFIX = "ed25519-seed:"

# RFC 8785 writes numbers as IEEE 754 doubles, so it takes integers only up to 2^53 - 1.
_MAX_EXACT_INTEGER = 2**53 - 1
_MIN_EXACT_INTEGER = -_MAX_EXACT_INTEGER


def canonical_json(obj: Any, *, plain: bool = False) -> bytes:
    """Return the RFC 8785 canonical JSON serialisation of ``obj`` as UTF-8 bytes.

    ``plain=True`` skips the walk of ``_has_plain_json_form``. Pass it only when the caller
    has established that form, for instance from the JSON text it parsed. For any other
    object the output may not be canonical.

    Raises
    ------
    rfc8785.CanonicalizationError
        (a ValueError) for NaN or infinite floats, integers beyond 2^53, and strings
        that are not valid Unicode.
    """
    # orjson writes the same bytes much faster whenever _has_plain_json_form returns True. If it
    # rejects a string (a lone surrogate), rfc8785 raises the documented error.
    if plain or _has_plain_json_form(obj):
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    try:
        return rfc8785.dumps(obj)
    except UnicodeEncodeError as err:
        # rfc8785 0.1.4 raises this, not its own error, for a key with a lone surrogate.
        raise rfc8785.CanonicalizationError("input contains non-UTF-8 codepoints") from err


def _has_plain_json_form(obj: Any) -> bool:
    """Return whether orjson with sorted keys writes ``obj`` exactly as RFC 8785 does.

    That is true for dicts with string keys, lists, strings, booleans, None and integers in
    RFC 8785's exact range. Floats are excluded because orjson does not print them as
    ECMAScript does. Keys outside the Basic Multilingual Plane are excluded because orjson
    sorts keys by code point and RFC 8785 by UTF-16 code unit, and only such keys sort
    differently. Strings are escaped alike: the seven short escapes, other control characters
    as lower-case ``\\u00xx``, everything else as UTF-8.
    """
    stack = [obj]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key in item:
                if type(key) is not str or not (key.isascii() or max(key) <= "\uffff"):
                    return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is int:
            if not _MIN_EXACT_INTEGER <= item <= _MAX_EXACT_INTEGER:
                return False
        elif kind is not str and kind is not bool and item is not None:
            return False
    return True


def key_id_for(public_key_b64: str) -> str:
    """Return the key id of a public key: the first 16 hex digits of SHA-256 of its raw bytes.

    Raises
    ------
    SignatureInvalid
        If ``public_key_b64`` is not the base64 of 32 bytes.
    """
    return hashlib.sha256(_decode_public_key(public_key_b64)).hexdigest()[:16]


class SigningKey:
    """An Ed25519 private key whose ``repr`` never shows the secret.

    Parameters
    ----------
    key : nacl.signing.SigningKey
        The key to wrap. Use :func:`generate_signing_key` or :meth:`from_file`.
    """

    def __init__(self, key: nacl.signing.SigningKey) -> None:
        self._key = key

    @property
    def public_key_b64(self) -> str:
        """Standard base64 of the 32-byte public key."""
        return base64.b64encode(bytes(self._key.verify_key)).decode("ascii")

    @property
    def key_id(self) -> str:
        """First 16 hex digits of SHA-256 of the raw public key."""
        return hashlib.sha256(bytes(self._key.verify_key)).hexdigest()[:16]

    def sign_bytes(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message).signature

    def to_file(self, path: Path, *, overwrite: bool = False) -> None:
        """Write the key to ``path`` with mode 0600.

        Parameters
        ----------
        path : Path
            Destination file.
        overwrite : bool, default False
            Replace an existing file. Off by default because losing a site's key
            means enrolling it again.

        Raises
        ------
        FileExistsError
            If the file exists and ``overwrite`` is False.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"signing key file {path} already exists; pass overwrite=True to replace it")
        text = _KEY_FILE_PREFIX + base64.b64encode(bytes(self._key)).decode("ascii") + "\n"

        # Create the temporary file with 0600 from the start, so the secret is never
        # readable by others, then rename it over the destination atomically.
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    @classmethod
    def from_file(cls, path: Path) -> SigningKey:
        """Read a key written by :meth:`to_file`.

        Raises
        ------
        KeyFileInvalid
            If the file is missing, readable or writable by group or others, or not
            a key file.
        """
        path = Path(path)
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as err:
            raise KeyFileInvalid(str(path), f"cannot be read: {err}") from err

        # Like ssh, reject a private key that others could have read or replaced.
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileInvalid(
                str(path),
                f"mode {stat.S_IMODE(mode):04o} gives access to group or others; "
                f"run chmod 600 {path} and consider the key exposed",
            )

        line = text.strip()
        if not line.startswith(_KEY_FILE_PREFIX):
            raise KeyFileInvalid(str(path), f"does not start with {_KEY_FILE_PREFIX!r}")
        try:
            seed = base64.b64decode(line[len(_KEY_FILE_PREFIX):], validate=True)
        except binascii.Error as err:
            raise KeyFileInvalid(str(path), f"seed is not valid base64: {err}") from err
        if len(seed) != 32:
            raise KeyFileInvalid(str(path), f"seed must be 32 bytes; got {len(seed)}")
        return cls(nacl.signing.SigningKey(seed))

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, private_key='***')"

    __str__ = __repr__


def generate_signing_key() -> SigningKey:
    """Return a new random Ed25519 key (seed from the operating system's CSPRNG)."""
    return SigningKey(nacl.signing.SigningKey.generate())


def sign_object(obj: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """Return a copy of ``obj`` with a ``signature`` member over the rest of it.

    An existing ``signature`` member is replaced. ``obj`` is not modified.

    Raises
    ------
    rfc8785.CanonicalizationError
        If ``obj`` contains a value JCS cannot represent.
    """
    unsigned = {name: value for name, value in obj.items() if name != "signature"}
    signature = key.sign_bytes(canonical_json(unsigned))
    signed = copy.deepcopy(unsigned)
    signed["signature"] = {
        "alg": SIGNATURE_ALGORITHM,
        "key_id": key.key_id,
        "value": base64.b64encode(signature).decode("ascii"),
    }
    return signed


def verify_object(obj: dict[str, Any], public_key_b64: str) -> None:
    """Check the ``signature`` member of ``obj`` against a public key.

    Parameters
    ----------
    obj : dict
        A signed object as returned by :func:`sign_object` (or parsed from JSON).
    public_key_b64 : str
        The signer's enrolled public key, standard base64 of 32 bytes.

    Raises
    ------
    SignatureInvalid
        With a ``reason`` naming the failed check: the object or signature is
        malformed, the algorithm is not Ed25519, the key id is not the given key's,
        or the signature does not verify over the canonical JSON of the rest.
    """
    if not isinstance(obj, dict):
        raise SignatureInvalid(f"signed object must be a JSON object; got {type(obj).__name__}")
    if "signature" not in obj:
        raise SignatureInvalid("object has no 'signature' member")
    signature = obj["signature"]
    if not isinstance(signature, dict):
        raise SignatureInvalid(f"'signature' must be an object; got {type(signature).__name__}")
    missing = sorted(_SIGNATURE_FIELDS - signature.keys())
    if missing:
        raise SignatureInvalid(f"'signature' lacks {', '.join(missing)}")
    extra = sorted(signature.keys() - _SIGNATURE_FIELDS)
    if extra:
        raise SignatureInvalid(f"'signature' has unexpected members {', '.join(extra)}")
    for field in sorted(_SIGNATURE_FIELDS):
        if not isinstance(signature[field], str):
            raise SignatureInvalid(f"signature.{field} must be a string; got {signature[field]!r}")

    if signature["alg"] != SIGNATURE_ALGORITHM:
        raise SignatureInvalid(f"signature.alg must be {SIGNATURE_ALGORITHM!r}; got {signature['alg']!r}")

    public_key = _decode_public_key(public_key_b64)
    expected_key_id = hashlib.sha256(public_key).hexdigest()[:16]
    if signature["key_id"] != expected_key_id:
        raise SignatureInvalid(
            f"signed by key id {signature['key_id']!r}, but the enrolled key has id {expected_key_id!r}"
        )

    try:
        value = base64.b64decode(signature["value"], validate=True)
    except binascii.Error as err:
        raise SignatureInvalid(f"signature.value is not valid base64: {err}") from err
    if len(value) != 64:
        raise SignatureInvalid(f"signature.value must decode to 64 bytes; got {len(value)}")

    unsigned = {name: member for name, member in obj.items() if name != "signature"}
    try:
        message = canonical_json(unsigned)
    except rfc8785.CanonicalizationError as err:
        raise SignatureInvalid(f"object cannot be canonicalized: {err}") from err
    try:
        nacl.signing.VerifyKey(public_key).verify(message, value)
    except nacl.exceptions.BadSignatureError as err:
        raise SignatureInvalid("signature does not verify over the object's canonical JSON") from err


def _decode_public_key(public_key_b64: str) -> bytes:
    if not isinstance(public_key_b64, str):
        raise SignatureInvalid(f"public key must be a base64 string; got {type(public_key_b64).__name__}")
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
    except binascii.Error as err:
        raise SignatureInvalid(f"public key is not valid base64: {err}") from err
    if len(raw) != 32:
        raise SignatureInvalid(f"public key must decode to 32 bytes; got {len(raw)}")
    return raw
