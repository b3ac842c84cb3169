"""Tests for a hub that deviates from the protocol: forged keys, split survivor sets, replays."""

from __future__ import annotations

import dataclasses

import nacl.bindings
import numpy as np
import pytest

from privacy.random import seeded_random
from privacy.secagg import (
    ConsistencySignature,
    MessageRejected,
    RoundAborted,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    encode_signed,
)
from privacy.secagg.messages import survivor_set_bytes
from privacy.signing import generate_signing_key
from tests.support.secagg_keys import SITE_KEYS, keyed_config, verify_key

SITES = tuple(f"site-{i}" for i in range(6))
LENGTH = 8


class Round:
    """Clients and hub of one round, run up to the masked inputs."""

    def __init__(self, config: SecAggConfig, seed: int = 0) -> None:
        rng = seeded_random(seed)
        self.config = config
        self.clients = {s: SecAggClient(config, s, rng=rng, signing_key=SITE_KEYS[s]) for s in config.site_ids}
        self.server = SecAggServer(config)
        self.adverts = self.server.collect_advertisements(c.advertise_keys() for c in self.clients.values())
        sent = [m for c in self.clients.values() for m in c.share_keys(self.adverts)]
        self.routed = self.server.route_shares(sent)
        inputs = {s: encode_signed(np.full(LENGTH, i + 1)) for i, s in enumerate(config.site_ids)}
        self.survivors = self.server.collect_masked_inputs(
            self.clients[s].mask_input(inputs[s], self.routed[s]) for s in config.site_ids)


def config_for(round_id: str = "round-1", threshold: int = 4) -> SecAggConfig:
    return keyed_config(round_id=round_id, site_ids=SITES, threshold=threshold, vector_length=LENGTH)


# Signed key advertisements --------------------------------------------------------------


def test_advertisement_with_swapped_key_is_rejected_by_site() -> None:
    """A hub that relays its own mask key for site-1 would learn the pairwise masks with site-1."""
    config = config_for()
    rng = seeded_random(1)
    clients = {s: SecAggClient(config, s, rng=rng, signing_key=SITE_KEYS[s]) for s in SITES}
    adverts = [c.advertise_keys() for c in clients.values()]
    hub_mask_key = nacl.bindings.crypto_scalarmult_base(bytes(range(32)))
    forged = [dataclasses.replace(a, mask_public_key=hub_mask_key) if a.site_id == "site-1" else a for a in adverts]

    with pytest.raises(MessageRejected, match="signature does not verify") as excinfo:
        clients["site-0"].share_keys(forged)

    assert excinfo.value.sender == "site-1"


def test_advertisement_signed_by_unenrolled_key_is_rejected() -> None:
    config = config_for()
    rng = seeded_random(2)
    clients = {s: SecAggClient(config, s, rng=rng, signing_key=SITE_KEYS[s]) for s in SITES}
    adverts = [c.advertise_keys() for c in clients.values()]
    intruder = generate_signing_key()
    victim = adverts[2]
    resigned = dataclasses.replace(victim, signature=intruder.sign_bytes(victim.signed_bytes()))
    relayed = [resigned if a.site_id == victim.site_id else a for a in adverts]

    with pytest.raises(MessageRejected, match="enrolled key"):
        clients["site-0"].share_keys(relayed)
    with pytest.raises(MessageRejected, match="enrolled key"):
        SecAggServer(config).collect_advertisements(relayed)


def test_advertisement_of_another_round_is_rejected() -> None:
    """Relabelling an old round's advertisement breaks its signature, which covers the round id."""
    old = SecAggClient(config_for("round-0"), "site-1", rng=seeded_random(3), signing_key=SITE_KEYS["site-1"])
    replayed = dataclasses.replace(old.advertise_keys(), round_id="round-1")
    config = config_for()
    rng = seeded_random(4)
    clients = {s: SecAggClient(config, s, rng=rng, signing_key=SITE_KEYS[s]) for s in SITES}
    adverts = [replayed if s == "site-1" else clients[s].advertise_keys() for s in SITES]

    with pytest.raises(MessageRejected, match="signature does not verify"):
        clients["site-0"].share_keys(adverts)


