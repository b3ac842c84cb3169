"""Secure rounds at the hub: the server stages fed with real client messages as STIX objects.

Sites here are :class:`privacy.secagg.SecAggClient` objects whose messages are wrapped with
``build_secagg_message`` and posted through the hub's intake, as over TAXII, so the tests
can choose inputs without noise and check the unmasked sums exactly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fusion_hub.config import SecureSettings, load_hub_config
from fusion_hub.envelope import RawObject
from fusion_hub.errors import HubConfigError, ObjectRejected
from fusion_hub.registry import Principal
from fusion_hub.server import HubServer
from fusion_hub.storage import ObjectQuery, VersionFilter
from privacy.random import seeded_random
from privacy.secagg import ConsistencySignature, EncryptedShare, SecAggClient, SecAggConfig, ShareRejected, encode_signed
from privacy.signing import generate_signing_key
from stix_mappings.ids import collection_id, site_identity_id
from stix_mappings.secagg_objects import build_secagg_message, build_secagg_round, secagg_message_id, secagg_round_id
from stix_mappings.timestamps import format_timestamp
from tests.fusion_hub.hub_testing import HUB_NOW, ROUND_START, SettableClock, make_config
from tests.support.secagg_keys import SITE_KEYS

ROUND_ID = format_timestamp(ROUND_START)
SITES = ("site-a", "site-b", "site-c", "site-d", "site-e")
SETTINGS = SecureSettings(mode="secure", min_sites=3, sketch_rows=1, sketch_width=16, sketch_threshold=5,
                          stage_timeout_seconds=30.0)
# Three families' histograms of 10 words, then the 1 x 16 sketch.
LENGTH = 3 * 10 + 16


def principal(site: str) -> Principal:
    return Principal(site, "site", frozenset({"keys"}), frozenset({"keys"}))


@pytest.fixture()
def clock() -> SettableClock:
    return SettableClock(HUB_NOW)


def make_hub(tmp_path: Path, clock: SettableClock, sites: Iterable[str] = SITES) -> HubServer:
    config = dataclasses.replace(make_config(tmp_path), secure=SETTINGS)
    hub = HubServer(config, clock=clock)
    for site in sites:
        hub.registry.enroll_site(site, SITE_KEYS[site].public_key_b64)
    return hub


def post(hub: HubServer, site: str, stage: str, payload: dict[str, Any], recipient: str | None = None) -> bool:
    """Post one message through the hub's intake as the site and return whether the intake stored it.

    Raises ObjectRejected, as the coordinator does, when the intake rejects the object.
    """
    assert hub.secure is not None
    obj = build_secagg_message(round_id=ROUND_ID, stage=stage, sender=site, payload=payload,
                               created=HUB_NOW, recipient=recipient)
    status = hub.intake.add_objects("keys", principal(site), [RawObject(json.dumps(obj), obj)])
    if status["failure_count"]:
        # Rerun the coordinator's check to obtain the rejection with its fields.
        hub.secure.accept_message(principal(site), obj)
        raise AssertionError(f"intake rejected {obj['id']}: {status['failures']}")
    stored = hub.storage.query_objects(ObjectQuery(collection_id=collection_id("keys"), limit=10,
                                                   ids=(obj["id"],)))
    return bool(stored.objects)


class Round:
    """Driver of every site of one round through the coordinator, with chosen dropouts."""

    def __init__(self, hub: HubServer, inputs: dict[str, np.ndarray]) -> None:
        self.hub = hub
        assert hub.secure is not None
        self.coordinator = hub.secure
        post(hub, SITES[0], "join", {})
        state = self.coordinator._rounds[ROUND_ID]
        self.config: SecAggConfig = state.config
        rng = seeded_random(5)
        self.clients = {s: SecAggClient(self.config, s, rng=rng, signing_key=SITE_KEYS[s]) for s in self.config.site_ids}
        self.inputs = inputs
        self.adverts: list[Any] = []
        self.shares: list[EncryptedShare] = []

    def stage(self) -> str | None:
        return self.coordinator.round_stage(ROUND_ID)

    def time_out(self) -> None:
        self.coordinator.advance_due(HUB_NOW + timedelta(seconds=SETTINGS.stage_timeout_seconds + 1))

    def advertise(self, sites: Iterable[str]) -> None:
        for site in sites:
            advert = self.clients[site].advertise_keys()
            self.adverts.append(advert)
            assert post(self.hub, site, "advertise_keys", advert.to_dict()) is True

    def share(self, sites: Iterable[str]) -> None:
        for site in sites:
            for message in self.clients[site].share_keys(self.adverts):
                self.shares.append(message)
                assert post(self.hub, site, "share_keys", message.to_dict(), recipient=message.recipient) is True

    def mask(self, sites: Iterable[str]) -> None:
        sharers = self.coordinator._rounds[ROUND_ID].participants
        for site in sites:
            received = [m for m in self.shares if m.recipient == site and m.sender in sharers]
            masked = self.clients[site].mask_input(encode_signed(self.inputs[site]), received)
            assert post(self.hub, site, "mask_input", masked.to_dict()) is False

    def sign(self, sites: Iterable[str]) -> None:
        survivors = self.coordinator._rounds[ROUND_ID].participants
        for site in sites:
            signature = self.clients[site].sign_survivors(survivors)
            assert post(self.hub, site, "consistency_check", signature.to_dict()) is False

    def relayed_signatures(self) -> list[ConsistencySignature]:
        """Return the signatures that the latest version of the round object relays."""
        relayed = latest_round_object(self.hub)["consistency_signatures"]
        return [ConsistencySignature.from_dict({"round_id": ROUND_ID, "site_id": site, "signature": value})
                for site, value in relayed.items()]

    def unmask(self, sites: Iterable[str]) -> None:
        sites = list(sites)
        self.sign(sites)
        signatures = self.relayed_signatures()
        for site in sites:
            assert post(self.hub, site, "unmask", self.clients[site].unmask(signatures).to_dict()) is False


def latest_round_object(hub: HubServer) -> dict[str, Any]:
    query = ObjectQuery(collection_id=collection_id("keys"), limit=1000, types=("x-fti-secagg-round",),
                        versions=VersionFilter(all=True))
    states = [json.loads(s.raw) for s in hub.storage.query_objects(query).objects]
    return max(states, key=lambda o: o["modified"])


def masked_by_two(hub: HubServer) -> Round:
    """Run a round up to its mask stage, where two of the four sites have sent their input."""
    run = Round(hub, inputs_for(LENGTH))
    run.advertise(SITES)
    run.share(SITES)
    run.mask(SITES[:2])
    return run


def inputs_for(config_length: int) -> dict[str, np.ndarray]:
    return {site: np.arange(config_length, dtype=np.int64) * (index + 1) - 3 for index, site in enumerate(SITES)}


def test_secure_round_unmasks_exact_sum(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    inputs = inputs_for(LENGTH)
    run = Round(hub, inputs)

    run.advertise(SITES)
    run.share(SITES)
    run.mask(SITES)
    run.unmask(SITES)

    result = hub.secure.results_[ROUND_ID]  # type: ignore[union-attr]
    total = [int(v) for v in sum(inputs[s] for s in SITES)]
    assert run.config.vector_length == LENGTH
    assert result.survivors == SITES
    # One histogram of 10 words per family, in the order of FAMILIES, then the sketch.
    assert result.histograms == {"network": tuple(total[0:10]), "authentication": tuple(total[10:20]),
                                 "process": tuple(total[20:30])}
    assert result.window_counts == {"network": sum(total[0:10]), "authentication": sum(total[10:20]),
                                    "process": sum(total[20:30])}
    assert run.stage() == "reveal"


def test_secure_round_recovers_n_minus_t_dropouts(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    inputs = inputs_for(LENGTH)
    run = Round(hub, inputs)
    survivors = SITES[:3]

    run.advertise(SITES)
    run.share(SITES)
    run.mask(survivors)
    run.time_out()
    run.unmask(survivors)

    result = hub.secure.results_[ROUND_ID]  # type: ignore[union-attr]
    assert run.config.threshold == 3
    assert result.survivors == survivors
    total = [int(v) for v in sum(inputs[s] for s in survivors)]
    assert result.histograms["network"] == tuple(total[:10])
    assert result.histograms["process"] == tuple(total[20:30])


def test_secure_round_beyond_n_minus_t_aborts(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    run = masked_by_two(hub)
    run.time_out()

    assert run.stage() is None
    assert ROUND_ID not in hub.secure.results_  # type: ignore[union-attr]
    query = ObjectQuery(collection_id=collection_id("keys"), limit=1000, types=("x-fti-secagg-round",),
                        versions=VersionFilter(all=True))
    states = sorted((json.loads(s.raw) for s in hub.storage.query_objects(query).objects),
                    key=lambda o: o["modified"])
    assert states[-1]["stage"] == "aborted"
    assert "threshold" in states[-1]["reason"]


def test_secure_round_below_min_sites_rejected(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock, sites=SITES[:2])

    with pytest.raises(ObjectRejected) as excinfo:
        post(hub, SITES[0], "join", {})

    assert excinfo.value.reason == "too-few-sites"


def test_secure_round_rejects_replayed_shares_and_input(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    run = Round(hub, inputs_for(LENGTH))
    run.advertise(SITES)
    run.share(SITES)
    run.mask(SITES[:1])
    sharers = hub.secure._rounds[ROUND_ID].participants  # type: ignore[union-attr]
    received = [m for m in run.shares if m.recipient == SITES[0] and m.sender in sharers]

    with pytest.raises(ShareRejected, match="replayed"):
        run.clients[SITES[0]].mask_input(encode_signed(run.inputs[SITES[0]]), received)
    masked = {"round_id": ROUND_ID, "site_id": SITES[0], "vector": "AAAAAA=="}
    with pytest.raises(ObjectRejected) as excinfo:
        post(hub, SITES[0], "mask_input", masked)

    assert excinfo.value.reason == "secagg"
    assert "second masked input" in excinfo.value.message


def test_secure_round_rejects_malformed_share(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    run = Round(hub, inputs_for(LENGTH))
    run.advertise(SITES)
    payload = {"round_id": ROUND_ID, "sender": SITES[0], "recipient": SITES[1], "ciphertext": "not base64!"}

    with pytest.raises(ObjectRejected) as excinfo:
        post(hub, SITES[0], "share_keys", payload, recipient=SITES[1])

    assert excinfo.value.reason == "secagg"
    assert "ciphertext is not valid base64" in excinfo.value.message


def test_secure_round_rejects_message_of_other_site(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    Round(hub, inputs_for(LENGTH))
    obj = build_secagg_message(round_id=ROUND_ID, stage="advertise_keys", sender=SITES[1], payload={},
                               created=HUB_NOW)

    with pytest.raises(ObjectRejected) as excinfo:
        hub.secure.accept_message(principal(SITES[0]), obj)  # type: ignore[union-attr]

    assert excinfo.value.reason == "wrong-site"


def test_secure_round_rejects_message_for_closed_stage(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    run = Round(hub, inputs_for(LENGTH))
    run.advertise(SITES)
    late = run.clients[SITES[0]].advertise_keys()

    with pytest.raises(ObjectRejected) as excinfo:
        post(hub, SITES[0], "advertise_keys", late.to_dict())

    assert excinfo.value.reason == "stage-closed"


def test_secure_round_keeps_no_masked_vector(tmp_path: Path, clock: SettableClock) -> None:
    """Masked inputs and unmask shares are consumed, never stored where a site could read them."""
    hub = make_hub(tmp_path, clock)
    run = Round(hub, inputs_for(LENGTH))

    run.advertise(SITES)
    run.share(SITES)
    run.mask(SITES)
    run.unmask(SITES)

    stored = hub.storage.query_objects(ObjectQuery(collection_id=collection_id("keys"), limit=1000))
    stored_ids = {s.id for s in stored.objects}
    assert secagg_message_id(ROUND_ID, "advertise_keys", SITES[0]) in stored_ids
    for site in SITES:
        assert secagg_message_id(ROUND_ID, "mask_input", site) not in stored_ids
        assert secagg_message_id(ROUND_ID, "unmask", site) not in stored_ids
    assert hub.secure._rounds[ROUND_ID].masked == {}  # type: ignore[union-attr]


def test_secure_round_not_opened_twice(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    run = Round(hub, inputs_for(LENGTH))
    run.advertise(SITES[:2])
    run.time_out()

    with pytest.raises(ObjectRejected) as excinfo:
        post(hub, SITES[0], "join", {})

    assert run.stage() is None
    assert excinfo.value.reason == "round-closed"


@pytest.mark.parametrize(("text", "key"), [
    ("secure:\n  mode: hidden\n", "secure.mode"),
    ("secure:\n  min_sites: 1\n", "secure.min_sites"),
    ("secure:\n  neighbours_per_site: 3\n", "secure.neighbours_per_site"),
    ("secure:\n  families: [network, dns]\n", "secure.families"),
    ("secure:\n  families: [network, network]\n", "secure.families"),
    ("secure:\n  families: []\n", "secure.families"),
    ("secure:\n  families: network\n", "secure.families"),
])
def test_secure_settings_rejected_with_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(HubConfigError) as excinfo:
        load_hub_config(path)

    assert excinfo.value.key == key


def test_secure_families_read_from_file(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("secure:\n  families: [authentication, network]\n", encoding="utf-8")

    assert load_hub_config(path).secure.families == ("authentication", "network")


def test_hub_restart_aborts_open_round_for_good(tmp_path: Path, clock: SettableClock) -> None:
    """A restarted hub publishes the aborted stage of a round it held in memory, and never runs it again."""
    hub = make_hub(tmp_path, clock)
    run = masked_by_two(hub)
    hub.storage.close()

    clock.advance(5)
    restarted = HubServer(dataclasses.replace(make_config(tmp_path), secure=SETTINGS), clock=clock)
    assert restarted.secure is not None
    query = ObjectQuery(collection_id=collection_id("keys"), limit=10, types=("x-fti-secagg-round",))
    (latest,) = [json.loads(s.raw) for s in restarted.storage.query_objects(query).objects]
    assert latest["stage"] == "aborted"
    assert latest["families"] == ["network", "authentication", "process"]
    assert "hub restarted" in latest["reason"]
    assert "participants" not in latest

    # Neither a site that masked nor one that had not can contribute to the round again.
    with pytest.raises(ObjectRejected) as excinfo:
        post(restarted, SITES[0], "join", {})
    assert excinfo.value.reason == "round-closed"
    with pytest.raises(ObjectRejected) as excinfo:
        post(restarted, SITES[3], "mask_input", run.clients[SITES[3]].mask_input(
            encode_signed(run.inputs[SITES[3]]), [m for m in run.shares if m.recipient == SITES[3]]).to_dict())
    assert excinfo.value.reason == "round-unknown"
    # A second start finds nothing left to abort.
    assert restarted.secure.abort_interrupted() == []


def test_site_cannot_post_round_object(tmp_path: Path, clock: SettableClock) -> None:
    """A forged round object with the hub's predictable id must not abort the round for all."""
    hub = make_hub(tmp_path, clock)
    forged = build_secagg_round(
        round_id=ROUND_ID, created_by_ref=site_identity_id(SITES[0]), created=HUB_NOW, modified=HUB_NOW,
        stage="aborted", site_ids=list(SITES), threshold=2, min_sites=2, vector_length=10 + 2 * 16,
        histogram_bins=10, families=["network"], sketch_rows=2, sketch_width=16, participants=[],
        reason="forged")

    status = hub.intake.add_objects("keys", principal(SITES[0]), [RawObject(json.dumps(forged), forged)])

    assert status["success_count"] == 0
    assert status["failure_count"] == 1
    assert "only the hub writes x-fti-secagg-round" in status["failures"][0]["message"]
    stored = hub.storage.query_objects(ObjectQuery(collection_id=collection_id("keys"), limit=10,
                                                   ids=(secagg_round_id(ROUND_ID),)))
    assert stored.objects == []


