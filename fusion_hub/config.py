"""Typed, validated configuration of the fusion hub, read from one YAML file.

Precedence: built-in defaults, then the file. The hub reads no environment variables; the
command line may replace fields afterwards with ``dataclasses.replace``.

The loader is strict because a wrong setting fails far from its line otherwise. PyYAML
implements YAML 1.1, where a repeated key silently replaces the earlier one, ``1e-3`` is a
string and ``no`` is ``False``. Here a repeated key, a tab used for indentation, an unknown key
and a value of the wrong type each raise ``HubConfigError`` with the file, line, key, value and
the fix. Exponent floats without a dot (``1e-3``) are read as floats, as in YAML 1.2.

Example file, every key optional::

    hub:
      name: consortium-hub
      port: 8443
    rounds:
      quorum_sites: 3
    siem:
      splunk_hec_path: out/fused.hec.ndjson
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from fti.config_text import mask_url, url_has_credentials, yaml_problem
from fusion_hub.errors import HubConfigError
from stix_mappings.summary import FAMILIES

# The TLP 1.0 markings that STIX 2.1 predefines (section 7.2.1.4); stix2 3.0 and the OASIS
# validator know no TLP 2.0 marking definitions.
TLP_LEVELS = ("white", "green", "amber", "red")
STRATEGIES = ("noisy-or", "capped-noisy-or", "median", "trimmed-mean", "corroboration", "ensemble")


@dataclass(frozen=True)
class ServerSettings:
    """HTTP and TAXII settings of the hub (YAML section ``hub``)."""

    # Name of the hub's STIX identity; fused indicators carry it as created_by_ref.
    name: str = "fti-hub"
    # TAXII API root path segment: the API root is served at /<api_root>/.
    api_root: str = "fti"
    title: str = "fti fusion hub"
    # Loopback by default so a fresh install exposes nothing; put TLS in front to open it.
    host: str = "127.0.0.1"
    # 0 lets the OS pick a free port (tests, demo); services set a fixed one.
    port: int = 0
    # Waitress worker threads; SQLite serialises writes, so more threads add little.
    threads: int = 4
    # 10 MiB fits an envelope of a few hundred summaries with large evidence lists.
    max_content_length_bytes: int = 10 * 1024 * 1024
    # Objects in one Add Objects envelope; more get 413. 1000 summaries fit the body limit.
    max_objects_per_request: int = 1000
    # Requests per minute and credential (also the burst size); 0 disables the limit. 1200
    # leaves room for a consumer paging a large collection while stopping a runaway loop.
    rate_limit_per_minute: int = 1200
    # Page sizes for Get Objects and manifests; 1000 objects keep a page under a few MiB.
    default_page_size: int = 100
    max_page_size: int = 1000
    # How often the background ticker looks for rounds past their deadline.
    tick_seconds: float = 5.0
    # Days a TAXII status resource stays readable after its POST; older ones are deleted.
    status_retention_days: int = 7
    # IP address of a reverse proxy in front of the hub, such as a TLS terminator. Requests
    # from it count under the last X-Forwarded-For address, so the failed-login limits and
    # the logs see each client and not the proxy. Empty trusts no proxy and ignores the header.
    trusted_proxy: str = ""


STORAGE_BACKENDS = ("sqlite", "postgresql")
# libpq's sslmode values, weakest first (PostgreSQL documentation, libpq "SSL Support",
# table "SSL Mode Descriptions": https://www.postgresql.org/docs/current/libpq-ssl.html).
POSTGRESQL_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


# Settings whose values configuration errors never show.
SECRET_SETTINGS = ("storage.postgresql_dsn",)

# First path segments the hub serves outside the API root: TAXII discovery and metrics.
RESERVED_PATHS = ("taxii2", "metrics")


def mask_dsn(dsn: str) -> str:
    """Return a PostgreSQL connection string for logs: its host, port, database and user.

    The fields come from libpq's own parser, and only those that name the server and the
    login are shown. So no escape, encoding or newer libpq option (such as its SCRAM keys)
    can bring a secret into the log. A secret that is set shows as ``***``. A string libpq
    cannot read, or a URI whose '@' is misplaced, shows as a placeholder.
    """
    params = _parse_dsn(dsn)
    if params is None:
        return "(a connection string that libpq cannot read)"
    if _misplaced_at(dsn):
        return "(a connection URI with an '@' outside its user part)"
    fields = [f"{name}={params[name]}" if pattern.fullmatch(str(params[name]))
              else f"{name}=(not shown)"
              for name, pattern in _SHOWN_FIELDS.items() if name in params]
    if any(name in params for name in _SECRET_FIELDS):
        fields.append("password=***")
    return " ".join(fields)


# Connection fields shown in logs, each with the form its value must have to be shown. A
# mistyped DSN can move part of the password into any field, and libpq lets dbname contain a
# whole connection string.
_SHOWN_FIELDS = {
    "host": re.compile(r"[A-Za-z0-9_.,:/\[\]%-]+"),
    "hostaddr": re.compile(r"[0-9A-Fa-f.,:]+"),
    "port": re.compile(r"[0-9,]+"),
    "dbname": re.compile(r"[A-Za-z0-9_.$@-]+"),
    "user": re.compile(r"[A-Za-z0-9_.$@-]+"),
    "sslmode": re.compile(r"[a-z-]+"),
}
# libpq's fields that carry a secret: a DSN with any of them shows "password=***".
_SECRET_FIELDS = ("password", "sslpassword", "scram_client_key", "scram_server_key",
                  "oauth_client_secret")


def _parse_dsn(dsn: str) -> dict[str, Any] | None:
    """Return libpq's fields of ``dsn``, or None where libpq cannot read it."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn)
    except (ProgrammingError, UnicodeDecodeError):
        # UnicodeDecodeError: a percent escape that decodes to bytes other than UTF-8.
        return None


