"""``fti check-config``: YAML 1.1 traps, duplicate keys and tabs in agent and hub files.

The three files of field case 017 are checked as written, then again in the real agent and
hub schemas, one test per expected value of the case.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fti.check_config import ConfigKindUnknown, check_config_file, detect_kind

# Field case 017, copied verbatim: a.yaml, b.yaml and c.yaml (the third line starts with a tab).
CASE_A = """\
agent:
  sources:
    - path: /var/log/auth.log
      type: sshd
  report_countries:     # ISO 3166 codes to report on
    - se
    - no
    - dk
  verify_tls: off
privacy:
  epsilon: 1e-3
  delta: 0.00001
"""
CASE_B = """\
hub:
  url: https://hub-a.example.org/taxii2/
  collection: 0e5f2a5c-4b6f-4d8e-9c3b-1a2b3c4d5e6f
privacy:
  epsilon: 0.5
hub:
  url: https://hub-b.example.org/taxii2/
"""
CASE_C = "agent:\n  sources:\n\t- path: /var/log/suricata/eve.json\n"

# The same traps in a real agent configuration: "no" is item [1] on line 7, "off" sits in a
# boolean field and the exponent float is on line 18.
AGENT = """\
state_dir: state
site:
  id: site-a
  signing_key: site.key
  internal_domains:     # the site's own DNS zones
    - se
    - no
    - dk
hub:
  verify_tls: off
  url: http://127.0.0.1:8443/taxii2/
  username: site-a
  password_file: hub.password
sources:
  - type: zeek
    paths: [conn.log]
privacy:
  epsilon_per_round: 1e-3
"""

HUB = """\
hub:
  name: consortium-hub
  api_root: fti
rounds:
  quorum_sites: 3
fusion:
  publish_threshold: 5e-1
