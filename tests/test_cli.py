"""The fti command as an operator runs it: real processes, real files, a hub on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fti.cli import build_parser, main
from tests.agent.test_service import ROUND_SECONDS, write_capture

FTI = [sys.executable, "-m", "fti.cli"]


def run_fti(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FTI, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_keys_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    first = run_fti("keys", "generate", "--out", "site.key", cwd=tmp_path)
    second = run_fti("keys", "generate", "--out", "site.key", cwd=tmp_path)

    assert first.returncode == 0
    assert len(first.stdout.strip()) == 44  # base64 of a 32-byte Ed25519 public key
    assert oct((tmp_path / "site.key").stat().st_mode & 0o777) == "0o600"
    assert second.returncode == 2
    assert "--force" in second.stderr


def test_agent_run_live_missing_config_named(tmp_path: Path) -> None:
    result = run_fti("agent", "run", "--config", "agent.yaml", cwd=tmp_path)

    assert result.returncode == 2
    assert "agent.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_agent_run_bad_config_names_key(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text("site:\n  id: a\n  signing_key: k\n  colour: red\n")

    result = run_fti("agent", "run", "--config", "agent.yaml", "--once", cwd=tmp_path)

    assert result.returncode == 2
    assert "site.colour" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("source_type", "text", "reason"), [
    ("zeek", "#fields\tts\tuid\n#types\ttime\tstring\nnot a time\tC1\n", "invalid_value:ts 1"),
    ("sshd", "\x00\x00\x00\x00\n" * 3, "3"),
])
def test_agent_run_once_all_lines_malformed_fails(tmp_path: Path, source_type: str, text: str, reason: str) -> None:
    """A replay whose every line is unreadable says so and exits 4 instead of reporting success."""
    run_fti("keys", "generate", "--out", "site.key", cwd=tmp_path)
    (tmp_path / "input.log").write_text(text, encoding="utf-8")
    (tmp_path / "agent.yaml").write_text(
        "site:\n  id: site-t\n  signing_key: site.key\n"
        "hub:\n  url: http://127.0.0.1:9/taxii2/\n  username: site-t\n  password_file: hub.password\n"
        f"sources:\n  - type: {source_type}\n    paths: [input.log]\nstate_dir: state\n"
    )
    (tmp_path / "hub.password").write_text("unused\n")

    result = run_fti("agent", "run", "--config", "agent.yaml", "--once", "--no-poll", cwd=tmp_path)

    assert result.returncode == 4, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("fti agent run: none of the ")
    assert reason in message
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["connections"] == 0


@pytest.mark.parametrize(("argv", "expected"), [
    (["--log-level", "debug", "hub", "sites", "--config", "hub.yaml"], "debug"),
    (["hub", "sites", "--config", "hub.yaml", "--log-level", "error"], "error"),
    (["--log-level", "debug", "demo", "--log-level", "error"], "error"),
    (["agent", "parse", "--source-type", "zeek", "conn.log", "--log-level", "warning"], "warning"),
    (["hub", "sites", "--config", "hub.yaml"], None),
])
def test_log_level_before_or_after_command(argv: list[str], expected: str | None) -> None:
    assert build_parser().parse_args(argv).log_level == expected


@pytest.mark.slow
def test_hub_serve_and_agent_once_end_to_end(tmp_path: Path) -> None:
    hub_dir, site_dir = tmp_path / "hub", tmp_path / "site"
    hub_dir.mkdir()
    site_dir.mkdir()
    (hub_dir / "hub.yaml").write_text(
        "hub:\n  port: 0\nstorage:\n  path: hub.sqlite3\n"
        f"rounds:\n  round_seconds: {ROUND_SECONDS}\n  quorum_sites: 1\n  retention_days: 100000\n"
    )
    public_key = run_fti("keys", "generate", "--out", "site.key", cwd=site_dir).stdout.strip()
    enrolled = run_fti("hub", "enroll", "--config", "hub.yaml", "--site", "site-t", "--public-key", public_key,
                       cwd=hub_dir)
    password = enrolled.stdout.rsplit(":", 1)[1].strip()
    (site_dir / "hub.password").write_text(password + "\n")
    write_capture(site_dir / "conn.log")

    hub = subprocess.Popen([*FTI, "hub", "serve", "--config", "hub.yaml"], cwd=hub_dir, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        banner = hub.stdout.readline() if hub.stdout else ""
        url = banner.split(" at ", 1)[1].split(" ", 1)[0]
        (site_dir / "agent.yaml").write_text(
            "site:\n  id: site-t\n  signing_key: site.key\n"
            f"hub:\n  url: {url}\n  username: site-t\n  password_file: hub.password\n"
            "sources:\n  - type: zeek\n    paths: [conn.log]\nstate_dir: state\n"
            f"windows:\n  window_seconds: 60\n  round_seconds: {ROUND_SECONDS}\n"
            "detector:\n  name: ecod\n  baseline_rounds: 1\n"
            "privacy:\n  epsilon_per_round: 2.0\n  max_observables_per_entity: 2\n"
        )
        agent = run_fti("agent", "run", "--config", "agent.yaml", "--once", cwd=site_dir)
        budget = run_fti("agent", "budget", "--config", "agent.yaml", "--at", "2024-06-03T01:00:00Z", cwd=site_dir)
    finally:
        hub.send_signal(signal.SIGTERM)
        hub_status = hub.wait(timeout=30)
        if hub.stdout:
            hub.stdout.close()
        hub_log = hub.stderr.read() if hub.stderr else ""
        if hub.stderr:
            hub.stderr.close()

    assert enrolled.returncode == 0
    assert agent.returncode == 0, agent.stderr
    summary = json.loads(agent.stdout.strip().splitlines()[-1])
    assert summary["rounds"] == {"sent": 3}
    assert summary["delivered"] == 3
    assert summary["pending"] == 0
    assert json.loads(budget.stdout)["rounds_charged"] == 3
    assert hub_status == 0
    assert "stopping" in hub_log
    assert password not in hub_log


@pytest.mark.parametrize(("value", "message"), [
    ("yesterday", "invalid ISO 8601 time 'yesterday'"),
    ("2024-06-04T00:00:00", "has no UTC offset; add Z or +00:00"),
])
def test_agent_budget_bad_time_named(value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        build_parser().parse_args(["agent", "budget", "--config", "agent.yaml", "--at", value])

    assert excinfo.value.code == 2
    assert message in capsys.readouterr().err


def test_agent_budget_time_parsed() -> None:
    args = build_parser().parse_args(["agent", "budget", "--config", "agent.yaml", "--at", "2024-06-03T01:00:00Z"])

    assert args.at.isoformat() == "2024-06-03T01:00:00+00:00"


def test_agent_budget_next_round_not_fitting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not exhausted, yet the next round's epsilon no longer fits: the agent stops releasing."""
    from privacy.ledger import PrivacyLedger

    run_fti("keys", "generate", "--out", "site.key", cwd=tmp_path)
    (tmp_path / "hub.password").write_text("secret\n")
    (tmp_path / "agent.yaml").write_text(
        "site:\n  id: site-t\n  signing_key: site.key\n"
        "hub:\n  url: http://127.0.0.1:9/taxii2/\n  username: site-t\n  password_file: hub.password\n"
        "sources:\n  - type: zeek\n    paths: [conn.log]\nstate_dir: state\n"
        "windows:\n  window_seconds: 60\n  round_seconds: 3600\n"
        "privacy:\n  epsilon_per_round: 2.0\n  budget_epsilon: 5.0\n"
    )
    (tmp_path / "state").mkdir()
    ledger = PrivacyLedger(tmp_path / "state" / "privacy-ledger.sqlite", site_id="site-t", budget_epsilon=5.0,
                           budget_delta=1e-6, period_seconds=30 * 86400)
    for hour in range(2):
        ledger.charge(1717372800 + hour * 3600, 2.0, 0.0, "discrete-laplace/entity")
    ledger.close()

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        status = main(["agent", "budget", "--config", "agent.yaml", "--at", "2024-06-03T01:30:00Z"])
    report = json.loads(capsys.readouterr().out)

    assert status == 0
    assert report["rounds_charged"] == 2
    assert report["exhausted"] is False
    assert report["next_round_start"] == "2024-06-03T02:00:00+00:00"
    assert report["next_round_fits"] is False
    assert report["next_round_fits_from"] == "2024-07-03T00:00:00+00:00"