def _misplaced_at(dsn: str) -> bool:
    """Return whether a URI has an '@' other than the one that ends its user part.

    A password with a literal '/' or '@' moves the rest of the password into the host, port,
    database name or an option: ``postgresql://fti:2024/pw@db/fti`` reads as host ``fti``,
    port ``2024`` and database ``pw@db/fti``. RFC 3986 requires both to be percent-encoded.
    """
    text = dsn.strip()
    scheme, separator, rest = text.partition("://")
    if not separator or scheme.lower() not in ("postgresql", "postgres"):
        return False
    authority_end = min((index for index in (rest.find("/"), rest.find("?")) if index >= 0),
                        default=len(rest))
    return rest.count("@") > 1 or "@" in rest[authority_end:]


@dataclass(frozen=True)
class StorageSettings:
    """Backend and location of the hub database (YAML section ``storage``)."""

    # SQLite is embedded and needs no server; PostgreSQL lets several hubs share a database.
    backend: str = "sqlite"
    # SQLite file; a relative path is resolved against the configuration file's folder.
    path: Path = Path("hub.sqlite3")
    # libpq connection string or URI of the PostgreSQL backend; it may hold a password, so
    # repr() masks it.
    postgresql_dsn: str = ""
    # Schema that contains the hub's tables, so one database can serve several hubs.
    postgresql_schema: str = "public"
    # TLS to the PostgreSQL server, passed to libpq and overriding the same keys in the DSN.
    # Empty keeps the DSN's sslmode or libpq's default, "prefer", which encrypts when the
    # server offers TLS but checks no certificate. Use verify-full across a network.
    postgresql_sslmode: str = ""
    # CA bundle that the server's certificate must chain to (verify-ca, verify-full).
    postgresql_sslrootcert: Path | None = None
    # Client certificate and key, for servers that authenticate clients by certificate.
    postgresql_sslcert: Path | None = None
    postgresql_sslkey: Path | None = None

    def __repr__(self) -> str:
        return (f"StorageSettings(backend={self.backend!r}, path={str(self.path)!r}, "
                f"postgresql_dsn={mask_dsn(self.postgresql_dsn)!r}, "
                f"postgresql_schema={self.postgresql_schema!r}, "
                f"postgresql_sslmode={self.postgresql_sslmode!r})")


@dataclass(frozen=True)
class TlsSettings:
    """HTTPS of the TAXII server (YAML section ``tls``); without ``cert_file`` it is plain HTTP.

    Relative paths are resolved against the configuration file's folder.
    """

    # PEM server certificate (with its chain) and private key.
    cert_file: Path | None = None
    key_file: Path | None = None
    # PEM CA bundle that client certificates must chain to; None requests no client certificate.
    client_ca_file: Path | None = None
    # With a client CA: true rejects the TLS handshake of a client without a valid certificate;
    # false accepts such clients but still rejects an invalid certificate.
    require_client_cert: bool = True


@dataclass(frozen=True)
class AuthSettings:
    """Password hashing of site and consumer credentials (YAML section ``auth``)."""

    # RFC 9106 section 4, second recommended option (argon2id, t=3, 64 MiB, p=4), which is
    # also argon2-cffi's default profile.
    argon2_time_cost: int = 3
    argon2_memory_cost_kib: int = 64 * 1024
    argon2_parallelism: int = 4
    # A verified password is remembered (as a salted SHA-256 in memory) for this long, so a
    # polling client does not cost one argon2 hash per request. Revocation takes effect at
    # once regardless, because every request rereads the credential's state.
    credential_cache_seconds: float = 60.0
    # Failed logins that one client address (IPv6: its /64) may make per
    # failure_window_seconds before its checks get 429 without running argon2id. 0 disables.
    # The agent daemon backs off up to 300 s between attempts, so a wrong password costs it
    # about ten failures in its first 5 minutes, and a guesser is held to 6 tries a minute.
    max_failures_per_address: int = 30
    # The same per username or API token id, over all addresses, against guessing spread
    # over many addresses. Lower than per address because one name is one target. An
    # address that logged in as the name within a day is exempt, so a flood cannot lock
    # out the name's own agent.
    max_failures_per_username: int = 10
    failure_window_seconds: float = 300.0
    # argon2id computations at once. Each takes argon2_memory_cost_kib of memory and up to
    # argon2_parallelism threads, so 2 keep a flood to 128 MiB with the defaults while the
    # worker threads still serve requests with cached credentials.
    max_concurrent_verifications: int = 2


@dataclass(frozen=True)
class RoundSettings:
    """Round collection (YAML section ``rounds``)."""

    # Must equal the agents' round_seconds: a summary's round_start must be a multiple of it.
    round_seconds: int = 300
    # A round closes as soon as this many enrolled sites have contributed.
    quorum_sites: int = 3
    # ... or this long after its first contribution, so one silent site cannot stall fusion.
    deadline_seconds: int = 900
    # Tolerated clock difference between a site and the hub when checking round_end.
    max_clock_skew_seconds: int = 300
    # Summaries for rounds older than this are rejected: fusion never looks back that far.
    retention_days: int = 30


