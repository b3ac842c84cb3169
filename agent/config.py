"""Typed agent configuration loaded from YAML.

Precedence: the defaults below, then the file. Nothing deep inside the agent reads the
environment; the CLI passes the loaded, frozen :class:`AgentConfig` down.

YAML is parsed with a loader that rejects duplicate keys, because PyYAML silently keeps the
last of two ``hub:`` blocks. Every value is then checked against its declared type. An
unquoted ``no`` (a boolean in YAML 1.1) where a string belongs, or ``1e-3`` read as a string,
is therefore reported with the file, line, key, value and the fix instead of failing later.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, NoReturn
from urllib.parse import urlsplit

import yaml

from agent.errors import ConfigError
from agent.families import ALLOWED_FAMILIES
from fti.config_text import mask_url, url_has_credentials, yaml_problem

# Ranges that are never shared as observables and, by default, count as the site's own
# hosts: RFC 1918 private space, loopback, link-local, carrier-grade NAT (RFC 6598) and
# IPv6 unique-local and link-local space.
DEFAULT_INTERNAL_NETWORKS: tuple[str, ...] = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
)


@dataclass(frozen=True)
class SiteSection:
    id: str
    signing_key: Path
    internal_networks: tuple[str, ...] = DEFAULT_INTERNAL_NETWORKS
    # Domains that belong to the site (its own zones); never shared.
    internal_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class HubSection:
    # TAXII discovery URL, for example http://127.0.0.1:8443/taxii2/
    url: str
    username: str
    password: str = field(default="", repr=False)
    password_file: Path | None = None
    api_root: str = ""  # empty: the discovery resource's default API root
    # The hub's hub.name. Secure mode follows only round objects created by the STIX identity
    # of this name, and ignores any other object stored under a round's id.
    name: str = "fti-hub"
    summaries_collection: str = "summaries"
    fused_collection: str = "fused-indicators"
    # Every network call has a timeout; ten seconds covers a loaded hub on a WAN link.
    timeout_secs: float = 10.0
    verify_tls: bool = True
    # Bounded retries per delivery attempt in --once mode; the outbox keeps the rest.
    max_send_attempts: int = 5
    retry_backoff_secs: float = 0.5


@dataclass(frozen=True)
class SourceSection:
    type: str
    paths: tuple[str, ...]
    # Replay only: shift event times so the earliest event of this source lands at this
    # instant. Lets captures from different days share rounds in a demonstration.
    replay_start: datetime | None = None
    # Detector families this source feeds. Empty means its type's default (zeek and
    # suricata: network, sshd: authentication, sysmon: process). A zeek source may add
    # authentication to score ssh.log.
    families: tuple[str, ...] = ()


@dataclass(frozen=True)
class WindowSection:
    # One minute is long enough to see a scan or a beacon's rhythm and short enough that a
    # host's benign bursts do not hide it.
    window_seconds: int = 60
    # An hour per round keeps the number of releases, and so the privacy cost, low.
    round_seconds: int = 3600


@dataclass(frozen=True)
class DetectorSection:
    name: str = "iforest"
    # The first rounds of event time train the detector and its calibration.
    baseline_rounds: int = 2
    # Fewer windows than this make the empirical CDF too coarse to calibrate against.
    min_baseline_windows: int = 32
    random_state: int = 0


@dataclass(frozen=True)
class PrivacySection:
    unit: str = "entity"
    epsilon_per_round: float = 1.0
    delta_per_round: float = 1e-6
    # At epsilon 1 per hourly round this budget lasts about ten rounds, after which releases
    # stop. Continuous operation needs a smaller epsilon_per_round (docs/privacy.md).
    budget_epsilon: float = 10.0
    budget_delta: float = 1e-4
    period_days: int = 30
    max_observables_per_entity: int = 4
    max_windows_per_entity: int = 60
    # Split of epsilon_per_round between the score histogram, the observable counts (which
    # also drive partition selection) and the observables' score sums.
    histogram_share: float = 0.2
    count_share: float = 0.5
    score_share: float = 0.3
    # plain: each site noises its own summary. secure: counts are summed across sites by
    # secure aggregation with distributed noise, so the hub receives only sums (docs/privacy.md).
    mode: str = "plain"
    # Secure mode: each site's noise share assumes at least this many honest sites in every
    # sum, and the site leaves any round whose threshold is lower.
    secure_min_sites: int = 3
    # Secure mode: how long the site waits for the hub to move on to each stage.
    secure_stage_timeout_secs: float = 300.0
    # Secure mode: file of pinned Ed25519 verify keys, one "<site id> <base64 key>" a line,
    # obtained out of band. Without it the site trusts the keys the hub lists for its peers.
    secure_peer_keys: Path | None = None


@dataclass(frozen=True)
class AlertSection:
    path: Path | None = None  # default: <state_dir>/alerts.jsonl


@dataclass(frozen=True)
class LiveSection:
    """Settings of ``fti agent run``'s file following and round closing (see :class:`agent.live.LiveSettings`)."""

    # One second keeps a round's release within seconds of its grace time. File-system
    # events wake the loop earlier, so a longer poll only delays logs on network shares.
    poll_interval_secs: float = 1.0
    # Zeek writes a conn record when the connection ends or after five minutes without packets
    # (the default tcp_inactivity_timeout), so a round waits that long for its last records.
    # A connection that stays active longer is logged after its round has closed.
    round_grace_secs: int = 300
    # "beginning" reads the files found at the first start in full, and "end" skips their
    # backlog. Files that appear later are always read from their beginning.
    start_at: str = "beginning"
    # A day of hourly rounds is still worth sharing. Older closed rounds are recorded as
    # beyond_horizon and not sent, so a restart on a long backlog does not flood the hub.
    restart_horizon_rounds: int = 24
    # Maximum time between checkpoints while no round closes. It bounds how much log a
    # crash makes the agent read again.
    commit_interval_secs: float = 60.0
    # Quiet time at the end of a rotated file before it is closed.
    rotate_wait_secs: float = 5.0
    # Bytes of each file read per poll, so an agent far behind a large log keeps one slice
    # of it in memory at a time. A backlog is read in slices with no wait between polls.
    # Catching up 1,000,000 conn lines took the same CPU time with 4 and 16 MiB slices, and
    # 4 MiB kept the agent's peak about 60 MiB lower (docs/benchmarks.md).
    max_poll_bytes: int = 4 << 20


