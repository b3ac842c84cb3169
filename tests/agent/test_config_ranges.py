"""Agent configuration: values of the right type that would fail at run time.

Without a range check each of these values breaks `fti agent run` with a traceback, a hang, or
a round charged to the ledger but never sent. The loader must reject it with the key, the value
and the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.config import load_agent_config
from agent.errors import ConfigError

BASE = {
    "site": {"id": "site-a", "signing_key": "site.key"},
    "hub": {"url": "http://127.0.0.1:8443/taxii2/", "username": "site-a", "password_file": "hub.password"},
    "sources": [{"type": "zeek", "paths": ["conn.log"]}],
    "state_dir": "state",
}


def write(tmp_path: Path, section: str, key: str, value: object) -> Path:
    config = {name: (dict(body) if isinstance(body, dict) else body) for name, body in BASE.items()}
    config.setdefault(section, {})[key] = value
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


CASES = [
    # (section, key, value, words the message must contain)
    ("site", "id", "bad id/../x", "letters, digits"),
    ("site", "id", "", "letters, digits"),
    ("hub", "url", "not a url", "http://"),
    ("hub", "url", "ftp://127.0.0.1/taxii2/", "http://"),
    ("hub", "url", "http://127.0.0.1:99999/taxii2/", "port"),
    ("hub", "timeout_secs", -1.0, "> 0"),
    ("hub", "timeout_secs", float("nan"), "> 0"),
    ("hub", "max_send_attempts", 0, "[1, 10]"),
    ("hub", "max_send_attempts", 10**12, "[1, 10]"),
    ("hub", "retry_backoff_secs", -5.0, "[0, 60]"),
    ("hub", "name", " ", "the hub's hub.name"),
    ("windows", "round_seconds", 60 * 10**15, "at most"),
    ("windows", "window_seconds", 10**12, "at most"),
    ("detector", "random_state", -1, "[0, 4294967295]"),
    ("privacy", "period_days", 10**9, "[1, 3660]"),
    ("privacy", "score_share", float("nan"), "add up to 1"),
    ("privacy", "delta_per_round", 5e-3, "privacy.budget_delta"),
    ("privacy", "epsilon_per_round", 10.0, "privacy.budget_epsilon"),
    ("live", "poll_interval_secs", 0.0, "> 0 and at most 60"),
    ("live", "poll_interval_secs", float("inf"), "> 0 and at most 60"),
    ("live", "round_grace_secs", -1, "[0, 3600]"),
    ("live", "start_at", "middle", "choose one of beginning, end"),
    ("live", "restart_horizon_rounds", 0, ">= 1"),
    ("live", "commit_interval_secs", 0.0, "> 0"),
    ("live", "rotate_wait_secs", -1.0, ">= 0"),
    ("live", "max_poll_bytes", 0, "[4096, 1073741824] bytes"),
    ("live", "max_poll_bytes", 1 << 31, "[4096, 1073741824] bytes"),
    ("outbox", "max_summaries", 0, "[1, 100000]"),
    ("metrics", "address", "localhost", "IP address"),
    ("metrics", "address", "0.0.0.0", "metrics.allow_non_loopback: true"),
    ("metrics", "address", "192.0.2.7", "not a loopback address"),
    ("metrics", "port", 70000, "[0, 65535]"),
]


@pytest.mark.parametrize(("section", "key", "value", "words"), CASES,
                         ids=[f"{s}.{k}={v!r}" for s, k, v, _ in CASES])
def test_out_of_range_value_is_rejected(tmp_path: Path, section: str, key: str, value: object,
                                        words: str) -> None:
    path = write(tmp_path, section, key, value)
    # The two per-round values are checked against a budget smaller than the default.
    budgets = {"epsilon_per_round": "  budget_epsilon: 5.0\n", "delta_per_round": "  budget_delta: 1.0e-3\n"}
    if section == "privacy" and key in budgets:
        text = path.read_text(encoding="utf-8").replace("privacy:\n", "privacy:\n" + budgets[key])
        path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(path)

    assert excinfo.value.key == f"{section}.{key}"
    assert words in str(excinfo.value)


def test_range_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "hub", "max_send_attempts", 0)
    line = next(number for number, text in enumerate(path.read_text().splitlines(), start=1)
                if "max_send_attempts" in text)

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(path)

    assert excinfo.value.line == line
    assert str(excinfo.value).startswith(f"{path}:{line}: hub.max_send_attempts = 0: ")


def test_missing_password_file_names_the_key(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, "hub", "password_file", "missing.password"))

    with pytest.raises(ConfigError) as excinfo:
        config.read_hub_password()

    assert excinfo.value.key == "hub.password_file"
    assert "missing.password" in str(excinfo.value)
    assert "No such file" in str(excinfo.value)


def test_live_defaults_apply_without_sections(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, "site", "id", "site-a"))

    assert config.live.poll_interval_secs == 1.0
    assert config.live.round_grace_secs == 300
    assert config.live.start_at == "beginning"
    assert config.live.restart_horizon_rounds == 24
    assert config.outbox.max_summaries == 168
    assert config.metrics.enabled is True
    assert config.metrics.address == "127.0.0.1"
    assert config.metrics.port == 9477


@pytest.mark.parametrize("address", ["0.0.0.0", "::"])
def test_non_loopback_metrics_allowed_when_explicit(tmp_path: Path, address: str) -> None:
    path = write(tmp_path, "metrics", "address", address)
    text = path.read_text(encoding="utf-8").replace("metrics:\n", "metrics:\n  allow_non_loopback: true\n")
    path.write_text(text, encoding="utf-8")

    config = load_agent_config(path)

    assert config.metrics.address == address
