"""Opaque TAXII ``next`` tokens bound to one query and one caller.

TAXII 2.1 (section 3.4) lets the server define ``next``. Ours carries the keyset cursor, the
``(date_added, id)`` of the last object served, which stays valid while objects are added,
unlike an offset. The token is authenticated with HMAC-SHA256 under a secret kept in the hub's
database, and it contains a digest of the query and the caller. A token edited by hand,
replayed with other filters, or used by another credential is rejected with 400, so it cannot
expose another caller's position or results.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping

from fusion_hub.errors import PaginationTokenInvalid
from fusion_hub.storage import HubStorage

_SECRET_KEY = "pagination_token_secret"
_TOKEN_VERSION = 1


def query_fingerprint(caller: str, endpoint: str, params: Mapping[str, str]) -> str:
    """Return a digest of who asked what, excluding ``limit`` and ``next``.

    ``limit`` may change between pages (taxii2-client adapts it to the server's page size).
    """
    relevant = sorted((key, value) for key, value in params.items() if key not in ("limit", "next"))
    material = json.dumps([caller, endpoint, relevant], separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


class PageTokens:
    """Issue and check ``next`` tokens.

    Parameters
    ----------
    secret : bytes
        HMAC key; at least 32 bytes.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError(f"pagination secret must be at least 32 bytes; got {len(secret)}")
        self._secret = secret

    @classmethod
    def from_storage(cls, storage: HubStorage) -> PageTokens:
        """Load the secret from the database, creating it on first use.

        Keeping it there lets tokens survive a restart and be shared by hub processes that
        use one database.
        """
        secret_hex = storage.set_meta_if_absent(_SECRET_KEY, secrets.token_hex(32))
        return cls(bytes.fromhex(secret_hex))

    def issue(self, fingerprint: str, date_added_us: int, object_id: str) -> str:
        """Return a token that resumes after ``(date_added_us, object_id)``."""
        payload = json.dumps([_TOKEN_VERSION, fingerprint, date_added_us, object_id],
                             separators=(",", ":")).encode("utf-8")
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
        return f"{_b64(payload)}.{_b64(mac)}"

    def resolve(self, token: str, fingerprint: str) -> tuple[int, str]:
        """Return the cursor of a token issued for this query and caller.

        Raises
        ------
        PaginationTokenInvalid
            If the token is malformed, forged, or belongs to another query or caller.
        """
        payload_part, separator, mac_part = token.partition(".")
        if not separator:
            raise PaginationTokenInvalid("not a token issued by this hub")
        try:
            payload = _unb64(payload_part)
            mac = _unb64(mac_part)
        except (binascii.Error, ValueError) as err:
            raise PaginationTokenInvalid("not a token issued by this hub") from err
        expected = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            raise PaginationTokenInvalid("not a token issued by this hub")
        version, token_fingerprint, date_added_us, object_id = json.loads(payload)
        if version != _TOKEN_VERSION:
            raise PaginationTokenInvalid(f"token format {version} is not supported")
        if not hmac.compare_digest(str(token_fingerprint), fingerprint):
            raise PaginationTokenInvalid("the token was issued for other filters or another "
                                         "caller")
        return int(date_added_us), str(object_id)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