def test_client_with_key_not_in_round_raises() -> None:
    with pytest.raises(ValueError, match="not the verify key"):
        SecAggClient(config_for(), "site-0", rng=seeded_random(5), signing_key=SITE_KEYS["site-1"])


def test_config_without_verify_keys_raises() -> None:
    with pytest.raises(ValueError, match="verify_keys"):
        SecAggConfig(round_id="r", site_ids=SITES, threshold=4, vector_length=LENGTH)


def test_config_with_missing_verify_key_raises() -> None:
    keys = {s: verify_key(s) for s in SITES[1:]}

    with pytest.raises(ValueError, match="missing \\['site-0'\\]"):
        SecAggConfig(round_id="r", site_ids=SITES, threshold=4, vector_length=LENGTH, verify_keys=keys)


# Consistency check ----------------------------------------------------------------------


def test_split_survivor_sets_make_the_minority_abort() -> None:
    """The hub reports to sites 0, 1, 2, 5 that site-5 survived and to sites 3, 4 that it dropped.

    If both groups responded, the hub would hold site-5's self-mask seed shares from the
    first group and its mask key shares from the second, and so site-5's input. The second
    group cannot gather threshold signatures over its view, so it reveals nothing.
    """
    round_ = Round(config_for())
    with_five = list(SITES)
    without_five = [s for s in SITES if s != "site-5"]
    first_group = ["site-0", "site-1", "site-2", "site-5"]
    second_group = ["site-3", "site-4"]
    signed = {s: round_.clients[s].sign_survivors(with_five) for s in first_group}
    signed |= {s: round_.clients[s].sign_survivors(without_five) for s in second_group}

    # Relaying every signature, or only those over the second view, fails the same way.
    for relayed in (list(signed.values()), [signed[s] for s in second_group]):
        for site in second_group:
            with pytest.raises(RoundAborted) as excinfo:
                round_.clients[site].unmask(relayed)
            assert excinfo.value.stage == "unmask"

    first = round_.clients["site-0"].unmask([signed[s] for s in first_group])
    assert "site-5" in first.self_mask_shares
    assert first.mask_key_shares == {}


def test_split_view_signature_is_rejected_by_hub() -> None:
    round_ = Round(config_for())
    other_view = [s for s in SITES if s != "site-5"]

    with pytest.raises(MessageRejected, match="does not verify over this round's survivor set"):
        round_.server.collect_consistency_signatures([round_.clients["site-0"].sign_survivors(other_view)])


def test_forged_consistency_signatures_are_rejected() -> None:
    """A hub that signs the survivor set itself cannot stand in for the sites."""
    round_ = Round(config_for())
    round_.clients["site-0"].sign_survivors(SITES)
    hub_key = generate_signing_key()
    message = survivor_set_bytes("round-1", SITES)
    forged = [ConsistencySignature("round-1", s, hub_key.sign_bytes(message)) for s in SITES]

    with pytest.raises(RoundAborted, match="does not verify"):
        round_.clients["site-0"].unmask(forged)


def test_too_few_signatures_reveal_nothing() -> None:
    round_ = Round(config_for())
    signatures = [round_.clients[s].sign_survivors(SITES) for s in SITES[:3]]

    with pytest.raises(RoundAborted, match="only 3 sites signed"):
        round_.clients["site-0"].unmask(signatures)

    # The site did not count this as its one response, so with a quorum it still responds.
    signatures += [round_.clients[s].sign_survivors(SITES) for s in SITES[3:]]
    response = round_.clients["site-0"].unmask(signatures)
    assert set(response.self_mask_shares) == set(SITES)