@dataclass(frozen=True)
class FusionSettings:
    """Fusion and publication of indicators (YAML section ``fusion``)."""

    strategy: str = "noisy-or"
    # Evidence from the closing round and the rounds before it, up to this many in total.
    lookback_rounds: int = 3
    # Noisy-OR probability from which an observable is published.
    publish_threshold: float = 0.5
    # Distinct sites releasing one observable that publish it whatever its score: no single
    # site can produce this signal.
    min_corroborating_sites: int = 2
    # Beta prior of each site's precision; mean 2/3 trusts a new site but not fully.
    trust_prior_alpha: float = 2.0
    trust_prior_beta: float = 1.0
    # Lifetime of a published indicator; unconfirmed after that, it is revoked.
    indicator_ttl_seconds: int = 86_400
    # Weight each site's evidence by its trust. False fuses with weight 1 for every site, while
    # feedback still updates the stored trust.
    trust_weighting: bool = True
    # Epsilon of the noise the corroboration strategy adds to each observable's site count and
    # trust-weighted support (half each), so one site releasing an observable or not is hidden.
    corroboration_epsilon: float = 1.0
    # TLP level marked on every fused indicator; amber keeps them inside the consortium.
    tlp: str = "amber"


@dataclass(frozen=True)
class SiemSettings:
    """NDJSON files for Splunk HEC and Elasticsearch bulk (YAML section ``siem``)."""

    # None disables a sink. Relative paths are resolved against the configuration folder.
    splunk_hec_path: Path | None = None
    splunk_index: str | None = None
    # HEC ``host`` of every event; None uses hub.name.
    splunk_host: str | None = None
    elastic_bulk_path: Path | None = None
    # Data stream named after the ECS ti_* integrations: logs-<dataset>-<namespace>.
    elastic_index: str = "logs-ti_fti.indicator-default"
    # Push each round over HTTP too. The hub reads no environment variables, so each
    # credential is the first line of a file readable by the hub's user only.
    splunk_hec_url: str | None = None
    splunk_hec_token_file: Path | None = None
    splunk_ack: bool = False
    elastic_url: str | None = None
    elastic_api_key_file: Path | None = None
    # Spool of events not yet confirmed by Splunk or Elasticsearch.
    spool_dir: Path = Path("siem-spool")


PRIVACY_MODES = ("plain", "secure")


@dataclass(frozen=True)
class SecureSettings:
    """Secure aggregation rounds (YAML section ``secure``); see docs/privacy.md."""

    # plain: sites send signed DP summaries. secure: the hub also runs secure aggregation
    # rounds in the keys collection and learns only sums across sites.
    mode: str = "plain"
    # The hub rejects a secure round with fewer surviving sites, because sums over fewer
    # sites reveal too much about each of them and the sites' noise is calibrated for this many.
    min_sites: int = 3
    # SecAgg+ neighbours per site (an even number). None masks every pair of sites, as in
    # Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning".
    neighbours_per_site: int | None = None
    # Count-min sketch of observables: 2 rows of 32768 buckets are 65,536 words.
    sketch_rows: int = 2
    sketch_width: int = 32768
    # Summed, noised distinct-entity count from which a sketch bucket is heavy. The sum is
    # already DP, so this only trades missed observables against reveals to check.
    sketch_threshold: int = 10
    # A stage waits this long for missing sites, then goes on without them (dropouts).
    stage_timeout_seconds: float = 300.0
    # Detector families a round sums. The round's budget is split equally between them, so
    # list only the families the sites configure (a site sends noised zeros for the others).
    families: tuple[str, ...] = FAMILIES
    # The privacy settings every site of a round must use, with the agent's names and
    # defaults. Each site calibrates its share of the noise from its own settings, so the
    # round object carries these and a site whose settings differ leaves the round.
    epsilon_per_round: float = 1.0
    delta_per_round: float = 1e-6
    unit: str = "entity"
    max_observables_per_entity: int = 4
    max_windows_per_entity: int = 60
    histogram_share: float = 0.2
    count_share: float = 0.5
    score_share: float = 0.3

    def round_privacy(self) -> dict[str, Any]:
        """Return the privacy settings a round object carries, keyed by the agent's ``privacy`` names."""
        return {
            "epsilon_per_round": float(self.epsilon_per_round), "delta_per_round": float(self.delta_per_round),
            "unit": self.unit, "secure_min_sites": self.min_sites,
            "max_observables_per_entity": self.max_observables_per_entity,
            "max_windows_per_entity": self.max_windows_per_entity,
            "histogram_share": float(self.histogram_share), "count_share": float(self.count_share),
            "score_share": float(self.score_share),
        }


SECURE_UNITS = ("entity", "entity-window")


