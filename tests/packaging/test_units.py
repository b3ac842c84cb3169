"""The systemd units, sysusers.d and tmpfiles.d entries and default configuration files.

systemd's own tools check them offline: ``systemd-analyze verify`` and ``security`` on the
units, ``systemd-sysusers`` and ``systemd-tmpfiles`` against a scratch root directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.config import HubSection
from fti.check_config import check_config_file
from fusion_hub import server

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
UNITS = ("fti-hub.service", "fti-agent.service")
SYSTEMD_UNITS_DIR = Path("/usr/lib/systemd/system")


def read_unit(name: str) -> dict[str, list[str]]:
    """Return each ``Key=value`` setting of a unit file, values in file order."""
    settings: dict[str, list[str]] = {}
    for line in (PACKAGING / "systemd" / name).read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def make_unit_root(root: Path, units_dir: Path) -> None:
    """Lay out a root where ``systemd-analyze verify --root`` finds the units and commands.

    Verify checks that every command exists, and /opt/fti is not installed on the test host.
    """
    (root / "opt/fti/bin").mkdir(parents=True)
    (root / "opt/fti/bin/fti").write_text("#!/bin/sh\n")
    (root / "opt/fti/bin/fti").chmod(0o755)
    (root / "bin").mkdir()
    shutil.copy2("/bin/kill", root / "bin/kill")
    shutil.copytree(SYSTEMD_UNITS_DIR, root / "usr/lib/systemd/system", symlinks=True)
    shutil.copytree(units_dir, root / "etc/systemd/system")


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", *UNITS],
                          capture_output=True, text=True, timeout=120, check=False)


def exposure(unit: str) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(PACKAGING / "systemd" / unit)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_units_pass_systemd_verify(tmp_path: Path) -> None:
    make_unit_root(tmp_path, PACKAGING / "systemd")

    result = verify(tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_verify_rejects_broken_unit(tmp_path: Path) -> None:
    """The verify test can fail: an unknown Type= is reported."""
    units = tmp_path / "units"
    shutil.copytree(PACKAGING / "systemd", units)
    hub = units / "fti-hub.service"
    hub.write_text(hub.read_text().replace("Type=notify", "Type=notify-please"))
    make_unit_root(tmp_path / "root", units)

    result = verify(tmp_path / "root")

    assert "Failed to parse service type" in result.stderr


def test_agent_unit_exposure_at_most_two() -> None:
    assert exposure("fti-agent.service") <= 2.0


def test_hub_unit_exposure_at_most_two() -> None:
    assert exposure("fti-hub.service") <= 2.0


@pytest.mark.parametrize("unit", ["fti-hub.service", "fti-agent.service"])
def test_units_sandbox_settings(unit: str) -> None:
    settings = read_unit(unit)

    assert settings["User"] == [unit.removesuffix(".service")]
    assert settings["StateDirectory"] == [unit.removesuffix(".service")]
    assert settings["ConfigurationDirectory"] == ["fti"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["PrivateTmp"] == ["yes"]
    assert settings["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert settings["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]


@pytest.mark.parametrize(("unit", "watchdog_secs"), [("fti-hub.service", "60"), ("fti-agent.service", "120")])
def test_unit_is_notify_with_watchdog(unit: str, watchdog_secs: str) -> None:
    settings = read_unit(unit)

    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] == [watchdog_secs]
    assert settings["Restart"] == ["on-failure"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_hub_unit_stop_timeout_covers_graceful_stop() -> None:
    """HubServer.stop waits for three things in turn, each up to its stop timeout."""
    timeout_stop_secs = int(read_unit("fti-hub.service")["TimeoutStopSec"][0])

    assert timeout_stop_secs > 3 * server._STOP_TIMEOUT_SECS


def test_agent_unit_runs_live_agent() -> None:
    agent = read_unit("fti-agent.service")

    assert agent["ExecStart"] == ["/opt/fti/bin/fti agent run --config /etc/fti/agent.yaml"]
    assert agent["SupplementaryGroups"] == ["adm"]
    assert agent["WantedBy"] == ["multi-user.target"]
    assert not (PACKAGING / "systemd" / "fti-agent.timer").exists()


def test_agent_unit_stop_timeout_covers_one_delivery() -> None:
    """A stop waits for one step, whose delivery attempt makes a few requests of hub.timeout_secs."""
    timeout_stop_secs = int(read_unit("fti-agent.service")["TimeoutStopSec"][0])

    assert timeout_stop_secs >= 6 * HubSection.timeout_secs


def test_sysusers_creates_service_users(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/group").write_text("root:x:0:\nadm:x:4:\n")

    result = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(PACKAGING / "sysusers.d/fti.conf")],
                            capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/group").read_text().splitlines()}
    assert passwd["fti-agent"][5] == "/var/lib/fti-agent"
    assert passwd["fti-hub"][5] == "/var/lib/fti-hub"
    assert groups["adm"][3] == "fti-agent"
    assert "fti-hub" in groups


def test_tmpfiles_creates_state_dirs(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/group").write_text("root:x:0:\nadm:x:4:\n")
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(PACKAGING / "sysusers.d/fti.conf")],
                   capture_output=True, text=True, timeout=60, check=True)

    result = subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create",
                             str(PACKAGING / "tmpfiles.d/fti.conf")],
                            capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    for name in ("fti-agent", "fti-hub"):
        state = tmp_path / "var/lib" / name
        assert oct(state.stat().st_mode & 0o777) == "0o750"


@pytest.mark.parametrize(("name", "kind"), [("agent.yaml", "agent"), ("hub.yaml", "hub")])
def test_default_config_passes_check(name: str, kind: str) -> None:
    result = check_config_file(PACKAGING / "etc" / name)

    assert result.ok, result.problem
    assert result.kind == kind