def test_plain_hub_rejects_secure_messages(tmp_path: Path) -> None:
    """Without secure rounds a masked input would be stored where every site can read it."""
    hub = HubServer(make_config(tmp_path))
    hub.registry.enroll_site(SITES[0], generate_signing_key().public_key_b64)
    message = build_secagg_message(round_id=ROUND_ID, stage="mask_input", sender=SITES[0],
                                   payload={"masked": "AAAA"}, created=HUB_NOW)

    status = hub.intake.add_objects("keys", principal(SITES[0]), [RawObject(json.dumps(message), message)])

    assert status["success_count"] == 0
    assert status["failure_count"] == 1
    assert "runs no secure rounds; stage 'mask_input'" in status["failures"][0]["message"]
    stored = hub.storage.query_objects(ObjectQuery(collection_id=collection_id("keys"), limit=10,
                                                   ids=(message["id"],)))
    assert stored.objects == []


def test_round_object_lists_enrolled_verify_keys(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    Round(hub, inputs_for(LENGTH))

    published = latest_round_object(hub)["verify_keys"]

    assert published == {site: SITE_KEYS[site].public_key_b64 for site in SITES}


def test_hub_rejects_advertisement_not_signed_by_site(tmp_path: Path, clock: SettableClock) -> None:
    """An advertisement re-signed by another key is rejected at intake, with its site named."""
    hub = make_hub(tmp_path, clock)
    run = Round(hub, inputs_for(LENGTH))
    advert = run.clients[SITES[0]].advertise_keys()
    resigned = dataclasses.replace(advert, signature=generate_signing_key().sign_bytes(advert.signed_bytes()))

    with pytest.raises(ObjectRejected) as excinfo:
        post(hub, SITES[0], "advertise_keys", resigned.to_dict())

    assert excinfo.value.reason == "secagg"
    assert "enrolled key" in excinfo.value.message


def test_hub_rejects_signature_of_other_survivor_set(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    run = Round(hub, inputs_for(LENGTH))
    run.advertise(SITES)
    run.share(SITES)
    run.mask(SITES)
    other_view = run.clients[SITES[0]].sign_survivors(SITES[:4])

    with pytest.raises(ObjectRejected) as excinfo:
        post(hub, SITES[0], "consistency_check", other_view.to_dict())

    assert excinfo.value.reason == "secagg"
    assert "does not verify over this round's survivor set" in excinfo.value.message
    assert run.stage() == "consistency_check"


def test_secure_round_unmasks_with_signer_dropout(tmp_path: Path, clock: SettableClock) -> None:
    """A survivor that never signs is still summed: its self mask comes from the others' shares."""
    hub = make_hub(tmp_path, clock)
    inputs = inputs_for(LENGTH)
    run = Round(hub, inputs)
    run.advertise(SITES)
    run.share(SITES)
    run.mask(SITES)
    run.sign(SITES[:4])
    run.time_out()
    signatures = run.relayed_signatures()
    for site in SITES[:4]:
        post(hub, site, "unmask", run.clients[site].unmask(signatures).to_dict())

    result = hub.secure.results_[ROUND_ID]  # type: ignore[union-attr]
    total = [int(v) for v in sum(inputs[s] for s in SITES)]
    assert sorted(item.site_id for item in signatures) == list(SITES[:4])
    assert result.survivors == SITES
    assert result.histograms["network"] == tuple(total[:10])
