"""Build the Debian package, check it with lintian and install it into a clean Debian root.

The root comes from debootstrap (minbase plus python3) on the same Debian mirror that apt
uses on this machine, made once per run while the package builds. Building needs PyPI;
debootstrap, lintian and chroot need root and Debian's packages, which .ci/run installs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)  # type: ignore[union-attr]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def debian_mirror() -> str:
    """Return the first Debian archive URL in apt's sources (one-line or deb822 format)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            urls = re.findall(r"https?://\S+/debian/?(?=\s|$)", line.split("#", 1)[0])
            if urls:
                return urls[0]
    raise AssertionError("no Debian mirror in /etc/apt/sources.list*; debootstrap needs one")


def debian_codename() -> str:
    release = Path("/etc/os-release").read_text(encoding="utf-8")
    return re.search(r"^VERSION_CODENAME=(\S+)", release, re.M).group(1)  # type: ignore[union-attr]


def chroot(root: Path, *command: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    userspec = []
    if user is not None:
        # Numeric ids: the name exists only in the root's /etc/passwd, not the host's.
        entry = next(line.split(":") for line in (root / "etc/passwd").read_text().splitlines()
                     if line.startswith(f"{user}:"))
        userspec = [f"--userspec={entry[2]}:{entry[3]}"]
    return subprocess.run(["chroot", *userspec, str(root), *command], capture_output=True, text=True,
                          timeout=900, check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})


@pytest.fixture(scope="module")
def package_and_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """Build the package while debootstrap makes the root; both take minutes."""
    work = tmp_path_factory.mktemp("deb")
    root = work / "root"
    bootstrap = subprocess.Popen(
        ["debootstrap", "--variant=minbase", "--include=python3", debian_codename(), str(root), debian_mirror()],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        build = subprocess.run(["make", "deb", f"DIST={work / 'dist'}"], cwd=REPO, capture_output=True,
                               text=True, timeout=2400, check=False)
        bootstrap_log, _ = bootstrap.communicate(timeout=1200)
    finally:
        if bootstrap.poll() is None:
            bootstrap.kill()
            bootstrap.communicate()
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert bootstrap.returncode == 0, bootstrap_log[-3000:]
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    yield work / "dist" / f"fti_{VERSION}_{arch}.deb", root
    shutil.rmtree(root, ignore_errors=True)


def test_lintian_reports_no_error(package_and_root: tuple[Path, Path]) -> None:
    deb, _ = package_and_root

    result = subprocess.run(["lintian", "--fail-on", "error", str(deb)], capture_output=True, text=True,
                            timeout=1800, check=False)

    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert errors == []
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_package_installs_and_runs_in_clean_root(package_and_root: tuple[Path, Path]) -> None:
    deb, root = package_and_root
    shutil.copy2(deb, root / "tmp" / deb.name)

    installed = chroot(root, "dpkg", "-i", f"/tmp/{deb.name}")
    version = chroot(root, "fti", "--version")
    check = chroot(root, "fti", "check-config", "/etc/fti/agent.yaml", user="fti-agent")
    check_hub = chroot(root, "fti", "check-config", "/etc/fti/hub.yaml", user="fti-hub")
    imports = chroot(root, "/opt/fti/bin/python3", "-c", "import numpy, sklearn, pyod, nacl, argon2, waitress, "
                     "stix2validator, agent.service, fusion_hub.server; print('ok')")
    conffiles = chroot(root, "dpkg-query", "--showformat=${Conffiles}", "--show", "fti")
    agent_id = chroot(root, "id", "-nG", "fti-agent")

    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert version.stdout.strip() == f"fti {VERSION}"
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "/etc/fti/agent.yaml: valid agent configuration"
    assert check_hub.stdout.strip() == "/etc/fti/hub.yaml: valid hub configuration"
    assert imports.stdout.strip() == "ok", imports.stderr
    assert re.findall(r"^ (\S+) [0-9a-f]{32}$", conffiles.stdout, re.M) == ["/etc/fti/agent.yaml",
                                                                            "/etc/fti/hub.yaml"]
    assert agent_id.stdout.split() == ["fti-agent", "adm"]
    assert oct((root / "etc/fti/hub.yaml").stat().st_mode & 0o777) == "0o640"
    assert (root / "var/lib/fti-hub").is_dir()
    # Installing enables and starts nothing.
    assert list((root / "etc/systemd/system").rglob("fti-*")) == []


def test_package_check_config_rejects_bad_file_in_root(package_and_root: tuple[Path, Path]) -> None:
    _, root = package_and_root
    if not (root / "opt/fti/bin/fti").exists():
        pytest.fail("the package is not installed; see test_package_installs_and_runs_in_clean_root")
    (root / "tmp/bad.yaml").write_text("hub:\n  name: fti\nhub:\n  port: 8443\n")

    result = chroot(root, "fti", "check-config", "/tmp/bad.yaml")

    assert result.returncode == 1
    assert result.stderr.strip() == ("fti check-config: /tmp/bad.yaml:3: hub: is a duplicate key (first defined at "
                                     "line 1). Keep one definition and merge the settings into it")


def test_package_purge_removes_state(package_and_root: tuple[Path, Path]) -> None:
    _, root = package_and_root
    if not (root / "opt/fti/bin/fti").exists():
        pytest.fail("the package is not installed; see test_package_installs_and_runs_in_clean_root")

    purged = chroot(root, "dpkg", "--purge", "fti")

    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not (root / "opt/fti").exists()
    assert not (root / "var/lib/fti-hub").exists()
    assert not (root / "etc/fti").exists()
    assert not (root / "usr/bin/fti").exists()
