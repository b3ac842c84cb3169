"""The hub's side of secure aggregation: relay keys and shares, then remove the masks.

The hub runs six stages, in order, on one :class:`SecAggServer`:

1. :meth:`~SecAggServer.collect_advertisements`: the sites whose signed keys arrived (U1);
2. :meth:`~SecAggServer.route_shares`: relay encrypted shares; the sites whose shares
   reached every advertised neighbour form U2;
3. :meth:`~SecAggServer.collect_masked_inputs`: the sites whose masked input arrived (U3);
   every site of U3 is then asked to sign U3;
4. :meth:`~SecAggServer.collect_consistency_signatures`: the valid signatures of U3, which
   the hub relays to every signer;
5. :meth:`~SecAggServer.collect_unmask_responses`: the sites that answered (U5);
6. :meth:`~SecAggServer.unmask`: reconstruct the self-mask seed of every site in U3 and
   the mask secret key of every site in U2 minus U3, remove their masks and return the sum.

The hub checks every signature against ``config.verify_keys`` as it arrives, so one bad
signature is rejected with its sender named instead of making the honest sites abort.

Each stage raises :class:`RoundAborted` when fewer than ``threshold`` sites are left, and
then the hub holds nothing but masked vectors and ciphertexts it cannot open. Every secret
is checked against what its owner advertised (the X25519 public key, or the commitment to
the self-mask seed), so a corrupted or forged share aborts the round instead of producing a
wrong sum. The hub never keeps an individual unmasked vector: it only ever adds masked
vectors and subtracts masks from their running sum.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import nacl.bindings
import numpy as np

from privacy.secagg.client import commit_self_mask_seed
from privacy.secagg.errors import MessageRejected, RoundAborted, ShareRejected
from privacy.secagg.masking import SEED_BYTES, agree_pairwise_seed, expand_mask
from privacy.secagg.messages import (
    ConsistencySignature,
    EncryptedShare,
    KeyAdvertisement,
    MaskedInput,
    SecAggConfig,
    UnmaskResponse,
    survivor_set_bytes,
)
from privacy.secagg.shamir import Share, lagrange_coefficients_at_zero, reconstruct_secret

__all__ = ["SecAggServer"]

log = logging.getLogger(__name__)


class SecAggServer:
    """The hub's state for one secure aggregation round.

    Parameters
    ----------
    config : SecAggConfig
        Round parameters shared with the sites. ``threshold`` is both the minimum number
        of sites at every stage and the number of shares per secret.
    """

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self.advertisements_: dict[str, KeyAdvertisement] = {}
        self.sharers_: frozenset[str] = frozenset()
        self.survivors_: tuple[str, ...] = ()
        self.signatures_: dict[str, ConsistencySignature] = {}
        self.responders_: frozenset[str] = frozenset()
        self._masked_sum: np.ndarray | None = None
        self._responses: dict[str, UnmaskResponse] = {}
        # owner -> kind -> [(holder, share)], filled as responses arrive.
        self._shares_by_owner: dict[tuple[str, str], list[tuple[str, Share]]] = {}
        self._weights_cache: dict[tuple[int, ...], list[int]] = {}

    # Stage 1 ---------------------------------------------------------------------------

    def collect_advertisements(self, advertisements: Iterable[KeyAdvertisement]) -> list[KeyAdvertisement]:
        """Record the sites' public keys and return the list to relay to every site."""
        for advert in advertisements:
            self._check_sender("collect_advertisements", advert.round_id, advert.site_id)
            if advert.site_id in self.advertisements_:
                raise MessageRejected("collect_advertisements", advert.site_id, "site advertised keys twice")
            self.check_advertisement(advert)
            self.advertisements_[advert.site_id] = advert
        self._require_quorum("collect_advertisements", len(self.advertisements_))
        return [self.advertisements_[site] for site in sorted(self.advertisements_)]

    def check_advertisement(self, advert: KeyAdvertisement) -> None:
        """Raise :class:`MessageRejected` unless the advertisement is signed by its site's enrolled key."""
        if not self.config.verify_signature(advert.site_id, advert.signed_bytes(), advert.signature):
            raise MessageRejected("collect_advertisements", advert.site_id,
                                  "advertisement signature does not verify against the site's enrolled key")

    # Stage 2 ---------------------------------------------------------------------------

    def route_shares(self, messages: Iterable[EncryptedShare]) -> dict[str, list[EncryptedShare]]:
        """Relay the encrypted shares and return them grouped by recipient.

        A site joins U2 only if it sent exactly one share to each neighbour that advertised
        keys. Shares from any other site are dropped, so every recipient masks with the
        same set of sharers that the hub later unmasks.
        """
        by_sender: dict[str, dict[str, EncryptedShare]] = {}
        for message in messages:
            self._check_sender("route_shares", message.round_id, message.sender)
            if message.sender not in self.advertisements_:
                raise MessageRejected("route_shares", message.sender, "site did not advertise keys")
            sent = by_sender.setdefault(message.sender, {})
            if message.recipient in sent:
                raise MessageRejected("route_shares", message.sender,
                                      f"second share for {message.recipient!r}")
            sent[message.recipient] = message

        advertised = set(self.advertisements_)
        sharers = set()
        for sender, sent in by_sender.items():
            expected = (self.config.neighbourhoods[sender] & advertised) - {sender}
            if set(sent) == expected:
                sharers.add(sender)
            else:
                log.warning("secure aggregation round %s: shares of site %s do not cover its "
                            "neighbours; the site is treated as dropped", self.config.round_id, sender)
        self.sharers_ = frozenset(sharers)
        self._require_quorum("route_shares", len(self.sharers_))

        routed: dict[str, list[EncryptedShare]] = {site: [] for site in self.sharers_}
        for sender in sorted(self.sharers_):
            for recipient, message in by_sender[sender].items():
                if recipient in routed:
                    routed[recipient].append(message)
        return routed

    # Stage 3 ---------------------------------------------------------------------------

    def collect_masked_inputs(self, inputs: Iterable[MaskedInput]) -> tuple[str, ...]:
        """Add up the masked inputs of sharers and return the survivors to send to every site."""
        total = np.zeros(self.config.vector_length, dtype=np.uint32)
        received: set[str] = set()
        for masked in inputs:
            self._check_sender("collect_masked_inputs", masked.round_id, masked.site_id)
            if masked.site_id not in self.sharers_:
                raise MessageRejected("collect_masked_inputs", masked.site_id, "site did not share its keys")
            if masked.site_id in received:
                raise MessageRejected("collect_masked_inputs", masked.site_id, "second masked input")
            vector = np.asarray(masked.vector)
            if vector.dtype != np.uint32 or vector.shape != (self.config.vector_length,):
                raise MessageRejected("collect_masked_inputs", masked.site_id,
                                      f"vector must be uint32 of length {self.config.vector_length}")
            total += vector
            received.add(masked.site_id)
        self._require_quorum("collect_masked_inputs", len(received))
        self._masked_sum = total
        self.survivors_ = tuple(sorted(received))
        return self.survivors_

    # Stage 4 ---------------------------------------------------------------------------

    def check_consistency_signature(self, item: ConsistencySignature) -> None:
        """Raise :class:`MessageRejected` unless ``item`` is a survivor's valid signature of U3."""
        stage = "collect_consistency_signatures"
        self._check_sender(stage, item.round_id, item.site_id)
        if item.site_id not in self.survivors_:
            raise MessageRejected(stage, item.site_id, "site did not submit a masked input")
        message = survivor_set_bytes(self.config.round_id, self.survivors_)
        if not self.config.verify_signature(item.site_id, message, item.signature):
            raise MessageRejected(stage, item.site_id,
                                  "signature does not verify over this round's survivor set")

    def collect_consistency_signatures(self, signatures: Iterable[ConsistencySignature]) -> list[ConsistencySignature]:
        """Keep the survivors' signatures of U3 and return them, to relay to every signer."""
        for item in signatures:
            self.check_consistency_signature(item)
            if item.site_id in self.signatures_:
                raise MessageRejected("collect_consistency_signatures", item.site_id, "second signature")
            self.signatures_[item.site_id] = item
        self._require_quorum("collect_consistency_signatures", len(self.signatures_))
        return [self.signatures_[site] for site in sorted(self.signatures_)]

    # Stage 5 ---------------------------------------------------------------------------

    def check_unmask_response(self, response: UnmaskResponse) -> None:
        """Raise :class:`MessageRejected` or :class:`ShareRejected` unless the response fits the protocol.

        The checks need no other site's response, so the hub can reject a bad response as
        it arrives and count its sender as dropped instead of aborting the round.
        """
        site = response.site_id
        self._check_sender("collect_unmask_responses", response.round_id, site)
        if site not in self.signatures_:
            raise MessageRejected("collect_unmask_responses", site, "site did not sign the survivor set")
        if site in self._responses:
            raise MessageRejected("collect_unmask_responses", site, "second unmask response")

        # An honest site reveals the seed share of survivors and the key share of
        # dropped sharers; any other combination is a protocol violation.
        survivors = set(self.survivors_)
        point = self.config.share_point(site)
        for owner, share in response.self_mask_shares.items():
            if owner not in survivors:
                raise ShareRejected(site, f"self-mask share revealed for {owner!r}, which did not survive")
            self._check_share(site, owner, share, point)
        for owner, share in response.mask_key_shares.items():
            if owner in survivors or owner not in self.sharers_:
                raise ShareRejected(site, f"key share revealed for {owner!r}, which is not a dropped sharer")
            self._check_share(site, owner, share, point)

    def collect_unmask_responses(self, responses: Iterable[UnmaskResponse]) -> frozenset[str]:
        """Check and keep the revealed shares of the sites that responded."""
        for response in responses:
            self.check_unmask_response(response)
            site = response.site_id
            self._responses[site] = response
            for kind in ("self_mask_shares", "mask_key_shares"):
                for owner, share in getattr(response, kind).items():
                    self._shares_by_owner.setdefault((owner, kind), []).append((site, share))
        self.responders_ = frozenset(self._responses)
        self._require_quorum("collect_unmask_responses", len(self.responders_))
        return self.responders_

    def _check_share(self, site: str, owner: str, share: Share, point: int) -> None:
        if share.x != point:
            raise ShareRejected(site, f"share point {share.x} is not the site's point {point}")
        if site not in self.config.neighbourhoods[owner]:
            raise ShareRejected(site, f"site is not a neighbour of {owner!r}")

    # Stage 6 ---------------------------------------------------------------------------

    def unmask(self) -> np.ndarray:
        """Remove every mask and return the sum of the survivors' inputs modulo 2^32.

        Raises
        ------
        RoundAborted
            If some secret has fewer than ``threshold`` shares, or a reconstructed secret
            does not match what its owner advertised.
        """
        if self._masked_sum is None or not self._responses:
            raise RuntimeError("unmask called before the masked inputs and responses were collected")
        length = self.config.vector_length
        total = self._masked_sum.copy()
        dropped = sorted(self.sharers_ - set(self.survivors_))

        # Self masks of every survivor: its seed is rebuilt from its neighbours' shares.
        for owner in self.survivors_:
            seed = self._reconstruct(owner, "self_mask_shares")
            if commit_self_mask_seed(seed) != self.advertisements_[owner].self_mask_commitment:
                self._abort("unmask", f"self-mask seed of {owner!r} does not match its commitment")
            total -= expand_mask(seed, length)

        # Pairwise masks that survivors added with sites that dropped after sharing.
        survivors = set(self.survivors_)
        for owner in dropped:
            secret_key = self._reconstruct(owner, "mask_key_shares")
            if nacl.bindings.crypto_scalarmult_base(secret_key) != self.advertisements_[owner].mask_public_key:
                self._abort("unmask", f"mask key of {owner!r} does not match its public key")
            for peer in sorted((self.config.neighbourhoods[owner] & survivors) - {owner}):
                seed = agree_pairwise_seed(secret_key, self.advertisements_[peer].mask_public_key,
                                           round_id=self.config.round_id, site_a=owner, site_b=peer)
                # The survivor added the mask if its id is smaller, else subtracted it.
                if peer < owner:
                    total -= expand_mask(seed, length)
                else:
                    total += expand_mask(seed, length)

        log.info("secure aggregation round %s unmasked: %d sites summed, %d dropouts recovered",
                 self.config.round_id, len(self.survivors_), len(dropped))
        return total

    def _reconstruct(self, owner: str, kind: str) -> bytes:
        held = sorted(self._shares_by_owner.get((owner, kind), []), key=lambda item: item[0])
        if len(held) < self.config.threshold:
            self._abort("unmask", f"{len(held)} shares of a secret of {owner!r} but "
                                  f"{self.config.threshold} are needed", survivors=len(held))
        shares = [share for _, share in held[: self.config.threshold]]
        xs = tuple(share.x for share in shares)
        weights = self._weights_cache.get(xs)
        if weights is None:
            weights = self._weights_cache[xs] = lagrange_coefficients_at_zero(xs)
        secret = reconstruct_secret(shares, threshold=self.config.threshold, weights=weights)
        if secret >= 1 << (8 * SEED_BYTES):
            self._abort("unmask", f"a reconstructed secret of {owner!r} is not 32 bytes long")
        return secret.to_bytes(SEED_BYTES, "big")

    # Helpers ---------------------------------------------------------------------------

    def _check_sender(self, stage: str, round_id: str, site: str) -> None:
        if round_id != self.config.round_id:
            raise MessageRejected(stage, site, f"message is for round {round_id!r}")
        if not self.config.is_member(site):
            raise MessageRejected(stage, site, "site is not part of the round")

    def _require_quorum(self, stage: str, count: int) -> None:
        if count < self.config.threshold:
            self._abort(stage, "", survivors=count)

    def _abort(self, stage: str, reason: str, *, survivors: int | None = None) -> None:
        count = len(self.survivors_) if survivors is None else survivors
        log.error("secure aggregation round %s aborted at %s: %s", self.config.round_id, stage,
                  reason or f"{count} sites left, threshold {self.config.threshold}")
        raise RoundAborted(self.config.round_id, stage, survivors=count,
                           threshold=self.config.threshold, reason=reason)
