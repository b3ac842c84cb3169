"""Transient delivery errors in a secure round are retried until the stage's deadline, permanent ones are not."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from agent.config import AgentConfig
from agent.errors import DeliveryError
from agent.secure_round import SecureRoundAborted, SecureRoundRunner
from agent.summariser import bound_round
from agent.taxii_client import delivery_error, parse_retry_after
from fusion_hub.server import HubServer
from privacy.random import seeded_random
from tests.agent.test_service_secure_budget import FIRST, TARGET, hub, site_config, windows  # noqa: F401
from tests.support.flaky_proxy import FlakyProxy


def http_error(status: int, headers: dict[str, str] | None = None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response.headers.update({"Content-Type": "application/taxii+json;version=2.1", **(headers or {})})
    return requests.HTTPError(response=response)


@pytest.mark.parametrize(("status", "transient"), [
    (408, True), (425, True), (429, True), (500, True), (503, True),
    (400, False), (401, False), (403, False), (404, False), (413, False),
])
def test_http_status_classified(status: int, transient: bool) -> None:
    assert delivery_error("http://127.0.0.1:1/", http_error(status)).transient is transient


def test_connection_errors_transient() -> None:
    for err in (requests.ConnectionError("refused"), requests.Timeout("slow")):
        assert delivery_error("http://127.0.0.1:1/", err).transient is True


def test_retry_after_kept() -> None:
    assert delivery_error("http://127.0.0.1:1/", http_error(429, {"Retry-After": "7"})).retry_after_secs == 7.0
    assert delivery_error("http://127.0.0.1:1/", http_error(503)).retry_after_secs is None


def test_retry_after_forms() -> None:
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)

    assert parse_retry_after("12") == 12.0
    assert 25.0 <= (parse_retry_after(later) or 0.0) <= 30.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# Through a proxy in front of a real hub ---------------------------------------------------------

def through(config: AgentConfig, proxy: FlakyProxy, *, stage_timeout: float | None = None) -> AgentConfig:
    """Return ``config`` with the hub's URL pointing at ``proxy``, and optionally another stage timeout."""
    privacy = config.privacy
    if stage_timeout is not None:
        privacy = dataclasses.replace(privacy, secure_stage_timeout_secs=stage_timeout)
    return dataclasses.replace(config, hub=dataclasses.replace(config.hub, url=proxy.url + "/taxii2/"),
                               privacy=privacy)


def hub_base(hub_url: str) -> str:
    return hub_url.removesuffix("/taxii2/")


@pytest.mark.slow
def test_brief_outage_and_429_retried(tmp_path: Path, hub: tuple[HubServer, str]) -> None:
    """A reset, a 429 at join and a 503 at a later stage delay site-a but do not lose the round."""
    server, hub_url = hub
    configs = {site: site_config(tmp_path, server, hub_url, site) for site in ("site-a", "site-b")}
    failures = [("GET", "reset"), ("POST", 429), ("POST", 503)]

    with FlakyProxy(hub_base(hub_url), failures) as proxy:
        configs["site-a"] = through(configs["site-a"], proxy)
        runners = {site: SecureRoundRunner(config, config.read_hub_password(), rng=seeded_random(index),
                                           charge=None) for index, (site, config) in enumerate(configs.items())}
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {site: pool.submit(runner.run, FIRST, bound_round(windows(FIRST), privacy=configs[site].privacy,
                                                                        rng=seeded_random(0)))
                       for site, runner in runners.items()}
            revealed = {site: future.result(timeout=120) for site, future in futures.items()}
    assert server.secure is not None
    result = next(iter(server.secure.results_.values()))

    assert [failure for _, _, failure in proxy.failed] == ["reset", 429, 503]
    assert result.survivors == ("site-a", "site-b")
    assert [stage_path.split("/")[-2] for _, stage_path, _ in proxy.failed] == ["taxii2", "objects", "objects"]
    for site in ("site-a", "site-b"):
        assert TARGET in revealed[site]["network"]


