"""Sites and consumers allowed to call the hub, their passwords and their trust.

A site is a participant: it posts signed summaries, feedback and keys, and reads fused
indicators. A consumer (a SIEM connector, an analyst's TAXII client) only reads the
collections it was granted. Both authenticate with HTTP Basic (RFC 7617), where the username is
the site id or consumer name, or with API tokens sent as bearer tokens (RFC 6750). The hub generates every password (256 random bits) and stores only
its argon2id hash (RFC 9106), so a leaked database does not leak credentials.

A revoked credential stays in the database, so its name is never reused for a different key,
and contributions of a revoked site are left out of every round that closes afterwards.

Each site's trust is a Beta(alpha, beta) posterior over its precision: the probability that an
observable it releases is confirmed. The fusion weight is the posterior mean
alpha / (alpha + beta).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fusion_hub.config import AuthSettings, FusionSettings
from fusion_hub.errors import RegistryError, UnknownCredential
from fusion_hub.storage import ApiToken, Credential, HubStorage
from fusion_hub.timeutil import to_micros, utc_now

log = logging.getLogger(__name__)

# Lower-case DNS-label-like names: they appear in URLs, logs, STIX ids and file names.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# API tokens start with this, so secret scanners and operators can recognise them.
_TOKEN_PREFIX = "fti_"
# A token is the prefix, an id of 16 hex digits, "_" and the secret.
_TOKEN_RE = re.compile(r"fti_([0-9a-f]{16})_(.+)", re.DOTALL)
# Collections a consumer may be granted. Summaries and feedback stay with their site and the
# hub (privacy rule: a site's releases are seen by the hub only); keys serve sites only.
CONSUMER_READABLE = ("fused-indicators",)
SITE_WRITABLE = ("summaries", "feedback", "keys")
SITE_READABLE = ("summaries", "fused-indicators", "feedback", "keys")
# Collections where a site reads only what it posted itself.
OWNER_ONLY = ("summaries", "feedback")

# Called around each argon2id computation. Its context manager may raise to reject the
# computation, so that a caller can cap concurrency and throttle failed logins.
HashGuard = Callable[[], AbstractContextManager[object]]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and what it may do."""

    name: str
    kind: str  # "site" or "consumer"
    readable: frozenset[str]
    writable: frozenset[str]

    def may_read(self, collection: str) -> bool:
        """Return whether the caller may read the collection (possibly only its own objects)."""
        return collection in self.readable

    def may_write(self, collection: str) -> bool:
        """Return whether the caller may add objects to the collection."""
        return collection in self.writable

    def sees_only_own(self, collection: str) -> bool:
        """Return whether reads of the collection are limited to objects the caller posted."""
        return self.kind == "site" and collection in OWNER_ONLY


@dataclass(frozen=True)
class AuthResult:
    """Outcome of checking one username and password."""

    principal: Principal | None
    # Why authentication failed: "unknown", "revoked" or "password"; None on success.
    failure: str | None


