"""Per-site privacy ledger: what each released round cost, persisted in SQLite.

The ledger is the agent's record of spent privacy. It stores one row per released
round and rejects a charge that would push the composed epsilon (or the summed
delta) of any sliding period containing the round over the site's budget. The agent
must charge a round before the round's summary leaves the site; a summary whose
charge was rejected is never sent.

Storage is one SQLite table in WAL mode with ``synchronous=FULL``, so a committed
charge survives a crash or power loss. Every charge runs in a ``BEGIN IMMEDIATE``
transaction that reads the window and inserts the row atomically, so two processes
charging the same file cannot both spend the last part of the budget. The primary
key (site_id, round_start) makes a resend of the same round free: the round was
released once and its noise is reused, not drawn again.

The period of a status at time ``at`` contains the rounds whose start lies in
``(at - period_seconds, at]``. Their epsilons are composed with
:class:`privacy.accountant.PrivacyAccountant` at ``budget_delta``.
"""

from __future__ import annotations

import logging
import math
import numbers
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from privacy.accountant import DEFAULT_VALUE_DISCRETIZATION_INTERVAL, PrivacyAccountant, validate_delta
from privacy.errors import BudgetExhausted, InvalidPrivacyParameter, LedgerConflict
from privacy.mechanisms import validate_epsilon

__all__ = ["DEFAULT_PERIOD_SECONDS", "BudgetStatus", "PrivacyLedger"]

log = logging.getLogger(__name__)

# A 30-day sliding period matches how operators review access and retention, and it
# bounds what one month of a site's summaries can reveal about any entity.
DEFAULT_PERIOD_SECONDS = 30 * 86400

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_ledger (
    site_id     TEXT    NOT NULL,
    round_start INTEGER NOT NULL,
    epsilon     REAL    NOT NULL CHECK (epsilon > 0),
    delta       REAL    NOT NULL CHECK (delta >= 0 AND delta < 1),
    mechanism   TEXT    NOT NULL,
    recorded_at TEXT    NOT NULL,
    PRIMARY KEY (site_id, round_start)
)
"""


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Privacy spent by a site in one sliding period.

    Attributes
    ----------
    epsilon_spent : float
        Composed epsilon of the rounds in the period at ``delta_budget``
        (``math.inf`` when their deltas leave no room under ``delta_budget``).
    delta_spent : float
        Sum of the rounds' deltas.
    epsilon_budget, delta_budget : float
        The site's budget for any period.
    rounds_charged : int
        Number of rounds in the period.
    period_start : datetime
        Exclusive lower end of the period (UTC); the upper end is inclusive.
    exhausted : bool
        True when the epsilon budget is used up, or the delta budget is positive and
        used up, so that no further release fits.
    """

    epsilon_spent: float
    delta_spent: float
    epsilon_budget: float
    delta_budget: float
    rounds_charged: int
    period_start: datetime
    exhausted: bool

    @property
    def epsilon_remaining(self) -> float:
        """Budget epsilon minus spent epsilon, at least 0."""
        return max(0.0, self.epsilon_budget - self.epsilon_spent)

    @property
    def delta_remaining(self) -> float:
        """Budget delta minus spent delta, at least 0."""
        return max(0.0, self.delta_budget - self.delta_spent)


