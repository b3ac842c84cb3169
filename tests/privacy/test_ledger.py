"""Tests for privacy.ledger: persistence, idempotence, sliding period and budget stop."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from privacy.accountant import PrivacyAccountant
from privacy.errors import BudgetExhausted, InvalidPrivacyParameter, LedgerConflict
from privacy.ledger import DEFAULT_PERIOD_SECONDS, BudgetStatus, PrivacyLedger

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
RECORDED = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)


def open_ledger(path: Path, **overrides: object) -> PrivacyLedger:
    options: dict[str, object] = {
        "site_id": "site-a",
        "budget_epsilon": 1.0,
        "budget_delta": 1e-6,
        "period_seconds": DEFAULT_PERIOD_SECONDS,
        "clock": lambda: RECORDED,
    }
    options.update(overrides)
    return PrivacyLedger(path, **options)  # type: ignore[arg-type]


def count_rows(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT COUNT(*) FROM privacy_ledger").fetchone()[0]


def composed(epsilons: list[float], delta: float = 1e-6) -> float:
    accountant = PrivacyAccountant()
    for epsilon in epsilons:
        accountant.compose(epsilon)
    return accountant.get_epsilon(delta)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


def test_ledger_uses_wal_journal(ledger_path: Path) -> None:
    with open_ledger(ledger_path):
        pass

    with closing(sqlite3.connect(ledger_path)) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]

    assert mode == "wal"


def test_charge_returns_composed_status(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        ledger.charge(T0, 0.3, 0.0, "discrete-laplace")
        status = ledger.charge(T0 + HOUR, 0.3, 0.0, "discrete-laplace")

    assert status == BudgetStatus(
        epsilon_spent=composed([0.3, 0.3]),
        delta_spent=0.0,
        epsilon_budget=1.0,
        delta_budget=1e-6,
        rounds_charged=2,
        period_start=T0 + HOUR - timedelta(days=30),
        exhausted=False,
    )
    assert status.epsilon_spent <= 0.6
    assert status.epsilon_remaining == pytest.approx(1.0 - status.epsilon_spent)


def test_charge_stores_row_fields(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        ledger.charge(T0, 0.25, 1e-8, "discrete-laplace")

    with closing(sqlite3.connect(ledger_path)) as conn:
        rows = conn.execute(
            "SELECT site_id, round_start, epsilon, delta, mechanism, recorded_at FROM privacy_ledger"
        ).fetchall()

    assert rows == [
        ("site-a", int(T0.timestamp()), 0.25, 1e-8, "discrete-laplace", "2024-06-01T12:00:00+00:00")
    ]


def test_spend_survives_reopen(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        ledger.charge(T0, 0.4, 0.0, "discrete-laplace")
        before = ledger.spent(T0 + HOUR)

    with open_ledger(ledger_path) as reopened:
        after = reopened.spent(T0 + HOUR)

    assert after == before
    assert after.rounds_charged == 1


def test_second_object_on_same_file_sees_charges(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as writer, open_ledger(ledger_path) as reader:
        writer.charge(T0, 0.4, 0.0, "discrete-laplace")

        status = reader.spent(T0)

    assert status.rounds_charged == 1


def test_sites_sharing_a_file_have_separate_budgets(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as site_a, open_ledger(ledger_path, site_id="site-b") as site_b:
        site_a.charge(T0, 0.9, 0.0, "discrete-laplace")

        status_b = site_b.charge(T0, 0.9, 0.0, "discrete-laplace")

    assert status_b.rounds_charged == 1
    assert count_rows(ledger_path) == 2


def test_charge_same_round_twice_is_idempotent(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        first = ledger.charge(T0, 0.4, 1e-8, "discrete-laplace")
        second = ledger.charge(T0, 0.4, 1e-8, "discrete-laplace")

    assert second == first
    assert count_rows(ledger_path) == 1


def test_charge_same_round_with_other_epsilon_conflicts(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        ledger.charge(T0, 0.4, 0.0, "discrete-laplace")

        with pytest.raises(LedgerConflict) as excinfo:
            ledger.charge(T0, 0.5, 0.0, "discrete-laplace")

    assert excinfo.value.site_id == "site-a"
    assert excinfo.value.round_start == T0
    assert excinfo.value.recorded == (0.4, 0.0, "discrete-laplace")
    assert excinfo.value.requested == (0.5, 0.0, "discrete-laplace")
    assert "second release of the round" in str(excinfo.value)
    assert count_rows(ledger_path) == 1


def test_charge_same_round_with_other_mechanism_conflicts(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        ledger.charge(T0, 0.4, 0.0, "discrete-laplace")

        with pytest.raises(LedgerConflict):
            ledger.charge(T0, 0.4, 0.0, "discrete-gaussian")


def test_period_window_excludes_round_after_period(ledger_path: Path) -> None:
    period = timedelta(days=30)
    with open_ledger(ledger_path) as ledger:
        ledger.charge(T0, 0.4, 0.0, "discrete-laplace")

        just_inside = ledger.spent(T0 + period - timedelta(seconds=1))
        at_boundary = ledger.spent(T0 + period)
        before_round = ledger.spent(T0 - timedelta(seconds=1))

    assert just_inside.rounds_charged == 1
    assert at_boundary.rounds_charged == 0
    assert at_boundary.epsilon_spent == 0.0
    assert before_round.rounds_charged == 0


def test_budget_frees_up_after_period(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        ledger.charge(T0, 0.9, 0.0, "discrete-laplace")

        with pytest.raises(BudgetExhausted):
            ledger.charge(T0 + HOUR, 0.9, 0.0, "discrete-laplace")
        status = ledger.charge(T0 + timedelta(days=30), 0.9, 0.0, "discrete-laplace")

    assert status.rounds_charged == 1


def test_budget_exhausted_message_and_fields(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        ledger.charge(T0, 0.8, 0.0, "discrete-laplace")

        with pytest.raises(BudgetExhausted) as excinfo:
            ledger.charge(T0 + HOUR, 0.5, 0.0, "discrete-laplace")

    error = excinfo.value
    assert error.site_id == "site-a"
    assert error.requested_epsilon == 0.5
    assert error.remaining_epsilon == pytest.approx(1.0 - composed([0.8]))
    assert error.retry_at == T0 + timedelta(days=30)
    assert str(error) == (
        "site 'site-a' asked for epsilon 0.50 but has 0.20 left in the 30-day period; "
        "raise privacy.budget_epsilon or wait until 2024-05-31T00:00:00Z"
    )
    assert count_rows(ledger_path) == 1


def test_retry_at_is_earliest_round_that_fits(ledger_path: Path) -> None:
    """Three rounds of 0.3 fill a budget of 1.0; a fourth fits once the first expires."""
    with open_ledger(ledger_path) as ledger:
        for hour in range(3):
            ledger.charge(T0 + hour * HOUR, 0.3, 0.0, "discrete-laplace")

        with pytest.raises(BudgetExhausted) as excinfo:
            ledger.charge(T0 + 5 * HOUR, 0.3, 0.0, "discrete-laplace")
        retry_at = excinfo.value.retry_at
        assert retry_at == T0 + timedelta(days=30)
        status = ledger.charge(retry_at, 0.3, 0.0, "discrete-laplace")

    assert status.rounds_charged == 3


def test_release_larger_than_budget_has_no_retry(ledger_path: Path) -> None:
    with open_ledger(ledger_path, budget_epsilon=0.3) as ledger:
        with pytest.raises(BudgetExhausted) as excinfo:
            ledger.charge(T0, 0.5, 0.0, "discrete-laplace")

    assert excinfo.value.retry_at is None
    assert str(excinfo.value) == (
        "site 'site-a' asked for epsilon 0.50 but has 0.30 left in the 30-day period; "
        "the release alone exceeds the budget, so lower the per-round privacy parameters "
        "or raise privacy.budget_epsilon"
    )


def test_delta_budget_enforced(ledger_path: Path) -> None:
    with open_ledger(ledger_path, budget_epsilon=10.0, budget_delta=1e-6) as ledger:
        ledger.charge(T0, 0.1, 4e-7, "discrete-laplace")
        ledger.charge(T0 + HOUR, 0.1, 4e-7, "discrete-laplace")

        with pytest.raises(BudgetExhausted) as excinfo:
            ledger.charge(T0 + 2 * HOUR, 0.1, 4e-7, "discrete-laplace")

    error = excinfo.value
    assert error.delta_exceeded
    assert error.requested_delta == 4e-7
    assert error.remaining_delta == pytest.approx(2e-7)
    assert str(error) == (
        "site 'site-a' asked for delta 4e-07 but has 2e-07 left in the 30-day period; "
        "raise privacy.budget_delta or wait until 2024-05-31T00:00:00Z"
    )


def test_out_of_order_charge_checks_later_periods(ledger_path: Path) -> None:
    """A backfilled round must also fit every later period that contains it."""
    with open_ledger(ledger_path) as ledger:
        ledger.charge(T0 + timedelta(days=10), 0.8, 0.0, "discrete-laplace")
        alone_at_start = ledger.spent(T0)

        with pytest.raises(BudgetExhausted):
            ledger.charge(T0, 0.5, 0.0, "discrete-laplace")
        earlier = ledger.charge(T0 - timedelta(days=25), 0.5, 0.0, "discrete-laplace")

    assert alone_at_start.rounds_charged == 0
    assert earlier.rounds_charged == 1
    assert count_rows(ledger_path) == 2


def test_check_projects_status_without_writing(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        ledger.charge(T0, 0.3, 0.0, "discrete-laplace")

        projected = ledger.check(T0 + HOUR, 0.3, 0.0)

        assert count_rows(ledger_path) == 1
        charged = ledger.charge(T0 + HOUR, 0.3, 0.0, "discrete-laplace")

    assert projected == charged
    assert projected.rounds_charged == 2


def test_check_raises_like_charge(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        ledger.charge(T0, 0.8, 0.0, "discrete-laplace")

        with pytest.raises(BudgetExhausted) as excinfo:
            ledger.check(T0 + HOUR, 0.5, 0.0)

    assert excinfo.value.requested_epsilon == 0.5
    assert count_rows(ledger_path) == 1


def test_check_on_charged_round_returns_current_status(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        charged = ledger.charge(T0, 0.8, 0.0, "discrete-laplace")

        again = ledger.check(T0, 0.8, 0.0)

    assert again == charged


def test_exhausted_flag_when_budget_used(ledger_path: Path) -> None:
    with open_ledger(ledger_path, budget_delta=0.0) as ledger:
        status = ledger.charge(T0, 1.0, 0.0, "discrete-laplace")

    assert status.epsilon_spent == 1.0
    assert status.exhausted


def test_concurrent_charges_never_exceed_budget(ledger_path: Path) -> None:
    """Two ledger objects race on one file; exactly three 0.3 rounds fit in 1.0."""
    assert composed([0.3] * 3) <= 1.0 < composed([0.3] * 4)
    open_ledger(ledger_path).close()
    outcomes: list[str] = []
    lock = threading.Lock()

    def charge_rounds(offset: int) -> None:
        with open_ledger(ledger_path) as ledger:
            for index in range(4):
                round_start = T0 + (2 * index + offset) * HOUR
                try:
                    ledger.charge(round_start, 0.3, 0.0, "discrete-laplace")
                    result = "charged"
                except BudgetExhausted:
                    result = "refused"
                with lock:
                    outcomes.append(result)

    threads = [threading.Thread(target=charge_rounds, args=(offset,)) for offset in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert outcomes.count("charged") == 3
    assert outcomes.count("refused") == 5
    assert count_rows(ledger_path) == 3


@pytest.mark.parametrize(
    "moment",
    [datetime(2024, 5, 1), datetime(2024, 5, 1, 0, 0, 0, 500, tzinfo=timezone.utc), "2024-05-01"],
)
def test_charge_rejects_bad_round_start(ledger_path: Path, moment: object) -> None:
    with open_ledger(ledger_path) as ledger:
        with pytest.raises(InvalidPrivacyParameter) as excinfo:
            ledger.charge(moment, 0.1, 0.0, "discrete-laplace")  # type: ignore[arg-type]

    assert excinfo.value.name == "round_start"


def test_spent_rejects_naive_datetime(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        with pytest.raises(InvalidPrivacyParameter, match="timezone-aware"):
            ledger.spent(datetime(2024, 5, 1))


def test_charge_rejects_bad_epsilon(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        with pytest.raises(InvalidPrivacyParameter, match=r"^epsilon must be in \(0, 100\]; got -1$"):
            ledger.charge(T0, -1, 0.0, "discrete-laplace")


def test_charge_rejects_empty_mechanism(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        with pytest.raises(InvalidPrivacyParameter) as excinfo:
            ledger.charge(T0, 0.1, 0.0, "")

    assert excinfo.value.name == "mechanism"


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"budget_epsilon": 0}, "budget_epsilon"),
        ({"budget_epsilon": float("inf")}, "budget_epsilon"),
        ({"budget_delta": 1.0}, "budget_delta"),
        ({"period_seconds": 0}, "period_seconds"),
        ({"site_id": ""}, "site_id"),
        ({"value_discretization_interval": 0}, "value_discretization_interval"),
    ],
)
def test_ledger_rejects_bad_settings(ledger_path: Path, overrides: dict[str, object], name: str) -> None:
    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        open_ledger(ledger_path, **overrides)

    assert excinfo.value.name == name


def test_ledger_rejects_unknown_schema_version(ledger_path: Path) -> None:
    open_ledger(ledger_path).close()
    with closing(sqlite3.connect(ledger_path)) as conn:
        conn.execute("PRAGMA user_version = 7")

    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        open_ledger(ledger_path)

    assert excinfo.value.value == 7


def test_period_shorter_than_a_day_named_in_seconds(ledger_path: Path) -> None:
    with open_ledger(ledger_path, period_seconds=3600) as ledger:
        ledger.charge(T0, 0.8, 0.0, "discrete-laplace")

        with pytest.raises(BudgetExhausted) as excinfo:
            ledger.charge(T0 + timedelta(minutes=30), 0.5, 0.0, "discrete-laplace")

    assert "left in the 3600-second period" in str(excinfo.value)
    assert excinfo.value.retry_at == T0 + HOUR


def test_repr_names_site_and_budget(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        text = repr(ledger)

    assert "site_id='site-a'" in text
    assert "budget_epsilon=1.0" in text


def test_epoch_seconds_equal_datetime(ledger_path: Path) -> None:
    epoch = int(T0.timestamp())
    with open_ledger(ledger_path) as ledger:
        by_int = ledger.charge(epoch, 0.4, 0.0, "discrete-laplace")
        by_datetime = ledger.charge(T0, 0.4, 0.0, "discrete-laplace")
        spent = ledger.spent(epoch)

    assert by_int == by_datetime == spent
    assert count_rows(ledger_path) == 1


def test_is_charged_reports_recorded_rounds(ledger_path: Path) -> None:
    with open_ledger(ledger_path) as ledger:
        ledger.charge(T0, 0.4, 0.0, "discrete-laplace")

        charged = ledger.is_charged(T0)
        charged_by_epoch = ledger.is_charged(int(T0.timestamp()))
        other = ledger.is_charged(T0 + HOUR)

    assert charged
    assert charged_by_epoch
    assert not other


def test_refused_charge_leaves_round_uncharged(ledger_path: Path) -> None:
    with open_ledger(ledger_path, budget_epsilon=0.3) as ledger:
        with pytest.raises(BudgetExhausted):
            ledger.charge(T0, 0.5, 0.0, "discrete-laplace")

        assert not ledger.is_charged(T0)
