"""Fixed Ed25519 signing keys for the sites of secure aggregation tests.

Each site's key is derived from its id, so every test module, the hub tests and the agent
tests agree on the key a site enrolled without sharing state.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import nacl.signing

from privacy.secagg import SecAggConfig
from privacy.signing import SigningKey


class SiteKeys(dict[str, SigningKey]):
    """Mapping from site id to its test signing key, created on first lookup."""

    def __missing__(self, site_id: str) -> SigningKey:
        seed = hashlib.sha256(b"fti-test-site-key:" + site_id.encode()).digest()
        key = self[site_id] = SigningKey(nacl.signing.SigningKey(seed))
        return key


SITE_KEYS = SiteKeys()


def verify_key(site_id: str) -> bytes:
    """Return the raw Ed25519 public key of a site's test key."""
    return base64.b64decode(SITE_KEYS[site_id].public_key_b64)


def keyed_config(**kwargs: Any) -> SecAggConfig:
    """Return a :class:`SecAggConfig` whose ``verify_keys`` are the sites' test keys."""
    return SecAggConfig(**kwargs, verify_keys={site: verify_key(site) for site in kwargs["site_ids"]})