@pytest.mark.parametrize("status", [400, 403, 404])
def test_permanent_error_not_retried(tmp_path: Path, hub: tuple[HubServer, str], status: int) -> None:
    server, hub_url = hub
    config = site_config(tmp_path, server, hub_url, "site-a")

    with FlakyProxy(hub_base(hub_url), [("POST", status, None)]) as proxy:
        runner = SecureRoundRunner(through(config, proxy), config.read_hub_password(), rng=seeded_random(0),
                                   charge=None)
        started = time.monotonic()
        with pytest.raises(DeliveryError) as excinfo:
            runner.run(FIRST, bound_round(windows(FIRST), privacy=config.privacy, rng=seeded_random(0)))
        elapsed = time.monotonic() - started

    assert excinfo.value.transient is False
    assert f"HTTP {status}" in excinfo.value.reason
    assert [method for method, _, _ in proxy.failed] == ["POST"]
    assert elapsed < 5.0


def test_outage_gives_up_at_stage_deadline(tmp_path: Path, hub: tuple[HubServer, str]) -> None:
    """A hub that returns 503 to every post is retried with backoff until the join's deadline, then given up."""
    server, hub_url = hub
    config = site_config(tmp_path, server, hub_url, "site-a")

    with FlakyProxy(hub_base(hub_url), [("POST", 503, None)]) as proxy:
        runner = SecureRoundRunner(through(config, proxy, stage_timeout=2.0), config.read_hub_password(),
                                   rng=seeded_random(0), charge=None)
        started = time.monotonic()
        with pytest.raises(DeliveryError) as excinfo:
            runner.run(FIRST, bound_round(windows(FIRST), privacy=config.privacy, rng=seeded_random(0)))
        elapsed = time.monotonic() - started

    assert excinfo.value.transient is True
    assert "HTTP 503" in excinfo.value.reason
    assert len(proxy.failed) >= 2
    assert len(proxy.failed) <= 2.0 / 0.05 + 1
    assert elapsed < 2.0 + 1.0
    assert server.secure is not None
    assert server.secure.results_ == {}


def test_retry_after_waited(tmp_path: Path, hub: tuple[HubServer, str]) -> None:
    """A 429 at join with Retry-After 1 delays the join by a second, and the site goes on."""
    server, hub_url = hub
    config = site_config(tmp_path, server, hub_url, "site-a")
    site_config(tmp_path, server, hub_url, "site-b")

    with FlakyProxy(hub_base(hub_url), [("POST", 429)], retry_after="1") as proxy:
        runner = SecureRoundRunner(through(config, proxy, stage_timeout=3.0), config.read_hub_password(),
                                   rng=seeded_random(0), charge=None)
        started = time.monotonic()
        # site-b never joins, so site-a leaves when share_keys does not start in time.
        with pytest.raises(SecureRoundAborted, match="stage share_keys did not start"):
            runner.run(FIRST, bound_round(windows(FIRST), privacy=config.privacy, rng=seeded_random(0)))
        elapsed = time.monotonic() - started

    assert [failure for _, _, failure in proxy.failed] == [429]
    assert [method for method, _ in proxy.forwarded].count("POST") == 2
    assert elapsed >= 1.0


def test_retry_after_past_deadline_gives_up(tmp_path: Path, hub: tuple[HubServer, str]) -> None:
    """A Retry-After longer than the time left in the stage ends the round at once, without waiting."""
    server, hub_url = hub
    config = site_config(tmp_path, server, hub_url, "site-a")

    with FlakyProxy(hub_base(hub_url), [("POST", 429)], retry_after="60") as proxy:
        runner = SecureRoundRunner(through(config, proxy, stage_timeout=5.0), config.read_hub_password(),
                                   rng=seeded_random(0), charge=None)
        started = time.monotonic()
        with pytest.raises(DeliveryError) as excinfo:
            runner.run(FIRST, bound_round(windows(FIRST), privacy=config.privacy, rng=seeded_random(0)))
        elapsed = time.monotonic() - started

    assert excinfo.value.retry_after_secs == 60.0
    assert len(proxy.failed) == 1
    assert elapsed < 5.0
