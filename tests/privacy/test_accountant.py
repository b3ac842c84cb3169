"""Tests for privacy.accountant: PLD composition against exact optimal composition.

For pure epsilon-DP the dominating pair is randomized response, so the privacy loss
of k composed releases is epsilon * (2X - k) with X ~ Binomial(k, e^eps / (1 + e^eps))
(Kairouz, Oh and Viswanath, "The Composition Theorem for Differential Privacy",
ICML 2015). The tests compute the exact epsilon at a target delta from that law.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.fft

import privacy.accountant
from privacy.accountant import NumpyFFTBackend, PrivacyAccountant, build_composed_pld
from privacy.errors import InvalidPrivacyParameter

INTERVAL = 1e-4


def exact_delta(epsilon: float, k: int, at_epsilon: float) -> float:
    """Hockey-stick divergence of k composed randomized responses at ``at_epsilon``."""
    q = math.exp(epsilon) / (1 + math.exp(epsilon))
    total = 0.0
    for i in range(k + 1):
        loss = epsilon * (2 * i - k)
        if loss > at_epsilon:
            total += math.comb(k, i) * q**i * (1 - q) ** (k - i) * (1 - math.exp(at_epsilon - loss))
    return total


def exact_epsilon(epsilon: float, k: int, delta: float) -> float:
    """Smallest epsilon' with exact_delta(epsilon') <= delta, by bisection."""
    low, high = 0.0, k * epsilon
    for _ in range(200):
        middle = (low + high) / 2
        if exact_delta(epsilon, k, middle) > delta:
            low = middle
        else:
            high = middle
    return high


def test_no_events_spend_nothing() -> None:
    assert PrivacyAccountant().get_epsilon(1e-6) == 0.0


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1.0, 2.0])
def test_single_pure_event_gives_its_epsilon(epsilon: float) -> None:
    accountant = PrivacyAccountant()
    accountant.compose(epsilon, 0.0)

    at_delta_zero = accountant.get_epsilon(0.0)
    at_small_delta = accountant.get_epsilon(1e-6)

    assert at_delta_zero == epsilon
    # At delta > 0 randomized response is slightly better than epsilon:
    # epsilon + ln(1 - delta * (1 + e^-epsilon)).
    expected = epsilon + math.log1p(-1e-6 * (1 + math.exp(-epsilon)))
    assert at_small_delta == pytest.approx(expected, abs=1e-9)
    assert at_small_delta <= epsilon


@pytest.mark.parametrize(("epsilon", "k"), [(1.0, 10), (0.5, 100), (0.1, 300)])
def test_pure_events_match_exact_composition(epsilon: float, k: int) -> None:
    accountant = PrivacyAccountant(value_discretization_interval=INTERVAL)
    accountant.compose(epsilon, 0.0, count=k)

    composed = accountant.get_epsilon(1e-6)

    exact = exact_epsilon(epsilon, k, 1e-6)
    # Pessimistic discretisation: not below the exact value (1e-6 allows for
    # floating-point error on both sides), above it by at most one interval per event.
    assert exact - 1e-6 <= composed <= exact + k * INTERVAL
    assert composed <= k * epsilon


def test_many_pure_events_cost_less_than_sum() -> None:
    accountant = PrivacyAccountant()
    accountant.compose(1.0, 0.0, count=100)

    composed = accountant.get_epsilon(1e-6)

    assert composed < 100 * 1.0
    assert composed == pytest.approx(83.5307, abs=1e-3)


def test_pld_beats_advanced_composition_bound() -> None:
    """Dwork, Rothblum and Vadhan (FOCS 2010): sqrt(2k ln(1/d)) eps + k eps (e^eps - 1)."""
    epsilon, k, delta = 0.1, 100, 1e-6
    accountant = PrivacyAccountant()
    accountant.compose(epsilon, count=k)

    composed = accountant.get_epsilon(delta)

    advanced = math.sqrt(2 * k * math.log(1 / delta)) * epsilon + k * epsilon * math.expm1(epsilon)
    assert composed < advanced < k * epsilon


def test_composition_order_does_not_matter() -> None:
    forward = PrivacyAccountant()
    backward = PrivacyAccountant()
    events = [(1.0, 0.0), (0.25, 1e-8), (0.5, 0.0), (0.25, 1e-8)]

    for epsilon, delta in events:
        forward.compose(epsilon, delta)
    for epsilon, delta in reversed(events):
        backward.compose(epsilon, delta)

    assert forward.get_epsilon(1e-6) == backward.get_epsilon(1e-6)
    assert forward.event_count == 4
    assert forward.events == {(1.0, 0.0): 1, (0.25, 1e-8): 2, (0.5, 0.0): 1}


def test_heterogeneous_events_bounded_by_basic_composition() -> None:
    accountant = PrivacyAccountant()
    accountant.compose(1.0)
    accountant.compose(0.5, count=3)

    composed = accountant.get_epsilon(1e-6)

    assert composed <= 2.5
    assert composed > 1.0


def test_event_deltas_consume_target_delta() -> None:
    accountant = PrivacyAccountant()
    accountant.compose(0.5, 2e-7, count=3)

    within = accountant.get_epsilon(1e-6)
    exhausted = accountant.get_epsilon(5e-7)

    assert math.isfinite(within)
    assert within <= 1.5
    assert exhausted == math.inf
    assert accountant.basic_composition() == pytest.approx((1.5, 6e-7))


def test_fallback_uses_basic_composition_and_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing_pld(*args: object, **kwargs: object) -> None:
        raise ValueError("discretization overflow")

    monkeypatch.setattr(privacy.accountant, "build_composed_pld", failing_pld)
    accountant = PrivacyAccountant()
    accountant.compose(0.5, 1e-7, count=4)

    with caplog.at_level(logging.WARNING, logger="privacy.accountant"):
        epsilon = accountant.get_epsilon(1e-6)

    assert epsilon == 2.0
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "using basic composition" in caplog.records[0].getMessage()
    assert "discretization overflow" in caplog.records[0].getMessage()


def test_fallback_infinite_when_deltas_exceed_target(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pld(*args: object, **kwargs: object) -> None:
        raise ArithmeticError("overflow")

    monkeypatch.setattr(privacy.accountant, "build_composed_pld", failing_pld)
    accountant = PrivacyAccountant()
    accountant.compose(0.5, 1e-6, count=2)

    assert accountant.get_epsilon(1e-6) == math.inf


def test_compose_after_query_updates_result() -> None:
    accountant = PrivacyAccountant()
    accountant.compose(1.0)
    first = accountant.get_epsilon(0.0)

    accountant.compose(1.0)

    assert first == 1.0
    assert accountant.get_epsilon(0.0) == 2.0


@pytest.mark.parametrize(
    ("epsilon", "delta", "count", "name"),
    [
        (0.0, 0.0, 1, "epsilon"),
        (-1.0, 0.0, 1, "epsilon"),
        (101.0, 0.0, 1, "epsilon"),
        (1.0, -1e-9, 1, "delta"),
        (1.0, 1.0, 1, "delta"),
        (1.0, 0.0, 0, "count"),
        (1.0, 0.0, 2.0, "count"),
    ],
)
def test_compose_rejects_bad_parameters(epsilon: float, delta: float, count: int, name: str) -> None:
    accountant = PrivacyAccountant()

    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        accountant.compose(epsilon, delta, count=count)

    assert excinfo.value.name == name
    assert accountant.event_count == 0


@pytest.mark.parametrize("target", [-0.1, 1.0, math.nan])
def test_get_epsilon_rejects_bad_target_delta(target: float) -> None:
    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        PrivacyAccountant().get_epsilon(target)

    assert excinfo.value.name == "target_delta"


@pytest.mark.parametrize("interval", [0, -1e-4, 0.5])
def test_rejects_bad_discretization_interval(interval: float) -> None:
    with pytest.raises(InvalidPrivacyParameter):
        PrivacyAccountant(value_discretization_interval=interval)


@pytest.mark.parametrize("events", [
    {(1.0, 1e-6): 10},
    {(1.0, 1e-6): 26},
    {(1.0, 1e-6): 9, (0.5, 1e-7): 3},
    {(0.3, 0.0): 40},
])
def test_numpy_fft_matches_scipy_fft(events: dict[tuple[float, float], int]) -> None:
    """The accountant's numpy.fft backend gives SciPy's epsilon up to rounding."""
    accountant = PrivacyAccountant(value_discretization_interval=INTERVAL)
    for (epsilon, delta), count in events.items():
        accountant.compose(epsilon, delta, count=count)
    with_scipy = build_composed_pld(events, value_discretization_interval=INTERVAL).get_epsilon_for_delta(1e-4)

    with_numpy = accountant.get_epsilon(1e-4)

    assert with_numpy == pytest.approx(with_scipy, rel=0.0, abs=1e-9)


def test_numpy_fft_backend_routes_transforms() -> None:
    signal = np.linspace(0.0, 1.0, 30)

    with scipy.fft.set_backend(NumpyFFTBackend, only=True):
        transformed = scipy.fft.fft(signal, 64)
        with pytest.raises(NotImplementedError):
            scipy.fft.fft(signal, 64, workers=2)
    with scipy.fft.set_backend(NumpyFFTBackend):
        fallen_back = scipy.fft.fft(signal, 64, workers=2)

    assert np.array_equal(transformed, np.fft.fft(signal, 64))
    assert np.allclose(fallen_back, transformed)


def test_accounting_memory_stays_bounded() -> None:
    """Composing windows of many sizes keeps no FFT plans resident.

    SciPy's pocketfft kept the plans of every recent length: about 200 MiB after these 25
    compositions with SciPy 1.17 through ``scipy.fft``.
    """
    code = (
        "from privacy.accountant import PrivacyAccountant\n"
        "def resident_mib():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS'):\n"
        "            return int(line.split()[1]) / 1024\n"
        "PrivacyAccountant().compose(1.0, 1e-6)\n"
        "before = resident_mib()\n"
        "for count in range(2, 27):\n"
        "    accountant = PrivacyAccountant()\n"
        "    accountant.compose(1.0, 1e-6, count=count)\n"
        "    accountant.get_epsilon(1e-4)\n"
        "print(resident_mib() - before)\n"
    )

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)

    assert float(result.stdout) < 64.0
