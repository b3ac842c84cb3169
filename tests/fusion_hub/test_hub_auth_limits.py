"""Failed-login limits, the argon2id concurrency cap and the failure log summary of the hub.

The HTTP tests run a real hub on 127.0.0.1. A second client address comes from binding the
client socket to another loopback address (127.0.0.0/8 is all loopback on Linux).
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from fusion_hub.auth_limits import (
    MAX_NAME_KEY_CHARS,
    MAX_TRACKED_KEYS,
    AuthLimits,
    AuthThrottled,
    FailureBuckets,
    address_key,
)
from fusion_hub.config import HubConfig, load_hub_config
from fusion_hub.errors import HubConfigError
from fusion_hub.server import HubServer
from tests.fusion_hub.hub_testing import FAST_AUTH, TAXII, Site, enroll, make_config, running_hub


class CountingHasher(PasswordHasher):
    """A real argon2id hasher that counts its hash and verify calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.verify_calls = 0
        self._lock = threading.Lock()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        with self._lock:
            self.calls += 1
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 - argon2 name
        with self._lock:
            self.calls += 1
            self.verify_calls += 1
        return super().verify(hash, password)


def limited_config(tmp_path: Path, **auth: Any) -> HubConfig:
    config = make_config(tmp_path, hub={"rate_limit_per_minute": 0})
    return dataclasses.replace(config, auth=dataclasses.replace(FAST_AUTH, **auth))


@pytest.fixture
def hasher_of() -> Iterator[Any]:
    """Return a function that puts a counting hasher into a hub's registry."""
    def install(hub: HubServer) -> CountingHasher:
        settings = hub.config.auth
        hasher = CountingHasher(time_cost=settings.argon2_time_cost,
                                memory_cost=settings.argon2_memory_cost_kib,
                                parallelism=settings.argon2_parallelism)
        hub.registry._hasher = hasher
        return hasher

    yield install


