"""Tests for the secure aggregation stages: masks cancel, dropouts, aborts, bad messages."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from privacy.random import seeded_random
from privacy.secagg import (
    ConsistencySignature,
    Dropouts,
    EncryptedShare,
    KeyAdvertisement,
    MaskedInput,
    MessageRejected,
    RoundAborted,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    ShareRejected,
    UnmaskResponse,
    decode_signed,
    encode_signed,
    run_local_round,
)
from privacy.secagg.local import DROPOUT_STAGES
from tests.support.secagg_keys import SITE_KEYS, keyed_config

SITES = tuple(f"site-{i}" for i in range(6))
LENGTH = 16


def make_inputs(sites: tuple[str, ...], length: int = LENGTH, seed: int = 0) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(seed)
    return {site: generator.integers(-1000, 1000, size=length) for site in sites}


def encoded(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {site: encode_signed(values) for site, values in inputs.items()}


def expected_sum(inputs: dict[str, np.ndarray], sites: set[str] | tuple[str, ...]) -> list[int]:
    return [int(v) for v in sum(inputs[s] for s in sites)]


class Round:
    """Clients and hub of one round, advanced stage by stage so a test can interfere."""

    def __init__(self, config: SecAggConfig, seed: int = 0) -> None:
        rng = seeded_random(seed)
        self.config = config
        self.clients = {s: SecAggClient(config, s, rng=rng, signing_key=SITE_KEYS[s]) for s in config.site_ids}
        self.server = SecAggServer(config)
        self.adverts = self.server.collect_advertisements(c.advertise_keys() for c in self.clients.values())
        self.sent = {s: c.share_keys(self.adverts) for s, c in self.clients.items()}
        self.routed = self.server.route_shares(m for ms in self.sent.values() for m in ms)

    def mask_all(self, inputs: dict[str, np.ndarray]) -> tuple[str, ...]:
        """Send every site's masked input to the hub and return the survivor set."""
        return self.server.collect_masked_inputs(
            self.clients[s].mask_input(inputs[s], self.routed[s]) for s in self.config.site_ids)

    def sign(self, survivors: tuple[str, ...] | list[str]) -> list[ConsistencySignature]:
        """Have every listed site sign ``survivors`` and return the signatures."""
        return [self.clients[s].sign_survivors(survivors) for s in survivors]


def config_for(threshold: int = 4, sites: tuple[str, ...] = SITES, **kwargs: object) -> SecAggConfig:
    return keyed_config(round_id="round-1", site_ids=sites, threshold=threshold, vector_length=LENGTH,
                        **kwargs)  # type: ignore[arg-type]


# Masks cancel ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_round_without_dropouts_returns_exact_sum(seed: int) -> None:
    inputs = make_inputs(SITES, seed=seed)

    total = run_local_round(config_for(), encoded(inputs), signing_keys=SITE_KEYS, rng=seeded_random(seed))

    assert decode_signed(total).tolist() == expected_sum(inputs, SITES)


def test_masked_inputs_hide_the_input() -> None:
    """Each masked vector differs from its input in nearly every word, so the hub sees noise."""
    round_ = Round(config_for())
    inputs = encoded(make_inputs(SITES))

    masked = [round_.clients[s].mask_input(inputs[s], round_.routed[s]) for s in SITES]

    for message in masked:
        assert np.count_nonzero(message.vector != inputs[message.site_id]) >= LENGTH - 1


def test_sum_wraps_modulo_two_to_the_32() -> None:
    inputs = {s: np.full(LENGTH, 2**31 - 1) for s in SITES[:2]} | {s: np.zeros(LENGTH, dtype=np.int64) for s in SITES[2:]}

    total = run_local_round(config_for(), encoded(inputs), signing_keys=SITE_KEYS, rng=seeded_random(1))

    assert total.tolist() == [(2 * (2**31 - 1)) % 2**32] * LENGTH


# Dropouts -------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", DROPOUT_STAGES)
def test_round_with_n_minus_t_dropouts_recovers_sum(stage: str) -> None:
    """Two of six sites drop with threshold four, at each stage in turn."""
    inputs = make_inputs(SITES, seed=3)
    dropped = {"site-1", "site-4"}

    total = run_local_round(config_for(threshold=4), encoded(inputs), signing_keys=SITE_KEYS,
                            rng=seeded_random(3), dropouts=Dropouts.at(stage, dropped))

    # A site that drops after its masked input arrived is still in the sum.
    included = set(SITES) if stage in ("consistency_check", "unmask") else set(SITES) - dropped
    assert decode_signed(total).tolist() == expected_sum(inputs, included)


