"""Agent configuration: typed loading and errors that name file, line, key, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_agent_config
from agent.errors import ConfigError

VALID = """\
site:
  id: site-a
  signing_key: keys/site.key
hub:
  url: http://127.0.0.1:8443/taxii2/
  username: site-a
  password_file: hub.password
sources:
  - type: zeek
    paths: [logs/conn.log]
state_dir: state
privacy:
  epsilon_per_round: 0.5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_resolves_relative_paths(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, VALID))

    assert config.site.signing_key == (tmp_path / "keys" / "site.key").resolve()
    assert config.sources[0].paths == (str(tmp_path.resolve() / "logs" / "conn.log"),)
    assert config.state_dir == (tmp_path / "state").resolve()
    assert config.privacy.epsilon_per_round == 0.5
    assert config.privacy.unit == "entity"


def test_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    text = VALID + "hub:\n  url: http://127.0.0.1:1/taxii2/\n  username: x\n"

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert excinfo.value.key == "hub"
    assert excinfo.value.line == 14
    assert "first given on line 4" in str(excinfo.value)


def test_tab_indentation_is_rejected_with_line(tmp_path: Path) -> None:
    text = VALID.replace("  epsilon_per_round", "\tepsilon_per_round")

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert excinfo.value.line == 13
    assert "indent with spaces" in str(excinfo.value)


def test_unknown_key_lists_allowed_keys(tmp_path: Path) -> None:
    text = VALID.replace("  epsilon_per_round: 0.5", "  epsilon_per_rnd: 0.5")

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert excinfo.value.key == "privacy.epsilon_per_rnd"
    assert excinfo.value.line == 13
    assert "epsilon_per_round" in str(excinfo.value)


@pytest.mark.parametrize("line", ["  pasword: hunter2SECRET", "  password: [hunter2SECRET]",
                                  "  password: {a: hunter2SECRET}"])
def test_password_never_shown_in_errors(tmp_path: Path, line: str) -> None:
    text = VALID.replace("  password_file: hub.password", line)

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert excinfo.value.key.startswith("hub.pas")
    assert "SECRET" not in str(excinfo.value)


@pytest.mark.parametrize("value", ["@TopSECRET42", "`TopSECRET42", "%TopSECRET42",
                                   "{TopSECRET42", "*TopSECRET42", "!TopSECRET42 x",
                                   "Top: SECRET42", "'TopSECRET42"])
def test_yaml_error_hides_password_line(tmp_path: Path, value: str) -> None:
    text = VALID.replace("  password_file: hub.password", f"  password: {value}")

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert "invalid YAML" in str(excinfo.value)
    assert excinfo.value.line >= 7
    assert "SECRET" not in str(excinfo.value)


def test_hub_url_with_credentials_rejected_masked(tmp_path: Path) -> None:
    text = VALID.replace("http://127.0.0.1:8443/taxii2/",
                         "http://site-a:TopSECRET42@127.0.0.1:8443/taxii2/")

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert excinfo.value.key == "hub.url"
    assert "carries a user or password" in str(excinfo.value)
    assert "SECRET" not in str(excinfo.value)


def test_yaml_boolean_in_string_list_is_rejected(tmp_path: Path) -> None:
    text = VALID.replace("  signing_key: keys/site.key", "  signing_key: keys/site.key\n  internal_domains: [no, example.org]")

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert excinfo.value.key == "site.internal_domains"
    assert excinfo.value.value == [False, "example.org"]
    assert "quote" in str(excinfo.value)


def test_exponent_without_dot_is_reported(tmp_path: Path) -> None:
    text = VALID.replace("  epsilon_per_round: 0.5", "  delta_per_round: 1e-6")

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert excinfo.value.key == "privacy.delta_per_round"
    assert excinfo.value.value == "1e-6"
    assert "1.0e-3" in str(excinfo.value)


def test_epsilon_out_of_range_names_interval(tmp_path: Path) -> None:
    text = VALID.replace("epsilon_per_round: 0.5", "epsilon_per_round: 12.5")

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert excinfo.value.key == "privacy.epsilon_per_round"
    assert excinfo.value.value == 12.5
    assert "(0, 10]" in str(excinfo.value)


def test_missing_required_section(tmp_path: Path) -> None:
    text = VALID.replace("state_dir: state\n", "")

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert excinfo.value.key == "state_dir"
    assert "required" in str(excinfo.value)


def test_round_must_be_multiple_of_window(tmp_path: Path) -> None:
    text = VALID + "windows:\n  window_seconds: 70\n  round_seconds: 3600\n"

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert excinfo.value.key == "windows.round_seconds"


@pytest.mark.parametrize("paths", ["[]", '[""]', '[logs/conn.log, "  "]'])
def test_empty_source_paths_rejected(tmp_path: Path, paths: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, VALID.replace("paths: [logs/conn.log]", f"paths: {paths}")))

    assert excinfo.value.key == "sources[0].paths"
    assert "glob patterns" in excinfo.value.fix


def start_agent(tmp_path: Path, text: str) -> None:
    """Load ``text`` and start an agent on it, with a signing key and password file beside it."""
    from agent.service import Agent
    from privacy.signing import generate_signing_key

    if not (tmp_path / "keys" / "site.key").exists():
        (tmp_path / "keys").mkdir()
        generate_signing_key().to_file(tmp_path / "keys" / "site.key")
        (tmp_path / "hub.password").write_text("secret\n", encoding="utf-8")
    Agent(load_agent_config(write(tmp_path, text))).close()


@pytest.mark.parametrize(("change", "key"), [
    (("password_file: hub.password", "password_file: missing.password"), "hub.password_file"),
    (("signing_key: keys/site.key", "signing_key: keys/missing.key"), "site.signing_key"),
    (("state_dir: state", "state_dir: /proc/fti-state"), "state_dir"),
])
def test_agent_start_names_unusable_file_key(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    """A file the agent needs is checked when it starts, before it reads a log or spends budget."""
    start_agent(tmp_path, VALID)

    with pytest.raises(ConfigError) as excinfo:
        start_agent(tmp_path, VALID.replace(*change))

    assert excinfo.value.key == key