@dataclass(frozen=True)
class OutboxSection:
    # A week of hourly rounds rides out a long hub outage. The hub rejects a summary for a
    # round it has closed, so older summaries are worth less than the space they take.
    max_summaries: int = 168


@dataclass(frozen=True)
class MetricsSection:
    """The Prometheus endpoint of ``fti agent run``, served at ``http://address:port/metrics``."""

    enabled: bool = True
    # Loopback only by default: the metrics name log files and count the site's activity.
    address: str = "127.0.0.1"
    port: int = 9477
    # A non-loopback address is rejected unless this is true.
    allow_non_loopback: bool = False


@dataclass(frozen=True)
class AgentConfig:
    site: SiteSection
    hub: HubSection
    sources: tuple[SourceSection, ...]
    state_dir: Path
    windows: WindowSection = WindowSection()
    detector: DetectorSection = DetectorSection()
    privacy: PrivacySection = PrivacySection()
    alerts: AlertSection = AlertSection()
    live: LiveSection = LiveSection()
    outbox: OutboxSection = OutboxSection()
    metrics: MetricsSection = MetricsSection()

    @property
    def alerts_path(self) -> Path:
        return self.alerts.path or self.state_dir / "alerts.jsonl"

    def read_hub_password(self) -> str:
        """Return the hub password, from ``hub.password_file`` when it is set.

        Raises
        ------
        ConfigError
            If the password file cannot be read, with the file, the key and the reason.
        """
        path = self.hub.password_file
        if path is None:
            return self.hub.password
        try:
            return path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or str(err)
            raise ConfigError(str(path), 0, "hub.password_file", None,
                              f"cannot read the password file ({reason}); write the site's hub password "
                              "into it or fix the path") from err


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loader that rejects a mapping key given twice and records line numbers."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                loader.name, key_node.start_mark.line + 1, str(key), None,
                f"duplicate key (first given on line {seen[key]}); keep one of them",
            )
        seen[key] = key_node.start_mark.line + 1
    mapping = loader.construct_mapping(node, deep=deep)
    mapping["__lines__"] = seen
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_agent_config(path: Path) -> AgentConfig:
    """Load and check an agent configuration file.

    Relative paths in the file are resolved against the file's folder.

    Raises
    ------
    ConfigError
        On a YAML syntax error, tab indentation, a duplicate or unknown key, a missing
        required key or a value of the wrong type or range; the error names the file, line,
        key and value and says how to fix it.
    """
    text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip(" ")
        if stripped.startswith("\t"):
            raise ConfigError(str(path), number, "", None, "tab used for indentation; indent with spaces")
    try:
        raw = yaml.load(text, Loader=_make_loader(path))  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        column = f" at column {mark.column + 1}" if mark else ""
        # The message leaves out the line itself, which may contain the hub password.
        raise ConfigError(str(path), line, "", None,
                          f"invalid YAML{column}: {yaml_problem(err)}") from err
    except (ValueError, KeyError, TypeError, OverflowError, AttributeError) as err:
        # A tag such as !!int on other text: PyYAML's message repeats the text.
        raise ConfigError(str(path), 0, "", None,
                          f"a value cannot be read as its YAML type ({type(err).__name__}); "
                          "remove the !! tag or write a value of that type") from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), 1, "", None, "the file must contain a mapping of sections")
    lines: dict[str, int] = {}
    config = _build(AgentConfig, raw, str(path), "", path.parent, lines)

    # Source patterns, like every other path, are relative to the configuration file.
    sources = tuple(
        # A blank path stays blank, so that validation rejects it instead of reading the folder.
        replace(s, paths=tuple(p if not p.strip() or Path(p).is_absolute() else str(path.parent.resolve() / p)
                               for p in s.paths))
        for s in config.sources
    )
    config = replace(config, sources=sources)
    check_agent_config(config, str(path), lines)
    return config


