"""The site's side of secure mode: configuration, budget split and the checks made before sending."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_agent_config
from agent.errors import ConfigError
from agent.secure_round import SecureBudget, SecureRoundAborted, SecureRoundRunner
from privacy.random import seeded_random
from tests.agent.test_config import VALID, write


def secure_config(tmp_path: Path, extra: str = "") -> Any:
    return load_agent_config(write(tmp_path, VALID + "  mode: secure\n" + extra))


def round_state(**changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"site_ids": ["site-a", "site-b", "site-c"], "threshold": 3, "vector_length": 42,
                             "sketch_rows": 2, "sketch_width": 16}
    state.update(changes)
    return state


def test_secure_mode_loads_with_defaults(tmp_path: Path) -> None:
    privacy = secure_config(tmp_path).privacy

    assert (privacy.mode, privacy.secure_min_sites, privacy.secure_stage_timeout_secs) == ("secure", 3, 300.0)


@pytest.mark.parametrize(("extra", "key"), [
    ("  mode: hidden\n", "privacy.mode"),
    ("  secure_min_sites: 1\n", "privacy.secure_min_sites"),
    ("  secure_stage_timeout_secs: 0\n", "privacy.secure_stage_timeout_secs"),
])
def test_secure_settings_rejected_with_key(tmp_path: Path, extra: str, key: str) -> None:
    text = VALID + extra if "mode" in extra else VALID + "  mode: secure\n" + extra

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert excinfo.value.key == key


def test_secure_budget_split_adds_up() -> None:
    budget = SecureBudget.split(epsilon=1.0, delta=3e-6, histogram_share=0.2, count_share=0.5, score_share=0.3)

    total = budget.histogram_epsilon + budget.sketch_epsilon + budget.reveal_epsilon + budget.score_epsilon
    assert math.isclose(total, 1.0)
    assert math.isclose(3 * budget.part_delta, 3e-6)


def test_round_with_low_threshold_refused(tmp_path: Path) -> None:
    """A site leaves a round whose threshold is below the sites its noise assumes."""
    runner = SecureRoundRunner(secure_config(tmp_path), "", rng=seeded_random(0), charge=None)

    with pytest.raises(SecureRoundAborted, match="below privacy.secure_min_sites"):
        runner._check_round("2024-06-03T00:00:00.000Z", round_state(threshold=2))


def test_round_without_site_refused(tmp_path: Path) -> None:
    runner = SecureRoundRunner(secure_config(tmp_path), "", rng=seeded_random(0), charge=None)

    with pytest.raises(SecureRoundAborted, match="not invited"):
        runner._check_round("2024-06-03T00:00:00.000Z", round_state(site_ids=["site-b", "site-c", "site-d"]))


def test_round_with_wrong_layout_refused(tmp_path: Path) -> None:
    runner = SecureRoundRunner(secure_config(tmp_path), "", rng=seeded_random(0), charge=None)

    with pytest.raises(SecureRoundAborted, match="vector length"):
        runner._check_round("2024-06-03T00:00:00.000Z", round_state(vector_length=43))
