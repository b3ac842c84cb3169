"""Fixed inputs for the stix_mappings tests: one round summary and one fused indicator."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from stix_mappings.indicator import build_fused_indicator, hub_identity
from stix_mappings.summary import build_summary

ROUND_START = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
ROUND_END = ROUND_START + timedelta(minutes=5)


def make_summary_fields() -> dict[str, Any]:
    """Return build_summary arguments of a valid round of site-a."""
    return {
        "site": "site-a",
        "round_start": ROUND_START,
        "round_end": ROUND_END,
        "families": [
            {
                "family": "network",
                "detector": {"name": "iforest", "version": "1.4.2"},
                "feature_schema_version": "1",
                "score_histogram": {
                    "bin_edges": [i / 10 for i in range(11)],
                    "noised_counts": [40, 22, 13, 9, 5, 2, 0, -1, 3, 4],
                },
                "noised_window_count": 97,
            },
        ],
        "evidence": [
            {
                "family": "network",
                "observable_type": "ipv4-addr",
                "value": "203.0.113.5",
                "noised_entity_count": 6,
                "noised_mean_score": 0.91,
                "first_seen": ROUND_START + timedelta(minutes=1),
                "last_seen": ROUND_START + timedelta(minutes=4),
            },
            {
                "family": "network",
                "observable_type": "domain-name",
                "value": "Login.Example.ORG",
                "noised_entity_count": 5,
                "noised_mean_score": 0.75,
                "first_seen": ROUND_START,
                "last_seen": ROUND_END,
            },
        ],
        "privacy": {
            "unit": "entity",
            "mechanism": "discrete-laplace",
            "epsilon": 1.0,
            "delta": 1e-6,
            "partition_threshold": 5,
            "max_observables_per_entity": 8,
            "max_windows_per_entity": 12,
            "epsilon_spent_in_period": 3.0,
            "epsilon_budget": 10.0,
            "period_days": 30,
        },
    }


@pytest.fixture
def summary_fields() -> dict[str, Any]:
    return make_summary_fields()


@pytest.fixture
def valid_summary() -> dict[str, Any]:
    return build_summary(**make_summary_fields())


@pytest.fixture
def hub() -> dict[str, Any]:
    return hub_identity("hub-1")


def _indicator(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "observable_type": "ipv4-addr",
        "value": "203.0.113.5",
        "fused_score": 0.734,
        "corroborating_sites": 2,
        "strategy": "noisy-or",
        "round_start": ROUND_START,
        "valid_from": ROUND_END,
        "valid_until": ROUND_END + timedelta(hours=24),
        "created": ROUND_END,
        "modified": ROUND_END + timedelta(seconds=1, microseconds=250_000),
        "hub_identity": hub_identity("hub-1"),
    }
    arguments.update(overrides)
    return build_fused_indicator(**arguments)


@pytest.fixture
def make_indicator() -> Callable[..., dict[str, Any]]:
    """Return a builder of the fixed indicator with some arguments replaced."""
    return _indicator


@pytest.fixture
def fused_indicator() -> dict[str, Any]:
    return _indicator()
