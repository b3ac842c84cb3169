"""API tokens, the per-credential rate limit and the objects-per-request limit."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from fusion_hub.auth import parse_basic_authorization
from fusion_hub.errors import RegistryError, UnknownCredential
from fusion_hub.ratelimit import RateLimiter, retry_after_header
from fusion_hub.server import HubServer
from stix_mappings.ids import collection_id
from tests.fusion_hub.hub_testing import (
    ROUND_SECONDS,
    ROUND_START,
    TAXII,
    enroll,
    make_config,
    running_hub,
    signed_summary,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HubServer]:
    config = make_config(tmp_path, hub={"rate_limit_per_minute": 0,
                                        "max_objects_per_request": 2})
    with running_hub(config) as hub:
        yield hub


def collections(hub: HubServer, authorization: str) -> requests.Response:
    return requests.get(f"{hub.api_root_url}collections/", timeout=10,
                        headers={"Accept": TAXII, "Authorization": authorization})


def test_api_token_reads_with_credential_rights(server: HubServer) -> None:
    server.registry.add_consumer("reader", read=["fused-indicators"])
    token = server.registry.issue_token("reader")

    response = collections(server, f"Bearer {token}")

    assert token.startswith("fti_")
    assert response.status_code == 200
    flags = {c["title"]: c["can_read"] for c in response.json()["collections"]}
    assert flags["fused-indicators"] is True
    assert flags["summaries"] is False


def test_api_token_wrong_secret_401_logged_without_secret(
        server: HubServer, caplog: pytest.LogCaptureFixture) -> None:
    server.registry.add_consumer("reader", read=["fused-indicators"])
    token = server.registry.issue_token("reader")
    token_id = token.split("_")[1]
    forged = f"fti_{token_id}_not-the-secret"

    with caplog.at_level(logging.WARNING, logger="fusion_hub.auth"):
        response = collections(server, f"Bearer {forged}")

    assert response.status_code == 401
    assert response.headers["Content-Type"] == TAXII
    assert 'Bearer realm="test-hub"' in response.headers["WWW-Authenticate"]
    assert f"token {token_id}" in caplog.text
    assert "not-the-secret" not in caplog.text
    assert token.split("_", 2)[2] not in caplog.text


SECRET = "Hunter2-correct-horse"


@pytest.mark.parametrize("authorization", [
    f"Bearer {SECRET}",
    f"Bearer fti_{SECRET}",
    f"Bearer {base64.b64encode(f'site-a:{SECRET}'.encode()).decode()}",
    f"Bearer fti_0123456789abcdef-{SECRET}",
    f"Basic {base64.b64encode(f'fti_0123456789abcdef_{SECRET}:x'.encode()).decode()}",
    f"Basic {base64.b64encode(f'token {SECRET}:x'.encode()).decode()}",
])
def test_failed_login_logs_no_misplaced_secret(
        server: HubServer, caplog: pytest.LogCaptureFixture, authorization: str) -> None:
    with caplog.at_level(logging.WARNING, logger="fusion_hub.auth"):
        response = collections(server, authorization)

    assert response.status_code == 401
    assert "authentication failed" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET[:8] not in caplog.text
    assert "Hunter2"[:4] not in caplog.text
    assert base64.b64encode(f"site-a:{SECRET}".encode()).decode()[:12] not in caplog.text


def test_basic_non_ascii_header_401(server: HubServer) -> None:
    basic = base64.b64encode(b"site-a:pw").decode()

    response = requests.get(f"{server.api_root_url}collections/", timeout=10,
                            headers={"Accept": TAXII,
                                     "Authorization": f"Basic {basic}\u00e9".encode("latin-1")})

    assert response.status_code == 401
    assert response.json()["http_status"] == "401"


def test_failed_login_logs_valid_username(
        server: HubServer, caplog: pytest.LogCaptureFixture) -> None:
    basic = base64.b64encode(b"site-zz:wrong").decode()

    with caplog.at_level(logging.WARNING, logger="fusion_hub.auth"):
        collections(server, f"Basic {basic}")

    assert "for username 'site-zz': unknown" in caplog.text


@pytest.mark.parametrize("token", ["fti_", "fti_abc", "nope_abc_def", "fti_0000000000000000_x"])
def test_api_token_malformed_or_unknown_401(server: HubServer, token: str) -> None:
    response = collections(server, f"Bearer {token}")

    assert response.status_code == 401
    assert response.json()["http_status"] == "401"


def test_api_token_revocation_immediate(server: HubServer) -> None:
    server.registry.add_consumer("reader", read=["fused-indicators"])
    server.registry.add_consumer("other", read=["fused-indicators"])
    token = server.registry.issue_token("reader")
    kept = server.registry.issue_token("other")
    assert collections(server, f"Bearer {token}").status_code == 200

    server.registry.revoke_token(token.split("_")[1])
    server.registry.revoke("other")

    assert collections(server, f"Bearer {token}").status_code == 401
    assert collections(server, f"Bearer {kept}").status_code == 401


def test_issue_token_errors(server: HubServer) -> None:
    server.registry.add_consumer("gone", read=["fused-indicators"])
    server.registry.revoke("gone")

    with pytest.raises(UnknownCredential):
        server.registry.issue_token("nobody")
    with pytest.raises(RegistryError) as revoked:
        server.registry.issue_token("gone")
    with pytest.raises(RegistryError) as unknown_token:
        server.registry.revoke_token("ffff")

    assert "revoked" in str(revoked.value)
    assert "no API token has this id" in str(unknown_token.value)


def test_envelope_over_object_limit_413(server: HubServer) -> None:
    site = enroll(server, "site-a")
    summaries = [signed_summary(site, round_start=ROUND_START + timedelta(seconds=i * ROUND_SECONDS))
                 for i in range(3)]
    url = f"{server.api_root_url}collections/{collection_id('summaries')}/objects/"

    response = requests.post(url, data=json.dumps({"objects": summaries}), auth=site.auth,
                             headers={"Accept": TAXII, "Content-Type": TAXII}, timeout=10)

    assert response.status_code == 413
    assert response.headers["Content-Type"] == TAXII
    assert "has more than 2 objects" in response.json()["description"]
    assert server.storage.open_rounds() == []


def test_rate_limit_429_per_credential(tmp_path: Path) -> None:
    with running_hub(make_config(tmp_path, hub={"rate_limit_per_minute": 3})) as hub:
        noisy = ("noisy", hub.registry.add_consumer("noisy", read=["fused-indicators"]))
        quiet = ("quiet", hub.registry.add_consumer("quiet", read=["fused-indicators"]))
        url = f"{hub.api_root_url}collections/"

        statuses = [requests.get(url, auth=noisy, headers={"Accept": TAXII}, timeout=10)
                    for _ in range(4)]
        other = requests.get(url, auth=quiet, headers={"Accept": TAXII}, timeout=10)
        metrics = hub.metrics.render().decode()

    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    limited = statuses[3]
    assert limited.headers["Content-Type"] == TAXII
    assert limited.json()["http_status"] == "429"
    # One token refills in 60 / 3 = 20 s.
    assert 1 <= int(limited.headers["Retry-After"]) <= 20
    assert other.status_code == 200
    assert 'fti_hub_rate_limited_total{credential_kind="consumer"} 1.0' in metrics


def test_rate_limiter_refills_over_time() -> None:
    now = [100.0]
    limiter = RateLimiter(60, clock=lambda: now[0])

    taken = [limiter.acquire("a") for _ in range(60)]
    empty = limiter.acquire("a")
    now[0] += 0.5
    half = limiter.acquire("a")
    now[0] += 0.5
    refilled = limiter.acquire("a")

    assert taken == [0.0] * 60
    assert empty == pytest.approx(1.0)
    assert half == pytest.approx(0.5)
    assert refilled == 0.0
    assert retry_after_header(0.2) == "1"
    assert retry_after_header(19.01) == "20"
    assert RateLimiter(0).acquire("a") == 0.0


@pytest.mark.parametrize("user_pass", [b"site\x00a:secret", b"site-a:sec\x00ret",
                                       b"site\x1fa:secret", b"site\x7fa:secret"])
def test_basic_control_character_rejected(user_pass: bytes) -> None:
    header = "Basic " + base64.b64encode(user_pass).decode("ascii")

    assert parse_basic_authorization(header) is None


def test_basic_printable_credentials_parsed() -> None:
    header = "Basic " + base64.b64encode("site-ä:pa ss:word".encode()).decode("ascii")

    credentials = parse_basic_authorization(header)

    assert credentials is not None
    assert (credentials.username, credentials.password) == ("site-ä", "pa ss:word")
