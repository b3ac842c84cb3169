"""Tests of fusion_hub.config: typed loading and the errors shown to an operator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusion_hub.config import HubConfig, load_hub_config
from fusion_hub.errors import HubConfigError, StorageError
from fusion_hub.postgres_storage import PostgresHubStorage


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_hub_config(write(tmp_path, ""))

    assert config.hub.host == "127.0.0.1"
    assert config.hub.port == 0
    assert config.rounds.quorum_sites == 3
    assert config.fusion.trust_prior_alpha == 2.0
    assert config.fusion.trust_prior_beta == 1.0
    assert config.fusion.publish_threshold == 0.5
    assert config.storage.path == tmp_path / "hub.sqlite3"
    assert config.source == tmp_path / "hub.yaml"


def test_load_values_typed_and_paths_resolved(tmp_path: Path) -> None:
    path = write(tmp_path, (
        "hub:\n"
        "  name: consortium\n"
        "  port: 8443\n"
        "rounds:\n"
        "  quorum_sites: 4\n"
        "fusion:\n"
        "  publish_threshold: 0.75\n"
        "  trust_prior_alpha: 3\n"
        "siem:\n"
        "  splunk_hec_path: out/fused.hec.ndjson\n"
        "  elastic_bulk_path: /var/lib/fti/bulk.ndjson\n"
    ))

    config = load_hub_config(path)

    assert config.hub.name == "consortium"
    assert config.hub.port == 8443
    assert config.rounds.quorum_sites == 4
    assert config.fusion.publish_threshold == 0.75
    assert config.fusion.trust_prior_alpha == 3.0
    assert isinstance(config.fusion.trust_prior_alpha, float)
    assert config.siem.splunk_hec_path == tmp_path / "out" / "fused.hec.ndjson"
    assert config.siem.elastic_bulk_path == Path("/var/lib/fti/bulk.ndjson")


def test_load_exponent_without_dot_is_float(tmp_path: Path) -> None:
    """YAML 1.1 reads 1e-1 as a string; the hub reads it as YAML 1.2 does."""
    config = load_hub_config(write(tmp_path, "fusion:\n  publish_threshold: 1e-1\n"))

    assert config.fusion.publish_threshold == pytest.approx(0.1)


def test_load_duplicate_section_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, (
        "hub:\n"
        "  name: hub-a\n"
        "rounds:\n"
        "  quorum_sites: 2\n"
        "hub:\n"
        "  port: 9000\n"
    ))

    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(path)

    assert excinfo.value.key == "hub"
    assert excinfo.value.line == 5
    assert "first defined at line 1" in str(excinfo.value)
    assert str(excinfo.value).startswith(f"{path}:5: hub is a duplicate key")


def test_load_tab_indentation_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "hub:\n  name: a\n\tport: 1\n")

    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(path)

    assert excinfo.value.line == 3
    assert "tab at column 1" in excinfo.value.problem
    assert excinfo.value.fix == "Indent with spaces"


def test_load_unknown_key_lists_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "rounds:\n  quorum: 3\n")

    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(path)

    error = excinfo.value
    assert (error.key, error.value, error.line) == ("rounds.quorum", None, 2)
    assert "quorum_sites" in error.fix
    assert "is not a known setting" in str(error)


def test_load_unknown_section_rejected(tmp_path: Path) -> None:
    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, "privacy:\n  epsilon: 1.0\n"))

    assert excinfo.value.key == "privacy"
    assert "hub, storage, tls, auth, rounds, fusion, siem" in excinfo.value.fix


def test_load_quoted_number_rejected_with_fix(tmp_path: Path) -> None:
    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, "rounds:\n  quorum_sites: \"3\"\n"))

    assert excinfo.value.key == "rounds.quorum_sites"
    assert excinfo.value.value == "3"
    assert "whole number" in excinfo.value.problem


def test_load_yaml11_boolean_in_string_field_suggests_quotes(tmp_path: Path) -> None:
    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, "siem:\n  splunk_index: no\n"))

    assert excinfo.value.value is False
    assert excinfo.value.fix == (
        'Quote the value (YAML 1.1 reads yes/no/on/off as booleans), for example "no"'
    )


def test_load_out_of_range_value_rejected(tmp_path: Path) -> None:
    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, "rounds:\n  quorum_sites: 0\n"))

    assert excinfo.value.key == "rounds.quorum_sites"
    assert excinfo.value.line == 2
    assert excinfo.value.problem == "must be >= 1"


def test_load_unknown_tlp_rejected(tmp_path: Path) -> None:
    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, "fusion:\n  tlp: clear\n"))

    assert excinfo.value.key == "fusion.tlp"
    assert "white, green, amber, red" in excinfo.value.fix


def test_load_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(tmp_path / "absent.yaml")

    assert excinfo.value.path == tmp_path / "absent.yaml"
    assert "cannot read the file" in excinfo.value.problem


def test_hub_config_is_frozen() -> None:
    config = HubConfig()

    with pytest.raises(AttributeError):
        config.hub = None  # type: ignore[misc]


def test_load_postgresql_storage_and_limits(tmp_path: Path) -> None:
    config = load_hub_config(write(
        tmp_path, "storage:\n  backend: postgresql\n  postgresql_dsn: postgresql://fti:pw@db/fti\n"
                  "  postgresql_schema: fti_hub\nhub:\n  rate_limit_per_minute: 0\n"
                  "  max_objects_per_request: 10\n"))

    assert config.storage.backend == "postgresql"
    assert config.storage.postgresql_schema == "fti_hub"
    assert "pw" not in repr(config)
    assert (config.hub.rate_limit_per_minute, config.hub.max_objects_per_request) == (0, 10)


@pytest.mark.parametrize(("text", "key"), [
    ("storage:\n  backend: mysql\n", "storage.backend"),
    ("storage:\n  backend: postgresql\n", "storage.postgresql_dsn"),
    ("storage:\n  postgresql_schema: Bad-Name\n", "storage.postgresql_schema"),
    ("hub:\n  rate_limit_per_minute: -1\n", "hub.rate_limit_per_minute"),
    ("hub:\n  max_objects_per_request: 0\n", "hub.max_objects_per_request"),
    ("hub:\n  status_retention_days: 0\n", "hub.status_retention_days"),
    ("hub:\n  api_root: taxii2\n", "hub.api_root"),
    ("hub:\n  api_root: Metrics\n", "hub.api_root"),
])
def test_load_storage_and_limit_errors(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, text))

    assert excinfo.value.key == key


@pytest.mark.parametrize(("dsn", "problem"), [
    ("postgresql://fti:TOPSECRET3@[bad", 'looking for matching "..."'),
    ("postgresql://fti:TOP%SECRET3@db/fti", 'invalid percent-encoded token: "..."'),
    ("host=db password=TOP SECRET3 port", 'missing "..."'),
    ("postgresql://fti:TOPSECRET3@db/fti?sslmode=bogus", "sets an sslmode that libpq"),
    ("postgresql://fti:TOPSECRET3@db:notaport/fti", "sets a port that is not a TCP port"),
    ("postgresql://fti:TOPSECRET3@db:70000/fti", "sets a port that is not a TCP port"),
    ("postgresql://fti:Tr0ub/SECRET3@db/fti", "has an '@' outside its user part"),
    ("postgresql://fti:2024/SpringSECRET3@db/fti", "has an '@' outside its user part"),
    ("postgresql://fti:Tr0ub@dorSECRET3@127.0.0.1/fti", "has an '@' outside its user part"),
    ("postgresql://fti:Sp%ceSECRET3@127.0.0.1/fti", "does not decode to UTF-8 text"),
    ("host=db password=Kx9 !\"Zq7LmSECRET3", 'missing "..."'),
    ('postgresql://fti:="TopSECRET3%zz@db/fti', 'invalid percent-encoded token: "..."'),
    ('host=db password=Kx9 ]"TopSECRET3', 'missing "..."'),
    ("host=127.0.0.1 dbname='postgresql://fti:TopSECRET3@127.0.0.1/fti'",
     "has a connection string as its database name"),
    ("host=127.0.0.1 dbname='user=fti password=TopSECRET3'",
     "has a connection string as its database name"),
])
def test_bad_postgresql_dsn_named_without_password(
        tmp_path: Path, dsn: str, problem: str) -> None:
    # A JSON string is a double-quoted YAML scalar, whatever quotes the DSN holds.
    text = f"storage:\n  backend: postgresql\n  postgresql_dsn: {json.dumps(dsn)}\n"

    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, text))

    assert excinfo.value.key == "storage.postgresql_dsn"
    assert problem in str(excinfo.value)
    assert "SECRET3" not in str(excinfo.value)


@pytest.mark.parametrize("text", [
    "storage:\n  dsn: postgresql://fti:LeakSECRET3@db/fti\n",
    "hub:\n  postgresql_dsn: postgresql://fti:LeakSECRET3@db/fti\n",
    "storage:\n  postgresql_dsn: [postgresql://fti:LeakSECRET3@db/fti]\n",
    "storage:\n  postgresql_dsn: {password: LeakSECRET3}\n",
    "database:\n  dsn: postgresql://fti:LeakSECRET3@db/fti\n",
])
def test_misplaced_dsn_not_shown(tmp_path: Path, text: str) -> None:
    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, text))

    assert "SECRET3" not in str(excinfo.value)


@pytest.mark.parametrize("value", ["*TopSECRET3", "!TopSECRET3 x", "@TopSECRET3",
                                   "'TopSECRET3"])
def test_yaml_error_hides_dsn_line(tmp_path: Path, value: str) -> None:
    text = f"storage:\n  backend: postgresql\n  postgresql_dsn: {value}\n"

    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, text))

    assert "invalid YAML" in str(excinfo.value) or "aliases" in str(excinfo.value)
    assert "SECRET3" not in str(excinfo.value)


@pytest.mark.parametrize("key", ["elastic_url", "splunk_hec_url"])
def test_siem_url_with_credentials_rejected_masked(tmp_path: Path, key: str) -> None:
    text = f"siem:\n  {key}: https://elastic:TopSECRET3@siem.example:9200/\n"

    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, text))

    assert excinfo.value.key == f"siem.{key}"
    assert "carries a user or password" in str(excinfo.value)
    assert "SECRET3" not in str(excinfo.value)


def test_encoded_at_in_database_accepted(tmp_path: Path) -> None:
    text = "storage:\n  backend: postgresql\n  postgresql_dsn: postgresql://fti:pw@db/a%40b\n"

    config = load_hub_config(write(tmp_path, text))

    assert config.storage.postgresql_dsn.endswith("a%40b")


def test_postgres_storage_hides_unreadable_dsn() -> None:
    with pytest.raises(StorageError) as excinfo:
        PostgresHubStorage("postgresql://fti:TOP%SECRET3@127.0.0.1:1/fti", schema="fti_hub")

    assert 'invalid percent-encoded token: "..."' in str(excinfo.value)
    assert "SECRET3" not in str(excinfo.value)


POSTGRES = "storage:\n  backend: postgresql\n  postgresql_dsn: postgresql://fti@db/fti\n"


def test_load_postgresql_tls_paths_resolved(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("PEM", encoding="utf-8")

    config = load_hub_config(write(tmp_path, POSTGRES + (
        "  postgresql_sslmode: verify-full\n  postgresql_sslrootcert: ca.pem\n"
        "  postgresql_sslcert: client.pem\n  postgresql_sslkey: client.key\n")))

    assert config.storage.postgresql_sslmode == "verify-full"
    assert config.storage.postgresql_sslrootcert == tmp_path / "ca.pem"
    assert config.storage.postgresql_sslcert == tmp_path / "client.pem"
    assert config.storage.postgresql_sslkey == tmp_path / "client.key"


@pytest.mark.parametrize(("text", "key", "problem"), [
    (POSTGRES + "  postgresql_sslmode: required\n", "storage.postgresql_sslmode",
     "is not a libpq sslmode"),
    (POSTGRES + "  postgresql_sslmode: verify-full\n", "storage.postgresql_sslrootcert",
     "must be set when storage.postgresql_sslmode is verify-full"),
    (POSTGRES + "  postgresql_sslmode: verify-ca\n  postgresql_sslrootcert: missing.pem\n",
     "storage.postgresql_sslrootcert", "is not a readable file"),
    (POSTGRES + "  postgresql_sslcert: ca.pem\n", "storage.postgresql_sslkey",
     "must be set together with storage.postgresql_sslcert"),
    ("storage:\n  postgresql_sslmode: require\n", "storage.postgresql_sslmode",
     "applies only to storage.backend postgresql"),
])
def test_load_postgresql_tls_errors(tmp_path: Path, text: str, key: str, problem: str) -> None:
    (tmp_path / "ca.pem").write_text("PEM", encoding="utf-8")

    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, text))

    assert excinfo.value.key == key
    assert problem in str(excinfo.value)


@pytest.mark.parametrize("siem, key, value", [
    ("  splunk_hec_url: ftp://splunk.example.org\n  splunk_hec_token_file: hec.token\n",
     "siem.splunk_hec_url", "ftp://splunk.example.org"),
    ("  elastic_url: https://es.example.org:9200\n", "siem.elastic_api_key_file", None),
])
def test_load_siem_url_rejected_like_serve(tmp_path: Path, siem: str, key: str,
                                           value: str | None) -> None:
    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, "siem:\n" + siem))

    assert excinfo.value.key == key
    assert excinfo.value.value == value
    assert excinfo.value.fix


def test_load_rejects_aliases_before_expansion(tmp_path: Path) -> None:
    """Nested aliases grow exponentially, so the loader must stop at the first one."""
    levels = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 9)]
    path = write(tmp_path, "\n".join(levels) + "\n")

    with pytest.raises(HubConfigError) as caught:
        load_hub_config(path)

    assert caught.value.line == 2
    assert "aliases are not allowed" in str(caught.value)


def test_load_corroboration_epsilon_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, "fusion:\n  corroboration_epsilon: 0\n"))

    assert excinfo.value.key == "fusion.corroboration_epsilon"
    assert excinfo.value.problem == "must be in (0, 100]"


def test_load_trust_weighting_off(tmp_path: Path) -> None:
    config = load_hub_config(write(tmp_path, "fusion:\n  trust_weighting: false\n"))

    assert config.fusion.trust_weighting is False


def test_load_secure_privacy_settings(tmp_path: Path) -> None:
    config = load_hub_config(write(tmp_path, "secure:\n  epsilon_per_round: 2\n  unit: entity-window\n"
                                             "  max_observables_per_entity: 3\n"))

    assert config.secure.round_privacy()["epsilon_per_round"] == 2.0
    assert config.secure.round_privacy()["unit"] == "entity-window"
    assert config.secure.round_privacy()["max_observables_per_entity"] == 3
    assert config.secure.round_privacy()["secure_min_sites"] == 3


@pytest.mark.parametrize(("text", "key"), [
    ("secure:\n  epsilon_per_round: 0\n", "secure.epsilon_per_round"),
    ("secure:\n  delta_per_round: 0.5\n", "secure.delta_per_round"),
    ("secure:\n  unit: host\n", "secure.unit"),
    ("secure:\n  max_observables_per_entity: 0\n", "secure.max_observables_per_entity"),
    ("secure:\n  max_windows_per_entity: 0\n", "secure.max_windows_per_entity"),
    ("secure:\n  count_share: -0.5\n", "secure.count_share"),
    ("secure:\n  histogram_share: 0.3\n", "secure.histogram_share"),
])
def test_load_secure_privacy_errors(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(write(tmp_path, text))

    assert excinfo.value.key == key