def test_round_with_dropouts_spread_over_stages_recovers_sum() -> None:
    sites = tuple(f"site-{i}" for i in range(10))
    inputs = make_inputs(sites, seed=4)
    dropouts = Dropouts({"share_keys": frozenset({"site-0"}), "mask_input": frozenset({"site-5", "site-7"}),
                         "unmask": frozenset({"site-9"})})

    total = run_local_round(config_for(threshold=6, sites=sites), encoded(inputs), signing_keys=SITE_KEYS,
                            rng=seeded_random(4), dropouts=dropouts)

    assert decode_signed(total).tolist() == expected_sum(inputs, set(sites) - {"site-0", "site-5", "site-7"})


@pytest.mark.parametrize("stage", DROPOUT_STAGES)
def test_round_beyond_n_minus_t_dropouts_aborts(stage: str) -> None:
    inputs = encoded(make_inputs(SITES))

    with pytest.raises(RoundAborted) as excinfo:
        run_local_round(config_for(threshold=4), inputs, signing_keys=SITE_KEYS, rng=seeded_random(5),
                        dropouts=Dropouts.at(stage, {"site-0", "site-2", "site-5"}))

    assert (excinfo.value.survivors, excinfo.value.threshold) == (3, 4)


def test_client_refuses_to_sign_below_threshold() -> None:
    """A hub that names too few survivors gets no share at all."""
    round_ = Round(config_for(threshold=4))
    inputs = encoded(make_inputs(SITES))
    client = round_.clients["site-0"]
    client.mask_input(inputs["site-0"], round_.routed["site-0"])

    with pytest.raises(RoundAborted) as excinfo:
        client.sign_survivors(["site-0", "site-1", "site-2"])

    assert excinfo.value.stage == "consistency_check"
    assert (excinfo.value.survivors, excinfo.value.threshold) == (3, 4)


def test_client_answers_unmask_once_only() -> None:
    """A second request with another survivor set could reveal both shares of a site."""
    round_ = Round(config_for(threshold=4))
    inputs = encoded(make_inputs(SITES))
    survivors = round_.mask_all(inputs)
    signatures = round_.sign(survivors)
    client = round_.clients["site-0"]
    first = client.unmask(signatures)

    with pytest.raises(RoundAborted, match="second time"):
        client.unmask(signatures)

    assert set(first.self_mask_shares) == set(SITES)
    assert first.mask_key_shares == {}


def test_client_signs_one_survivor_set_only() -> None:
    """A site that signed U3 refuses to sign another set, so it never backs two views."""
    round_ = Round(config_for(threshold=4))
    survivors = round_.mask_all(encoded(make_inputs(SITES)))
    client = round_.clients["site-0"]
    first = client.sign_survivors(survivors)

    with pytest.raises(RoundAborted, match="second, different survivor set"):
        client.sign_survivors(SITES[:5])

    assert client.sign_survivors(survivors) == first


def test_client_reveals_one_share_kind_per_site() -> None:
    round_ = Round(config_for(threshold=4))
    inputs = encoded(make_inputs(SITES))
    round_.mask_all(inputs)
    survivors = ["site-0", "site-1", "site-2", "site-3"]

    response = round_.clients["site-0"].unmask(round_.sign(survivors))

    assert set(response.self_mask_shares) == {"site-0", "site-1", "site-2", "site-3"}
    assert set(response.mask_key_shares) == {"site-4", "site-5"}


# Replayed and malformed shares ----------------------------------------------------------


def test_replayed_share_is_rejected() -> None:
    round_ = Round(config_for())
    shares = round_.routed["site-0"]
    inputs = encoded(make_inputs(SITES))

    with pytest.raises(ShareRejected) as excinfo:
        round_.clients["site-0"].mask_input(inputs["site-0"], shares + shares[:1])

    assert excinfo.value.sender == shares[0].sender
    assert "replayed" in excinfo.value.reason


def test_share_from_previous_round_is_rejected() -> None:
    """A ciphertext of round 1 replayed into round 2 fails: keys are fresh per round."""
    old = Round(config_for())
    new = Round(dataclasses.replace(config_for(), round_id="round-2"), seed=1)
    stale = old.routed["site-0"][0]
    moved = EncryptedShare("round-2", stale.sender, stale.recipient, stale.ciphertext)
    inputs = encoded(make_inputs(SITES))

    with pytest.raises(ShareRejected, match="cannot be decrypted"):
        new.clients["site-0"].mask_input(inputs["site-0"], [moved])


def test_share_with_wrong_round_label_is_rejected() -> None:
    round_ = Round(config_for())
    share = round_.routed["site-0"][0]
    relabelled = EncryptedShare("round-0", share.sender, share.recipient, share.ciphertext)

    with pytest.raises(ShareRejected, match="for round 'round-0'"):
        round_.clients["site-0"].mask_input(encoded(make_inputs(SITES))["site-0"], [relabelled])


