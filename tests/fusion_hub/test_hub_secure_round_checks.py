"""Checks the hub makes on a secure round's messages as they arrive, so one site cannot end a round for all."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from fusion_hub.envelope import RawObject
from fusion_hub.errors import ObjectRejected
from fusion_hub.server import HubServer
from fusion_hub.storage import AddOutcome, NewObject
from privacy.random import seeded_random
from privacy.secagg import EncryptedShare, MaskedInput, SecAggClient, UnmaskResponse
from privacy.secagg.shamir import Share
from stix_mappings.secagg_objects import build_secagg_message
from stix_mappings.timestamps import format_timestamp
from tests.fusion_hub.hub_testing import HUB_NOW, ROUND_START, SettableClock
from tests.support.secagg_keys import SITE_KEYS
from tests.fusion_hub.test_hub_secure_rounds import (
    LENGTH,
    ROUND_ID,
    SITES,
    Round,
    inputs_for,
    latest_round_object,
    make_hub,
    post,
    principal,
)


@pytest.fixture()
def clock() -> SettableClock:
    return SettableClock(HUB_NOW)


def join_failures(hub: HubServer, site: str, round_id: str) -> list[dict]:
    obj = build_secagg_message(round_id=round_id, stage="join", sender=site, payload={}, created=HUB_NOW)
    status = hub.intake.add_objects("keys", principal(site), [RawObject(json.dumps(obj), obj)])
    return list(status.get("failures") or [])


def test_short_masked_input_rejected_on_arrival(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    inputs = inputs_for(LENGTH)
    run = Round(hub, inputs)
    run.advertise(SITES)
    run.share(SITES)
    run.mask(SITES[:4])

    short = MaskedInput(ROUND_ID, "site-e", np.zeros(LENGTH - 1, dtype=np.uint32))
    with pytest.raises(ObjectRejected, match="vector_length 46"):
        post(hub, "site-e", "mask_input", short.to_dict())

    # The stage is still open; once it times out, site-e is a dropout and the others' sum is exact.
    assert run.stage() == "mask_input"
    run.time_out()
    run.unmask(SITES[:4])
    result = hub.secure.results_[ROUND_ID]  # type: ignore[union-attr]
    total = [int(v) for v in sum(inputs[s] for s in SITES[:4])]
    assert result.survivors == SITES[:4]
    assert result.histograms["network"] == tuple(total[:10])


def test_join_for_future_round_rejected(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    future_id = format_timestamp(ROUND_START + timedelta(days=1))

    failures = join_failures(hub, "site-a", future_id)

    assert len(failures) == 1
    assert "ends in the future" in failures[0]["message"]
    assert hub.secure.round_stage(future_id) is None  # type: ignore[union-attr]


def test_join_for_future_round_accepted_once_ended(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    later = ROUND_START + timedelta(days=1)
    later_id = format_timestamp(later)
    assert join_failures(hub, "site-a", later_id)

    clock.advance((later + timedelta(hours=1) - HUB_NOW).total_seconds())

    assert join_failures(hub, "site-b", later_id) == []
    assert hub.secure.round_stage(later_id) == "advertise_keys"  # type: ignore[union-attr]


def test_join_for_ended_round_accepted(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)

    assert join_failures(hub, "site-a", ROUND_ID) == []
    assert hub.secure.round_stage(ROUND_ID) == "advertise_keys"  # type: ignore[union-attr]


def test_messages_stored_before_stage_closes(tmp_path: Path, clock: SettableClock,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    hub = make_hub(tmp_path, clock)
    stages_at_store: list[tuple[str, str]] = []
    add_object = hub.storage.add_object

    def recording_add_object(new: NewObject) -> tuple[AddOutcome, object]:
        obj = json.loads(new.raw)
        if obj["type"] == "x-fti-secagg-message":
            stages_at_store.append((obj["stage"], latest_round_object(hub)["stage"]))
        return add_object(new)

    monkeypatch.setattr(hub.storage, "add_object", recording_add_object)
    run = Round(hub, inputs_for(LENGTH))
    run.advertise(SITES)
    run.share(SITES)

    # Once the round object shows the next stage, sites read this stage's messages from
    # keys, so the message that completes a stage must be stored before the object moves on.
    assert run.stage() == "mask_input"
    assert [stage for stage, _ in stages_at_store].count("advertise_keys") == len(SITES)
    assert [stage for stage, _ in stages_at_store].count("share_keys") == len(SITES) * (len(SITES) - 1)
    for message_stage, round_stage in stages_at_store:
        assert round_stage == message_stage


def test_second_advertisement_with_other_keys_rejected(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    inputs = inputs_for(LENGTH)
    run = Round(hub, inputs)
    first = run.clients["site-e"].advertise_keys()
    run.adverts.append(first)
    assert post(hub, "site-e", "advertise_keys", first.to_dict()) is True

    # A resend of the same advertisement changes nothing; other keys are rejected.
    assert post(hub, "site-e", "advertise_keys", first.to_dict()) is True
    other = SecAggClient(run.config, "site-e", rng=seeded_random(99), signing_key=SITE_KEYS["site-e"])
    with pytest.raises(ObjectRejected, match="second key advertisement from site site-e"):
        post(hub, "site-e", "advertise_keys", other.advertise_keys().to_dict())

    # The hub kept the stored keys, so the round unmasks the exact sum.
    run.advertise(SITES[:4])
    run.share(SITES)
    run.mask(SITES)
    run.unmask(SITES)
    result = hub.secure.results_[ROUND_ID]  # type: ignore[union-attr]
    total = [int(v) for v in sum(inputs[s] for s in SITES)]
    assert result.histograms["network"] == tuple(total[:10])


def test_second_share_with_other_ciphertext_rejected(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    run = Round(hub, inputs_for(LENGTH))
    run.advertise(SITES)
    share = run.clients["site-a"].share_keys(run.adverts)[0]
    assert post(hub, "site-a", "share_keys", share.to_dict(), recipient=share.recipient) is True

    # Flipping a bit, not setting a byte, so that the ciphertext always differs.
    last = share.ciphertext[-1] ^ 1
    altered = EncryptedShare(share.round_id, share.sender, share.recipient,
                             share.ciphertext[:-1] + bytes([last]))
    with pytest.raises(ObjectRejected, match="second share from site site-a"):
        post(hub, "site-a", "share_keys", altered.to_dict(), recipient=share.recipient)
    assert hub.secure._rounds[ROUND_ID].shares["site-a"][share.recipient] == share  # type: ignore[union-attr]


def test_unmask_share_at_wrong_point_rejected(tmp_path: Path, clock: SettableClock) -> None:
    hub = make_hub(tmp_path, clock)
    inputs = inputs_for(LENGTH)
    run = Round(hub, inputs)
    run.advertise(SITES)
    run.share(SITES)
    run.mask(SITES)
    run.sign(SITES)
    signatures = run.relayed_signatures()

    response = run.clients["site-e"].unmask(signatures)
    moved = {owner: Share(x=share.x + 1, y=share.y) for owner, share in response.self_mask_shares.items()}
    forged = UnmaskResponse(response.round_id, response.site_id, moved, response.mask_key_shares)
    with pytest.raises(ObjectRejected, match="share point 6 is not the site's point 5"):
        post(hub, "site-e", "unmask", forged.to_dict())

    # The other four responses are more than the threshold of three, so the sum is exact.
    for site in SITES[:4]:
        assert post(hub, site, "unmask", run.clients[site].unmask(signatures).to_dict()) is False
    assert run.stage() == "unmask"
    run.time_out()
    result = hub.secure.results_[ROUND_ID]  # type: ignore[union-attr]
    total = [int(v) for v in sum(inputs[s] for s in SITES)]
    assert result.survivors == SITES
    assert result.histograms["process"] == tuple(total[20:30])