def test_repeated_signer_is_rejected() -> None:
    round_ = Round(config_for())
    signatures = [round_.clients[s].sign_survivors(SITES) for s in SITES[:3]]

    with pytest.raises(RoundAborted, match="signed twice"):
        round_.clients["site-0"].unmask(signatures + [signatures[1]])


def test_signature_from_another_round_is_rejected() -> None:
    """Same sites, same survivor set, but the signatures were made in round-0."""
    old = Round(config_for("round-0"), seed=1)
    replayed = [old.clients[s].sign_survivors(SITES) for s in SITES]
    relabelled = [dataclasses.replace(item, round_id="round-1") for item in replayed]
    new = Round(config_for("round-1"), seed=2)
    new.clients["site-0"].sign_survivors(SITES)

    with pytest.raises(RoundAborted, match="is for round 'round-0'"):
        new.clients["site-0"].unmask(replayed)
    with pytest.raises(RoundAborted, match="does not verify"):
        new.clients["site-0"].unmask(relabelled)
    with pytest.raises(MessageRejected, match="does not verify"):
        new.server.collect_consistency_signatures(relabelled)


def test_advertisement_signature_does_not_pass_as_consistency_signature() -> None:
    round_ = Round(config_for())
    round_.clients["site-0"].sign_survivors(SITES)
    borrowed = [ConsistencySignature("round-1", a.site_id, a.signature) for a in round_.adverts]

    with pytest.raises(RoundAborted, match="does not verify"):
        round_.clients["site-0"].unmask(borrowed)


def test_signer_outside_survivor_set_is_rejected() -> None:
    round_ = Round(config_for())
    survivors = SITES[:5]
    signatures = [round_.clients[s].sign_survivors(survivors) for s in survivors]
    outsider = ConsistencySignature("round-1", "site-5",
                                    SITE_KEYS["site-5"].sign_bytes(survivor_set_bytes("round-1", survivors)))

    with pytest.raises(RoundAborted, match="not in the survivor set"):
        round_.clients["site-0"].unmask(signatures + [outsider])


@pytest.mark.parametrize(
    ("survivors", "reason"),
    [
        (["site-1", "site-2", "site-3", "site-4"], "leaves out this site"),
        (["site-0", "site-0", "site-1", "site-2"], "repeats a site"),
        (["site-0", "site-1", "site-2", "site-x"], "unknown"),
    ],
)
def test_malformed_survivor_set_is_not_signed(survivors: list[str], reason: str) -> None:
    round_ = Round(config_for())

    with pytest.raises(MessageRejected, match=reason):
        round_.clients["site-0"].sign_survivors(survivors)


def test_survivor_that_sent_no_shares_is_not_signed() -> None:
    """U3 is a subset of the sites that shared keys, so a survivor without shares is a hub lie."""
    config = config_for()
    rng = seeded_random(6)
    clients = {s: SecAggClient(config, s, rng=rng, signing_key=SITE_KEYS[s]) for s in SITES}
    server = SecAggServer(config)
    adverts = server.collect_advertisements(c.advertise_keys() for c in clients.values())
    sent = [m for s in SITES[:5] for m in clients[s].share_keys(adverts)]
    routed = server.route_shares(sent)
    clients["site-0"].mask_input(encode_signed(np.zeros(LENGTH, dtype=np.int64)), routed["site-0"])

    with pytest.raises(MessageRejected, match="sent this site no shares"):
        clients["site-0"].sign_survivors(SITES)


def test_signatures_beyond_threshold_are_not_verified() -> None:
    """Threshold valid signatures suffice, because the hub could always relay only those."""
    round_ = Round(config_for())
    signatures = [round_.clients[s].sign_survivors(SITES) for s in SITES[:4]]
    forged = ConsistencySignature("round-1", "site-5", generate_signing_key().sign_bytes(b"other"))

    response = round_.clients["site-0"].unmask(signatures + [forged])

    assert set(response.self_mask_shares) == set(SITES)
    assert response.mask_key_shares == {}