def test_share_redirected_to_another_site_is_rejected() -> None:
    """The hub relays site-1's share meant for site-0 to site-2 under a forged header."""
    round_ = Round(config_for())
    share = next(m for m in round_.routed["site-0"] if m.sender == "site-1")
    redirected = EncryptedShare(share.round_id, share.sender, "site-2", share.ciphertext)

    with pytest.raises(ShareRejected, match="cannot be decrypted"):
        round_.clients["site-2"].mask_input(encoded(make_inputs(SITES))["site-2"], [redirected])


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "empty"])
def test_corrupted_ciphertext_is_rejected(damage: str) -> None:
    round_ = Round(config_for())
    share = round_.routed["site-0"][0]
    body = bytearray(share.ciphertext)
    if damage == "flip_byte":
        body[-1] ^= 1
    elif damage == "truncate":
        body = body[:30]
    else:
        body = bytearray()
    broken = EncryptedShare(share.round_id, share.sender, share.recipient, bytes(body))

    with pytest.raises(ShareRejected, match="cannot be decrypted"):
        round_.clients["site-0"].mask_input(encoded(make_inputs(SITES))["site-0"], [broken])


def test_share_from_unknown_sender_is_rejected() -> None:
    round_ = Round(config_for())
    share = round_.routed["site-0"][0]
    forged = EncryptedShare(share.round_id, "site-99", share.recipient, share.ciphertext)

    with pytest.raises(ShareRejected, match="not a neighbour"):
        round_.clients["site-0"].mask_input(encoded(make_inputs(SITES))["site-0"], [forged])


def test_forged_share_in_unmask_response_aborts_round() -> None:
    """A site that reveals a wrong share makes the rebuilt seed miss its commitment."""
    config = config_for(threshold=6)
    round_ = Round(config)
    inputs = encoded(make_inputs(SITES))
    survivors = round_.mask_all(inputs)
    signatures = round_.server.collect_consistency_signatures(round_.sign(survivors))
    responses = [round_.clients[s].unmask(signatures) for s in SITES]
    good = responses[0].self_mask_shares["site-3"]
    responses[0].self_mask_shares["site-3"] = dataclasses.replace(good, y=good.y ^ 1)
    round_.server.collect_unmask_responses(responses)

    with pytest.raises(RoundAborted, match="does not match its commitment"):
        round_.server.unmask()


def test_server_rejects_key_share_of_survivor() -> None:
    """A response that reveals a survivor's key share would let the hub unmask it."""
    round_ = Round(config_for())
    inputs = encoded(make_inputs(SITES))
    survivors = round_.mask_all(inputs)
    signatures = round_.server.collect_consistency_signatures(round_.sign(survivors))
    response = round_.clients["site-0"].unmask(signatures)
    share = response.self_mask_shares["site-1"]
    bad = UnmaskResponse(response.round_id, "site-0", {}, {"site-1": share})

    with pytest.raises(ShareRejected, match="not a dropped sharer"):
        round_.server.collect_unmask_responses([bad])


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (MaskedInput("round-1", "site-0", np.zeros(LENGTH - 1, dtype=np.uint32)), "length"),
        (MaskedInput("round-1", "site-0", np.zeros(LENGTH, dtype=np.int64)), "uint32"),
        (MaskedInput("round-9", "site-0", np.zeros(LENGTH, dtype=np.uint32)), "round"),
        (MaskedInput("round-1", "site-x", np.zeros(LENGTH, dtype=np.uint32)), "not part"),
    ],
)
def test_server_rejects_malformed_masked_input(message: MaskedInput, reason: str) -> None:
    round_ = Round(config_for())

    with pytest.raises(MessageRejected, match=reason):
        round_.server.collect_masked_inputs([message])


def test_server_rejects_duplicate_advertisement() -> None:
    config = config_for()
    client = SecAggClient(config, "site-0", rng=seeded_random(0), signing_key=SITE_KEYS["site-0"])
    advert = client.advertise_keys()

    with pytest.raises(MessageRejected, match="twice"):
        SecAggServer(config).collect_advertisements([advert, advert])


def test_client_rejects_reused_public_key() -> None:
    round_ = Round(config_for())
    copy = dataclasses.replace(round_.adverts[1], site_id="site-2")
    adverts = [a for a in round_.adverts if a.site_id != "site-2"] + [copy]
    fresh = SecAggClient(round_.config, "site-0", rng=seeded_random(9), signing_key=SITE_KEYS["site-0"])
    own = fresh.advertise_keys()

    with pytest.raises(MessageRejected, match="reused"):
        fresh.share_keys([own] + [a for a in adverts if a.site_id != "site-0"])


