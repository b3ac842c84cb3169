"""Round configuration and the messages sites and hub exchange in secure aggregation.

Every message names its round and its sender, so a message of another round or site is
rejected at the stage that receives it. Byte fields are raw bytes here; the hub's ``keys``
collection carries them base64-encoded through :meth:`to_dict` and ``from_dict``.

Two messages carry an Ed25519 signature made with the sender's enrolled signing key, so the
hub, which relays them, cannot forge or alter them. The key advertisement signs the round,
the site and its public keys. The consistency signature signs the round and the survivor
set the hub announced. Each signed text starts with its own label, so a signature of one kind
never verifies as the other.
"""

from __future__ import annotations

import base64
import binascii
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import nacl.exceptions
import nacl.signing
import numpy as np

from privacy.secagg.errors import MessageRejected
from privacy.secagg.graph import complete_neighbourhoods, harary_neighbourhoods
from privacy.secagg.shamir import MAX_SHARES, Share

__all__ = [
    "ConsistencySignature",
    "EncryptedShare",
    "KeyAdvertisement",
    "MaskedInput",
    "SecAggConfig",
    "UnmaskResponse",
    "survivor_set_bytes",
]

KEY_BYTES = 32
SIGNATURE_BYTES = 64
_ADVERTISEMENT_LABEL = b"fti-secagg-advertise-keys-v1"
_SURVIVORS_LABEL = b"fti-secagg-consistency-check-v1"


