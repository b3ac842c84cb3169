"""The site's side of secure aggregation (Bonawitz et al., CCS 2017, with SecAgg+ graphs).

A site runs four stages, in order, on one :class:`SecAggClient`:

1. :meth:`~SecAggClient.advertise_keys`: draw two X25519 key pairs and a self-mask seed
   for this round only, and publish the public keys and a commitment to the seed;
2. :meth:`~SecAggClient.share_keys`: split the mask secret key and the self-mask seed
   into Shamir shares and send each neighbour its two shares, encrypted with NaCl Box;
3. :meth:`~SecAggClient.mask_input`: check the shares received, then send
   ``input + PRG(self seed) + sum of signed PRG(pairwise seeds)`` modulo 2^32;
4. :meth:`~SecAggClient.unmask`: for each neighbour, reveal the share of its self-mask
   seed if it submitted an input, or of its mask secret key if it dropped out, never both.

The site rejects stage 4 when fewer than ``threshold`` sites submitted inputs. It responds to
stage 4 only once per round, because a hub that asked twice with different survivor sets
could obtain both the self-mask seed and the pairwise keys of one site, and so its input.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence

import nacl.bindings
import nacl.exceptions
import nacl.public
import numpy as np

from privacy.random import RandomSource
from privacy.secagg.errors import MessageRejected, RoundAborted, ShareRejected
from privacy.secagg.masking import SEED_BYTES, agree_pairwise_seed, expand_mask
from privacy.secagg.messages import (
    KEY_BYTES,
    EncryptedShare,
    KeyAdvertisement,
    MaskedInput,
    SecAggConfig,
    UnmaskResponse,
)
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
    """

    def __init__(self, config: SecAggConfig, site_id: str, *, rng: RandomSource) -> None:
        if not config.is_member(site_id):
            raise ValueError(f"site {site_id!r} is not part of round {config.round_id!r}")
        self.config = config
        self.site_id = site_id
        self._rng = rng
        self._neighbours = config.neighbourhoods[site_id]
        self._encryption_key: nacl.public.PrivateKey | None = None
        self._mask_secret_key: bytes | None = None
        self._self_mask_seed: bytes | None = None
        self._advertisements: dict[str, KeyAdvertisement] = {}
        self._held_shares: dict[str, tuple[Share, Share]] = {}
        self._sharers: frozenset[str] = frozenset()
        self._unmasked = False

    # Stage 1 ---------------------------------------------------------------------------

    def advertise_keys(self) -> KeyAdvertisement:
        """Draw this round's keys and seed and return the public advertisement."""
        self._encryption_key = nacl.public.PrivateKey(self._random_bytes())
        self._mask_secret_key = self._random_bytes()
        self._self_mask_seed = self._random_bytes()
        return KeyAdvertisement(
            round_id=self.config.round_id,
            site_id=self.site_id,
            encryption_public_key=bytes(self._encryption_key.public_key),
            mask_public_key=nacl.bindings.crypto_scalarmult_base(self._mask_secret_key),
            self_mask_commitment=commit_self_mask_seed(self._self_mask_seed),
        )

    # Stage 2 ---------------------------------------------------------------------------

    def share_keys(self, advertisements: Iterable[KeyAdvertisement]) -> list[EncryptedShare]:
        """Check the neighbours' advertisements and return one encrypted share pair per neighbour.

        Raises
        ------
        MessageRejected
            If an advertisement is for another round or site, repeats a site, or reuses a
            key of another site.
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
            plaintext = _pack(self.config.round_id, self.site_id, holder,
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

    def unmask(self, survivors: Sequence[str]) -> UnmaskResponse:
        """Reveal, for each neighbour that shared keys, exactly one of its two shares.

        Parameters
        ----------
        survivors : sequence of str
            Sites whose masked inputs the hub received.

        Raises
        ------
        MessageRejected
            If ``survivors`` names a site outside the round or repeats one.
        RoundAborted
            If this site already responded, or fewer than ``threshold`` of its neighbours
            survived. Nothing is revealed in either case.
        """
        if not self._sharers:
            raise RuntimeError("unmask called before mask_input")
        if self._unmasked:
            raise RoundAborted(self.config.round_id, "unmask", survivors=len(survivors),
                               threshold=self.config.threshold,
                               reason="the hub asked for shares a second time; answering could "
                                      "reveal both shares of a site, so this site stops")
        survivor_set = set(survivors)
        if len(survivor_set) != len(survivors) or not all(self.config.is_member(s) for s in survivor_set):
            raise MessageRejected("unmask", self.site_id, "survivor list repeats a site or names an unknown one")
        surviving_neighbours = survivor_set & self._sharers
        self._require_quorum("unmask", len(surviving_neighbours))
        self._unmasked = True

        self_mask_shares: dict[str, Share] = {}
        mask_key_shares: dict[str, Share] = {}
        for owner, (key_share, seed_share) in self._held_shares.items():
            if owner in survivor_set:
                self_mask_shares[owner] = seed_share
            else:
                mask_key_shares[owner] = key_share
        return UnmaskResponse(self.config.round_id, self.site_id, self_mask_shares, mask_key_shares)

    # Helpers ---------------------------------------------------------------------------

    def _require_quorum(self, stage: str, count: int) -> None:
        if count < self.config.threshold:
            log.warning("secure aggregation round %s: site %s stops at %s with %d of %d needed sites",
                        self.config.round_id, self.site_id, stage, count, self.config.threshold)
            raise RoundAborted(self.config.round_id, stage, survivors=count, threshold=self.config.threshold)

    def _random_bytes(self) -> bytes:
        return self._rng.getrandbits(8 * SEED_BYTES).to_bytes(SEED_BYTES, "little")


def _pack(*fields: str | bytes) -> bytes:
    out = bytearray()
    for item in fields:
        data = item.encode() if isinstance(item, str) else item
        out += len(data).to_bytes(2, "big") + data
    return bytes(out)


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