def get_collections(hub: HubServer, username: str, password: str, *,
                    source: str = "127.0.0.1", forwarded_for: str | None = None,
                    ) -> tuple[int, dict[str, str], bytes]:
    """GET the collections from the client address ``source``. Return status, headers and body."""
    assert hub.base_url is not None
    port = int(hub.base_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                            source_address=(source, 0))
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    headers = {"Accept": TAXII, "Authorization": f"Basic {credentials}"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    try:
        connection.request("GET", f"/{hub.config.hub.api_root}/collections/", headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def fail_times(hub: HubServer, site: Site, count: int, *, source: str = "127.0.0.1") -> list[int]:
    return [get_collections(hub, site.site_id, "wrong-password", source=source)[0]
            for _ in range(count)]


def test_address_over_limit_429_without_argon2(tmp_path: Path, hasher_of: Any) -> None:
    config = limited_config(tmp_path, max_failures_per_address=3, max_failures_per_username=0,
                            failure_window_seconds=300.0)
    with running_hub(config) as hub:
        site = enroll(hub, "site-a")
        hasher = hasher_of(hub)

        statuses = fail_times(hub, site, 3)
        calls_before = hasher.calls
        status, headers, body = get_collections(hub, "site-a", "wrong-password")

        assert statuses == [401, 401, 401]
        assert calls_before == 3
        assert status == 429
        assert hasher.calls == 3
        assert headers["Content-Type"] == TAXII
        # One failure comes back every 300 / 3 = 100 s.
        assert headers["Retry-After"] == "100"
        error = json.loads(body)
        assert error["title"] == "Too Many Requests"
        assert error["http_status"] == "429"
        assert "127.0.0.1" in error["description"]


def test_address_limit_spares_other_clients(tmp_path: Path) -> None:
    config = limited_config(tmp_path, max_failures_per_address=2, max_failures_per_username=0,
                            credential_cache_seconds=0.0)
    with running_hub(config) as hub:
        site_a, site_b = enroll(hub, "site-a"), enroll(hub, "site-b")

        fail_times(hub, site_a, 2, source="127.0.0.1")
        blocked = get_collections(hub, "site-b", site_b.password, source="127.0.0.1")[0]
        other_address = get_collections(hub, "site-b", site_b.password, source="127.0.0.2")[0]
        same_name_other_address = get_collections(hub, "site-a", site_a.password,
                                                  source="127.0.0.2")[0]

        assert blocked == 429
        assert other_address == 200
        assert same_name_other_address == 200


def test_cached_credential_passes_blocked_address(tmp_path: Path, hasher_of: Any) -> None:
    """A client whose password is in the verified cache needs no argon2id and is not limited."""
    config = limited_config(tmp_path, max_failures_per_address=2, max_failures_per_username=0,
                            credential_cache_seconds=600.0)
    with running_hub(config) as hub:
        site_a, site_b = enroll(hub, "site-a"), enroll(hub, "site-b")
        first = get_collections(hub, "site-b", site_b.password)[0]
        hasher = hasher_of(hub)

        fail_times(hub, site_a, 2)
        guess = get_collections(hub, "site-a", "another-guess")[0]
        cached = get_collections(hub, "site-b", site_b.password)[0]

        assert first == 200
        assert guess == 429
        assert cached == 200
        assert hasher.calls == 2


def test_username_limit_spans_addresses(tmp_path: Path) -> None:
    config = limited_config(tmp_path, max_failures_per_address=0, max_failures_per_username=2,
                            failure_window_seconds=60.0, credential_cache_seconds=0.0)
    with running_hub(config) as hub:
        site = enroll(hub, "site-a")
        trusted = get_collections(hub, "site-a", site.password, source="127.0.0.3")[0]

        first = fail_times(hub, site, 1, source="127.0.0.1")
        second = fail_times(hub, site, 1, source="127.0.0.2")
        status, headers, body = get_collections(hub, "site-a", "guess", source="127.0.0.4")
        new_address = get_collections(hub, "site-a", site.password, source="127.0.0.5")[0]
        own_agent = get_collections(hub, "site-a", site.password, source="127.0.0.3")[0]
        # The success of the site's own agent cleared the name's failures.
        after_success = get_collections(hub, "site-a", site.password, source="127.0.0.5")[0]

        assert trusted == 200
        assert first + second == [401, 401]
        assert status == 429
        # 60 s / 2 failures: one more check every 30 s.
        assert headers["Retry-After"] == "30"
        assert b"username" in body
        assert new_address == 429
        assert own_agent == 200
        assert after_success == 200


def test_success_clears_username_failures(tmp_path: Path) -> None:
    config = limited_config(tmp_path, max_failures_per_address=0, max_failures_per_username=2,
                            credential_cache_seconds=0.0)
    with running_hub(config) as hub:
        site = enroll(hub, "site-a")

        fail_times(hub, site, 1)
        success = get_collections(hub, "site-a", site.password)[0]
        after = fail_times(hub, site, 2, source="127.0.0.2")
        blocked = get_collections(hub, "site-a", "guess", source="127.0.0.2")[0]

        assert success == 200
        assert after == [401, 401]
        assert blocked == 429


def test_unknown_revoked_known_names_alike(tmp_path: Path, hasher_of: Any) -> None:
    """Unknown, revoked and known names: the same statuses and one argon2id call per check."""
    config = limited_config(tmp_path, max_failures_per_address=0, max_failures_per_username=2)
    with running_hub(config) as hub:
        enroll(hub, "site-a")
        enroll(hub, "site-old")
        hub.registry.revoke("site-old")
        hasher = hasher_of(hub)
        outcomes = {}
        for name in ("site-a", "site-old", "no-such-site"):
            before, verifies_before = hasher.calls, hasher.verify_calls
            statuses = [get_collections(hub, name, "guess")[0] for _ in range(3)]
            outcomes[name] = (statuses, hasher.calls - before,
                              hasher.verify_calls - verifies_before)

        # Each 401 cost one argon2id verification and no hash, and the 429 cost nothing.
        assert outcomes["site-a"] == ([401, 401, 429], 2, 2)
        assert outcomes["site-old"] == ([401, 401, 429], 2, 2)
        assert outcomes["no-such-site"] == ([401, 401, 429], 2, 2)


def test_bearer_token_failures_limited(tmp_path: Path) -> None:
    config = limited_config(tmp_path, max_failures_per_address=0, max_failures_per_username=2)
    with running_hub(config) as hub:
        hub.registry.add_consumer("reader", read=["fused-indicators"])
        token_id = hub.registry.issue_token("reader").split("_")[1]
        forged = f"fti_{token_id}_not-the-secret"
        assert hub.base_url is not None
        port = int(hub.base_url.rsplit(":", 1)[1])
        statuses = []
        for _ in range(3):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/fti/collections/",
                               headers={"Accept": TAXII, "Authorization": f"Bearer {forged}"})
            statuses.append(connection.getresponse().status)
            connection.close()

        assert statuses == [401, 401, 429]


def test_concurrency_cap_429_busy(tmp_path: Path, hasher_of: Any) -> None:
    config = limited_config(tmp_path, max_concurrent_verifications=1,
                            credential_cache_seconds=600.0)
    with running_hub(config) as hub:
        site_a, site_b = enroll(hub, "site-a"), enroll(hub, "site-b")
        warm = get_collections(hub, "site-b", site_b.password)[0]
        hasher = hasher_of(hub)

        with hub.authenticator.limits.verification("held-by-test", "127.0.0.9"):
            status, headers, _ = get_collections(hub, "site-a", site_a.password)
            cached = get_collections(hub, "site-b", site_b.password)[0]
        after = get_collections(hub, "site-a", site_a.password)[0]

        assert warm == 200
        assert status == 429
        assert headers["Retry-After"] == "1"
        assert cached == 200
        assert after == 200
        assert hasher.calls == 1


def test_address_with_failures_gets_half_the_slots(tmp_path: Path) -> None:
    config = limited_config(tmp_path, max_concurrent_verifications=2,
                            credential_cache_seconds=0.0, max_failures_per_address=5)
    with running_hub(config) as hub:
        site_a, site_b = enroll(hub, "site-a"), enroll(hub, "site-b")
        hub.authenticator.limits.record_failure("guessed-name", "127.0.0.1")

        with hub.authenticator.limits.verification("held-by-test", "127.0.0.1"):
            started = time.monotonic()
            same_address, headers, body = get_collections(hub, "site-a", site_a.password)
            elapsed = time.monotonic() - started
            other_address = get_collections(hub, "site-b", site_b.password,
                                            source="127.0.0.2")[0]
        released = get_collections(hub, "site-a", site_a.password)[0]
        metrics = hub.metrics.render().decode()

        assert same_address == 429
        assert headers["Retry-After"] == "1"
        assert b"127.0.0.1 has as many password checks running as one address may (1)" in body
        # Rejected at once, without waiting for a slot.
        assert elapsed < 5.0
        assert other_address == 200
        assert released == 200
        assert 'fti_hub_auth_throttled_total{scope="address_concurrency"} 1.0' in metrics


def test_clean_address_may_use_every_slot() -> None:
    """Sites behind one NAT log in together: without failures no per-address share applies."""
    limits = AuthLimits(dataclasses.replace(FAST_AUTH, max_concurrent_verifications=2,
                                            max_failures_per_address=5))

    with limits.verification("site-a", "192.0.2.1"), limits.verification("site-b", "192.0.2.1"):
        limits.record_failure("site-c", "192.0.2.7")
        with pytest.raises(AuthThrottled) as excinfo, limits.verification("site-c", "192.0.2.7"):
            pass

    assert excinfo.value.scope == "concurrency"


def test_in_flight_count_released_after_error() -> None:
    limits = AuthLimits(dataclasses.replace(FAST_AUTH, max_concurrent_verifications=2,
                                            max_failures_per_address=5))
    limits.record_failure("guessed-name", "192.0.2.1")

    with pytest.raises(ValueError), limits.verification("site-a", "192.0.2.1"):
        raise ValueError("argon2id failed")
    with limits.verification("site-a", "192.0.2.1"):
        with pytest.raises(AuthThrottled) as excinfo, limits.verification("site-b", "192.0.2.1"):
            pass

    assert excinfo.value.scope == "address_concurrency"
    with limits.verification("site-a", "192.0.2.1"):
        pass


def test_trusted_proxy_counts_forwarded_client(tmp_path: Path) -> None:
    config = limited_config(tmp_path, max_failures_per_address=2, max_failures_per_username=0)
    config = dataclasses.replace(config, hub=dataclasses.replace(config.hub,
                                                                 trusted_proxy="127.0.0.1"))
    with running_hub(config) as hub:
        enroll(hub, "site-a")

        first = [get_collections(hub, "site-a", "guess", forwarded_for="203.0.113.5")[0]
                 for _ in range(2)]
        status, _, body = get_collections(hub, "site-a", "guess",
                                          forwarded_for="198.51.100.1, 203.0.113.5")
        other_client = get_collections(hub, "site-a", "guess", forwarded_for="203.0.113.6")[0]
        # A peer that is not the proxy cannot choose its address with the header.
        untrusted = [get_collections(hub, "site-a", "guess", source="127.0.0.2",
                                     forwarded_for=f"192.0.2.{index}")[0] for index in range(3)]

        assert first == [401, 401]
        assert status == 429
        assert b"203.0.113.5" in body
        assert other_client == 401
        assert untrusted == [401, 401, 429]


def test_forwarded_for_ignored_without_proxy(tmp_path: Path) -> None:
    config = limited_config(tmp_path, max_failures_per_address=2, max_failures_per_username=0)
    with running_hub(config) as hub:
        enroll(hub, "site-a")

        statuses = [get_collections(hub, "site-a", "guess", forwarded_for=f"192.0.2.{index}")[0]
                    for index in range(3)]

        assert statuses == [401, 401, 429]


@pytest.mark.parametrize(("hub_lines", "problem"), [
    ("  trusted_proxy: proxy.example.org\n", "must be an IP address or empty"),
    ("  trusted_proxy: 10.0.0.0/8\n", "must be an IP address or empty"),
])
def test_trusted_proxy_config_errors(tmp_path: Path, hub_lines: str, problem: str) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("hub:\n" + hub_lines, encoding="utf-8")

    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(path)

    assert excinfo.value.key == "hub.trusted_proxy"
    assert excinfo.value.problem == problem


def test_trusted_proxy_with_hub_tls_rejected(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("placeholder", encoding="utf-8")
    path = tmp_path / "hub.yaml"
    path.write_text("hub:\n  trusted_proxy: 127.0.0.1\n"
                    "tls:\n  cert_file: cert.pem\n  key_file: key.pem\n", encoding="utf-8")

    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(path)

    assert excinfo.value.key == "hub.trusted_proxy"
    assert "tls.cert_file" in excinfo.value.problem


def test_metrics_count_failures_and_throttled(tmp_path: Path) -> None:
    config = limited_config(tmp_path, max_failures_per_address=2, max_failures_per_username=0)
    with running_hub(config) as hub:
        site = enroll(hub, "site-a")
        fail_times(hub, site, 4)
        get_collections(hub, "no-such-site", "guess", source="127.0.0.2")
        assert hub.base_url is not None
        connection = http.client.HTTPConnection("127.0.0.1",
                                                int(hub.base_url.rsplit(":", 1)[1]), timeout=10)
        connection.request("GET", "/metrics")
        metrics = connection.getresponse().read().decode()
        connection.close()

        assert 'fti_hub_auth_failures_total{reason="password"} 2.0' in metrics
        assert 'fti_hub_auth_failures_total{reason="unknown"} 1.0' in metrics
        assert 'fti_hub_auth_throttled_total{scope="address"} 2.0' in metrics


def test_failure_summary_logged_after_guessing_stops(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, hub={"rate_limit_per_minute": 0, "tick_seconds": 0.1})
    with running_hub(config) as hub:
        site = enroll(hub, "site-a")
        hub.authenticator.max_lines = 1
        hub.authenticator.window_secs = 0.5
        with caplog.at_level(logging.WARNING, logger="fusion_hub.auth"):
            fail_times(hub, site, 3)
            deadline = time.monotonic() + 10.0
            while "more authentication failures" not in caplog.text:
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.05)

        summaries = [r.getMessage() for r in caplog.records
                     if "more authentication failures" in r.getMessage()]
        assert len(summaries) == 1
        assert summaries[0].startswith("2 more authentication failures in the last ")
        assert "wrong-password" not in caplog.text
        assert site.password not in caplog.text


def test_failure_summary_logged_at_shutdown(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, hub={"rate_limit_per_minute": 0})
    hub = HubServer(config)
    hub.start()
    try:
        site = enroll(hub, "site-a")
        hub.authenticator.max_lines = 1
        with caplog.at_level(logging.WARNING, logger="fusion_hub.auth"):
            fail_times(hub, site, 4)
            before_stop = caplog.text
            hub.stop()
    finally:
        hub.stop()

    assert "more authentication failures" not in before_stop
    assert "3 more authentication failures in the last " in caplog.text


def test_failure_buckets_refill_over_window() -> None:
    now = [100.0]
    buckets = FailureBuckets(3, 60.0, clock=lambda: now[0])

    for _ in range(3):
        buckets.record_failure("198.51.100.7")
    blocked = buckets.wait_secs("198.51.100.7")
    now[0] += 20.0
    refilled = buckets.wait_secs("198.51.100.7")
    other = buckets.wait_secs("198.51.100.8")

    assert blocked == pytest.approx(20.0)
    assert refilled == 0.0
    assert other == 0.0


def test_failure_buckets_zero_disables() -> None:
    buckets = FailureBuckets(0, 60.0)

    for _ in range(100):
        buckets.record_failure("198.51.100.7")

    assert buckets.wait_secs("198.51.100.7") == 0.0


def test_failure_buckets_forget_oldest_beyond_max_keys() -> None:
    buckets = FailureBuckets(1, 60.0, max_keys=2)

    for key in ("a", "b", "c"):
        buckets.record_failure(key)

    assert buckets.wait_secs("a") == 0.0
    assert buckets.wait_secs("b") > 0
    assert buckets.wait_secs("c") > 0
    assert MAX_TRACKED_KEYS >= 10_000


def test_long_usernames_share_one_key() -> None:
    limits = AuthLimits(dataclasses.replace(FAST_AUTH, max_failures_per_address=0,
                                            max_failures_per_username=1))
    prefix = "x" * MAX_NAME_KEY_CHARS

    limits.record_failure(prefix + "a" * 100_000, "192.0.2.1")

    assert limits.by_username.wait_secs(prefix) > 0
    with pytest.raises(AuthThrottled), limits.verification(prefix + "b" * 10, "192.0.2.2"):
        pass


@pytest.mark.parametrize(("remote_addr", "key"), [
    ("192.0.2.10", "192.0.2.10"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.10", "192.0.2.10"),
    ("unix-socket", "unix-socket"),
    (None, "unknown"),
])
def test_address_key(remote_addr: str | None, key: str) -> None:
    assert address_key(remote_addr) == key


def test_auth_limits_trusted_address_skips_username_limit() -> None:
    limits = AuthLimits(dataclasses.replace(FAST_AUTH, max_failures_per_address=0,
                                            max_failures_per_username=1))
    limits.record_success("site-a", "192.0.2.1")
    limits.record_failure("site-a", "192.0.2.66")
    limits.record_failure("site-a", "192.0.2.66")

    with limits.verification("site-a", "192.0.2.1"):
        pass
    with pytest.raises(AuthThrottled) as excinfo, limits.verification("site-a", "192.0.2.2"):
        pass

    assert excinfo.value.scope == "username"


@pytest.mark.parametrize(("line", "key", "value"), [
    ("max_failures_per_address: -1", "auth.max_failures_per_address", -1),
    ("max_failures_per_username: -5", "auth.max_failures_per_username", -5),
    ("failure_window_seconds: 0", "auth.failure_window_seconds", 0),
    ("failure_window_seconds: 100000", "auth.failure_window_seconds", 100000),
    ("max_concurrent_verifications: 0", "auth.max_concurrent_verifications", 0),
    ("max_concurrent_verifications: 65", "auth.max_concurrent_verifications", 65),
])
def test_limit_config_errors(tmp_path: Path, line: str, key: str, value: int) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(f"auth:\n  {line}\n", encoding="utf-8")

    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(path)

    assert excinfo.value.key == key
    assert excinfo.value.value == value
    assert excinfo.value.line == 2
    assert excinfo.value.fix


def test_limit_config_defaults(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("", encoding="utf-8")

    auth = load_hub_config(path).auth

    assert auth.max_failures_per_address == 30
    assert auth.max_failures_per_username == 10
    assert auth.failure_window_seconds == 300.0
    assert auth.max_concurrent_verifications == 2
