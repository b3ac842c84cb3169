"""The site's side of secure aggregation (Bonawitz et al., CCS 2017, with SecAgg+ graphs).

A site runs five stages, in order, on one :class:`SecAggClient`:

1. :meth:`~SecAggClient.advertise_keys`: draw two X25519 key pairs and a self-mask seed
   for this round only, and publish the public keys and a commitment to the seed, signed
   with the site's enrolled Ed25519 key;
2. :meth:`~SecAggClient.share_keys`: check every neighbour's advertisement against its
   enrolled key, split the mask secret key and the self-mask seed into Shamir shares and
   send each neighbour its two shares, encrypted with NaCl Box;
3. :meth:`~SecAggClient.mask_input`: check the shares received, then send
   ``input + PRG(self seed) + sum of signed PRG(pairwise seeds)`` modulo 2^32;
4. :meth:`~SecAggClient.sign_survivors`: sign the survivor set U3 that the hub announced
   (the consistency check of Bonawitz et al.);
5. :meth:`~SecAggClient.unmask`: check that at least ``threshold`` sites of U3 signed the
   same U3, then for each neighbour reveal the share of its self-mask seed if it is in U3,
   or of its mask secret key if it dropped out, never both.

The site reveals nothing at stage 5 unless ``threshold`` signatures agree with the set it
signed, so a hub that announces different survivor sets to different sites must win
``threshold`` signers for each set. It signs only one survivor set and responds to stage 5
only once per round, because a hub that obtained responses for two survivor sets could
reconstruct both the self-mask seed and the pairwise keys of one site, and so its input.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import NoReturn

import nacl.bindings
import nacl.exceptions
import nacl.public
import numpy as np

from privacy.random import RandomSource
from privacy.secagg.errors import MessageRejected, RoundAborted, ShareRejected
from privacy.secagg.masking import SEED_BYTES, agree_pairwise_seed, expand_mask
from privacy.secagg.messages import (
    KEY_BYTES,
    ConsistencySignature,
    EncryptedShare,
    KeyAdvertisement,
    MaskedInput,
    SecAggConfig,
    UnmaskResponse,
    pack_fields,
    survivor_set_bytes,
)
from privacy.signing import SigningKey
from privacy.secagg.shamir import Share, split_secret

__all__ = ["SecAggClient", "commit_self_mask_seed"]

log = logging.getLogger(__name__)

_COMMIT_PERSON = b"fti-secagg-self"


def commit_self_mask_seed(seed: bytes) -> bytes:
    """Return the BLAKE2b commitment to a self-mask seed that a site advertises."""
    return hashlib.blake2b(seed, digest_size=KEY_BYTES, person=_COMMIT_PERSON).digest()


class SecAggClient:
    """One site's state for one secure aggregation round.

    Parameters
    ----------
    config : SecAggConfig
        Round parameters shared with the hub.
    site_id : str
        This site; must be one of ``config.site_ids``.
    rng : RandomSource
        Source of keys, seeds and share polynomials; :func:`privacy.random.system_random`
        in production. Every key is fresh for the round, so nothing carries over.
    signing_key : privacy.signing.SigningKey
        The site's enrolled Ed25519 key. Its public key must be the site's entry in
        ``config.verify_keys``.
    """

    def __init__(self, config: SecAggConfig, site_id: str, *, rng: RandomSource, signing_key: SigningKey) -> None:
        if not config.is_member(site_id):
            raise ValueError(f"site {site_id!r} is not part of round {config.round_id!r}")
        if base64.b64decode(signing_key.public_key_b64) != config.verify_keys[site_id]:
            raise ValueError(f"the signing key of site {site_id!r} (key id {signing_key.key_id}) is not the "
                             "verify key the round lists for it; enrol the site with this key")
        self.config = config
        self.site_id = site_id
        self._rng = rng
        self._signing_key = signing_key
        self._neighbours = config.neighbourhoods[site_id]
        self._encryption_key: nacl.public.PrivateKey | None = None
        self._mask_secret_key: bytes | None = None
        self._self_mask_seed: bytes | None = None
        self._advertisements: dict[str, KeyAdvertisement] = {}
        self._held_shares: dict[str, tuple[Share, Share]] = {}
        self._sharers: frozenset[str] = frozenset()
        self._signed_survivors: tuple[str, ...] | None = None
        self._unmasked = False

    # Stage 1 ---------------------------------------------------------------------------

    def advertise_keys(self) -> KeyAdvertisement:
        """Draw this round's keys and seed and return the public advertisement."""
        self._encryption_key = nacl.public.PrivateKey(self._random_bytes())
        self._mask_secret_key = self._random_bytes()
        self._self_mask_seed = self._random_bytes()
        unsigned = KeyAdvertisement(
            round_id=self.config.round_id,
            site_id=self.site_id,
            encryption_public_key=bytes(self._encryption_key.public_key),
            mask_public_key=nacl.bindings.crypto_scalarmult_base(self._mask_secret_key),
            self_mask_commitment=commit_self_mask_seed(self._self_mask_seed),
        )
        return dataclasses.replace(unsigned, signature=self._signing_key.sign_bytes(unsigned.signed_bytes()))

    # Stage 2 ---------------------------------------------------------------------------

    def share_keys(self, advertisements: Iterable[KeyAdvertisement]) -> list[EncryptedShare]:
        """Check the neighbours' advertisements and return one encrypted share pair per neighbour.

        Raises
        ------
        MessageRejected
            If an advertisement is for another round or site, repeats a site, reuses a
            key of another site, or a neighbour's signature does not verify against its
            enrolled key.
        RoundAborted
            If fewer than ``threshold`` neighbours (this site included) advertised keys.
        """
        if self._encryption_key is None or self._mask_secret_key is None or self._self_mask_seed is None:
            raise RuntimeError("share_keys called before advertise_keys")

        # Only neighbours matter; a repeated or reused key would let one party pose as two.
        seen_keys: set[bytes] = set()
        for advert in advertisements:
            if advert.round_id != self.config.round_id:
                raise MessageRejected("share_keys", advert.site_id, f"advertisement is for round {advert.round_id!r}")
            if not self.config.is_member(advert.site_id):
                raise MessageRejected("share_keys", advert.site_id, "site is not part of the round")
            if advert.site_id in self._advertisements:
                raise MessageRejected("share_keys", advert.site_id, "site advertised keys twice")
            if {advert.encryption_public_key, advert.mask_public_key} & seen_keys or (
                advert.encryption_public_key == advert.mask_public_key
            ):
                raise MessageRejected("share_keys", advert.site_id, "public key reused")
            seen_keys.update((advert.encryption_public_key, advert.mask_public_key))
            if advert.site_id in self._neighbours:
                # Only neighbours' keys are used, so only their signatures need checking.
                if not self.config.verify_signature(advert.site_id, advert.signed_bytes(), advert.signature):
                    raise MessageRejected("share_keys", advert.site_id,
                                          "advertisement signature does not verify against the site's enrolled key")
                self._advertisements[advert.site_id] = advert
        own = self._advertisements.get(self.site_id)
        if own is None or own.mask_public_key != nacl.bindings.crypto_scalarmult_base(self._mask_secret_key):
            raise MessageRejected("share_keys", self.site_id, "the hub did not relay this site's own keys")
        self._require_quorum("share_keys", len(self._advertisements))

        # Shares go to the neighbours that advertised, at their Shamir points.
        holders = sorted(self._advertisements)
        xs = [self.config.share_point(site) for site in holders]
        key_shares = split_secret(int.from_bytes(self._mask_secret_key, "big"),
                                  threshold=self.config.threshold, xs=xs, rng=self._rng)
        seed_shares = split_secret(int.from_bytes(self._self_mask_seed, "big"),
                                   threshold=self.config.threshold, xs=xs, rng=self._rng)

        messages = []
        for holder, key_share, seed_share in zip(holders, key_shares, seed_shares, strict=True):
            if holder == self.site_id:
                self._held_shares[holder] = (key_share, seed_share)
                continue
            plaintext = pack_fields(self.config.round_id, self.site_id, holder,
                              key_share.to_bytes(), seed_share.to_bytes())
            box = nacl.public.Box(self._encryption_key, nacl.public.PublicKey(
                self._advertisements[holder].encryption_public_key))
            messages.append(EncryptedShare(self.config.round_id, self.site_id, holder, bytes(box.encrypt(plaintext))))
        return messages

    # Stage 3 ---------------------------------------------------------------------------

    def mask_input(self, vector: np.ndarray, shares: Iterable[EncryptedShare]) -> MaskedInput:
        """Accept the shares sent to this site and return the masked input.

        Parameters
        ----------
        vector : numpy.ndarray
            ``uint32`` residues of length ``config.vector_length``; see
            :func:`privacy.secagg.masking.encode_signed`.
        shares : iterable of EncryptedShare
            The shares the hub relayed to this site. Their senders are the neighbours this
            site masks with.

        Raises
        ------
        ShareRejected
            If a share is malformed, replayed, or addressed to another round or site. The
            site then leaves the round, which the others survive as a dropout.
        RoundAborted
            If fewer than ``threshold`` neighbours sent shares.
        """
        if self._self_mask_seed is None or self._mask_secret_key is None or not self._held_shares:
            raise RuntimeError("mask_input called before share_keys")
        vector = np.asarray(vector)
        if vector.dtype != np.uint32 or vector.shape != (self.config.vector_length,):
            raise ValueError(
                f"input must be a uint32 vector of length {self.config.vector_length}; "
                f"got {vector.dtype} of shape {vector.shape}"
            )

        for message in shares:
            self._accept_share(message)
        self._sharers = frozenset(self._held_shares)
        self._require_quorum("mask_input", len(self._sharers))

        # Pairwise masks cancel in the sum: the smaller id adds, the larger subtracts.
        masked = vector + expand_mask(self._self_mask_seed, self.config.vector_length)
        for peer in sorted(self._sharers - {self.site_id}):
            seed = agree_pairwise_seed(self._mask_secret_key, self._advertisements[peer].mask_public_key,
                                       round_id=self.config.round_id, site_a=self.site_id, site_b=peer)
            if self.site_id < peer:
                masked += expand_mask(seed, self.config.vector_length)
            else:
                masked -= expand_mask(seed, self.config.vector_length)
        return MaskedInput(self.config.round_id, self.site_id, masked)

    def _accept_share(self, message: EncryptedShare) -> None:
        sender = message.sender
        if message.round_id != self.config.round_id:
            raise ShareRejected(sender, f"share is for round {message.round_id!r}, not {self.config.round_id!r}")
        if message.recipient != self.site_id:
            raise ShareRejected(sender, f"share is addressed to {message.recipient!r}")
        if sender not in self._advertisements or sender == self.site_id:
            raise ShareRejected(sender, "sender is not a neighbour that advertised keys")
        if sender in self._held_shares:
            raise ShareRejected(sender, "replayed: a share from this site was already accepted")

        # Decryption authenticates the sender's key of this round. The header then binds
        # the plaintext to the round and both sites, so a relayed copy fails here.
        if self._encryption_key is None:
            raise RuntimeError("shares received before advertise_keys")
        box = nacl.public.Box(self._encryption_key, nacl.public.PublicKey(
            self._advertisements[sender].encryption_public_key))
        try:
            plaintext = box.decrypt(message.ciphertext)
        except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, ValueError, TypeError) as err:
            raise ShareRejected(sender, "ciphertext cannot be decrypted with the advertised keys") from err
        fields = _unpack(plaintext, sender)
        if len(fields) != 5:
            raise ShareRejected(sender, f"plaintext has {len(fields)} fields instead of 5")
        round_id, claimed_sender, recipient = (f.decode("utf-8", "replace") for f in fields[:3])
        if (round_id, claimed_sender, recipient) != (self.config.round_id, sender, self.site_id):
            raise ShareRejected(sender, "encrypted header names another round, sender or recipient")
        key_share = Share.from_bytes(fields[3], sender=sender)
        seed_share = Share.from_bytes(fields[4], sender=sender)
        point = self.config.share_point(self.site_id)
        if key_share.x != point or seed_share.x != point:
            raise ShareRejected(sender, f"share point is not this site's point {point}")
        self._held_shares[sender] = (key_share, seed_share)

    # Stage 4 ---------------------------------------------------------------------------

    def sign_survivors(self, survivors: Sequence[str]) -> ConsistencySignature:
        """Sign the survivor set U3 that the hub announced, once per round.

        Raises
        ------
        MessageRejected
            If ``survivors`` repeats a site, names one outside the round, leaves out this
            site, or names a neighbour that sent this site no shares (the hub counts only
            sites that shared with every neighbour, so an honest U3 never does).
        RoundAborted
            If fewer than ``threshold`` of this site's neighbours survived, or the hub
            already had this site sign another set. Nothing is signed then.
        """
        if not self._sharers:
            raise RuntimeError("sign_survivors called before mask_input")
        survivor_set = set(survivors)
        if len(survivor_set) != len(survivors) or not all(self.config.is_member(s) for s in survivor_set):
            raise MessageRejected("consistency_check", self.site_id,
                                  "survivor list repeats a site or names an unknown one")
        if self.site_id not in survivor_set:
            raise MessageRejected("consistency_check", self.site_id, "survivor list leaves out this site")
        unknown = sorted((survivor_set & self._neighbours) - self._sharers)
        if unknown:
            raise MessageRejected("consistency_check", self.site_id,
                                  f"survivor list names neighbours that sent this site no shares: {unknown}")
        ordered = tuple(sorted(survivor_set))
        if self._signed_survivors is not None and self._signed_survivors != ordered:
            raise RoundAborted(self.config.round_id, "consistency_check", survivors=len(ordered),
                               threshold=self.config.threshold,
                               reason="the hub asked this site to sign a second, different survivor set")
        self._require_quorum("consistency_check", len(survivor_set & self._sharers))
        self._signed_survivors = ordered
        signature = self._signing_key.sign_bytes(survivor_set_bytes(self.config.round_id, ordered))
        return ConsistencySignature(self.config.round_id, self.site_id, signature)

    # Stage 5 ---------------------------------------------------------------------------

    def unmask(self, signatures: Iterable[ConsistencySignature]) -> UnmaskResponse:
        """Check the survivors' signatures, then reveal exactly one share of each neighbour that shared keys.

        Parameters
        ----------
        signatures : iterable of ConsistencySignature
            The signatures of the survivor set that the hub collected and relayed.

        Raises
        ------
        RoundAborted
            If this site already responded, fewer than ``threshold`` of its neighbours
            survived, a signature is for another round, repeated or made by a site outside
            the survivor set, a signature verified before ``threshold`` others did is
            invalid, or fewer than ``threshold`` sites signed the set this site signed.
            Nothing is revealed in any of these cases.
        """
        if self._signed_survivors is None:
            raise RuntimeError("unmask called before sign_survivors")
        survivors = self._signed_survivors
        if self._unmasked:
            raise RoundAborted(self.config.round_id, "unmask", survivors=len(survivors),
                               threshold=self.config.threshold,
                               reason="the hub asked for shares a second time; answering could "
                                      "reveal both shares of a site, so this site stops")
        self._check_consistency(survivors, signatures)
        survivor_set = set(survivors)
        self._require_quorum("unmask", len(survivor_set & self._sharers))
        self._unmasked = True

        self_mask_shares: dict[str, Share] = {}
        mask_key_shares: dict[str, Share] = {}
        for owner, (key_share, seed_share) in self._held_shares.items():
            if owner in survivor_set:
                self_mask_shares[owner] = seed_share
            else:
                mask_key_shares[owner] = key_share
        return UnmaskResponse(self.config.round_id, self.site_id, self_mask_shares, mask_key_shares)

    def _check_consistency(self, survivors: tuple[str, ...], signatures: Iterable[ConsistencySignature]) -> None:
        """Abort unless ``threshold`` distinct sites of U3 signed this site's U3.

        Every signature is checked for its round, signer and repetition. The signatures
        themselves are verified in signer order until ``threshold`` verify, and any failure
        before that aborts. Verifying more would add no safety, because the hub chooses
        which signatures to relay and could relay only ``threshold`` valid ones. It would
        make each site's cost grow with all of U3 instead of with the threshold.
        """
        survivor_set = set(survivors)
        by_signer: dict[str, ConsistencySignature] = {}
        for item in signatures:
            if item.round_id != self.config.round_id:
                self._abort_unmask(len(by_signer), f"a signature of site {item.site_id!r} is for round "
                                                   f"{item.round_id!r}")
            if item.site_id not in survivor_set:
                self._abort_unmask(len(by_signer), f"site {item.site_id!r} signed but is not in the survivor set")
            if item.site_id in by_signer:
                self._abort_unmask(len(by_signer), f"site {item.site_id!r} signed twice")
            by_signer[item.site_id] = item

        message = survivor_set_bytes(self.config.round_id, survivors)
        verified = 0
        for signer in sorted(by_signer):
            if verified >= self.config.threshold:
                break
            if not self.config.verify_signature(signer, message, by_signer[signer].signature):
                self._abort_unmask(verified, f"the signature of site {signer!r} does not verify over the survivor "
                                             "set this site signed; the hub announced different survivor sets or "
                                             "forged it")
            verified += 1
        if verified < self.config.threshold:
            self._abort_unmask(verified, f"only {verified} sites signed the survivor set this site signed, but "
                                         f"{self.config.threshold} are needed before any share is revealed")

    def _abort_unmask(self, signers: int, reason: str) -> NoReturn:
        log.warning("secure aggregation round %s: site %s stops at the consistency check: %s",
                    self.config.round_id, self.site_id, reason)
        raise RoundAborted(self.config.round_id, "unmask", survivors=signers, threshold=self.config.threshold,
                           reason=reason)

    # Helpers ---------------------------------------------------------------------------

    def _require_quorum(self, stage: str, count: int) -> None:
        if count < self.config.threshold:
            log.warning("secure aggregation round %s: site %s stops at %s with %d of %d needed sites",
                        self.config.round_id, self.site_id, stage, count, self.config.threshold)
            raise RoundAborted(self.config.round_id, stage, survivors=count, threshold=self.config.threshold)

    def _random_bytes(self) -> bytes:
        return self._rng.getrandbits(8 * SEED_BYTES).to_bytes(SEED_BYTES, "little")


def _unpack(data: bytes, sender: str) -> list[bytes]:
    fields, position = [], 0
    while position < len(data):
        if position + 2 > len(data):
            raise ShareRejected(sender, "plaintext is truncated")
        size = int.from_bytes(data[position:position + 2], "big")
        position += 2
        if position + size > len(data):
            raise ShareRejected(sender, "plaintext is truncated")
        fields.append(data[position:position + size])
        position += size
    return fields