@dataclass(frozen=True)
class HubConfig:
    """Complete hub configuration; see the module docstring for the file format."""

    hub: ServerSettings = field(default_factory=ServerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    rounds: RoundSettings = field(default_factory=RoundSettings)
    fusion: FusionSettings = field(default_factory=FusionSettings)
    siem: SiemSettings = field(default_factory=SiemSettings)
    secure: SecureSettings = field(default_factory=SecureSettings)
    # File the configuration came from; None when built in code.
    source: Path | None = None


class _HubYamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 exponent floats such as ``1e-3`` and rejects aliases.

    A configuration has no use for anchors and aliases, and nested aliases expand
    exponentially (a "billion laughs" file), which would hang start-up or a reload.
    """

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases are not allowed; write the value out in full",
                event.start_mark)
        return super().compose_node(parent, index)


_HubYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_hub_config(path: Path | str) -> HubConfig:
    """Load and validate a hub configuration file.

    Parameters
    ----------
    path : Path or str
        YAML file. An empty file gives the defaults.

    Returns
    -------
    HubConfig
        With relative paths resolved against the file's folder.

    Raises
    ------
    HubConfigError
        If the file is unreadable, not valid YAML, repeats a key, has an unknown key, or a
        value of the wrong type or out of range.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise HubConfigError(
            path, key=None, value=None, problem=f"cannot read the file: {err.strerror}",
            fix="Check the path and its permissions",
        ) from err

    # Build plain data from the node tree ourselves, so each key keeps its line and text.
    document, lines, texts = _parse_yaml(path, text)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise HubConfigError(
            path, key="(top level)", value=None, problem="must be a mapping of sections",
            fix="Start the file with section names such as 'hub:' and 'rounds:'", line=1,
        )

    hints = typing.get_type_hints(HubConfig)
    sections: dict[str, Any] = {}
    for section_field in dataclasses.fields(HubConfig):
        if section_field.name == "source":
            continue
        raw = document.get(section_field.name, {})
        sections[section_field.name] = _build_section(
            path, section_field.name, hints[section_field.name], raw, lines, texts
        )
    unknown = sorted(set(document) - set(sections))
    if unknown:
        key = unknown[0]
        raise HubConfigError(
            path, key=key, value=None, problem="is not a known section",
            fix=f"Use one of: {', '.join(sections)}", line=lines.get(key),
        )

    config = HubConfig(**sections, source=path)
    config = _resolve_paths(config, path.parent)
    validate_hub_config(config, path=path, lines=lines)
    return config


def validate_hub_config(
    config: HubConfig, *, path: Path | None = None, lines: dict[str, int] | None = None
) -> None:
    """Check value ranges and cross-field rules of a configuration.

    Raises
    ------
    HubConfigError
        Naming the first key that is out of range.
    """
    where = path or config.source or Path("<config>")
    known_lines = lines or {}

    def require(ok: bool, key: str, value: Any, problem: str, fix: str) -> None:
        if not ok:
            raise HubConfigError(
                where, key=key, value=value, problem=problem, fix=fix, line=known_lines.get(key)
            )

    hub = config.hub
    require(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", hub.api_root) is not None,
            "hub.api_root", hub.api_root, "must be one URL path segment",
            "Use letters, digits, '.', '_' or '-', for example 'fti'")
    require(hub.api_root.lower() not in RESERVED_PATHS, "hub.api_root", hub.api_root,
            f"is taken by the hub's /{hub.api_root.lower()} path",
            "Choose another name, for example 'fti'")
    require(hub.name.strip() != "", "hub.name", hub.name, "must not be empty",
            "Name the hub, for example 'consortium-hub'")
    require(0 <= hub.port <= 65535, "hub.port", hub.port, "must be in [0, 65535]",
            "Use 0 for a free port or a fixed port such as 8443")
    require(1 <= hub.threads <= 64, "hub.threads", hub.threads, "must be in [1, 64]",
            "Four threads suit SQLite storage")
    require(hub.max_content_length_bytes >= 1024, "hub.max_content_length_bytes",
            hub.max_content_length_bytes, "must be at least 1024",
            "Use a size that fits one envelope of summaries, for example 10485760")
    require(1 <= hub.max_objects_per_request <= 1_000_000, "hub.max_objects_per_request",
            hub.max_objects_per_request, "must be in [1, 1000000]",
            "Use 1000 unless sites post larger envelopes")
    require(hub.rate_limit_per_minute >= 0, "hub.rate_limit_per_minute",
            hub.rate_limit_per_minute, "must be >= 0", "Use 0 to disable the limit, or 1200")
    require(1 <= hub.max_page_size <= 100_000, "hub.max_page_size", hub.max_page_size,
            "must be in [1, 100000]", "Use 1000 unless clients need larger pages")
    require(1 <= hub.default_page_size <= hub.max_page_size, "hub.default_page_size",
            hub.default_page_size, "must be in [1, hub.max_page_size]",
            "Use a value no larger than hub.max_page_size, for example 100")
    require(0 < hub.tick_seconds <= 3600, "hub.tick_seconds", hub.tick_seconds,
            "must be in (0, 3600]", "Use a few seconds, for example 5")
    require(1 <= hub.status_retention_days <= 36_500, "hub.status_retention_days", hub.status_retention_days,
            "must be in [1, 36500]", "Use 7: clients read a status right after their POST")
    require(hub.trusted_proxy == "" or _is_ip_address(hub.trusted_proxy), "hub.trusted_proxy",
            hub.trusted_proxy, "must be an IP address or empty",
            "Give the address the reverse proxy connects from, for example 127.0.0.1")

    storage = config.storage
    require(storage.backend in STORAGE_BACKENDS, "storage.backend", storage.backend,
            "is not a known storage backend", f"Use one of: {', '.join(STORAGE_BACKENDS)}")
    require(storage.backend != "postgresql" or storage.postgresql_dsn.strip() != "",
            "storage.postgresql_dsn", storage.postgresql_dsn,
            "must be set when storage.backend is postgresql",
            "Give a connection URI such as postgresql://fti@127.0.0.1:5432/fti")
    require(re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", storage.postgresql_schema) is not None,
            "storage.postgresql_schema", storage.postgresql_schema,
            "must be a lower-case SQL identifier", "Use letters, digits and '_', e.g. fti_hub")
    if storage.backend == "postgresql" and storage.postgresql_dsn.strip():
        validate_postgresql_dsn(storage.postgresql_dsn, require)
    validate_postgresql_tls(storage, require)

    tls = config.tls
    require(hub.trusted_proxy == "" or tls.cert_file is None, "hub.trusted_proxy",
            hub.trusted_proxy, "cannot be used when the hub serves TLS itself (tls.cert_file)",
            "Terminate TLS either at the proxy or at the hub, and clear the other setting")
    require((tls.cert_file is None) == (tls.key_file is None), "tls.key_file", tls.key_file,
            "must be set together with tls.cert_file", "Give both the certificate and its key")
    require(tls.client_ca_file is None or tls.cert_file is not None, "tls.client_ca_file",
            tls.client_ca_file, "needs tls.cert_file",
            "Client certificates need TLS: set tls.cert_file and tls.key_file")
    for key, tls_path in (("tls.cert_file", tls.cert_file), ("tls.key_file", tls.key_file),
                          ("tls.client_ca_file", tls.client_ca_file)):
        require(tls_path is None or tls_path.is_file(), key, tls_path, "is not a readable file",
                "Give the path of a PEM file")

    auth = config.auth
    require(1 <= auth.argon2_time_cost <= 100, "auth.argon2_time_cost", auth.argon2_time_cost,
            "must be in [1, 100]", "Use 3 (RFC 9106)")
    require(1 <= auth.argon2_parallelism <= 64, "auth.argon2_parallelism",
            auth.argon2_parallelism, "must be in [1, 64]", "Use 4 (RFC 9106)")
    require(auth.argon2_memory_cost_kib >= 8 * auth.argon2_parallelism,
            "auth.argon2_memory_cost_kib", auth.argon2_memory_cost_kib,
            "must be at least 8 KiB per lane (argon2 requirement)",
            "Use 65536 (64 MiB, RFC 9106)")
    require(auth.credential_cache_seconds >= 0, "auth.credential_cache_seconds",
            auth.credential_cache_seconds, "must be >= 0", "Use 0 to verify every request")
    require(auth.max_failures_per_address >= 0, "auth.max_failures_per_address",
            auth.max_failures_per_address, "must be >= 0",
            "Use 0 to disable the limit, or 30")
    require(auth.max_failures_per_username >= 0, "auth.max_failures_per_username",
            auth.max_failures_per_username, "must be >= 0",
            "Use 0 to disable the limit, or 10")
    require(0 < auth.failure_window_seconds <= 86400, "auth.failure_window_seconds",
            auth.failure_window_seconds, "must be in (0, 86400]",
            "Use a few minutes, for example 300")
    require(1 <= auth.max_concurrent_verifications <= 64, "auth.max_concurrent_verifications",
            auth.max_concurrent_verifications, "must be in [1, 64]",
            "Use 2, or at most the number of CPU cores")

    rounds = config.rounds
    require(rounds.round_seconds >= 1, "rounds.round_seconds", rounds.round_seconds,
            "must be >= 1", "Use the agents' round length, for example 300")
    require(rounds.quorum_sites >= 1, "rounds.quorum_sites", rounds.quorum_sites,
            "must be >= 1", "Use the number of sites a round should wait for, for example 3")
    require(rounds.deadline_seconds >= 1, "rounds.deadline_seconds", rounds.deadline_seconds,
            "must be >= 1", "Use a few round lengths, for example 900")
    require(rounds.max_clock_skew_seconds >= 0, "rounds.max_clock_skew_seconds",
            rounds.max_clock_skew_seconds, "must be >= 0", "Use 300")
    require(rounds.retention_days >= 1, "rounds.retention_days", rounds.retention_days,
            "must be >= 1", "Use 30, or more when replaying old captures")

    secure = config.secure
    require(secure.mode in PRIVACY_MODES, "secure.mode", secure.mode, "is not a known mode",
            f"Use one of: {', '.join(PRIVACY_MODES)}")
    require(2 <= secure.min_sites <= 1000, "secure.min_sites", secure.min_sites,
            "must be in [2, 1000]", "Use 3 or more; a sum of two sites reveals each to the other")
    require(secure.neighbours_per_site is None
            or (secure.neighbours_per_site >= 2 and secure.neighbours_per_site % 2 == 0),
            "secure.neighbours_per_site", secure.neighbours_per_site, "must be an even number >= 2",
            "Leave it unset to mask every pair of sites, or use an even degree such as 16")
    require(1 <= secure.sketch_rows <= 8, "secure.sketch_rows", secure.sketch_rows,
            "must be in [1, 8]", "Use 2")
    require(16 <= secure.sketch_width <= 1 << 22, "secure.sketch_width", secure.sketch_width,
            "must be in [16, 4194304]", "Use 32768")
    require(secure.sketch_threshold >= 1, "secure.sketch_threshold", secure.sketch_threshold,
            "must be >= 1", "Use 10")
    require(0 < secure.stage_timeout_seconds <= 86400, "secure.stage_timeout_seconds",
            secure.stage_timeout_seconds, "must be in (0, 86400]", "Use 300")
    require(bool(secure.families) and len(set(secure.families)) == len(secure.families)
            and set(secure.families) <= set(FAMILIES), "secure.families", list(secure.families),
            f"must list distinct families of {', '.join(FAMILIES)}",
            "List the families the sites configure, for example [network, authentication]")
    _validate_secure_privacy(secure, require)

    fusion = config.fusion
    require(fusion.strategy in STRATEGIES, "fusion.strategy", fusion.strategy,
            "is not a known strategy", f"Use one of: {', '.join(STRATEGIES)}")
    require(fusion.lookback_rounds >= 1, "fusion.lookback_rounds", fusion.lookback_rounds,
            "must be >= 1", "Use 1 to fuse the closing round only")
    require(0 < fusion.publish_threshold <= 1, "fusion.publish_threshold",
            fusion.publish_threshold, "must be in (0, 1]", "Use 0.5")
    require(fusion.min_corroborating_sites >= 1, "fusion.min_corroborating_sites",
            fusion.min_corroborating_sites, "must be >= 1", "Use 2")
    for key, value in (("fusion.trust_prior_alpha", fusion.trust_prior_alpha),
                       ("fusion.trust_prior_beta", fusion.trust_prior_beta)):
        require(value > 0 and math.isfinite(value), key, value, "must be a finite number > 0",
                "Use alpha=2 and beta=1 (prior precision 2/3)")
    require(0 < fusion.corroboration_epsilon <= 100, "fusion.corroboration_epsilon",
            fusion.corroboration_epsilon, "must be in (0, 100]", "Use 1.0")
    require(fusion.indicator_ttl_seconds >= 1, "fusion.indicator_ttl_seconds",
            fusion.indicator_ttl_seconds, "must be >= 1", "Use 86400 (one day)")
    require(fusion.tlp in TLP_LEVELS, "fusion.tlp", fusion.tlp, "is not a TLP level predefined by STIX 2.1",
            f"Use one of: {', '.join(TLP_LEVELS)}")

    siem = config.siem
    require(re.fullmatch(r"[a-z0-9][a-z0-9._+-]*", siem.elastic_index) is not None,
            "siem.elastic_index", siem.elastic_index,
            "is not a valid Elasticsearch index or data stream name",
            "Use lower case, for example logs-ti_fti.indicator-default")
    for url_key, url, secret_key, secret_file in (
            ("siem.splunk_hec_url", siem.splunk_hec_url, "siem.splunk_hec_token_file",
             siem.splunk_hec_token_file),
            ("siem.elastic_url", siem.elastic_url, "siem.elastic_api_key_file",
             siem.elastic_api_key_file)):
        if url is None:
            continue
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        require(valid, url_key, mask_url(url), "is not an http or https URL with a host",
                "Use the SIEM's base URL, for example https://siem.example.org:8088")
        require(not url_has_credentials(url), url_key, mask_url(url),
                "carries a user or password, which the hub would log with its configuration",
                f"Remove them from the URL and put the credential in {secret_key}")
        require(secret_file is not None, secret_key, secret_file,
                f"is required when {url_key} is set",
                "Give a file, mode 600, with the credential on its first line")


def _validate_secure_privacy(secure: SecureSettings, require: Callable[[bool, str, Any, str, str], None]) -> None:
    """Check the privacy settings of ``secure`` with the ranges the agent accepts for its own."""
    fix = "Use the value of the same key in the sites' privacy section"
    require(0 < secure.epsilon_per_round <= 10, "secure.epsilon_per_round", secure.epsilon_per_round,
            "must be in (0, 10]", fix)
    require(0 < secure.delta_per_round < 1e-2, "secure.delta_per_round", secure.delta_per_round,
            "must be in (0, 0.01)", fix)
    require(secure.unit in SECURE_UNITS, "secure.unit", secure.unit, "is not a known unit",
            f"Use one of: {', '.join(SECURE_UNITS)}")
    require(secure.max_observables_per_entity >= 1, "secure.max_observables_per_entity",
            secure.max_observables_per_entity, "must be >= 1", fix)
    require(secure.max_windows_per_entity >= 1, "secure.max_windows_per_entity",
            secure.max_windows_per_entity, "must be >= 1", fix)
    shares = {"secure.histogram_share": secure.histogram_share, "secure.count_share": secure.count_share,
              "secure.score_share": secure.score_share}
    for key, share in shares.items():
        require(math.isfinite(share) and share > 0, key, share, "must be > 0", fix)
    require(abs(sum(shares.values()) - 1.0) <= 1e-9, "secure.histogram_share", list(shares.values()),
            "the three shares (histogram, count, score) must add up to 1", fix)


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def validate_postgresql_dsn(
    dsn: str, require: Callable[[bool, str, Any, str, str], None]
) -> None:
    """Check that libpq can read ``dsn`` and that its sslmode and port are valid.

    Errors never show the DSN or any value read from it, which may contain a password, and show
    libpq's message without the parts of the DSN that it quotes.
    """
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    fix = ("Write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE, with special "
           "characters of the password percent-encoded ('/' as %2F, '@' as %40)")
    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError as err:
        require(False, "storage.postgresql_dsn", _HIDDEN_DSN,
                f"is not a libpq connection URI or key=value string ({conninfo_problem(err)})",
                fix)
        return
    except UnicodeDecodeError:
        require(False, "storage.postgresql_dsn", _HIDDEN_DSN,
                "has a percent escape that does not decode to UTF-8 text", fix)
        return
    # A mistyped DSN can put part of the password into any field, so no value is shown.
    host_fields = " ".join(str(params.get(name, "")) for name in ("host", "hostaddr", "port"))
    require(not _misplaced_at(dsn) and "@" not in host_fields, "storage.postgresql_dsn",
            _HIDDEN_DSN,
            "has an '@' outside its user part, so libpq would read part of the password as "
            "the host, port, database name or an option", fix)
    dbname = str(params.get("dbname", ""))
    require("=" not in dbname and "://" not in dbname, "storage.postgresql_dsn", _HIDDEN_DSN,
            "has a connection string as its database name",
            "Put every connection setting in the DSN itself and only a name in dbname")
    sslmode = params.get("sslmode")
    require(sslmode is None or sslmode in POSTGRESQL_SSLMODES, "storage.postgresql_dsn",
            _HIDDEN_DSN, "sets an sslmode that libpq does not know",
            f"Use one of: {', '.join(POSTGRESQL_SSLMODES)}")
    for port in str(params.get("port", "5432")).split(","):
        require(port.isascii() and port.isdigit() and 1 <= int(port) <= 65535,
                "storage.postgresql_dsn", _HIDDEN_DSN, "sets a port that is not a TCP port",
                "Give a port from 1 to 65535, such as 5432")


# Shown in place of a DSN in configuration errors.
_HIDDEN_DSN = "(not shown, since it may contain a password)"


def connection_problem(err: BaseException, dsn: str) -> str:
    """Return libpq's message about a failed connection, with unknown quoted text left out.

    libpq quotes what it connected to, which the log may show, but also an option value it
    rejects, which a mistyped DSN may have filled with part of the password. Only quoted
    text equal to a field that ``mask_dsn`` shows is kept.
    """
    first = first_line(err)
    params = _parse_dsn(dsn) or {}
    known = {str(params[name]) for name, pattern in _SHOWN_FIELDS.items()
             if name in params and pattern.fullmatch(str(params[name]))}
    return re.sub(r'"([^"]*)"', lambda quoted: quoted.group(0) if quoted.group(1) in known
                  else '"..."', first)


def conninfo_problem(err: BaseException) -> str:
    """Return libpq's message about a connection string, cut before the first quote.

    libpq quotes the part of the string it could not read, which may be the password, as in
    ``invalid percent-encoded token: "...``, and the quoted part may itself contain quotes.
    """
    first = first_line(err)
    quote = first.find('"')
    return first if quote < 0 else first[:quote] + '"..."'


def first_line(err: BaseException) -> str:
    """Return the first line of an error's message, or its type name if it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def validate_postgresql_tls(
    storage: StorageSettings, require: Callable[[bool, str, Any, str, str], None]
) -> None:
    """Check the ``storage.postgresql_ssl*`` keys with ``require(ok, key, value, problem, fix)``."""
    tls_keys = (("storage.postgresql_sslmode", storage.postgresql_sslmode or None),
                ("storage.postgresql_sslrootcert", storage.postgresql_sslrootcert),
                ("storage.postgresql_sslcert", storage.postgresql_sslcert),
                ("storage.postgresql_sslkey", storage.postgresql_sslkey))
    for key, value in tls_keys:
        require(value is None or storage.backend == "postgresql", key, value,
                "applies only to storage.backend postgresql",
                "Remove the key, or set storage.backend: postgresql")
    sslmode = storage.postgresql_sslmode
    require(sslmode == "" or sslmode in POSTGRESQL_SSLMODES, "storage.postgresql_sslmode",
            sslmode, "is not a libpq sslmode",
            f"Use one of: {', '.join(POSTGRESQL_SSLMODES)} (verify-full across a network)")
    require(sslmode not in ("verify-ca", "verify-full")
            or storage.postgresql_sslrootcert is not None,
            "storage.postgresql_sslrootcert", storage.postgresql_sslrootcert,
            f"must be set when storage.postgresql_sslmode is {sslmode}",
            "Give the PEM file of the CA that signed the PostgreSQL server's certificate")
    require((storage.postgresql_sslcert is None) == (storage.postgresql_sslkey is None),
            "storage.postgresql_sslkey", storage.postgresql_sslkey,
            "must be set together with storage.postgresql_sslcert",
            "Give both the client certificate and its key, or neither")
    for key, tls_path in tls_keys[1:]:
        require(tls_path is None or tls_path.is_file(), key, tls_path,
                "is not a readable file", "Give the path of a PEM file")


def _unreadable_character(path: Path, text: str,
                          err: yaml.reader.ReaderError) -> HubConfigError:
    """Return the error for a character that YAML does not allow, such as a control code."""
    line = text[:err.position].count("\n") + 1 if isinstance(err.position, int) else None
    code = err.character if isinstance(err.character, int) else 0
    return HubConfigError(
        path, key=None, value=None,
        problem=f"the file contains a character that YAML does not allow (code {code:#x})",
        fix="Remove control characters from the file", line=line,
    )


def _parse_yaml(path: Path, text: str) -> tuple[Any, dict[str, int], dict[str, str]]:
    """Return the document, the line of each dotted key and the source text of each scalar."""
    try:
        loader = _HubYamlLoader(text)
    except yaml.reader.ReaderError as err:
        raise _unreadable_character(path, text, err) from None
    lines: dict[str, int] = {}
    texts: dict[str, str] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines, texts
        return _node_to_python(path, loader, node, "", lines, texts), lines, texts
    except yaml.reader.ReaderError as err:
        raise _unreadable_character(path, text, err) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raw_problem = str(err.problem or err.context or "")
        problem = yaml_problem(err)
        if "'\\t'" in raw_problem or "\t" in raw_problem:
            problem = f"a tab at column {column} is used for indentation, which YAML forbids"
            fix = "Indent with spaces"
        else:
            problem = f"invalid YAML at column {column}: {problem}"
            fix = "Fix the syntax at this line"
        raise HubConfigError(
            path, key=None, value=None, problem=problem, fix=fix, line=line
        ) from err
    finally:
        loader.dispose()


def _node_to_python(
    path: Path,
    loader: _HubYamlLoader,
    node: Node,
    prefix: str,
    lines: dict[str, int],
    texts: dict[str, str],
) -> Any:
    if isinstance(node, MappingNode):
        # Merge keys (<<) are expanded first, so they are not reported as duplicates.
        loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(path, loader, key_node)
            dotted = f"{prefix}{key}"
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise HubConfigError(
                    path, key=f"{prefix}(a key that is not a string)", value=None,
                    problem="keys must be strings",
                    fix="Quote the key", line=line,
                )
            if key in result:
                raise HubConfigError(
                    path, key=dotted, value=None,
                    problem=f"is a duplicate key (first defined at line {lines[dotted]})",
                    fix="Keep one definition and merge the settings into it", line=line,
                )
            lines[dotted] = line
            result[key] = _node_to_python(path, loader, value_node, dotted + ".", lines, texts)
        return result
    if isinstance(node, SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            lines[f"{prefix[:-1]}[{index}]"] = item.start_mark.line + 1
            item_prefix = f"{prefix[:-1]}[{index}]."
            items.append(_node_to_python(path, loader, item, item_prefix, lines, texts))
        return items
    texts[prefix[:-1]] = str(node.value)
    return _construct(path, loader, node)


def _construct(path: Path, loader: _HubYamlLoader, node: Node) -> Any:
    """Build the value of a scalar node, as a configuration error where PyYAML cannot.

    A tag such as ``!!int`` on text that is no number makes PyYAML's constructors raise
    ValueError or KeyError with the text in the message, which may be a password.
    """
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, KeyError, TypeError, OverflowError, AttributeError) as err:
        raise HubConfigError(
            path, key=None, value=None,
            problem=f"the value at column {node.start_mark.column + 1} cannot be read as its "
                    f"YAML type ({type(err).__name__})",
            fix="Remove the !! tag or write a value of that type", line=node.start_mark.line + 1,
        ) from None


def _build_section(
    path: Path,
    name: str,
    section_type: type,
    raw: Any,
    lines: dict[str, int],
    texts: dict[str, str],
) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise HubConfigError(
            path, key=name, value=None, problem="must be a mapping of settings",
            fix=f"Write the settings of '{name}' indented under it, or remove the line",
            line=lines.get(name),
        )
    hints = typing.get_type_hints(section_type)
    known = {f.name for f in dataclasses.fields(section_type)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{name}.{key}"
        if key not in known:
            # The value is not shown: a misspelled key may contain a password.
            raise HubConfigError(
                path, key=dotted, value=None, problem="is not a known setting",
                fix=f"Use one of: {', '.join(sorted(known))}", line=lines.get(dotted),
            )
        values[key] = _coerce(
            path, dotted, value, hints[key], line=lines.get(dotted), text=texts.get(dotted)
        )
    return section_type(**values)


def _coerce(
    path: Path, key: str, value: Any, expected: Any, *, line: int | None, text: str | None
) -> Any:
    """Check ``value`` against a field type; only int -> float and str -> Path convert.

    ``text`` is the value as written in the file, used in the suggested fix.
    """
    optional = False
    if isinstance(expected, types.UnionType) or typing.get_origin(expected) is typing.Union:
        members = [t for t in typing.get_args(expected) if t is not type(None)]
        optional = len(members) < len(typing.get_args(expected))
        expected = members[0]
    if value is None:
        if optional:
            return None
        raise HubConfigError(
            path, key=key, value=value, problem="must have a value",
            fix="Give a value or remove the line to use the default", line=line,
        )

    def reject(kind: str, fix: str) -> HubConfigError:
        found = _HIDDEN_DSN if key in SECRET_SETTINGS else value
        return HubConfigError(path, key=key, value=found, problem=f"must be {kind}",
                              fix=fix, line=line)

    if expected is bool:
        if isinstance(value, bool):
            return value
        raise reject("true or false", "Write true or false")
    if expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise reject("a whole number", "Write digits only, without quotes, for example 300")
    if expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise reject("a finite number", "Write a number such as 0.5")
            return float(value)
        raise reject("a number", "Write a number without quotes, for example 0.5 or 1.0e-3")
    if expected is str or expected is Path:
        if isinstance(value, str):
            return Path(value) if expected is Path else value
        hint = ""
        if isinstance(value, bool):
            hint = " (YAML 1.1 reads yes/no/on/off as booleans)"
        # Only a number or boolean is repeated: other text may be a secret.
        example = (text if isinstance(value, (bool, int, float)) and key not in SECRET_SETTINGS
                   else "...")
        raise reject("a string", f"Quote the value{hint}, for example \"{example}\"")
    if typing.get_origin(expected) is tuple:
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise reject("a list of names", "Write a YAML list, for example [network, authentication]")
    raise TypeError(f"unsupported configuration type {expected!r} for {key}")


def _resolve_paths(config: HubConfig, base: Path) -> HubConfig:
    def resolve(candidate: Path | None) -> Path | None:
        if candidate is None or candidate.is_absolute():
            return candidate
        return base / candidate

    storage = dataclasses.replace(
        config.storage,
        path=resolve(config.storage.path),
        postgresql_sslrootcert=resolve(config.storage.postgresql_sslrootcert),
        postgresql_sslcert=resolve(config.storage.postgresql_sslcert),
        postgresql_sslkey=resolve(config.storage.postgresql_sslkey),
    )
    siem = dataclasses.replace(
        config.siem,
        splunk_hec_path=resolve(config.siem.splunk_hec_path),
        elastic_bulk_path=resolve(config.siem.elastic_bulk_path),
        splunk_hec_token_file=resolve(config.siem.splunk_hec_token_file),
        elastic_api_key_file=resolve(config.siem.elastic_api_key_file),
        spool_dir=resolve(config.siem.spool_dir),
    )
    tls = dataclasses.replace(
        config.tls,
        cert_file=resolve(config.tls.cert_file),
        key_file=resolve(config.tls.key_file),
        client_ca_file=resolve(config.tls.client_ca_file),
    )
    return dataclasses.replace(config, storage=storage, siem=siem, tls=tls)

