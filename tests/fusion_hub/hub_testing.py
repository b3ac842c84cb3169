"""Builders shared by the hub tests: configurations, signed summaries, a settable clock."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from fusion_hub.config import (
    AuthSettings,
    FusionSettings,
    HubConfig,
    RoundSettings,
    ServerSettings,
    SiemSettings,
    StorageSettings,
)
from fusion_hub.server import HubServer
from privacy.signing import SigningKey, generate_signing_key, sign_object
from stix_mappings.summary import build_summary

TAXII = "application/taxii+json;version=2.1"
ROUND_SECONDS = 300
ROUND_START = datetime(2024, 6, 3, 0, 0, tzinfo=timezone.utc)
# Hub time in the tests: one hour after the first test round, so rounds are in the past.
HUB_NOW = ROUND_START + timedelta(hours=1)

# Minimal argon2id cost: the tests check behaviour, not hashing strength. The failed-login
# limits are off, because protocol tests and the schema fuzzer send many bad credentials on
# purpose. The tests of those limits set them.
FAST_AUTH = AuthSettings(argon2_time_cost=1, argon2_memory_cost_kib=1024, argon2_parallelism=1,
                         credential_cache_seconds=60.0, max_failures_per_address=0,
                         max_failures_per_username=0)


class SettableClock:
    """A clock the test moves by hand; thread-safe because the hub reads it from its threads."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now = self._now + timedelta(seconds=seconds)
            return self._now

    def set(self, now: datetime) -> None:
        with self._lock:
            self._now = now


def make_config(
    tmp_path: Path,
    *,
    hub: dict[str, Any] | None = None,
    rounds: dict[str, Any] | None = None,
    fusion: dict[str, Any] | None = None,
    siem: bool = True,
    storage: StorageSettings | None = None,
) -> HubConfig:
    """Return a hub configuration in ``tmp_path`` with test-friendly defaults.

    ``storage`` defaults to a SQLite file in ``tmp_path``.
    """
    round_settings = RoundSettings(round_seconds=ROUND_SECONDS, quorum_sites=2,
                                   deadline_seconds=600, max_clock_skew_seconds=60,
                                   retention_days=30)
    server_settings = ServerSettings(name="test-hub", tick_seconds=3600.0)
    siem_settings = SiemSettings(
        splunk_hec_path=tmp_path / "hec.ndjson", elastic_bulk_path=tmp_path / "bulk.ndjson",
    ) if siem else SiemSettings()
    return HubConfig(
        hub=dataclasses.replace(server_settings, **(hub or {})),
        storage=storage or StorageSettings(path=tmp_path / "hub.sqlite3"),
        auth=FAST_AUTH,
        rounds=dataclasses.replace(round_settings, **(rounds or {})),
        fusion=dataclasses.replace(FusionSettings(), **(fusion or {})),
        siem=siem_settings,
    )


@contextmanager
def running_hub(config: HubConfig, clock: SettableClock | None = None) -> Iterator[HubServer]:
    """Start a hub on 127.0.0.1 and stop it afterwards."""
    hub = HubServer(config, clock=clock or SettableClock(HUB_NOW))
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@dataclasses.dataclass
class Site:
    """An enrolled test site: its id, signing key and hub password."""

    site_id: str
    key: SigningKey
    password: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.site_id, self.password)


def postgres_settings(dsn: str, schema: str) -> StorageSettings:
    return StorageSettings(backend="postgresql", postgresql_dsn=dsn, postgresql_schema=schema)


def enroll(hub: HubServer, site_id: str) -> Site:
    key = generate_signing_key()
    return Site(site_id, key, hub.registry.enroll_site(site_id, key.public_key_b64))


def evidence(value: str, score: float, *, observable_type: str = "ipv4-addr",
             count: int = 5) -> dict[str, Any]:
    return {
        "observable_type": observable_type, "value": value, "noised_entity_count": count,
        "noised_mean_score": score, "first_seen": ROUND_START,
        "last_seen": ROUND_START + timedelta(seconds=60),
    }


def unsigned_summary(
    site_id: str,
    *,
    round_start: datetime = ROUND_START,
    items: Sequence[dict[str, Any]] = (),
    window_count: int = 40,
) -> dict[str, Any]:
    """Build a valid, unsigned round summary with stix_mappings.summary.build_summary."""
    adjusted = []
    for item in items:
        shifted = {"family": "network", **item}
        offset = round_start - ROUND_START
        shifted["first_seen"] = item["first_seen"] + offset
        shifted["last_seen"] = item["last_seen"] + offset
        adjusted.append(shifted)
    return build_summary(
        site=site_id, round_start=round_start,
        round_end=round_start + timedelta(seconds=ROUND_SECONDS),
        families=[{"family": "network", "detector": {"name": "iforest", "version": "1.0"},
                   "feature_schema_version": "1",
                   "score_histogram": {"bin_edges": [i / 10 for i in range(11)],
                                       "noised_counts": [4, 4, 4, 4, 4, 4, 4, 4, 4, 4]},
                   "noised_window_count": window_count}],
        evidence=adjusted,
        privacy={"unit": "entity", "mechanism": "discrete-laplace", "epsilon": 1.0,
                 "delta": 1e-6, "partition_threshold": 3, "max_observables_per_entity": 5,
                 "max_windows_per_entity": 5, "epsilon_spent_in_period": 1.0,
                 "epsilon_budget": 10.0, "period_days": 30},
    )


def signed_summary(site: Site, **kwargs: Any) -> dict[str, Any]:
    return sign_object(unsigned_summary(site.site_id, **kwargs), site.key)
