"""Tests of site and consumer registration, password checks, revocation and trust."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fusion_hub.config import FusionSettings
from fusion_hub.errors import RegistryError, UnknownCredential
from fusion_hub.registry import SiteRegistry
from fusion_hub.sqlite_storage import SQLiteHubStorage
from privacy.signing import generate_signing_key
from tests.fusion_hub.hub_testing import FAST_AUTH


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SiteRegistry]:
    storage = SQLiteHubStorage(tmp_path / "hub.sqlite3")
    yield SiteRegistry(storage, auth=FAST_AUTH, fusion=FusionSettings())
    storage.close()


def test_enroll_site_stores_argon2id_hash_only(registry: SiteRegistry) -> None:
    key = generate_signing_key()

    password = registry.enroll_site("site-a", key.public_key_b64)

    stored = registry.storage.get_credential("site-a")
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert password not in stored.password_hash
    assert len(password) >= 43
    assert stored.public_key_b64 == key.public_key_b64


def test_authenticate_outcomes(registry: SiteRegistry) -> None:
    password = registry.enroll_site("site-a", generate_signing_key().public_key_b64)

    good = registry.authenticate("site-a", password)
    wrong = registry.authenticate("site-a", password + "x")
    unknown = registry.authenticate("site-z", password)

    assert good.principal is not None
    assert good.principal.may_write("summaries")
    assert good.principal.sees_only_own("summaries")
    assert (wrong.principal, wrong.failure) == (None, "password")
    assert (unknown.principal, unknown.failure) == (None, "unknown")


def test_revoke_rejects_cached_password(registry: SiteRegistry) -> None:
    password = registry.enroll_site("site-a", generate_signing_key().public_key_b64)
    assert registry.authenticate("site-a", password).principal is not None

    registry.revoke("site-a")

    result = registry.authenticate("site-a", password)
    assert (result.principal, result.failure) == (None, "revoked")
    assert registry.trust_weights() == {}


def test_enroll_same_name_twice_rejected(registry: SiteRegistry) -> None:
    registry.enroll_site("site-a", generate_signing_key().public_key_b64)
    registry.revoke("site-a")

    with pytest.raises(RegistryError) as excinfo:
        registry.enroll_site("site-a", generate_signing_key().public_key_b64)

    assert excinfo.value.name == "site-a"
    assert "already enrolled or was revoked" in excinfo.value.reason


@pytest.mark.parametrize(("site_id", "key", "message"), [
    ("Site A", None, "invalid name"),
    ("site-a", "not base64!", "not valid base64"),
    ("site-a", "AAAA", "must be 32 bytes (Ed25519); got 3"),
])
def test_enroll_invalid_input_rejected(registry: SiteRegistry, site_id: str, key: str | None,
                                       message: str) -> None:
    public_key = key if key is not None else generate_signing_key().public_key_b64

    with pytest.raises(RegistryError) as excinfo:
        registry.enroll_site(site_id, public_key)

    assert message in excinfo.value.reason


def test_add_consumer_reads_fused_indicators_only(registry: SiteRegistry) -> None:
    password = registry.add_consumer("siem-reader", read=["fused-indicators"])

    principal = registry.authenticate("siem-reader", password).principal

    assert principal is not None
    assert principal.may_read("fused-indicators")
    assert not principal.may_read("summaries")
    assert not principal.may_write("fused-indicators")


def test_add_consumer_with_summaries_rejected(registry: SiteRegistry) -> None:
    with pytest.raises(RegistryError, match="consumers may not read collection 'summaries'"):
        registry.add_consumer("nosy", read=["fused-indicators", "summaries"])


def test_revoke_unknown_name_raises(registry: SiteRegistry) -> None:
    with pytest.raises(UnknownCredential) as excinfo:
        registry.revoke("nobody")

    assert excinfo.value.name == "nobody"


def test_trust_starts_at_prior_and_updates(registry: SiteRegistry) -> None:
    registry.enroll_site("site-a", generate_signing_key().public_key_b64)

    prior = registry.trust_weight("site-a")
    alpha_beta = registry.record_outcomes("site-a", confirmed=2, refuted=5)

    assert prior == pytest.approx(2 / 3)
    assert alpha_beta == (4.0, 6.0)
    assert registry.trust_weight("site-a") == pytest.approx(0.4)


def test_fusion_weights_follow_trust_setting(tmp_path: Path) -> None:
    storage = SQLiteHubStorage(tmp_path / "weights.sqlite3")
    weighted = SiteRegistry(storage, auth=FAST_AUTH, fusion=FusionSettings())
    unweighted = SiteRegistry(storage, auth=FAST_AUTH, fusion=FusionSettings(trust_weighting=False))
    weighted.enroll_site("site-a", generate_signing_key().public_key_b64)
    weighted.record_outcomes("site-a", confirmed=0, refuted=3)

    try:
        assert weighted.fusion_weights() == {"site-a": pytest.approx(2 / 6)}
        assert unweighted.fusion_weights() == {"site-a": 1.0}
        assert unweighted.trust_weights() == {"site-a": pytest.approx(2 / 6)}
    finally:
        storage.close()