def test_messages_round_trip_through_dicts() -> None:
    round_ = Round(config_for())
    inputs = encoded(make_inputs(SITES))
    masked = round_.clients["site-0"].mask_input(inputs["site-0"], round_.routed["site-0"])
    for site in SITES[1:]:
        round_.clients[site].mask_input(inputs[site], round_.routed[site])
    signatures = round_.sign(SITES)
    response = round_.clients["site-0"].unmask(signatures)

    assert KeyAdvertisement.from_dict(round_.adverts[0].to_dict()) == round_.adverts[0]
    assert EncryptedShare.from_dict(round_.routed["site-0"][0].to_dict()) == round_.routed["site-0"][0]
    assert MaskedInput.from_dict(masked.to_dict()).vector.tolist() == masked.vector.tolist()
    assert UnmaskResponse.from_dict(response.to_dict()) == response
    assert ConsistencySignature.from_dict(signatures[0].to_dict()) == signatures[0]


def test_advertisement_from_dict_with_short_key_raises() -> None:
    data = Round(config_for()).adverts[0].to_dict() | {"mask_public_key": "AAAA"}

    with pytest.raises(MessageRejected, match="must be 32 bytes; got 3"):
        KeyAdvertisement.from_dict(data)


# Configuration and SecAgg+ ---------------------------------------------------------------


@pytest.mark.parametrize("threshold", [3, 7, 0])
def test_config_threshold_outside_majority_raises(threshold: int) -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \(3, 6\]"):
        config_for(threshold=threshold)


def test_secagg_plus_neighbourhoods_are_symmetric_with_given_degree() -> None:
    sites = tuple(f"site-{i:02d}" for i in range(30))
    config = keyed_config(round_id="r", site_ids=sites, threshold=4, vector_length=4, neighbours_per_site=6)

    hoods = config.neighbourhoods

    assert all(len(members) == 7 and site in members for site, members in hoods.items())
    assert all(a in hoods[b] for a, members in hoods.items() for b in members)


def test_secagg_plus_graph_changes_with_round() -> None:
    sites = tuple(f"site-{i:02d}" for i in range(30))
    first = keyed_config(round_id="r1", site_ids=sites, threshold=4, vector_length=4, neighbours_per_site=6)
    second = dataclasses.replace(first, round_id="r2")

    assert first.neighbourhoods != second.neighbourhoods


@pytest.mark.parametrize("stage", DROPOUT_STAGES)
def test_secagg_plus_round_with_dropouts_recovers_sum(stage: str) -> None:
    sites = tuple(f"site-{i:02d}" for i in range(24))
    config = keyed_config(round_id="plus", site_ids=sites, threshold=5, vector_length=LENGTH,
                          neighbours_per_site=6)
    inputs = make_inputs(sites, seed=6)
    # One dropout per neighbourhood at most: every secret keeps six of its seven shares.
    dropped = {sites[0], sites[12]}

    total = run_local_round(config, encoded(inputs), signing_keys=SITE_KEYS, rng=seeded_random(6),
                            dropouts=Dropouts.at(stage, dropped))

    included = set(sites) if stage in ("consistency_check", "unmask") else set(sites) - dropped
    assert decode_signed(total).tolist() == expected_sum(inputs, included)


def test_secagg_plus_round_with_a_neighbourhood_wiped_out_aborts() -> None:
    sites = tuple(f"site-{i:02d}" for i in range(24))
    config = keyed_config(round_id="plus", site_ids=sites, threshold=5, vector_length=LENGTH,
                          neighbours_per_site=6)
    victim = sites[0]
    neighbours = sorted(config.neighbourhoods[victim] - {victim})[:3]

    with pytest.raises(RoundAborted):
        run_local_round(config, encoded(make_inputs(sites)), signing_keys=SITE_KEYS, rng=seeded_random(7),
                        dropouts=Dropouts.at("mask_input", set(neighbours) | {victim}))


def test_every_pair_of_dropouts_is_recovered_with_five_sites() -> None:
    sites = SITES[:5]
    inputs = make_inputs(sites, seed=8)
    config = config_for(threshold=3, sites=sites)

    for dropped in itertools.combinations(sites, 2):
        total = run_local_round(config, encoded(inputs), signing_keys=SITE_KEYS, rng=seeded_random(8),
                                dropouts=Dropouts.at("mask_input", set(dropped)))
        assert decode_signed(total).tolist() == expected_sum(inputs, set(sites) - set(dropped))
