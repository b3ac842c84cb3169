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
from privacy.secagg import MaskedInput
from stix_mappings.secagg_objects import build_secagg_message
from stix_mappings.timestamps import format_timestamp
from tests.fusion_hub.hub_testing import HUB_NOW, ROUND_START, SettableClock
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

    # A site that sees the next stage reads every message of this one from keys, so the
    # message that completes a stage must be stored before the round object moves on.
    assert run.stage() == "mask_input"
    assert [stage for stage, _ in stages_at_store].count("advertise_keys") == len(SITES)
    assert [stage for stage, _ in stages_at_store].count("share_keys") == len(SITES) * (len(SITES) - 1)
    for message_stage, round_stage in stages_at_store:
        assert round_stage == message_stage
