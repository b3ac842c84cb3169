"""Authentication of TAXII requests: HTTP Basic (RFC 7617) and API bearer tokens (RFC 6750).

TAXII 2.1 (section 1.6.8) leaves the scheme to the server; Basic over TLS is what
taxii2-client, OpenCTI and MISP all speak, and bearer tokens suit connectors that take one
secret string. A missing or rejected credential gets 401 with a ``WWW-Authenticate``
challenge for both schemes. Failures are logged with the remote address and the username,
never the password. At most ``max_lines`` lines are logged per ``window_secs``, so a
password-guessing client cannot flood the log, and the counter ``fti_hub_auth_failures``
counts every failure.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from dataclasses import dataclass

from fusion_hub.errors import TaxiiError
from fusion_hub.metrics import HubMetrics
from fusion_hub.registry import Principal, SiteRegistry

log = logging.getLogger(__name__)

# Usernames are logged with repr() and cut to this length, since they come from the client.
_MAX_LOGGED_NAME = 64


@dataclass(frozen=True)
class BasicCredentials:
    """Username and password from an ``Authorization: Basic`` header."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"BasicCredentials(username={self.username!r}, password='***')"


def parse_basic_authorization(header: str | None) -> BasicCredentials | None:
    """Decode an ``Authorization`` header; None when it is absent or not valid Basic."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, separator, password = decoded.partition(":")
    if not separator:
        return None
    return BasicCredentials(username, password)


def parse_bearer_authorization(header: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header (RFC 6750), else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    """Turn an ``Authorization`` header into a ``Principal`` or a 401 TAXII error.

    Parameters
    ----------
    registry : SiteRegistry
        Checks names and passwords.
    metrics : HubMetrics
        Counts failures by reason.
    realm : str
        Realm in the ``WWW-Authenticate`` challenge.
    max_lines, window_secs : int, float
        Log at most ``max_lines`` failure lines per ``window_secs``; the rest are summed up in
        one line when the window ends.
    """

    def __init__(
        self,
        registry: SiteRegistry,
        metrics: HubMetrics,
        *,
        realm: str,
        max_lines: int = 20,
        window_secs: float = 60.0,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.realm = realm
        self.max_lines = max_lines
        self.window_secs = window_secs
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        self._logged = 0
        self._suppressed = 0

    def authenticate(self, header: str | None, remote_addr: str | None) -> Principal:
        """Return the caller for a valid header.

        Raises
        ------
        TaxiiError
            401 with a ``WWW-Authenticate`` challenge when the header is missing or
            malformed, or names an unknown or revoked credential or token, or carries a
            wrong password or token secret.
        """
        bearer = parse_bearer_authorization(header)
        if bearer is not None:
            result = self.registry.authenticate_token(bearer)
            if result.principal is None:
                # Only the token id is logged; the secret after it never is.
                token_id = bearer.removeprefix("fti_").partition("_")[0]
                self._record_failure(result.failure or "password", f"token {token_id}",
                                     remote_addr)
                raise self._challenge("the API token was not accepted")
            return result.principal

        credentials = parse_basic_authorization(header)
        if credentials is None:
            reason = "missing" if not header else "malformed"
            self._record_failure(reason, None, remote_addr)
            raise self._challenge("send HTTP Basic credentials (site id or consumer name and "
                                  "its hub password)")
        result = self.registry.authenticate(credentials.username, credentials.password)
        if result.principal is None:
            self._record_failure(result.failure or "password", credentials.username, remote_addr)
            raise self._challenge("the username or password was not accepted")
        return result.principal

    def _challenge(self, description: str) -> TaxiiError:
        return TaxiiError(
            401, "Unauthorized", description,
            headers={"WWW-Authenticate": f'Basic realm="{self.realm}", charset="UTF-8", '
                                         f'Bearer realm="{self.realm}"'},
        )

    def _record_failure(self, reason: str, username: str | None, remote_addr: str | None) -> None:
        self.metrics.auth_failures.labels(reason=reason).inc()
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= self.window_secs:
                if self._suppressed:
                    log.warning("%d more authentication failures in the last %.0f s were not "
                                "logged one by one", self._suppressed, self.window_secs)
                self._window_start, self._logged, self._suppressed = now, 0, 0
            if self._logged >= self.max_lines:
                self._suppressed += 1
                return
            self._logged += 1
        shown = repr(username[:_MAX_LOGGED_NAME]) if username is not None else "(none)"
        log.warning("authentication failed from %s for username %s: %s",
                    remote_addr or "unknown address", shown, reason)