class SiteRegistry:
    """Enrol sites and consumers, check their passwords, and keep site trust.

    Parameters
    ----------
    storage : HubStorage
        Where credentials live.
    auth : AuthSettings
        argon2id cost parameters and the verified-password cache lifetime.
    fusion : FusionSettings
        Source of the Beta prior given to new sites.
    clock : callable returning datetime, optional
        Time source for enrolment and revocation stamps.
    """

    def __init__(
        self,
        storage: HubStorage,
        *,
        auth: AuthSettings,
        fusion: FusionSettings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.storage = storage
        self.auth = auth
        self.fusion = fusion
        self._clock = clock
        self._hasher = PasswordHasher(
            time_cost=auth.argon2_time_cost,
            memory_cost=auth.argon2_memory_cost_kib,
            parallelism=auth.argon2_parallelism,
        )
        # name, or token:<id> for API tokens -> (salted digest of the secret, argon2 hash it
        # was checked against, expiry)
        self._verified: dict[str, tuple[bytes, str, float]] = {}
        self._cache_salt = secrets.token_bytes(32)
        self._cache_lock = threading.Lock()
        # Unknown and revoked names are checked against this hash of a random secret, so they
        # cost the same argon2id verification as a wrong password of a known name.
        self._decoy_hash = self._hasher.hash(secrets.token_urlsafe(32))

    def enroll_site(self, site_id: str, public_key_b64: str) -> str:
        """Register a site with its Ed25519 public key and return its new password.

        The password is returned once and never stored in clear; give it to the site's
        operator over a trusted channel.

        Raises
        ------
        RegistryError
            If the name is invalid or taken (also by a revoked credential), or the key is not
            a base64 Ed25519 public key (32 bytes).
        """
        _check_name(site_id)
        _check_public_key(site_id, public_key_b64)
        password = secrets.token_urlsafe(32)
        credential = Credential(
            name=site_id, kind="site", password_hash=self._hasher.hash(password),
            created_us=to_micros(self._clock()), public_key_b64=public_key_b64,
            read_collections=SITE_READABLE,
            trust_alpha=self.fusion.trust_prior_alpha, trust_beta=self.fusion.trust_prior_beta,
        )
        if not self.storage.insert_credential(credential):
            raise RegistryError(site_id, "this name is already enrolled or was revoked; "
                                         "choose another site id")
        log.info("site %s enrolled (trust prior alpha=%g beta=%g)", site_id,
                 credential.trust_alpha, credential.trust_beta)
        return password

    def add_consumer(self, name: str, *, read: Iterable[str]) -> str:
        """Register a read-only TAXII consumer and return its new password.

        Parameters
        ----------
        name : str
            Consumer name, used as the HTTP Basic username.
        read : iterable of str
            Collection names it may read; only ``fused-indicators`` may be granted.

        Raises
        ------
        RegistryError
            If the name is invalid or taken, or a collection may not be granted.
        """
        _check_name(name)
        collections = tuple(dict.fromkeys(read))
        if not collections:
            raise RegistryError(name, "a consumer needs at least one readable collection; "
                                      "grant read=['fused-indicators']")
        for collection in collections:
            if collection not in CONSUMER_READABLE:
                raise RegistryError(
                    name, f"consumers may not read collection {collection!r}; grantable: "
                          f"{', '.join(CONSUMER_READABLE)}",
                )
        password = secrets.token_urlsafe(32)
        credential = Credential(
            name=name, kind="consumer", password_hash=self._hasher.hash(password),
            created_us=to_micros(self._clock()), read_collections=collections,
        )
        if not self.storage.insert_credential(credential):
            raise RegistryError(name, "this name is already in use or was revoked; "
                                      "choose another consumer name")
        log.info("consumer %s added with read access to %s", name, ", ".join(collections))
        return password

    def revoke(self, name: str) -> None:
        """Revoke a site or consumer; its next request is rejected with 401.

        Raises
        ------
        UnknownCredential
            If no credential has this name.
        """
        if not self.storage.revoke_credential(name, to_micros(self._clock())):
            raise UnknownCredential(name)
        with self._cache_lock:
            self._verified.pop(name, None)
        log.warning("credential %s revoked; its requests are rejected from now on", name)

    def issue_token(self, name: str) -> str:
        """Create an API token for a site or consumer and return it (shown once).

        The token carries the rights of its credential and is sent as
        ``Authorization: Bearer <token>``. It has the form ``fti_<id>_<secret>``: the id
        finds the stored hash, and only the argon2id hash of the secret is kept.

        Raises
        ------
        UnknownCredential
            If no credential has this name.
        RegistryError
            If the credential is revoked.
        """
        credential = self.storage.get_credential(name)
        if credential is None:
            raise UnknownCredential(name)
        if credential.revoked:
            raise RegistryError(name, "the credential is revoked; enrol a new name instead")
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        self.storage.insert_api_token(ApiToken(
            token_id=token_id, credential=name, secret_hash=self._hasher.hash(secret),
            created_us=to_micros(self._clock()),
        ))
        log.info("API token %s issued for %s", token_id, name)
        return f"{_TOKEN_PREFIX}{token_id}_{secret}"

    def revoke_token(self, token_id: str) -> None:
        """Revoke one API token; its next request is rejected with 401.

        Raises
        ------
        RegistryError
            If no token has this id.
        """
        if not self.storage.revoke_api_token(token_id, to_micros(self._clock())):
            raise RegistryError(token_id, "no API token has this id; the id is the part "
                                          "between 'fti_' and the next '_'")
        with self._cache_lock:
            self._verified.pop(f"token:{token_id}", None)
        log.warning("API token %s revoked; its requests are rejected from now on", token_id)

    def authenticate_token(self, token: str, *, guard: HashGuard = nullcontext) -> AuthResult:
        """Check a bearer token. A revoked token or credential fails.

        ``guard()`` is entered around every argon2id computation and may raise to reject it
        (see ``fusion_hub.auth_limits``). Unknown and revoked tokens cost one verification
        too, so the response time does not tell them from a wrong secret.
        """
        match = _TOKEN_RE.fullmatch(token)
        if match is None:
            return AuthResult(None, "malformed")
        token_id, secret = match.groups()
        stored = self.storage.get_api_token(token_id)
        if stored is None:
            self._verify_decoy(secret, guard)
            return AuthResult(None, "unknown")
        credential = self.storage.get_credential(stored.credential)
        if stored.revoked_us is not None or credential is None or credential.revoked:
            self._verify_decoy(secret, guard)
            return AuthResult(None, "revoked")
        if not self._secret_matches(f"token:{token_id}", stored.secret_hash, secret, guard):
            return AuthResult(None, "password")
        return AuthResult(_principal_for(credential), None)

    def get_site(self, site_id: str) -> Credential | None:
        """Return the site's credential (revoked or not), or None for unknown names."""
        credential = self.storage.get_credential(site_id)
        if credential is None or credential.kind != "site":
            return None
        return credential

    def authenticate(self, name: str, password: str, *,
                     guard: HashGuard = nullcontext) -> AuthResult:
        """Check an HTTP Basic username and password.

        Every call rereads the credential, so a revocation applies to the next request even
        when the password is cached as verified. ``guard()`` is entered around every argon2id
        computation and may raise to reject it (see ``fusion_hub.auth_limits``).
        """
        credential = self.storage.get_credential(name)
        if credential is None or credential.revoked:
            # Verify anyway, so that response time does not reveal which names exist.
            self._verify_decoy(password, guard)
            return AuthResult(None, "unknown" if credential is None else "revoked")
        if not self._secret_matches(credential.name, credential.password_hash, password, guard):
            return AuthResult(None, "password")
        return AuthResult(_principal_for(credential), None)

    def trust_weight(self, site_id: str) -> float:
        """Return the posterior mean precision alpha / (alpha + beta) of a site.

        Raises
        ------
        UnknownCredential
            If the site is not enrolled.
        """
        site = self.get_site(site_id)
        if site is None:
            raise UnknownCredential(site_id)
        return beta_mean(site)

    def trust_weights(self) -> dict[str, float]:
        """Return the trust weight of every enrolled, unrevoked site."""
        return {
            credential.name: beta_mean(credential)
            for credential in self.storage.list_credentials()
            if credential.kind == "site" and not credential.revoked
        }

    def fusion_weights(self) -> dict[str, float]:
        """Return the weight fusion gives each enrolled, unrevoked site.

        That is its trust weight, or 1 for every site when ``fusion.trust_weighting`` is off.
        """
        weights = self.trust_weights()
        if self.fusion.trust_weighting:
            return weights
        return dict.fromkeys(weights, 1.0)

    def record_outcomes(self, site_id: str, *, confirmed: int, refuted: int) -> tuple[float, float]:
        """Update a site's Beta posterior with confirmed and refuted releases.

        Returns
        -------
        tuple of float
            The new (alpha, beta).

        Raises
        ------
        UnknownCredential
            If the site is not enrolled.
        RegistryError
            If a count is negative.
        """
        if confirmed < 0 or refuted < 0:
            raise RegistryError(site_id, f"outcome counts must be >= 0; got confirmed="
                                         f"{confirmed}, refuted={refuted}")
        with self.storage.transaction():
            site = self.get_site(site_id)
            if site is None:
                raise UnknownCredential(site_id)
            alpha = float(site.trust_alpha or 0.0) + confirmed
            beta = float(site.trust_beta or 0.0) + refuted
            self.storage.update_trust(site_id, alpha, beta)
        log.info("site %s trust updated: alpha=%g beta=%g (weight %.3f)", site_id, alpha, beta,
                 alpha / (alpha + beta))
        return alpha, beta

    def _verify_decoy(self, secret: str, guard: HashGuard) -> None:
        try:
            with guard():
                self._hasher.verify(self._decoy_hash, secret)
        except VerificationError:
            pass

    def _secret_matches(self, cache_key: str, secret_hash: str, secret: str,
                        guard: HashGuard = nullcontext) -> bool:
        digest = hmac.new(self._cache_salt, secret.encode("utf-8"), hashlib.sha256).digest()
        now = time.monotonic()
        with self._cache_lock:
            cached = self._verified.get(cache_key)
        if (cached is not None and cached[1] == secret_hash and cached[2] > now
                and hmac.compare_digest(cached[0], digest)):
            return True
        try:
            with guard():
                self._hasher.verify(secret_hash, secret)
        except (VerificationError, InvalidHashError):
            return False
        if self.auth.credential_cache_seconds > 0:
            expiry = now + self.auth.credential_cache_seconds
            with self._cache_lock:
                self._verified[cache_key] = (digest, secret_hash, expiry)
        return True


def beta_mean(credential: Credential) -> float:
    """Return alpha / (alpha + beta) of a site credential."""
    alpha = float(credential.trust_alpha or 0.0)
    beta = float(credential.trust_beta or 0.0)
    if alpha + beta <= 0:
        return 0.0
    return alpha / (alpha + beta)


def _principal_for(credential: Credential) -> Principal:
    if credential.kind == "site":
        return Principal(credential.name, "site", frozenset(SITE_READABLE),
                         frozenset(SITE_WRITABLE))
    return Principal(credential.name, "consumer", frozenset(credential.read_collections),
                     frozenset())


def token_id_of(token: str) -> str | None:
    """Return the id of an API token of the form ``fti_<id>_<secret>``, else None.

    Only the id of a well-formed token is safe to log: in any other string the part after
    ``fti_`` may be a password or a secret sent by mistake.
    """
    match = _TOKEN_RE.fullmatch(token)
    return match.group(1) if match else None


def is_valid_name(name: str) -> bool:
    """Return whether ``name`` has the form of a site or consumer name."""
    return _NAME_RE.fullmatch(name) is not None


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RegistryError(
            str(name), "invalid name: use 1 to 63 lower-case letters, digits, '.', '_' or '-', "
                       "starting with a letter or digit",
        )


def _check_public_key(site_id: str, public_key_b64: str) -> None:
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
    except (binascii.Error, ValueError, TypeError) as err:
        raise RegistryError(site_id, f"public key is not valid base64: {err}; pass the "
                                     "public_key_b64 of the site's signing key") from err
    if len(raw) != 32:
        raise RegistryError(site_id, f"public key must be 32 bytes (Ed25519); got {len(raw)}; "
                                     "pass the public_key_b64 of the site's signing key")
