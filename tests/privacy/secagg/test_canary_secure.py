"""Canary test of secure mode: no host, connection id or observable leaves a site in clear.

A site's secure-mode output for a round is its key advertisement, its encrypted shares, its
masked count-min sketch and its unmask response. Every one of them is serialised here as it
would be sent, and none may contain a planted internal host, a connection uid or, since
the sketch carries only bucket counts, an observable value. Values leave a site only in the
reveal step, which passes the site's own partition selection (tested in test_sketch.py).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np

from privacy.random import seeded_random
from privacy.secagg import SecAggClient, SecAggServer, encode_signed
from privacy.secagg.noise import DistributedGaussian
from privacy.secagg.sketch import CountMinSketch
from privacy.secagg.wire import message_to_stix
from stix_mappings.ids import site_identity_id
from tests.support.secagg_keys import SITE_KEYS, keyed_config

SITES = ("site-canary", "site-b", "site-c")
CANARY_HOSTS = ["10.66.77.88", "81.2.69.160"]
CANARY_UID = "CcanaryUid0042"
OBSERVABLES = ["185.220.101.1", "185.220.101.2", "evil.example"]


def test_secure_mode_sends_no_canary() -> None:
    rng = seeded_random(13)
    sketch = CountMinSketch(round_id="canary-round", rows=2, width=64)
    config = keyed_config(round_id="canary-round", site_ids=SITES, threshold=2, vector_length=sketch.length)
    noise = DistributedGaussian(sigma_squared_per_site=2.0, min_sites=2)
    units = {host: OBSERVABLES[:2] for host in CANARY_HOSTS} | {f"{CANARY_UID}-host": OBSERVABLES[2:]}
    clients = {s: SecAggClient(config, s, rng=rng, signing_key=SITE_KEYS[s]) for s in SITES}
    server = SecAggServer(config)
    created = datetime(2024, 6, 3, tzinfo=timezone.utc)
    sent: list[str] = []

    adverts = [clients[s].advertise_keys() for s in SITES]
    sent.append(json.dumps(message_to_stix(adverts[0], creator_identity=site_identity_id(SITES[0]), created=created)))
    relayed = server.collect_advertisements(adverts)
    shares = {s: clients[s].share_keys(relayed) for s in SITES}
    sent.extend(json.dumps(message_to_stix(m, creator_identity=site_identity_id(SITES[0]), created=created))
                for m in shares[SITES[0]])
    routed = server.route_shares(m for ms in shares.values() for m in ms)
    vectors = {s: encode_signed(noise.add_noise(sketch.build(units if s == SITES[0] else {}), rng)) for s in SITES}
    masked = {s: clients[s].mask_input(vectors[s], routed[s]) for s in SITES}
    sent.append(json.dumps(masked[SITES[0]].to_dict()))
    survivors = server.collect_masked_inputs(masked.values())
    signed = {s: clients[s].sign_survivors(survivors) for s in SITES}
    sent.append(json.dumps(signed[SITES[0]].to_dict()))
    signatures = server.collect_consistency_signatures(signed.values())
    sent.append(json.dumps(clients[SITES[0]].unmask(signatures).to_dict()))
    for site in SITES[1:]:
        clients[site].unmask(signatures)

    outbound = "".join(sent)
    assert len(sent) == 1 + (len(SITES) - 1) + 3
    for canary in CANARY_HOSTS + [CANARY_UID, "10.66.", *OBSERVABLES]:
        assert canary not in outbound, f"{canary} left the site"
    # The vector that left is masked: it differs from the noised sketch in nearly every word.
    assert np.count_nonzero(masked[SITES[0]].vector != vectors[SITES[0]]) >= sketch.length - 2
