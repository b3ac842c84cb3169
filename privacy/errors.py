"""Exceptions raised by the privacy package.

Every exception derives from :class:`PrivacyError` and stores the values that describe
the failure, so callers and tests can inspect fields instead of parsing messages::

    PrivacyError
    ├── InvalidPrivacyParameter   a parameter outside its allowed range
    ├── BudgetExhausted           a release would exceed the site's budget for the period
    ├── LedgerConflict            a round is charged again with different parameters
    ├── SignatureInvalid          a signed object failed verification
    └── KeyFileInvalid            a signing key file is unreadable, malformed or exposed
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "BudgetExhausted",
    "InvalidPrivacyParameter",
    "KeyFileInvalid",
    "LedgerConflict",
    "PrivacyError",
    "SignatureInvalid",
]


class PrivacyError(Exception):
    """Root of every error raised by the privacy package."""


class InvalidPrivacyParameter(PrivacyError, ValueError):
    """A privacy parameter is outside its allowed range.

    Parameters
    ----------
    name : str
        Parameter name as the caller knows it, e.g. ``"epsilon"``.
    value : object
        The rejected value.
    rule : str
        The allowed range or form, e.g. ``"in (0, 100]"``.
    """

    def __init__(self, name: str, value: object, rule: str) -> None:
        self.name = name
        self.value = value
        self.rule = rule
        super().__init__(f"{name} must be {rule}; got {value!r}")


class BudgetExhausted(PrivacyError):
    """Charging a release would exceed the site's privacy budget for the period.

    Parameters
    ----------
    site_id : str
        Site whose ledger rejected the charge.
    requested_epsilon : float
        Epsilon of the rejected release.
    remaining_epsilon : float
        Budget epsilon minus the epsilon already spent in the period (at least 0).
    requested_delta : float
        Delta of the rejected release.
    remaining_delta : float
        Budget delta minus the delta already spent in the period (at least 0).
    period_seconds : int
        Length of the sliding budget period.
    retry_at : datetime or None
        Earliest round start at which a release of the same size fits the budget
        again, or None when no wait helps because the release alone exceeds the budget.
    """

    def __init__(
        self,
        site_id: str,
        requested_epsilon: float,
        remaining_epsilon: float,
        *,
        requested_delta: float = 0.0,
        remaining_delta: float = 0.0,
        period_seconds: int,
        retry_at: datetime | None,
        delta_exceeded: bool = False,
    ) -> None:
        self.site_id = site_id
        self.requested_epsilon = requested_epsilon
        self.remaining_epsilon = remaining_epsilon
        self.requested_delta = requested_delta
        self.remaining_delta = remaining_delta
        self.period_seconds = period_seconds
        self.retry_at = retry_at
        self.delta_exceeded = delta_exceeded
        super().__init__(self._build_message())

    def _build_message(self) -> str:
        period = _describe_period(self.period_seconds)
        if self.delta_exceeded:
            head = (
                f"site {self.site_id!r} asked for delta {self.requested_delta:.2g} but has "
                f"{self.remaining_delta:.2g} left in the {period} period"
            )
            setting = "privacy.budget_delta"
        else:
            head = (
                f"site {self.site_id!r} asked for epsilon {self.requested_epsilon:.2f} but has "
                f"{self.remaining_epsilon:.2f} left in the {period} period"
            )
            setting = "privacy.budget_epsilon"
        if self.retry_at is None:
            return (
                f"{head}; the release alone exceeds the budget, so lower the per-round "
                f"privacy parameters or raise {setting}"
            )
        when = self.retry_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{head}; raise {setting} or wait until {when}"


class LedgerConflict(PrivacyError):
    """A round already charged is charged again with different parameters.

    A second release of the same round with fresh noise is a second release for the
    privacy guarantee, so the ledger rejects it instead of treating it as a resend.

    Parameters
    ----------
    site_id : str
        Site whose ledger records the round.
    round_start : datetime
        Start of the round.
    recorded : tuple[float, float, str]
        ``(epsilon, delta, mechanism)`` stored for the round.
    requested : tuple[float, float, str]
        ``(epsilon, delta, mechanism)`` of the rejected charge.
    """

    def __init__(
        self,
        site_id: str,
        round_start: datetime,
        recorded: tuple[float, float, str],
        requested: tuple[float, float, str],
    ) -> None:
        self.site_id = site_id
        self.round_start = round_start
        self.recorded = recorded
        self.requested = requested
        super().__init__(
            f"round {round_start.strftime('%Y-%m-%dT%H:%M:%SZ')} of site {site_id!r} is already "
            f"charged with epsilon {recorded[0]!r}, delta {recorded[1]!r} ({recorded[2]}); "
            f"a charge with epsilon {requested[0]!r}, delta {requested[1]!r} ({requested[2]}) "
            "would be a second release of the round, so resend the stored summary instead"
        )


class SignatureInvalid(PrivacyError):
    """A signed object failed verification.

    Parameters
    ----------
    reason : str
        What was wrong: missing or malformed signature, unknown algorithm, key id
        mismatch, or a signature that does not verify.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"signature invalid: {reason}")


class KeyFileInvalid(PrivacyError):
    """A signing key file cannot be used.

    Parameters
    ----------
    path : str
        The key file.
    reason : str
        Why it was rejected, with the fix when there is one.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"signing key file {path}: {reason}")


def _describe_period(period_seconds: int) -> str:
    """Name a period the way an operator configured it: ``30-day`` or ``3600-second``."""
    if period_seconds % 86400 == 0:
        return f"{period_seconds // 86400}-day"
    return f"{period_seconds}-second"