@dataclass(frozen=True, slots=True)
class _Charge:
    round_start: int
    epsilon: float
    delta: float


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class PrivacyLedger:
    """Budget ledger of one site, stored in a SQLite file.

    Parameters
    ----------
    path : Path
        SQLite file; created with its table when missing. Several ledgers (one per
        site) may share a file.
    site_id : str
        Site whose rounds this object reads and charges; non-empty.
    budget_epsilon : float
        Maximum composed epsilon in any period, finite and > 0.
    budget_delta : float
        Maximum summed delta in any period, in [0, 1). The composed epsilon is
        reported at this delta, so the per-round deltas must sum to well below it.
    period_seconds : int
        Length of the sliding period, >= 1 (30 days: ``DEFAULT_PERIOD_SECONDS``).
    value_discretization_interval : float, default 1e-4
        Passed to :class:`privacy.accountant.PrivacyAccountant`.
    clock : Callable[[], datetime], optional
        Source of ``recorded_at`` timestamps; the system clock in UTC by default.

    Notes
    -----
    The period slides over round starts, not wall-clock time, so a replay of old
    logs is charged against the periods the replayed rounds belong to.
    """

    def __init__(
        self,
        path: Path,
        *,
        site_id: str,
        budget_epsilon: float,
        budget_delta: float,
        period_seconds: int,
        value_discretization_interval: float = DEFAULT_VALUE_DISCRETIZATION_INTERVAL,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not isinstance(site_id, str) or not site_id:
            raise InvalidPrivacyParameter("site_id", site_id, "a non-empty string")
        if (
            isinstance(budget_epsilon, bool)
            or not isinstance(budget_epsilon, numbers.Real)
            or not math.isfinite(budget_epsilon)
            or budget_epsilon <= 0
        ):
            raise InvalidPrivacyParameter("budget_epsilon", budget_epsilon, "finite and > 0")
        if isinstance(period_seconds, bool) or not isinstance(period_seconds, numbers.Integral) or period_seconds < 1:
            raise InvalidPrivacyParameter("period_seconds", period_seconds, "an integer >= 1")

        self.path = Path(path)
        self.site_id = site_id
        self.budget_epsilon = float(budget_epsilon)
        self.budget_delta = validate_delta(budget_delta, name="budget_delta")
        self.period_seconds = int(period_seconds)
        # Building an accountant validates the interval now rather than at the first charge.
        PrivacyAccountant(value_discretization_interval=value_discretization_interval)
        self.value_discretization_interval = value_discretization_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        # Autocommit mode: every transaction below is opened explicitly.
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=30.0, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_SCHEMA)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                raise InvalidPrivacyParameter(
                    "ledger schema version", version, f"{_SCHEMA_VERSION} (file {self.path})"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(path={str(self.path)!r}, site_id={self.site_id!r}, "
            f"budget_epsilon={self.budget_epsilon!r}, budget_delta={self.budget_delta!r}, "
            f"period_seconds={self.period_seconds!r})"
        )

    # -- public operations ---------------------------------------------------------

    def spent(self, at: datetime | int) -> BudgetStatus:
        """Return the privacy spent in the period ``(at - period_seconds, at]``.

        Parameters
        ----------
        at : datetime or int
            End of the period: a timezone-aware datetime or Unix epoch seconds.
        """
        at_seconds = _epoch_seconds("at", at, whole=False)
        with self._lock:
            charges = self._read_charges(at_seconds - self.period_seconds, at_seconds)
        return self._status(charges, at_seconds)

    def is_charged(self, round_start: datetime | int) -> bool:
        """Return whether the round is recorded in the ledger.

        An agent that finds a charged round without its stored summary must not
        release it again: fresh noise would make it a second release.
        """
        start = int(_epoch_seconds("round_start", round_start, whole=True))
        with self._lock:
            return self._read_round(start) is not None

    def check(self, round_start: datetime | int, epsilon: float, delta: float) -> BudgetStatus:
        """Return the status the period would have after charging the round.

        Nothing is written. A round already charged returns the current status.

        Parameters
        ----------
        round_start : datetime or int
            Start of the round: a timezone-aware datetime on a whole second, or
            Unix epoch seconds.
        epsilon : float
            Epsilon of the round's release, in (0, 100].
        delta : float
            Delta of the round's release, in [0, 1).

        Raises
        ------
        BudgetExhausted
            If charging would exceed ``budget_epsilon`` or ``budget_delta`` in any
            period that contains the round.
        LedgerConflict
            If the round is already charged with other parameters.
        InvalidPrivacyParameter
            If a parameter is invalid.
        """
        start, epsilon, delta = self._validate_request(round_start, epsilon, delta)
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                existing = self._read_round(start)
                if existing is not None:
                    self._raise_on_conflict(existing, start, epsilon, delta, None)
                    return self._status_at(start)
                return self._evaluate(start, epsilon, delta)
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    def charge(
        self, round_start: datetime | int, epsilon: float, delta: float, mechanism: str
    ) -> BudgetStatus:
        """Record the round's release and return the status of its period.

        Charging a round that is already recorded with the same parameters returns
        the status without writing a second row.

        Parameters
        ----------
        round_start : datetime or int
            Start of the round: a timezone-aware datetime on a whole second, or
            Unix epoch seconds.
        epsilon : float
            In (0, 100].
        delta : float
            In [0, 1).
        mechanism : str
            Name of the mechanism, e.g. ``"discrete-laplace"``.

        Raises
        ------
        BudgetExhausted
            If the charge would exceed the budget; nothing is written.
        LedgerConflict
            If the round is already charged with other parameters.
        InvalidPrivacyParameter
            If a parameter is invalid.
        """
        start, epsilon, delta = self._validate_request(round_start, epsilon, delta)
        if not isinstance(mechanism, str) or not mechanism:
            raise InvalidPrivacyParameter("mechanism", mechanism, "a non-empty string")

        with self._lock:
            # IMMEDIATE takes the write lock before reading, so the window cannot
            # change between the budget check and the insert.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                existing = self._read_round(start)
                if existing is not None:
                    self._raise_on_conflict(existing, start, epsilon, delta, mechanism)
                    self._conn.execute("COMMIT")
                    return self._status_at(start)

                status = self._evaluate(start, epsilon, delta)
                self._conn.execute(
                    "INSERT INTO privacy_ledger "
                    "(site_id, round_start, epsilon, delta, mechanism, recorded_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (self.site_id, start, epsilon, delta, mechanism, _iso(self._clock())),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

        log.info(
            "site %s charged round %s: epsilon %g, delta %g (%s); spent %.3f of %.3f "
            "epsilon in %d rounds of the period",
            self.site_id, _iso_seconds(start), epsilon, delta, mechanism,
            status.epsilon_spent, status.epsilon_budget, status.rounds_charged,
        )
        return status

    # -- budget arithmetic ---------------------------------------------------------

    def _evaluate(self, start: int, epsilon: float, delta: float) -> BudgetStatus:
        """Return the status after adding the round, or raise BudgetExhausted.

        The composed epsilon changes only when a round enters a period, so checking
        the periods that end at the new round and at each later charged round
        within one period covers every period that contains the new round.
        """
        new = _Charge(start, epsilon, delta)
        nearby = self._read_charges(start - self.period_seconds, start + self.period_seconds - 1)
        earlier = [c for c in nearby if c.round_start <= start]
        ends = [start] + sorted(c.round_start for c in nearby if c.round_start > start)

        statuses: list[BudgetStatus] = []
        for end in ends:
            window = [c for c in nearby if end - self.period_seconds < c.round_start <= end]
            status = self._status(window + [new], end)
            if self._exceeds(status):
                before = self._status(earlier, start)
                raise BudgetExhausted(
                    self.site_id,
                    epsilon,
                    before.epsilon_remaining,
                    requested_delta=delta,
                    remaining_delta=before.delta_remaining,
                    period_seconds=self.period_seconds,
                    retry_at=self._earliest_fit(start, epsilon, delta),
                    delta_exceeded=status.delta_spent > self.budget_delta,
                )
            statuses.append(status)
        return statuses[0]

    def _earliest_fit(self, start: int, epsilon: float, delta: float) -> datetime | None:
        """Return the earliest round start after ``start`` at which the same release fits.

        Assumes no further charges. A round starting at ``s + period`` no longer
        shares a period with round ``s``, so the candidates are those times. The
        period loses rounds as the candidate moves later, so a binary search finds
        the first candidate that fits when rounds were charged in time order.
        """
        new = _Charge(start, epsilon, delta)
        if self._exceeds(self._status([new], start)):
            return None

        charges = self._read_charges(start - self.period_seconds, math.inf)
        candidates = sorted({c.round_start + self.period_seconds for c in charges})
        if not candidates:
            return None

        def fits(index: int) -> bool:
            t = candidates[index]
            window = [c for c in charges if t - self.period_seconds < c.round_start <= t]
            return not self._exceeds(self._status(window + [_Charge(t, epsilon, delta)], t))

        low, high = 0, len(candidates) - 1
        if not fits(high):
            return None
        while low < high:
            middle = (low + high) // 2
            if fits(middle):
                high = middle
            else:
                low = middle + 1
        return datetime.fromtimestamp(candidates[low], timezone.utc)

    def _exceeds(self, status: BudgetStatus) -> bool:
        return status.epsilon_spent > self.budget_epsilon or status.delta_spent > self.budget_delta

    def _status(self, charges: list[_Charge], end: float) -> BudgetStatus:
        accountant = PrivacyAccountant(
            value_discretization_interval=self.value_discretization_interval
        )
        for charge in charges:
            accountant.compose(charge.epsilon, charge.delta)
        epsilon_spent = accountant.get_epsilon(self.budget_delta)
        delta_spent = math.fsum(c.delta for c in charges)
        exhausted = epsilon_spent >= self.budget_epsilon or (
            self.budget_delta > 0 and delta_spent >= self.budget_delta
        )
        return BudgetStatus(
            epsilon_spent=epsilon_spent,
            delta_spent=delta_spent,
            epsilon_budget=self.budget_epsilon,
            delta_budget=self.budget_delta,
            rounds_charged=len(charges),
            period_start=datetime.fromtimestamp(end - self.period_seconds, timezone.utc),
            exhausted=exhausted,
        )

    def _status_at(self, end: int) -> BudgetStatus:
        return self._status(self._read_charges(end - self.period_seconds, end), end)

    # -- storage -------------------------------------------------------------------

    def _read_charges(self, after: float, until: float) -> list[_Charge]:
        """Return the charges whose round start is in ``(after, until]``."""
        rows = self._conn.execute(
            "SELECT round_start, epsilon, delta FROM privacy_ledger "
            "WHERE site_id = ? AND round_start > ? AND round_start <= ? ORDER BY round_start",
            (self.site_id, after, until if math.isfinite(until) else 2**62),
        ).fetchall()
        return [_Charge(int(start), float(eps), float(dlt)) for start, eps, dlt in rows]

    def _read_round(self, start: int) -> tuple[float, float, str] | None:
        row = self._conn.execute(
            "SELECT epsilon, delta, mechanism FROM privacy_ledger "
            "WHERE site_id = ? AND round_start = ?",
            (self.site_id, start),
        ).fetchone()
        if row is None:
            return None
        return float(row[0]), float(row[1]), str(row[2])

    def _raise_on_conflict(
        self,
        existing: tuple[float, float, str],
        start: int,
        epsilon: float,
        delta: float,
        mechanism: str | None,
    ) -> None:
        same = existing[0] == epsilon and existing[1] == delta
        if mechanism is not None:
            same = same and existing[2] == mechanism
        if not same:
            raise LedgerConflict(
                self.site_id,
                datetime.fromtimestamp(start, timezone.utc),
                existing,
                (epsilon, delta, mechanism if mechanism is not None else existing[2]),
            )

    def _validate_request(
        self, round_start: datetime | int, epsilon: float, delta: float
    ) -> tuple[int, float, float]:
        start = int(_epoch_seconds("round_start", round_start, whole=True))
        return start, validate_epsilon(epsilon), validate_delta(delta)


def _epoch_seconds(name: str, moment: datetime | int, *, whole: bool) -> float:
    if isinstance(moment, numbers.Integral) and not isinstance(moment, bool):
        return int(moment)
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidPrivacyParameter(name, moment, "a timezone-aware datetime or epoch seconds (int)")
    seconds = moment.timestamp()
    if whole and moment.microsecond != 0:
        raise InvalidPrivacyParameter(name, moment, "a timezone-aware datetime on a whole second")
    return seconds


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


def _iso_seconds(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