"""

FTI = [sys.executable, "-m", "fti.cli"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run_check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FTI, "check-config", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def test_case_a_norway_names_index_and_line(tmp_path: Path) -> None:
    result = check_config_file(write(tmp_path, "a.yaml", CASE_A))

    assert result.kind == "agent"
    assert result.problem is not None
    assert result.problem.key == "agent.report_countries[1]"
    assert result.problem.line == 7
    assert result.problem.value is False
    assert 'quote it: "no"' in result.problem.message


def test_case_b_duplicate_hub_names_both_lines(tmp_path: Path) -> None:
    result = check_config_file(write(tmp_path, "b.yaml", CASE_B))

    assert result.problem is not None
    assert result.problem.key == "hub"
    assert result.problem.line == 6
    assert "duplicate key (first given on line 1)" in result.problem.message


def test_case_b_as_hub_duplicate_names_both_lines(tmp_path: Path) -> None:
    result = check_config_file(write(tmp_path, "b.yaml", CASE_B), kind="hub")

    assert result.problem is not None
    assert result.problem.key == "hub"
    assert result.problem.line == 6
    assert "duplicate key (first defined at line 1)" in result.problem.message


def test_case_c_tab_names_line_and_column(tmp_path: Path) -> None:
    result = check_config_file(write(tmp_path, "c.yaml", CASE_C))

    assert result.problem is not None
    assert (result.problem.line, result.problem.column) == (3, 1)
    assert "tab" in result.problem.message
    assert str(result.problem).startswith(f"{tmp_path / 'c.yaml'}:3:1: ")


@pytest.mark.parametrize(("name", "text"), [("a.yaml", CASE_A), ("b.yaml", CASE_B), ("c.yaml", CASE_C)])
def test_cli_case_files_fail_without_traceback(tmp_path: Path, name: str, text: str) -> None:
    write(tmp_path, name, text)

    result = run_check(name, cwd=tmp_path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"fti check-config: {name}:")
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_agent_norway_in_string_list_rejected(tmp_path: Path) -> None:
    result = check_config_file(write(tmp_path, "agent.yaml", AGENT))

    assert result.problem is not None
    assert result.problem.key == "site.internal_domains[1]"
    assert (result.problem.line, result.problem.column) == (7, 7)
    assert 'quote it: "no"' in result.problem.message


def test_agent_off_in_boolean_field_accepted(tmp_path: Path) -> None:
    text = AGENT.replace("    - no\n", '    - "no"\n').replace("1e-3", "1.0e-3")

    result = check_config_file(write(tmp_path, "agent.yaml", text))

    assert result.ok, result.problem


def test_agent_exponent_without_dot_rejected_at_line(tmp_path: Path) -> None:
    text = AGENT.replace("    - no\n", '    - "no"\n')

    result = check_config_file(write(tmp_path, "agent.yaml", text))

    assert result.problem is not None
    assert result.problem.key == "privacy.epsilon_per_round"
    assert result.problem.line == 18
    assert result.problem.value == "1e-3"
    assert "1.0e-3" in result.problem.message


def test_agent_unknown_key_rejected(tmp_path: Path) -> None:
    text = AGENT.replace("    - no\n", '    - "no"\n').replace("1e-3", "0.5\n  epsilon: 0.1")

    result = check_config_file(write(tmp_path, "agent.yaml", text))

    assert result.problem is not None
    assert result.problem.key == "privacy.epsilon"
    assert result.problem.line == 19
    assert "epsilon_per_round" in result.problem.message


def test_hub_exponent_without_dot_read_as_float(tmp_path: Path) -> None:
    result = check_config_file(write(tmp_path, "hub.yaml", HUB))

    assert result.kind == "hub"
    assert result.ok, result.problem


def test_hub_norway_in_string_field_suggests_quotes(tmp_path: Path) -> None:
    result = check_config_file(write(tmp_path, "hub.yaml", HUB.replace("consortium-hub", "no")))

    assert result.problem is not None
    assert result.problem.key == "hub.name"
    assert result.problem.line == 2
    assert result.problem.value is False
    assert 'Quote the value (YAML 1.1 reads yes/no/on/off as booleans), for example "no"' in result.problem.message


def test_hub_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    result = check_config_file(write(tmp_path, "hub.yaml", HUB.replace("quorum_sites: 3", 'quorum_sites: "3"')))

    assert result.problem is not None
    assert (result.problem.key, result.problem.line, result.problem.value) == ("rounds.quorum_sites", 5, "3")


def test_detect_kind_needs_help_for_mixed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "mixed.yaml", "site:\n  id: a\nrounds:\n  quorum_sites: 2\n")

    with pytest.raises(ConfigKindUnknown) as excinfo:
        check_config_file(path)

    assert excinfo.value.keys == ["site", "rounds"]
    assert "--kind" in str(excinfo.value)


def test_detect_kind_hub_section_alone_is_hub(tmp_path: Path) -> None:
    assert detect_kind(tmp_path / "x.yaml", "hub:\n  port: 8443\n") == "hub"


def test_cli_valid_files_exit_zero(tmp_path: Path) -> None:
    write(tmp_path, "hub.yaml", HUB)
    write(tmp_path, "agent.yaml", AGENT.replace("    - no\n", '    - "no"\n').replace("1e-3", "0.5"))

    result = run_check("hub.yaml", "agent.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hub.yaml: valid hub configuration", "agent.yaml: valid agent configuration"]


def test_cli_unknown_kind_exits_two(tmp_path: Path) -> None:
    write(tmp_path, "empty.yaml", "")

    result = run_check("empty.yaml", cwd=tmp_path)

    assert result.returncode == 2
    assert "--kind agent or --kind hub" in result.stderr


def test_cli_missing_file_exits_two(tmp_path: Path) -> None:
    result = run_check("absent.yaml", cwd=tmp_path)

    assert result.returncode == 2
    assert "absent.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_agent_live_settings_named_with_fix(tmp_path: Path) -> None:
    """A boolean where start_at needs a word, and metrics on all interfaces, each name key and fix."""
    base = ("site:\n  id: site-a\n  signing_key: site.key\nhub:\n  url: http://127.0.0.1:8443/taxii2/\n"
            "  username: site-a\n  password_file: hub.password\nsources:\n  - type: zeek\n"
            "    paths: [\"conn.log\"]\nstate_dir: state\n")
    write(tmp_path, "start.yaml", base + "live:\n  start_at: no\n")
    write(tmp_path, "metrics.yaml", base + "metrics:\n  address: 0.0.0.0\n")

    start = run_check("start.yaml", cwd=tmp_path)
    metrics = run_check("metrics.yaml", cwd=tmp_path)

    assert start.returncode == 1
    assert "start.yaml:13: live.start_at = False: expected a string; put the value in quotes" in start.stderr
    assert metrics.returncode == 1
    assert "metrics.yaml:13: metrics.address = '0.0.0.0': is not a loopback address" in metrics.stderr
    assert "set metrics.allow_non_loopback: true" in metrics.stderr


def test_sexagesimal_number_rejected_with_value(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", AGENT.replace("    - no\n", "").replace(
        "privacy:\n  epsilon_per_round: 1e-3\n", "windows:\n  round_seconds: 1:00:00\n"))

    result = check_config_file(path)

    assert result.problem is not None
    assert result.problem.key == "windows.round_seconds"
    assert result.problem.line == 17
    assert "base-60 number 3600" in result.problem.message


def test_alias_bomb_rejected_at_first_alias(tmp_path: Path) -> None:
    levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for name, previous in zip("bcdefghij", "abcdefghi"):
        levels.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    path = write(tmp_path, "bomb.yaml", "hub:\n  name: x\n" + "\n".join(levels) + "\n")

    result = check_config_file(path, kind="hub")

    assert result.problem is not None
    assert (result.problem.line, result.problem.column) == (4, 8)
    assert "aliases are not supported" in result.problem.message


def test_deep_nesting_rejected_without_recursion(tmp_path: Path) -> None:
    path = write(tmp_path, "deep.yaml", "state_dir: " + "[" * 100_000 + "]" * 100_000 + "\n")

    result = check_config_file(path)

    assert result.problem is not None
    assert result.problem.line == 1
    assert "nest more than 32 levels" in result.problem.message


def test_huge_file_rejected_before_parsing(tmp_path: Path) -> None:
    path = write(tmp_path, "huge.yaml", HUB + "# " + "x" * (2 * 1024 * 1024) + "\n")

    result = check_config_file(path)

    assert result.problem is not None
    assert "more than the 1048576" in result.problem.message


def test_cli_non_utf8_file_named_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(HUB.encode() + "  name: caf\xe9\n".encode("latin-1"))

    result = run_check("latin1.yaml", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr == "fti check-config: latin1.yaml:8: byte 0xe9 is not valid UTF-8; save the file as UTF-8\n"


AGENT_HUB = "  url: http://127.0.0.1:8443/taxii2/\n  username: site-a\n  password_file: hub.password\n"

def with_hub_url(url: str) -> str:
    return AGENT.replace("http://127.0.0.1:8443/taxii2/", url)


def with_password(value: str) -> str:
    return AGENT.replace("  password_file: hub.password", f"  password: {value}")


# Configurations whose only error sits on a secret; the secret is always S3CRET.
SECRET_LINES = [
    ("agent", with_hub_url("http://site-a:12/S3CRET@127.0.0.1:8443/taxii2/")),
    ("agent", with_hub_url("http://site-a:x?S3CRET@127.0.0.1:8443/taxii2/")),
    ("agent", with_hub_url("http://[::1S3CRET")),
    ("agent", with_password("!!int S3CRET")),
    ("agent", with_password("!!bool S3CRET")),
    ("agent", with_password("*S3CRET")),
    ("agent", AGENT.replace(AGENT_HUB, "  - password: S3CRET\n")),
    ("agent", AGENT.replace("hub:\n  verify_tls: off\n" + AGENT_HUB, "hub: S3CRET\n")),
    ("hub", "siem:\n  elastic_url: https://elastic:12/S3CRET@127.0.0.1:9200/\n"
            "  elastic_api_key_file: key\n"),
    ("hub", "siem:\n  splunk_hec_url: https://x:y#S3CRET@127.0.0.1:8088/\n"
            "  splunk_hec_token_file: token\n"),
    ("hub", "siem:\n  elastic_url: [https://elastic:S3CRET@127.0.0.1:9200/]\n"),
    ("hub", "storage:\n  backend: postgresql\n  postgresql_dsn: !!int S3CRET\n"),
    ("hub", "storage:\n  backend: postgresql\n  postgresql_dsn: !!float S3:CRET\n"),
    ("hub", "storage:\n  - postgresql_dsn: postgresql://fti:S3CRET@127.0.0.1/fti\n"),
    ("hub", "storage: postgresql://fti:S3CRET@127.0.0.1/fti\n"),
    ("hub", "storage:\n  backend: postgresql\n"
            "  postgresql_dsn: postgresql://fti:ab@S3CRET%40127.0.0.1/fti\n"),
    ("hub", "storage:\n  backend: postgresql\n  postgresql_dsn: *S3CRET\n"),
    ("agent", with_hub_url("http:/site-a:S3CRET@127.0.0.1:8443/taxii2/")),
    ("agent", with_hub_url("!!set {http://u:S3CRET@127.0.0.1:8443/taxii2/}")),
    ("agent", with_password("[!!int S3CRET]")),
    ("agent", with_password("!a%22b'S3CRET x")),
    ("agent", with_password("!!timestamp S3CRET")),
    ("hub", "siem:\n  elastic_url: //elastic:S3CRET@127.0.0.1:9200/\n"
            "  elastic_api_key_file: key\n"),
    ("hub", "storage:\n  backend: postgresql://fti:S3CRET@127.0.0.1/fti\n"),
    ("hub", "storage:\n  postgresql_dsn: [!x 1, postgresql://fti:S3CRET@127.0.0.1/fti]\n"),
    ("hub", "hub:\n  name: x\x01\nstorage:\n  postgresql_dsn: S3CRET\n"),
]


# Secrets that YAML reads as numbers, which the number checks must not repeat either.
NUMBER_SECRETS = [
    ("agent", with_password("[12345678]")),
    ("agent", with_password("12:34.5678")),
    ("hub", "storage:\n  postgresql_dsn: [12345678]\n"),
]


@pytest.mark.parametrize(("kind", "text", "secret"),
                         [(kind, text, "S3CRET") for kind, text in SECRET_LINES]
                         + [(kind, text, "5678") for kind, text in NUMBER_SECRETS])
def test_cli_error_on_secret_line_shows_no_secret(
        tmp_path: Path, kind: str, text: str, secret: str) -> None:
    write(tmp_path, "config.yaml", text)

    result = run_check("--kind", kind, "config.yaml", cwd=tmp_path)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert secret not in result.stdout + result.stderr