def _make_loader(path: Path) -> type[_UniqueKeyLoader]:
    class Loader(_UniqueKeyLoader):
        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self.name = str(path)

    return Loader


def _build(cls: type, raw: dict, source: str, prefix: str, base: Path, key_lines: dict[str, int]) -> Any:
    """Build ``cls`` from a mapping; record each dotted key's line in ``key_lines``."""
    lines: dict[str, int] = raw.pop("__lines__", {})
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            # The value is not shown: a misspelled key may contain a password.
            raise ConfigError(
                source, lines.get(key, 0), prefix + str(key), None,
                f"unknown key; allowed keys here are: {', '.join(sorted(known))}",
            )
    values: dict[str, Any] = {}
    for name, spec in known.items():
        line = lines.get(name, 0)
        key_lines[prefix + name] = line
        if name not in raw:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise ConfigError(source, 0, prefix + name, None, "required key is missing")
            continue
        values[name] = _convert(spec.type, raw[name], source, line, prefix + name, base, key_lines)
    return cls(**values)


def _convert(type_text: Any, value: Any, source: str, line: int, key: str, base: Path,
             key_lines: dict[str, int]) -> Any:
    nested = _SECTIONS.get(type_text)
    if nested is not None:
        if not isinstance(value, dict):
            # The value is not shown: it may be a whole section, password included.
            raise ConfigError(source, line, key, None, "expected a mapping of keys")
        return _build(nested, value, source, key + ".", base, key_lines)
    if type_text == "tuple[SourceSection, ...]":
        if not isinstance(value, list) or not value:
            raise ConfigError(source, line, key, value, "expected a non-empty list of sources")
        return tuple(
            _convert("SourceSection", item, source, line, f"{key}[{i}]", base, key_lines)
            for i, item in enumerate(value)
        )
    if type_text == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(source, line, key, value, "expected a list of quoted strings (quote yes/no/on/off)")
        return tuple(value)
    if type_text == "str":
        if not isinstance(value, str):
            raise ConfigError(source, line, key, value, "expected a string; put the value in quotes")
        return value
    if type_text == "bool":
        if not isinstance(value, bool):
            raise ConfigError(source, line, key, value, "expected true or false")
        return value
    if type_text == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, line, key, value, "expected an integer")
        return value
    if type_text == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, line, key, value, "expected a number; write 1.0e-3 rather than 1e-3")
        return float(value)
    if type_text in ("Path", "Path | None"):
        if value is None and type_text == "Path | None":
            return None
        if not isinstance(value, str):
            raise ConfigError(source, line, key, value, "expected a file path as a string")
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else (base / candidate).resolve()
    if type_text == "datetime | None":
        return _parse_instant(value, source, line, key)
    raise ConfigError(source, line, key, value, f"unsupported type {type_text}")


