"""Authentication of TAXII requests: HTTP Basic (RFC 7617) and API bearer tokens (RFC 6750).

TAXII 2.1 (section 1.6.8) leaves the scheme to the server; Basic over TLS is what
taxii2-client, OpenCTI and MISP all speak, and bearer tokens suit connectors that take one
secret string. A missing or rejected credential gets 401 with a ``WWW-Authenticate``
challenge for both schemes. Failures are logged with the remote address, and with the
username or token id only where it has the form of one: a password or secret sent in the
wrong field never reaches the log. At most ``max_lines`` lines are logged per ``window_secs``, so a
password-guessing client cannot flood the log, and the counter ``fti_hub_auth_failures``
counts every failure. The lines held back are summed up in one line after the window, written
by ``flush_failure_log``, which the hub calls on every tick and at shutdown.

Before any argon2id computation, ``AuthLimits`` checks the failure limits per address and
per username and the cap on concurrent computations. A check over a limit gets 429 with
``Retry-After`` and is counted in ``fti_hub_auth_throttled``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fusion_hub.auth_limits import AuthLimits, AuthThrottled
from fusion_hub.errors import TaxiiError
from fusion_hub.metrics import HubMetrics
from fusion_hub.ratelimit import retry_after_header
from fusion_hub.registry import (
    AuthResult,
    HashGuard,
    Principal,
    SiteRegistry,
    is_valid_name,
    token_id_of,
)

log = logging.getLogger(__name__)

# Logged in place of a bearer value that is not a well-formed API token.
_MALFORMED_TOKEN = "(malformed token)"

# Failures after an argon2id computation. They count towards the failure limits. A missing
# or malformed header costs no hash and does not count.
_COUNTED_FAILURES = ("unknown", "revoked", "password")


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
    except (binascii.Error, UnicodeDecodeError, ValueError):
        # ValueError: b64decode takes only ASCII text.
        return None
    username, separator, password = decoded.partition(":")
    if not separator:
        return None
    # RFC 7617, section 2: neither part may contain control characters. A NUL would also
    # fail the credential lookup on PostgreSQL, whose text values cannot hold one.
    if _has_control_character(username) or _has_control_character(password):
        return None
    return BasicCredentials(username, password)


def _has_control_character(text: str) -> bool:
    return any(char < " " or char == "\x7f" for char in text)


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
    limits : AuthLimits
        Failure limits and the argon2id concurrency cap.
    max_lines, window_secs : int, float
        Log at most ``max_lines`` failure lines per ``window_secs``. The rest are summed up
        in one line by the first failure or ``flush_failure_log`` call after the window.
    clock : callable returning float, optional
        Monotonic seconds for the log window; tests pass a controllable clock.
    """

    def __init__(
        self,
        registry: SiteRegistry,
        metrics: HubMetrics,
        *,
        realm: str,
        limits: AuthLimits,
        max_lines: int = 20,
        window_secs: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.realm = realm
        self.limits = limits
        self.max_lines = max_lines
        self.window_secs = window_secs
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._logged = 0
        self._suppressed = 0

    def authenticate(self, header: str | None, remote_addr: str | None) -> Principal:
        """Return the caller for a valid header.

        Raises
        ------
        TaxiiError
            401 with a ``WWW-Authenticate`` challenge when the header is missing or
            malformed, or names an unknown or revoked credential or token, or carries a
            wrong password or token secret. 429 with ``Retry-After`` when the check would
            need argon2id and the address or name is over its failure limit or too many
            checks run at once.
        """
        bearer = parse_bearer_authorization(header)
        if bearer is not None:
            # Only the id of a well-formed token is logged or used as a key. Any other bearer
            # value may be a password or a secret, so it is never logged.
            token_id = token_id_of(bearer)
            name = f"token {token_id}" if token_id else _MALFORMED_TOKEN
            result = self._check(name, name, remote_addr,
                                 lambda guard: self.registry.authenticate_token(bearer,
                                                                                guard=guard))
            if result.principal is None:
                raise self._challenge("the API token was not accepted")
            return result.principal

        credentials = parse_basic_authorization(header)
        if credentials is None:
            reason = "missing" if not header else "malformed"
            self._record_failure(reason, "(none)", remote_addr)
            raise self._challenge("send HTTP Basic credentials (site id or consumer name and "
                                  "its hub password)")
        result = self._check(
            credentials.username, _shown_username(credentials.username), remote_addr,
            lambda guard: self.registry.authenticate(credentials.username, credentials.password,
                                                     guard=guard))
        if result.principal is None:
            raise self._challenge("the username or password was not accepted")
        return result.principal

    def _check(self, name: str, log_name: str, remote_addr: str | None,
               authenticate: Callable[[HashGuard], AuthResult]) -> AuthResult:
        """Run ``authenticate`` under the limits; record its failure or success.

        ``name`` keys the failure limits and ``log_name`` is what the log shows in its place.
        """
        try:
            result = authenticate(lambda: self.limits.verification(name, remote_addr))
        except AuthThrottled as err:
            self.metrics.auth_throttled.labels(scope=err.scope).inc()
            self._log_failure(f"throttled by the {err.scope} limit", log_name, remote_addr)
            raise TaxiiError(429, "Too Many Requests", err.description,
                             headers={"Retry-After": retry_after_header(err.retry_after_secs)},
                             ) from None
        if result.principal is None:
            reason = result.failure or "password"
            if reason in _COUNTED_FAILURES:
                self.limits.record_failure(name, remote_addr)
            self._record_failure(reason, log_name, remote_addr)
        else:
            self.limits.record_success(name, remote_addr)
        return result

    def _challenge(self, description: str) -> TaxiiError:
        return TaxiiError(
            401, "Unauthorized", description,
            headers={"WWW-Authenticate": f'Basic realm="{self.realm}", charset="UTF-8", '
                                         f'Bearer realm="{self.realm}"'},
        )

    def flush_failure_log(self, *, final: bool = False) -> None:
        """Log the summary line of failures held back, once their window has ended.

        ``final`` logs it at once, for shutdown. Without this call the summary would wait
        for the next failure, which never comes once the guessing stops.
        """
        with self._lock:
            self._end_window(self._clock(), final=final)

    def _end_window(self, now: float, *, final: bool = False) -> None:
        # Caller holds self._lock.
        if not final and now - self._window_start < self.window_secs:
            return
        if self._suppressed:
            log.warning("%d more authentication failures in the last %.0f s were not "
                        "logged one by one", self._suppressed, now - self._window_start)
        self._window_start, self._logged, self._suppressed = now, 0, 0

    def _record_failure(self, reason: str, log_name: str, remote_addr: str | None) -> None:
        self.metrics.auth_failures.labels(reason=reason).inc()
        self._log_failure(reason, log_name, remote_addr)

    def _log_failure(self, reason: str, log_name: str, remote_addr: str | None) -> None:
        with self._lock:
            self._end_window(self._clock())
            if self._logged >= self.max_lines:
                self._suppressed += 1
                return
            self._logged += 1
        log.warning("authentication failed from %s for username %s: %s",
                    remote_addr or "unknown address", log_name, reason)


def _shown_username(username: str) -> str:
    """Return how a failed username appears in the log.

    Only a string of the form of a site or consumer name is logged. Anything else, such as a
    token or password typed into the username field, shows as its length alone.
    """
    if is_valid_name(username):
        return repr(username)
    return f"(not a valid name, {len(username)} characters)"