@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters of one secure aggregation round, the same at the hub and every site.

    Parameters
    ----------
    round_id : str
        Names the round; it enters every mask seed and every encrypted share.
    site_ids : tuple of str
        The sites invited to the round. A site's Shamir point is its position in the
        sorted tuple plus one.
    threshold : int
        Shares needed to recover a secret, and the minimum number of sites that must
        survive each stage. A higher threshold protects against more colluding sites
        (a coalition of the hub and fewer than ``threshold`` sites learns nothing about
        another site's secrets) but tolerates fewer dropouts: at most
        ``neighbourhood size - threshold``. It must be a strict majority of every
        neighbourhood, so that a hub without colluding sites can never collect both kinds
        of shares of a site. A hub colluding with c sites can when 2 * threshold <=
        neighbourhood size + c.
    vector_length : int
        Number of 32-bit words every site submits, in [1, 2^24].
    neighbours_per_site : int or None, default None
        None runs the protocol of Bonawitz et al. over the complete graph. An even
        number k >= 2 runs SecAgg+ over a random Harary graph of degree k: each site
        does O(k) work instead of O(n), at the cost of a threshold that applies per
        neighbourhood of k + 1 sites.
    verify_keys : mapping of str to bytes
        Every site's enrolled Ed25519 public key (32 raw bytes). Key advertisements and
        consistency signatures are checked against it. Required: a config without a key
        for every site raises ValueError.
    """

    round_id: str
    site_ids: tuple[str, ...]
    threshold: int
    vector_length: int
    neighbours_per_site: int | None = None
    verify_keys: Mapping[str, bytes] = field(default=None, repr=False, hash=False)  # type: ignore[assignment]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.round_id, str) or not self.round_id:
            raise ValueError("round_id must be a non-empty string")
        sites = tuple(self.site_ids)
        if len(set(sites)) != len(sites):
            raise ValueError("site_ids must be distinct")
        if not 2 <= len(sites) <= MAX_SHARES:
            raise ValueError(f"a round needs between 2 and {MAX_SHARES} sites; got {len(sites)}")
        if any(not isinstance(s, str) or not s or "\x00" in s for s in sites):
            raise ValueError("site ids must be non-empty strings without NUL characters")
        object.__setattr__(self, "site_ids", tuple(sorted(sites)))
        object.__setattr__(self, "_index", {s: i + 1 for i, s in enumerate(self.site_ids)})
        if not isinstance(self.vector_length, numbers.Integral) or not 1 <= self.vector_length <= 1 << 24:
            raise ValueError(f"vector_length must be in [1, 2^24]; got {self.vector_length!r}")
        if self.neighbours_per_site is not None and (
            not isinstance(self.neighbours_per_site, int)
            or self.neighbours_per_site < 2
            or self.neighbours_per_site % 2
        ):
            raise ValueError(
                f"neighbours_per_site must be None or an even integer >= 2; "
                f"got {self.neighbours_per_site!r}"
            )
        self._check_verify_keys()
        smallest = min(len(members) for members in self.neighbourhoods.values())
        if not isinstance(self.threshold, numbers.Integral) or not smallest // 2 < self.threshold <= smallest:
            raise ValueError(
                f"threshold must be in ({smallest // 2}, {smallest}] for neighbourhoods of "
                f"{smallest} sites; got {self.threshold!r}"
            )

    def _check_verify_keys(self) -> None:
        if not isinstance(self.verify_keys, Mapping):
            raise ValueError("verify_keys must map every site id to its enrolled Ed25519 public key")
        missing = sorted(set(self.site_ids) - set(self.verify_keys))
        extra = sorted(set(self.verify_keys) - set(self.site_ids))
        if missing or extra:
            raise ValueError(f"verify_keys must cover exactly the round's sites; missing {missing}, "
                             f"not in the round {extra}")
        keys = {}
        for site in self.site_ids:
            key = self.verify_keys[site]
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise ValueError(f"verify key of site {site!r} must be {KEY_BYTES} raw bytes")
            keys[site] = key
        object.__setattr__(self, "verify_keys", keys)

    def verify_signature(self, site_id: str, message: bytes, signature: bytes) -> bool:
        """Return True if ``signature`` is ``site_id``'s Ed25519 signature of ``message``."""
        if len(signature) != SIGNATURE_BYTES or site_id not in self.verify_keys:
            return False
        try:
            nacl.signing.VerifyKey(self.verify_keys[site_id]).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            return False
        return True

    @cached_property
    def neighbourhoods(self) -> dict[str, frozenset[str]]:
        """Each site's neighbourhood, the site itself included."""
        if self.neighbours_per_site is None:
            return complete_neighbourhoods(self.site_ids)
        return harary_neighbourhoods(
            self.site_ids, degree=self.neighbours_per_site, round_id=self.round_id
        )

    def share_point(self, site_id: str) -> int:
        """Return the Shamir evaluation point of a site (its 1-based sorted position)."""
        try:
            return self._index[site_id]
        except KeyError:
            raise ValueError(f"site {site_id!r} is not part of round {self.round_id!r}") from None

    def is_member(self, site_id: object) -> bool:
        """Return True if ``site_id`` is one of the round's sites."""
        return isinstance(site_id, str) and site_id in self._index


@dataclass(frozen=True)
class KeyAdvertisement:
    """Stage 1 message: a site's public keys for the round.

    Attributes
    ----------
    encryption_public_key : bytes
        X25519 key that encrypts the shares sent to this site.
    mask_public_key : bytes
        X25519 key from which the pairwise mask seeds are agreed.
    self_mask_commitment : bytes
        BLAKE2b hash of the site's self-mask seed, so the hub can check the seed it
        reconstructs from shares.
    signature : bytes
        Ed25519 signature of :meth:`signed_bytes` by the site's enrolled key.
    """

    round_id: str
    site_id: str
    encryption_public_key: bytes
    mask_public_key: bytes
    self_mask_commitment: bytes
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        """Return the text the site signs: label, round, site and the three public values."""
        return pack_fields(_ADVERTISEMENT_LABEL, self.round_id, self.site_id, self.encryption_public_key,
                           self.mask_public_key, self.self_mask_commitment)

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-ready mapping with base64 byte fields."""
        return {
            "round_id": self.round_id,
            "site_id": self.site_id,
            "encryption_public_key": _b64(self.encryption_public_key),
            "mask_public_key": _b64(self.mask_public_key),
            "self_mask_commitment": _b64(self.self_mask_commitment),
            "signature": _b64(self.signature),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyAdvertisement:
        """Parse :meth:`to_dict`; raise :class:`MessageRejected` when a field is malformed."""
        site = str(data.get("site_id", "?"))
        return cls(
            round_id=_text(data, "round_id", "advertise_keys", site),
            site_id=_text(data, "site_id", "advertise_keys", site),
            encryption_public_key=_bytes(data, "encryption_public_key", "advertise_keys", site, KEY_BYTES),
            mask_public_key=_bytes(data, "mask_public_key", "advertise_keys", site, KEY_BYTES),
            self_mask_commitment=_bytes(data, "self_mask_commitment", "advertise_keys", site, KEY_BYTES),
            signature=_bytes(data, "signature", "advertise_keys", site, SIGNATURE_BYTES),
        )


@dataclass(frozen=True)
class EncryptedShare:
    """Stage 2 message: one site's shares for one neighbour, encrypted with NaCl Box.

    The plaintext names the round, sender and recipient again, so the recipient detects a
    ciphertext moved to another round or recipient even though the hub relays it.
    """

    round_id: str
    sender: str
    recipient: str
    ciphertext: bytes

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-ready mapping with a base64 ciphertext."""
        return {"round_id": self.round_id, "sender": self.sender, "recipient": self.recipient,
                "ciphertext": _b64(self.ciphertext)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncryptedShare:
        """Parse :meth:`to_dict`; raise :class:`MessageRejected` when a field is malformed."""
        site = str(data.get("sender", "?"))
        return cls(
            round_id=_text(data, "round_id", "share_keys", site),
            sender=_text(data, "sender", "share_keys", site),
            recipient=_text(data, "recipient", "share_keys", site),
            ciphertext=_bytes(data, "ciphertext", "share_keys", site, None),
        )


@dataclass(frozen=True)
class MaskedInput:
    """Stage 3 message: a site's input plus its masks, modulo 2^32."""

    round_id: str
    site_id: str
    vector: np.ndarray

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-ready mapping; the vector is little-endian uint32 in base64."""
        data = np.asarray(self.vector, dtype="<u4").tobytes()
        return {"round_id": self.round_id, "site_id": self.site_id, "vector": _b64(data)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaskedInput:
        """Parse :meth:`to_dict`; raise :class:`MessageRejected` when a field is malformed."""
        site = str(data.get("site_id", "?"))
        raw = _bytes(data, "vector", "collect_masked_inputs", site, None)
        if len(raw) % 4:
            raise MessageRejected("collect_masked_inputs", site, "vector is not a whole number of 32-bit words")
        return cls(
            round_id=_text(data, "round_id", "collect_masked_inputs", site),
            site_id=_text(data, "site_id", "collect_masked_inputs", site),
            vector=np.frombuffer(raw, dtype="<u4").astype(np.uint32),
        )


def survivor_set_bytes(round_id: str, survivors: Iterable[str]) -> bytes:
    """Return the text a site signs in the consistency check: label, round and sorted survivors."""
    return pack_fields(_SURVIVORS_LABEL, round_id, *sorted(survivors))


@dataclass(frozen=True)
class ConsistencySignature:
    """Consistency check message: a site's signature of the survivor set the hub sent it.

    The survivor set is the set U3 of sites whose masked inputs the hub received. The
    signed text is :func:`survivor_set_bytes`, so a signature of another round or another
    set does not verify.
    """

    round_id: str
    site_id: str
    signature: bytes

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-ready mapping with a base64 signature."""
        return {"round_id": self.round_id, "site_id": self.site_id, "signature": _b64(self.signature)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConsistencySignature:
        """Parse :meth:`to_dict`; raise :class:`MessageRejected` when a field is malformed."""
        site = str(data.get("site_id", "?"))
        return cls(
            round_id=_text(data, "round_id", "consistency_check", site),
            site_id=_text(data, "site_id", "consistency_check", site),
            signature=_bytes(data, "signature", "consistency_check", site, SIGNATURE_BYTES),
        )


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 4 message: the shares a site reveals so the hub can remove the masks.

    Attributes
    ----------
    self_mask_shares : dict of str to Share
        Shares of the self-mask seeds of neighbours that submitted a masked input.
    mask_key_shares : dict of str to Share
        Shares of the mask secret keys of neighbours that dropped out after sharing.
    """

    round_id: str
    site_id: str
    self_mask_shares: dict[str, Share]
    mask_key_shares: dict[str, Share]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping with base64 shares."""
        return {
            "round_id": self.round_id,
            "site_id": self.site_id,
            "self_mask_shares": {o: _b64(s.to_bytes()) for o, s in self.self_mask_shares.items()},
            "mask_key_shares": {o: _b64(s.to_bytes()) for o, s in self.mask_key_shares.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnmaskResponse:
        """Parse :meth:`to_dict`; raise on a malformed field or share."""
        site = str(data.get("site_id", "?"))
        parsed: dict[str, dict[str, Share]] = {}
        for name in ("self_mask_shares", "mask_key_shares"):
            entries = data.get(name)
            if not isinstance(entries, Mapping):
                raise MessageRejected("collect_unmask_responses", site, f"{name} must be a mapping")
            parsed[name] = {
                str(owner): Share.from_bytes(_decode_b64(value, name, "collect_unmask_responses", site),
                                             sender=site)
                for owner, value in entries.items()
            }
        return cls(
            round_id=_text(data, "round_id", "collect_unmask_responses", site),
            site_id=_text(data, "site_id", "collect_unmask_responses", site),
            self_mask_shares=parsed["self_mask_shares"],
            mask_key_shares=parsed["mask_key_shares"],
        )


def pack_fields(*fields: str | bytes) -> bytes:
    """Concatenate fields, each prefixed with its 2-byte big-endian length, so no two lists pack alike."""
    out = bytearray()
    for item in fields:
        data = item.encode() if isinstance(item, str) else item
        out += len(data).to_bytes(2, "big") + data
    return bytes(out)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _text(data: Mapping[str, Any], name: str, stage: str, site: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise MessageRejected(stage, site, f"{name} must be a non-empty string")
    return value


def _bytes(data: Mapping[str, Any], name: str, stage: str, site: str, size: int | None) -> bytes:
    raw = _decode_b64(data.get(name), name, stage, site)
    if size is not None and len(raw) != size:
        raise MessageRejected(stage, site, f"{name} must be {size} bytes; got {len(raw)}")
    return raw


def _decode_b64(value: object, name: str, stage: str, site: str) -> bytes:
    if not isinstance(value, str):
        raise MessageRejected(stage, site, f"{name} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise MessageRejected(stage, site, f"{name} is not valid base64") from err