def _parse_instant(value: Any, source: str, line: int, key: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        instant = value
    elif isinstance(value, str):
        try:
            instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as err:
            raise ConfigError(source, line, key, value, "expected an ISO 8601 time such as 2024-05-01T00:00:00Z") from err
    else:
        raise ConfigError(source, line, key, value, "expected an ISO 8601 time such as 2024-05-01T00:00:00Z")
    return instant if instant.tzinfo else instant.replace(tzinfo=timezone.utc)


_SECTIONS: dict[str, type] = {
    "SiteSection": SiteSection,
    "HubSection": HubSection,
    "SourceSection": SourceSection,
    "WindowSection": WindowSection,
    "DetectorSection": DetectorSection,
    "PrivacySection": PrivacySection,
    "AlertSection": AlertSection,
    "LiveSection": LiveSection,
    "OutboxSection": OutboxSection,
    "MetricsSection": MetricsSection,
}

SOURCE_TYPES = ("zeek", "suricata", "sshd", "sysmon")
# The site id travels in every summary, whose schema allows exactly these ids.
SITE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# scikit-learn takes a seed in [0, 2**32 - 1].
MAX_RANDOM_STATE = 2**32 - 1
# Ten years: the ledger's period arithmetic must stay inside datetime's range, and a longer
# budget period is a typing mistake.
MAX_PERIOD_DAYS = 3660
MAX_SEND_ATTEMPTS = 10
MAX_TIMEOUT_SECS = 600.0
MAX_RETRY_BACKOFF_SECS = 60.0
DETECTORS = ("iforest", "ecod", "hbos")
PRIVACY_UNITS = ("entity", "entity-window")
PRIVACY_MODES = ("plain", "secure")


def check_agent_config(config: AgentConfig, source: str = "<config>", lines: dict[str, int] | None = None) -> None:
    """Check ranges and cross-field rules that types alone cannot express.

    ``lines`` maps dotted keys to their line in the file, so that an error names the line.
    """
    lines = lines or {}

    def fail(key: str, value: Any, fix: str) -> NoReturn:
        line = lines.get(key) or lines.get(key.split("[", 1)[0], 0)
        raise ConfigError(source, line, key, value, fix)

    if not SITE_ID_PATTERN.fullmatch(config.site.id):
        fail("site.id", config.site.id, "must be 1 to 128 letters, digits, '.', '_' or '-', starting with a "
             "letter or digit")
    _check_hub(config.hub, fail)
    _check_live(config, fail)

    for index, item in enumerate(config.sources):
        if item.type not in SOURCE_TYPES:
            fail(f"sources[{index}].type", item.type, f"supported source types: {', '.join(SOURCE_TYPES)}")
        if not item.paths or not all(isinstance(pattern, str) and pattern.strip() for pattern in item.paths):
            fail(f"sources[{index}].paths", list(item.paths),
                 "give one or more file paths or glob patterns, such as /opt/zeek/logs/current/conn.log")
        allowed = ALLOWED_FAMILIES[item.type]
        for family in item.families:
            if family not in allowed:
                fail(f"sources[{index}].families", list(item.families),
                     f"a {item.type} source feeds only: {', '.join(allowed)}")
    for network in config.site.internal_networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            fail("site.internal_networks", network, "write networks in CIDR form, such as 10.0.0.0/8")
    windows = config.windows
    if windows.window_seconds <= 0:
        fail("windows.window_seconds", windows.window_seconds, "must be > 0")
    if windows.round_seconds <= 0:
        fail("windows.round_seconds", windows.round_seconds, "must be a positive multiple of windows.window_seconds")
    if windows.window_seconds > windows.round_seconds:
        fail("windows.window_seconds", windows.window_seconds,
             f"must be at most windows.round_seconds ({windows.round_seconds})")
    if windows.round_seconds % windows.window_seconds:
        fail("windows.round_seconds", windows.round_seconds, "must be a positive multiple of windows.window_seconds")
    if config.detector.name not in DETECTORS:
        fail("detector.name", config.detector.name, f"choose one of {', '.join(DETECTORS)}")
    if config.detector.baseline_rounds < 1:
        fail("detector.baseline_rounds", config.detector.baseline_rounds, "must be >= 1")
    if config.detector.min_baseline_windows < 8:
        fail("detector.min_baseline_windows", config.detector.min_baseline_windows, "must be >= 8")
    if not 0 <= config.detector.random_state <= MAX_RANDOM_STATE:
        fail("detector.random_state", config.detector.random_state, f"must be in [0, {MAX_RANDOM_STATE}]")
    privacy = config.privacy
    if privacy.unit not in PRIVACY_UNITS:
        fail("privacy.unit", privacy.unit, f"choose one of {', '.join(PRIVACY_UNITS)}")
    if not 0 < privacy.epsilon_per_round <= 10:
        fail("privacy.epsilon_per_round", privacy.epsilon_per_round, "must be in (0, 10]")
    if not 0 < privacy.delta_per_round < 1e-2:
        fail("privacy.delta_per_round", privacy.delta_per_round, "must be in (0, 0.01)")
    if not 0 < privacy.budget_epsilon <= 1000:
        fail("privacy.budget_epsilon", privacy.budget_epsilon, "must be in (0, 1000]")
    if not 0 < privacy.budget_delta < 1:
        fail("privacy.budget_delta", privacy.budget_delta, "must be in (0, 1)")
    if privacy.epsilon_per_round > privacy.budget_epsilon:
        fail("privacy.epsilon_per_round", privacy.epsilon_per_round,
             f"must be at most privacy.budget_epsilon ({privacy.budget_epsilon}), or no round can be released")
    if privacy.delta_per_round >= privacy.budget_delta:
        fail("privacy.delta_per_round", privacy.delta_per_round,
             f"must be below privacy.budget_delta ({privacy.budget_delta}), or no round can be released")
    if not 1 <= privacy.period_days <= MAX_PERIOD_DAYS:
        fail("privacy.period_days", privacy.period_days, f"must be in [1, {MAX_PERIOD_DAYS}]")
    if windows.round_seconds > privacy.period_days * 86400:
        fail("windows.round_seconds", windows.round_seconds,
             f"must be at most the budget period (privacy.period_days = {privacy.period_days} days)")
    if privacy.max_observables_per_entity < 1:
        fail("privacy.max_observables_per_entity", privacy.max_observables_per_entity, "must be >= 1")
    if privacy.max_windows_per_entity < 1:
        fail("privacy.max_windows_per_entity", privacy.max_windows_per_entity, "must be >= 1")
    if privacy.mode not in PRIVACY_MODES:
        fail("privacy.mode", privacy.mode, f"choose one of {', '.join(PRIVACY_MODES)}")
    if not 2 <= privacy.secure_min_sites <= 1000:
        fail("privacy.secure_min_sites", privacy.secure_min_sites,
             "must be in [2, 1000]; a sum of two sites reveals each to the other, so use 3 or more")
    if not 0 < privacy.secure_stage_timeout_secs <= 86400:
        fail("privacy.secure_stage_timeout_secs", privacy.secure_stage_timeout_secs, "must be in (0, 86400]")
    shares = (privacy.histogram_share, privacy.count_share, privacy.score_share)
    if any(not math.isfinite(share) or share <= 0 for share in shares) or abs(sum(shares) - 1.0) > 1e-9:
        key = next((f"privacy.{name}" for name, share in zip(("histogram_share", "count_share", "score_share"), shares)
                    if not math.isfinite(share) or share <= 0), "privacy.histogram_share")
        fail(key, shares, "the three shares (histogram, count, score) must be > 0 and add up to 1")
    if not config.hub.password and config.hub.password_file is None:
        fail("hub.password_file", None, "give hub.password_file (or hub.password) with the site's hub credential")


def _check_hub(hub: HubSection, fail: Callable[[str, Any, str], NoReturn]) -> None:
    example = "such as http://127.0.0.1:8443/taxii2/"
    masked_url = mask_url(hub.url)
    try:
        parts = urlsplit(hub.url)
    except ValueError:
        fail("hub.url", masked_url, f"is not a valid URL; give the hub's TAXII discovery URL, {example}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail("hub.url", masked_url, f"expected the http:// or https:// URL of the hub's TAXII discovery resource, {example}")
    try:
        parts.port
    except ValueError:
        fail("hub.url", masked_url, f"invalid port; give a port in [1, 65535], {example}")
    if url_has_credentials(hub.url):
        fail("hub.url", masked_url, "carries a user or password, which the agent would log; "
                               "give them in hub.username and hub.password_file instead")
    if not hub.name.strip():
        fail("hub.name", hub.name, "must be the hub's hub.name, fti-hub unless the hub sets another")
    if not (math.isfinite(hub.timeout_secs) and 0 < hub.timeout_secs <= MAX_TIMEOUT_SECS):
        fail("hub.timeout_secs", hub.timeout_secs, f"must be > 0 and at most {MAX_TIMEOUT_SECS:g} seconds")
    if not 1 <= hub.max_send_attempts <= MAX_SEND_ATTEMPTS:
        fail("hub.max_send_attempts", hub.max_send_attempts,
             f"must be in [1, {MAX_SEND_ATTEMPTS}]; the outbox keeps what is not delivered for the next run")
    if not (math.isfinite(hub.retry_backoff_secs) and 0 <= hub.retry_backoff_secs <= MAX_RETRY_BACKOFF_SECS):
        fail("hub.retry_backoff_secs", hub.retry_backoff_secs, f"must be in [0, {MAX_RETRY_BACKOFF_SECS:g}] seconds")


START_POSITIONS = ("beginning", "end")
# Beyond a minute between polls the agent is no longer live. Past an hour of grace a round's
# release lags far behind the hub's deadline.
MAX_POLL_INTERVAL_SECS = 60.0
MAX_ROUND_GRACE_SECS = 3600
MAX_OUTBOX_SUMMARIES = 100_000
# A slice below 4 KiB contains a few lines only, so a backlog would take many polls for no
# saving. Past 1 GiB per file per poll the bound no longer protects a small machine's memory.
MIN_POLL_BYTES = 4096
MAX_POLL_BYTES = 1 << 30


def _check_live(config: AgentConfig, fail: Callable[[str, Any, str], NoReturn]) -> None:
    """Check the settings of ``fti agent run``: the live loop, the outbox and the metrics endpoint."""
    live = config.live
    if not (math.isfinite(live.poll_interval_secs) and 0 < live.poll_interval_secs <= MAX_POLL_INTERVAL_SECS):
        fail("live.poll_interval_secs", live.poll_interval_secs,
             f"must be > 0 and at most {MAX_POLL_INTERVAL_SECS:g} seconds")
    if not 0 <= live.round_grace_secs <= MAX_ROUND_GRACE_SECS:
        fail("live.round_grace_secs", live.round_grace_secs, f"must be in [0, {MAX_ROUND_GRACE_SECS}] seconds")
    if live.start_at not in START_POSITIONS:
        fail("live.start_at", live.start_at, f"choose one of {', '.join(START_POSITIONS)}")
    if live.restart_horizon_rounds < 1:
        fail("live.restart_horizon_rounds", live.restart_horizon_rounds, "must be >= 1")
    if not (math.isfinite(live.commit_interval_secs) and live.commit_interval_secs > 0):
        fail("live.commit_interval_secs", live.commit_interval_secs, "must be > 0 seconds")
    if not (math.isfinite(live.rotate_wait_secs) and live.rotate_wait_secs >= 0):
        fail("live.rotate_wait_secs", live.rotate_wait_secs, "must be >= 0 seconds")
    if not MIN_POLL_BYTES <= live.max_poll_bytes <= MAX_POLL_BYTES:
        fail("live.max_poll_bytes", live.max_poll_bytes,
             f"must be in [{MIN_POLL_BYTES}, {MAX_POLL_BYTES}] bytes; the default is 4194304 (4 MiB)")
    if not 1 <= config.outbox.max_summaries <= MAX_OUTBOX_SUMMARIES:
        fail("outbox.max_summaries", config.outbox.max_summaries, f"must be in [1, {MAX_OUTBOX_SUMMARIES}]")

    metrics = config.metrics
    try:
        address = ipaddress.ip_address(metrics.address)
    except ValueError:
        fail("metrics.address", metrics.address, "expected an IP address such as 127.0.0.1 or ::1")
    if not address.is_loopback and not metrics.allow_non_loopback:
        fail("metrics.address", metrics.address, "is not a loopback address, and the metrics name log files; "
             "use 127.0.0.1, or set metrics.allow_non_loopback: true to serve them to other hosts")
    if not 0 <= metrics.port <= 65535:
        fail("metrics.port", metrics.port, "must be in [0, 65535]; 0 lets the system pick a free port")
