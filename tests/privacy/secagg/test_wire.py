"""Secure aggregation messages through a real hub's ``keys`` collection.

Four enrolled sites advertise keys and exchange encrypted shares by posting to and reading
from the hub's TAXII ``keys`` collection. The masked inputs and unmask responses then go to
a :class:`SecAggServer` in the test, because the hub has no aggregator for them yet.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from fusion_hub.config import AuthSettings, HubConfig, RoundSettings, ServerSettings, StorageSettings
from fusion_hub.server import HubServer
from privacy.random import seeded_random
from privacy.secagg import (
    KeyAdvertisement,
    MessageRejected,
    SecAggClient,
    SecAggServer,
    decode_signed,
    encode_signed,
)
from privacy.secagg.wire import message_from_stix, message_to_stix
from stix_mappings.ids import collection_id, site_identity_id
from tests.support.secagg_keys import SITE_KEYS, keyed_config

TAXII = "application/taxii+json;version=2.1"
SITES = ("site-a", "site-b", "site-c", "site-d")
CREATED = datetime(2024, 6, 3, 0, 0, tzinfo=timezone.utc)


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[tuple[str, dict[str, tuple[str, str]]]]:
    config = HubConfig(
        hub=ServerSettings(host="127.0.0.1", port=0, tick_seconds=3600.0),
        storage=StorageSettings(path=tmp_path / "hub.sqlite3"),
        # Minimal argon2id cost: the test checks the message flow, not hashing strength.
        auth=AuthSettings(argon2_time_cost=1, argon2_memory_cost_kib=1024, argon2_parallelism=1,
                          credential_cache_seconds=60.0),
        rounds=RoundSettings(round_seconds=600, quorum_sites=2, deadline_seconds=3600,
                             retention_days=100_000),
    )
    server = HubServer(config)
    server.start()
    auth = {s: (s, server.registry.enroll_site(s, SITE_KEYS[s].public_key_b64)) for s in SITES}
    yield f"{server.api_root_url}collections/{collection_id('keys')}/objects/", auth
    server.stop()


def post(url: str, auth: tuple[str, str], objects: list[dict[str, Any]]) -> requests.Response:
    return requests.post(url, data=json.dumps({"objects": objects}), auth=auth, timeout=10,
                         headers={"Accept": TAXII, "Content-Type": TAXII})


def read_all(url: str, auth: tuple[str, str]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    params: dict[str, str] = {}
    for _ in range(100):  # bounded: a handful of pages at most
        response = requests.get(url, auth=auth, params=params, headers={"Accept": TAXII}, timeout=10)
        response.raise_for_status()
        envelope = response.json() if response.content else {}
        objects.extend(envelope.get("objects", []))
        if not envelope.get("more"):
            return objects
        params = {"next": envelope["next"]}
    raise AssertionError("too many pages")


def test_keys_collection_round_sums_exactly(hub: tuple[str, dict[str, tuple[str, str]]]) -> None:
    url, auth = hub
    config = keyed_config(round_id="2024-06-03T00:00:00Z", site_ids=SITES, threshold=3, vector_length=8)
    rng = seeded_random(21)
    clients = {s: SecAggClient(config, s, rng=rng, signing_key=SITE_KEYS[s]) for s in SITES}
    inputs = {s: np.arange(8) * (i + 1) for i, s in enumerate(SITES)}

    # Stage 1 and 2 travel through the hub's keys collection.
    for site in SITES:
        advert = message_to_stix(clients[site].advertise_keys(), creator_identity=site_identity_id(site),
                                 created=CREATED)
        assert post(url, auth[site], [advert]).status_code == 202
    routed: dict[str, list] = {s: [] for s in SITES}
    for site in SITES:
        messages = [message_from_stix(o, identity_of=site_identity_id) for o in read_all(url, auth[site])]
        adverts = [m for m in messages if isinstance(m, KeyAdvertisement)]
        shares = clients[site].share_keys(adverts)
        objects = [message_to_stix(m, creator_identity=site_identity_id(site), created=CREATED) for m in shares]
        assert post(url, auth[site], objects).json()["success_count"] == len(SITES) - 1
    for site in SITES:
        messages = [message_from_stix(o, identity_of=site_identity_id) for o in read_all(url, auth[site])]
        routed[site] = [m for m in messages if not isinstance(m, KeyAdvertisement) and m.recipient == site]

    # Stages 3 to 6 go to the aggregator; site-d drops before sending its masked input.
    server = SecAggServer(config)
    server.collect_advertisements(message_from_stix(o, identity_of=site_identity_id)
                                  for o in read_all(url, auth["site-a"]) if o["stage"] == "advertise_keys")
    server.route_shares(m for s in SITES for m in routed[s])
    survivors = server.collect_masked_inputs(
        clients[s].mask_input(encode_signed(inputs[s]), routed[s]) for s in SITES[:3])
    signatures = server.collect_consistency_signatures(clients[s].sign_survivors(survivors) for s in SITES[:3])
    server.collect_unmask_responses(clients[s].unmask(signatures) for s in SITES[:3])
    total = decode_signed(server.unmask())

    assert routed["site-a"] and all(m.sender != "site-a" for m in routed["site-a"])
    assert total.tolist() == (inputs["site-a"] + inputs["site-b"] + inputs["site-c"]).tolist()


def test_hub_rejects_forged_advertisement(hub: tuple[str, dict[str, tuple[str, str]]]) -> None:
    url, auth = hub
    config = keyed_config(round_id="r", site_ids=SITES, threshold=3, vector_length=8)
    advert = SecAggClient(config, "site-b", rng=seeded_random(1), signing_key=SITE_KEYS["site-b"]).advertise_keys()
    forged = message_to_stix(advert, creator_identity=site_identity_id("site-b"), created=CREATED)

    response = post(url, auth["site-a"], [forged])

    assert response.json()["failure_count"] == 1


def test_message_created_by_other_identity_is_rejected() -> None:
    config = keyed_config(round_id="r", site_ids=SITES, threshold=3, vector_length=8)
    advert = SecAggClient(config, "site-b", rng=seeded_random(2), signing_key=SITE_KEYS["site-b"]).advertise_keys()
    obj = message_to_stix(advert, creator_identity=site_identity_id("site-a"), created=CREATED)

    with pytest.raises(MessageRejected, match="not by the sender's identity"):
        message_from_stix(obj, identity_of=site_identity_id)


def test_message_round_trips_through_stix() -> None:
    config = keyed_config(round_id="r", site_ids=SITES, threshold=3, vector_length=8)
    advert = SecAggClient(config, "site-c", rng=seeded_random(3), signing_key=SITE_KEYS["site-c"]).advertise_keys()

    obj = message_to_stix(advert, creator_identity=site_identity_id("site-c"), created=CREATED)

    assert obj["created"] == "2024-06-03T00:00:00.000Z"
    assert message_from_stix(obj, identity_of=site_identity_id) == advert
