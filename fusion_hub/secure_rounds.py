"""Secure aggregation rounds at the hub: run the server stages over the ``keys`` collection.

In secure mode (``secure.mode: secure``) the hub learns only sums across sites. Sites post
``x-fti-secagg-message`` objects to ``keys``, and the hub responds with versions of one
``x-fti-secagg-round`` object per round, which sites poll. One round runs these stages in
order over one :class:`SecureRound` (the secure aggregation stages are those of
:class:`privacy.secagg.SecAggServer`):

1. ``open`` (on a site's ``join``): fix the round's parameters; the invited sites are the
   enrolled, unrevoked ones, listed with their enrolled Ed25519 verify keys, and a round
   with fewer than ``min_sites`` of them is rejected. The round object also carries the
   privacy settings of ``secure`` that every site must use (``privacy``), and a site whose
   settings differ leaves the round;
2. ``collect_advertisements``: signed public keys, stored in ``keys`` for the other sites;
3. ``collect_shares``: encrypted shares, stored in ``keys`` for their recipients;
4. ``collect_masked_inputs``: masked vectors, held in memory until the stage closes, then
   added into one sum and dropped; never stored or logged;
5. ``collect_consistency_signatures``: each survivor's signature of the survivor set,
   checked on arrival and relayed to the signers in the round object's next version;
6. ``collect_unmask_responses`` and ``unmask``: the sum of the survivors' vectors; each
   family's score histogram and the count-min sketch are split out of it, and the sketch's
   heavy buckets are published;
7. ``collect_reveals``: each surviving site's values in heavy buckets that passed its own
   partition selection (never stored);
8. ``fuse``: the reveals, gated by the unmasked sketch, go through the configured fusion
   strategy and the publisher, as the summaries of plain mode do.

A round sums the detector families of ``secure.families`` (every family by default),
whatever a site configures, so that every site's vector has the same layout and its noise the
same calibration; the round object lists them. The vector is, in order: one score histogram of
``HISTOGRAM_BINS`` words per family, in the order of the round object's ``families``; then the
count-min sketch, flattened row by row, of keys ``"<family>/<observable key>"``
(:func:`stix_mappings.secagg_objects.sketch_key`), so that the same
value seen by two families counts in each.

A stage closes when every expected site has posted, or ``stage_timeout_seconds`` after it
opened (the server's ticker calls :meth:`SecureRoundCoordinator.advance_due`), so sites that
drop out are recovered as the protocol allows. Below ``threshold`` sites, or below
``min_sites``, the round is aborted and nothing about the inputs is revealed.

Notes
-----
Round state lives in this process's memory only, so a hub restart aborts the secure rounds
in progress: on start the hub publishes the ``aborted`` stage for every stored round object
that is neither done nor aborted (:meth:`SecureRoundCoordinator.abort_interrupted`). Sites
waiting on such a round then leave it and record it as aborted; a site already charged
keeps the charge and never sends the round again, and the hub rejects a new ``join`` for it
(``round-closed``), so no site contributes twice to one round. Sites do not have to trust
this hub to follow the stages: they check every advertisement and consistency signature
against the enrolled verify keys, and reveal shares only when ``threshold`` survivors signed
the same survivor set. docs/privacy.md states what a deviating hub can still learn.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fusion_hub.config import FusionSettings, RoundSettings, SecureSettings
from fusion_hub.errors import ObjectRejected
from fusion_hub.fusion import FusedObservable, FusionStrategy, SiteEvidence, should_publish
from fusion_hub.metrics import HubMetrics
from fusion_hub.publisher import Publisher
from fusion_hub.registry import Principal, SiteRegistry
from fusion_hub.storage import AddOutcome, HubStorage, NewObject, ObjectQuery
from fusion_hub.timeutil import format_millis, parse_timestamp, to_micros, utc_now
from privacy.secagg import MaskedInput, SecAggConfig, SecAggServer, UnmaskResponse, decode_signed
from privacy.secagg.errors import RoundAborted, SecAggError
from privacy.secagg.messages import ConsistencySignature, EncryptedShare, KeyAdvertisement
from privacy.secagg.sketch import CountMinSketch
from privacy.signing import canonical_json
from stix_mappings.errors import PatternRejected
from stix_mappings.ids import collection_id, hub_identity_id
from stix_mappings.patterns import NETWORK_OBSERVABLE_TYPES, normalize_value
from stix_mappings.secagg_objects import (
    HUB_ONLY_STAGES,
    SECAGG_ROUND_TYPE,
    build_secagg_round,
    secagg_round_id,
    secagg_extension_definitions,
    sketch_key,
    validate_secagg_object,
)
from stix_mappings.summary import FAMILIES

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 10
_KEYS = "keys"
_OBSERVABLE_TYPES = (*NETWORK_OBSERVABLE_TYPES, "ja3", "ja3s", "x509-sha1", "x509-sha256", "md5", "sha1", "sha256")


@dataclass(frozen=True)
class SecureRoundResult:
    """The public outcome of an unmasked round: the sites summed and each family's noised histogram sum."""

    survivors: tuple[str, ...]
    histograms: dict[str, tuple[int, ...]]
    heavy_buckets: int

    @property
    def window_counts(self) -> dict[str, int]:
        """Each family's noised window count: the sum of its noised histogram, as in plain mode."""
        return {family: sum(histogram) for family, histogram in self.histograms.items()}


@dataclass
class SecureRound:
    """The hub's state of one secure round, in which every vector is masked or a sum."""

    round_id: str
    round_start: datetime
    config: SecAggConfig
    sketch: CountMinSketch
    server: SecAggServer
    created: datetime
    modified: datetime
    stage: str = "advertise_keys"
    stage_opened: datetime | None = None
    participants: tuple[str, ...] = ()
    heavy: frozenset[int] = frozenset()
    advertisements: dict[str, KeyAdvertisement] = field(default_factory=dict)
    shares: dict[str, dict[str, EncryptedShare]] = field(default_factory=dict)
    masked: dict[str, MaskedInput] = field(default_factory=dict)
    signatures: dict[str, ConsistencySignature] = field(default_factory=dict)
    relayed_signatures: dict[str, str] = field(default_factory=dict)
    responses: dict[str, UnmaskResponse] = field(default_factory=dict)
    reveals: dict[str, list[SiteEvidence]] = field(default_factory=dict)
    histograms: dict[str, tuple[int, ...]] = field(default_factory=dict)
    reason: str = ""


class SecureRoundCoordinator:
    """Run the hub's stages of every secure round. The methods are thread-safe.

    Parameters
    ----------
    storage : HubStorage
        Storage of the round objects, advertisements and shares (collection ``keys``).
    settings : SecureSettings
        Minimum sites, sketch shape, heavy-bucket threshold and stage timeout. A higher
        ``min_sites`` protects each site better and tolerates fewer absent sites.
    rounds : RoundSettings
        Round length, to check that a round id starts on a round boundary.
    fusion : FusionSettings
        Lookback and publication thresholds, as in plain mode.
    registry : SiteRegistry
        Enrolled sites and their trust weights.
    strategy : FusionStrategy
        Strategy that fuses the revealed evidence.
    publisher : Publisher
        Builds, stores and exports indicators.
    metrics : HubMetrics
        Counter of closed rounds.
    hub_name : str
        Name of the hub's identity, the creator of the round objects.
    clock : callable returning datetime, optional
        Hub time, for stage timeouts and object timestamps.
    """

    def __init__(
        self, storage: HubStorage, *, settings: SecureSettings, rounds: RoundSettings,
        fusion: FusionSettings, registry: SiteRegistry, strategy: FusionStrategy,
        publisher: Publisher, metrics: HubMetrics, hub_name: str,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.round_settings = rounds
        self.fusion = fusion
        self.registry = registry
        self.strategy = strategy
        self.publisher = publisher
        self.metrics = metrics
        self.hub_identity = hub_identity_id(hub_name)
        self.families = tuple(family for family in FAMILIES if family in settings.families)
        self._clock = clock
        self._lock = threading.RLock()
        self._rounds: dict[str, SecureRound] = {}
        # Revealed evidence of recent finished rounds, for the fusion lookback.
        self._evidence: dict[str, list[SiteEvidence]] = {}
        # Indicator id -> (sites whose reveals produced its latest version, its valid_until in
        # microseconds), for feedback. The hub saw these reveals anyway. Entries go when the
        # indicator expires, and a hub restart loses them.
        self._contributors: dict[str, tuple[tuple[str, ...], int]] = {}
        # Public outcome of each unmasked round: survivors and the noised histogram sum.
        self.results_: dict[str, SecureRoundResult] = {}
        for definition in secagg_extension_definitions(self.hub_identity):
            self._store(definition)
        self.abort_interrupted()

    def abort_interrupted(self) -> list[str]:
        """Publish the ``aborted`` stage of every stored round left open by an earlier hub process.

        Their state was in that process's memory, so none of them can go on. Returns the
        ids of the rounds aborted.
        """
        aborted = []
        after = None
        while True:
            page = self.storage.query_objects(ObjectQuery(collection_id=collection_id(_KEYS), limit=1000,
                                                          types=(SECAGG_ROUND_TYPE,), after=after))
            for stored in page.objects:
                obj = json.loads(stored.raw)
                if obj["stage"] in ("done", "aborted") or obj["round_id"] in self._rounds:
                    continue
                reason = "the hub restarted during the round, and a round's state lives in the hub's memory only"
                log.warning("secure round %s aborted at %s: %s", obj["round_id"], obj["stage"], reason)
                modified = max(self._clock(), parse_timestamp(obj["modified"]) + timedelta(milliseconds=1))
                self._store(build_secagg_round(
                    round_id=obj["round_id"], created_by_ref=obj["created_by_ref"],
                    created=parse_timestamp(obj["created"]), modified=modified, stage="aborted",
                    site_ids=obj["site_ids"], threshold=obj["threshold"], min_sites=obj["min_sites"],
                    vector_length=obj["vector_length"], histogram_bins=obj["histogram_bins"],
                    # Round objects written before rounds covered several families summed the network family.
                    families=obj.get("families", ("network",)), sketch_rows=obj["sketch_rows"],
                    sketch_width=obj["sketch_width"], participants=(),
                    neighbours_per_site=obj.get("neighbours_per_site"), reason=reason,
                    verify_keys=obj.get("verify_keys"), privacy=obj.get("privacy")))
                aborted.append(obj["round_id"])
            if not page.more or not page.objects:
                return aborted
            last = page.objects[-1]
            after = (last.date_added_us, last.id)

    # Entry point from the intake -------------------------------------------------------

    def accept_message(self, principal: Principal, obj: dict[str, Any],
                       store: Callable[[], None] | None = None) -> bool:
        """Check a posted ``x-fti-secagg-message`` and feed it to its round.

        Parameters
        ----------
        store : callable, optional
            Stores the object in ``keys``. It is called for advertisements and shares after
            the checks and before the stage can close, so no site reads the next stage
            while a message that completed this one is still missing from ``keys``.

        Returns
        -------
        bool
            True for advertisements and shares, which other sites read from ``keys``;
            False for messages only the hub may read, which are consumed here.

        Raises
        ------
        ObjectRejected
            If the object is malformed, not the poster's own, or does not fit the round's
            current stage.
        """
        object_id = str(obj.get("id"))
        problems = validate_secagg_object(obj)
        if problems:
            raise ObjectRejected(object_id, "schema", "; ".join(problems))
        if obj["sender"] != principal.name:
            raise ObjectRejected(object_id, "wrong-site",
                                 f"{principal.name} may not post a message for site {obj['sender']}")
        stage, round_id = obj["stage"], obj["round_id"]
        with self._lock:
            if stage == "join":
                self._open(round_id, object_id)
                return False
            state = self._rounds.get(round_id)
            if state is None:
                raise ObjectRejected(object_id, "round-unknown",
                                     f"secure round {round_id} is not open. Post a join message first")
            if state.stage != stage:
                raise ObjectRejected(object_id, "stage-closed",
                                     f"secure round {round_id} is at stage {state.stage}, not {stage}")
            try:
                self._take(state, principal.name, stage, obj)
            except SecAggError as err:
                raise ObjectRejected(object_id, "secagg", str(err)) from err
            if store is not None and stage not in HUB_ONLY_STAGES:
                store()
            self._advance_if_complete(state)
        return stage not in HUB_ONLY_STAGES

    def advance_due(self, now: datetime | None = None) -> None:
        """Close every stage open longer than ``stage_timeout_seconds``, without the missing sites."""
        now = now or self._clock()
        timeout = timedelta(seconds=self.settings.stage_timeout_seconds)
        with self._lock:
            for state in list(self._rounds.values()):
                if state.stage_opened is not None and now - state.stage_opened >= timeout:
                    log.warning("secure round %s: stage %s timed out, going on without the missing sites",
                                state.round_id, state.stage)
                    self._close_stage(state)

    def round_stage(self, round_id: str) -> str | None:
        """Return the current stage of a round held in memory, or None."""
        with self._lock:
            state = self._rounds.get(round_id)
            return None if state is None else state.stage

    # Stages ----------------------------------------------------------------------------

    def _open(self, round_id: str, object_id: str) -> None:
        if round_id in self._rounds:
            return
        # A finished round is never opened again: its sites would draw fresh noise for the
        # same data. The stored round object outlives a hub restart.
        if self.storage.object_exists(collection_id(_KEYS), secagg_round_id(round_id), None):
            raise ObjectRejected(object_id, "round-closed", f"secure round {round_id} has already run")

        round_start = parse_timestamp(round_id)
        if to_micros(round_start) % (self.round_settings.round_seconds * 1_000_000):
            raise ObjectRejected(object_id, "round-misaligned",
                                 f"round {round_id} is not a multiple of the hub's round length "
                                 f"({self.round_settings.round_seconds} s)")
        # A round is never opened twice. A join for a round that has not ended would let one
        # site abort that round before the other sites have its data. Plain mode's intake
        # likewise rejects a summary of a round that ends in the future.
        now = self._clock()
        round_end = round_start + timedelta(seconds=self.round_settings.round_seconds)
        skew_seconds = self.round_settings.max_clock_skew_seconds
        if round_end > now + timedelta(seconds=skew_seconds):
            raise ObjectRejected(object_id, "round-future",
                                 f"round {round_id} ends in the future (hub time {format_millis(now)}, "
                                 f"allowed skew {skew_seconds} s); check the site's clock")
        sites = sorted(self.registry.trust_weights())
        if len(sites) < self.settings.min_sites:
            raise ObjectRejected(object_id, "too-few-sites",
                                 f"{len(sites)} sites are enrolled but a secure round needs "
                                 f"{self.settings.min_sites} (secure.min_sites)")

        verify_keys = self._verify_keys(sites, object_id)
        neighbours = self.settings.neighbours_per_site
        if neighbours is not None and neighbours >= len(sites) - 1:
            neighbours = None
        neighbourhood = len(sites) if neighbours is None else neighbours + 1
        threshold = max(self.settings.min_sites, neighbourhood // 2 + 1)
        sketch = CountMinSketch(round_id=round_id, rows=self.settings.sketch_rows, width=self.settings.sketch_width)
        config = SecAggConfig(round_id=round_id, site_ids=tuple(sites), threshold=threshold,
                              vector_length=len(self.families) * HISTOGRAM_BINS + sketch.length,
                              neighbours_per_site=neighbours, verify_keys=verify_keys)

        state = SecureRound(round_id=round_id, round_start=round_start, config=config, sketch=sketch,
                            server=SecAggServer(config), created=now, modified=now, stage_opened=now,
                            participants=config.site_ids)
        self._rounds[round_id] = state
        log.info("secure round %s opened: %d sites invited, threshold %d, %d words per site",
                 round_id, len(sites), threshold, config.vector_length)
        self._publish_state(state)

    def _take(self, state: SecureRound, site: str, stage: str, obj: Mapping[str, Any]) -> None:
        if site not in state.participants:
            raise SecAggError(f"site {site} is not taking part in stage {stage} of round {state.round_id}")
        payload = obj["payload"]
        if stage == "advertise_keys":
            advert = KeyAdvertisement.from_dict(payload)
            self._check_names(advert.round_id, advert.site_id, state, site)
            state.server.check_advertisement(advert)
            # Other sites read the stored copy, so the hub must keep the same keys. A resend of
            # the same advertisement is stored once and changes nothing.
            if state.advertisements.get(site, advert) != advert:
                raise SecAggError(f"second key advertisement from site {site}, with other keys")
            state.advertisements[site] = advert
        elif stage == "share_keys":
            share = EncryptedShare.from_dict(payload)
            self._check_names(share.round_id, share.sender, state, site)
            if share.recipient != obj.get("recipient"):
                raise SecAggError("the share's recipient differs from the object's recipient")
            sent = state.shares.setdefault(site, {})
            if sent.get(share.recipient, share) != share:
                raise SecAggError(f"second share from site {site} for {share.recipient}, with another ciphertext")
            sent[share.recipient] = share
        elif stage == "mask_input":
            masked = MaskedInput.from_dict(payload)
            self._check_names(masked.round_id, masked.site_id, state, site)
            if site in state.masked:
                raise SecAggError(f"second masked input from site {site}")
            # Rejected here, the site counts as dropped. Found only when the stage closes,
            # the vector would abort the round for every site.
            if masked.vector.shape != (state.config.vector_length,):
                raise SecAggError(f"masked input of site {site} has {masked.vector.size} words, "
                                  f"not the round's vector_length {state.config.vector_length}")
            state.masked[site] = masked
        elif stage == "consistency_check":
            signature = ConsistencySignature.from_dict(payload)
            self._check_names(signature.round_id, signature.site_id, state, site)
            if site in state.signatures:
                raise SecAggError(f"second consistency signature from site {site}")
            state.server.check_consistency_signature(signature)
            state.signatures[site] = signature
        elif stage == "unmask":
            response = UnmaskResponse.from_dict(payload)
            self._check_names(response.round_id, response.site_id, state, site)
            if site in state.responses:
                raise SecAggError(f"second unmask response from site {site}")
            # Rejected here, the site counts as dropped. Found only when the stage closes,
            # a share at another site's point would abort the round for every site.
            state.server.check_unmask_response(response)
            state.responses[site] = response
        elif stage == "reveal":
            if site in state.reveals:
                raise SecAggError(f"second reveal from site {site}")
            state.reveals[site] = self._parse_reveal(state, site, payload)

    def _advance_if_complete(self, state: SecureRound) -> None:
        received = {
            "advertise_keys": state.advertisements,
            "share_keys": {s: m for s, m in state.shares.items() if len(m) >= self._expected_shares(state, s)},
            "mask_input": state.masked,
            "consistency_check": state.signatures,
            "unmask": state.responses,
            "reveal": state.reveals,
        }.get(state.stage)
        if received is not None and set(state.participants) <= set(received):
            self._close_stage(state)

    def _close_stage(self, state: SecureRound) -> None:
        server = state.server
        try:
            if state.stage == "advertise_keys":
                relayed = server.collect_advertisements(state.advertisements[s] for s in sorted(state.advertisements))
                self._enter(state, "share_keys", [a.site_id for a in relayed])
            elif state.stage == "share_keys":
                routed = server.route_shares(m for sent in state.shares.values() for m in sent.values()
                                             if m.sender in state.participants)
                self._enter(state, "mask_input", sorted(routed))
            elif state.stage == "mask_input":
                survivors = server.collect_masked_inputs(state.masked.values())
                state.masked.clear()  # only the server's running sum remains, no single vector
                self._require_min_sites(state, len(survivors))
                self._enter(state, "consistency_check", list(survivors))
            elif state.stage == "consistency_check":
                signatures = server.collect_consistency_signatures(state.signatures.values())
                state.relayed_signatures = {item.site_id: base64.b64encode(item.signature).decode("ascii")
                                            for item in signatures}
                self._enter(state, "unmask", list(state.relayed_signatures))
            elif state.stage == "unmask":
                server.collect_unmask_responses(state.responses.values())
                self._unmask(state)
            elif state.stage == "reveal":
                self._fuse(state)
        except SecAggError as err:
            # A failed check (a bad share, too few sites left) makes the round unusable, so
            # abort it without revealing anything.
            self._abort(state, str(err))

    def _unmask(self, state: SecureRound) -> None:
        total = decode_signed(state.server.unmask())
        state.histograms = {family: tuple(int(v) for v in total[i * HISTOGRAM_BINS:(i + 1) * HISTOGRAM_BINS])
                            for i, family in enumerate(self.families)}
        sketch_sum = total[len(self.families) * HISTOGRAM_BINS:]
        state.heavy = state.sketch.heavy_buckets(sketch_sum, threshold=self.settings.sketch_threshold)
        survivors = state.server.survivors_
        self.results_[state.round_id] = SecureRoundResult(survivors, dict(state.histograms), len(state.heavy))
        # Only the sums are logged: they carry the distributed DP noise of every survivor.
        log.info("secure round %s unmasked: %d sites summed, noised window histograms %s, "
                 "%d heavy sketch buckets", state.round_id, len(survivors),
                 {family: list(h) for family, h in state.histograms.items()}, len(state.heavy))
        self._enter(state, "reveal", list(survivors))

    def _fuse(self, state: SecureRound) -> None:
        evidence = [item for items in state.reveals.values() for item in items]
        self._evidence[state.round_id] = evidence
        for old in sorted(self._evidence)[:-self.fusion.lookback_rounds]:
            del self._evidence[old]
        window = [item for items in self._evidence.values() for item in items]
        now = self._clock()
        fused = self.strategy.fuse(window, self.registry.fusion_weights())
        selected = [item for item in fused if should_publish(
            item, publish_threshold=self.fusion.publish_threshold,
            min_corroborating_sites=self.fusion.min_corroborating_sites)]
        with self.storage.transaction():
            report = self.publisher.publish_round(selected, round_start=state.round_start, now=now,
                                                  strategy=self.strategy.name)
        self._remember_contributors(selected, report.published, now)
        self.publisher.export(report)
        self.metrics.rounds_closed.labels(reason="secure").inc()
        log.info("secure round %s closed: %d sites revealed %d observables, %d fused, %d indicators "
                 "published", state.round_id, len(state.reveals), len(evidence), len(fused),
                 len(report.published))
        self._enter(state, "done", list(state.reveals))
        del self._rounds[state.round_id]

    def contributors_of(self, indicator_id: str) -> tuple[str, ...] | None:
        """Return the sites whose reveals produced an unexpired indicator; None if unknown here."""
        with self._lock:
            entry = self._contributors.get(indicator_id)
        return None if entry is None else entry[0]

    def _remember_contributors(self, selected: list[FusedObservable], published: list[dict[str, Any]],
                               now: datetime) -> None:
        sites = {(item.observable_type, item.value): item.site_ids for item in selected}
        now_us = to_micros(now)
        for indicator_id in [i for i, (_, until) in self._contributors.items() if until <= now_us]:
            del self._contributors[indicator_id]
        for indicator in published:
            state = self.storage.get_indicator_state(indicator["id"])
            if state is not None:
                self._contributors[indicator["id"]] = (sites.get((state.observable_type, state.value), ()),
                                                       state.valid_until_us)

    def _abort(self, state: SecureRound, reason: str) -> None:
        log.error("secure round %s aborted at %s: %s", state.round_id, state.stage, reason)
        state.reason = reason[:1000]
        self._enter(state, "aborted", [])
        del self._rounds[state.round_id]

    # Helpers ---------------------------------------------------------------------------

    def _enter(self, state: SecureRound, stage: str, participants: list[str]) -> None:
        state.stage = stage
        state.participants = tuple(sorted(participants))
        state.stage_opened = None if stage in ("done", "aborted") else self._clock()
        self._publish_state(state)

    def _require_min_sites(self, state: SecureRound, count: int) -> None:
        if count < self.settings.min_sites:
            raise RoundAborted(state.round_id, state.stage, survivors=count, threshold=self.settings.min_sites,
                               reason=f"{count} sites left but secure.min_sites is {self.settings.min_sites}")

    def _verify_keys(self, sites: list[str], object_id: str) -> dict[str, bytes]:
        """Return each invited site's enrolled Ed25519 public key from the registry."""
        keys = {}
        for site in sites:
            credential = self.registry.get_site(site)
            if credential is None or not credential.public_key_b64:
                raise ObjectRejected(object_id, "no-verify-key",
                                     f"site {site} has no enrolled public key; enrol it again with its signing key")
            keys[site] = base64.b64decode(credential.public_key_b64)
        return keys

    def _expected_shares(self, state: SecureRound, sender: str) -> int:
        advertised = {a for a in state.advertisements}
        return len((state.config.neighbourhoods[sender] & advertised) - {sender})

    @staticmethod
    def _check_names(round_id: str, sender: str, state: SecureRound, site: str) -> None:
        if round_id != state.round_id or sender != site:
            raise SecAggError(f"payload names round {round_id} and site {sender}, not {state.round_id} and {site}")

    def _parse_reveal(self, state: SecureRound, site: str, payload: Mapping[str, Any]) -> list[SiteEvidence]:
        items = payload.get("evidence")
        if not isinstance(items, list) or len(items) > 10_000:
            raise SecAggError("reveal payload needs an evidence list of at most 10000 items")
        round_start_us = to_micros(state.round_start)
        evidence = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping) or item.get("observable_type") not in _OBSERVABLE_TYPES:
                raise SecAggError(f"evidence[{index}] needs an observable_type of {', '.join(_OBSERVABLE_TYPES)}")
            family = item.get("family")
            if family not in self.families:
                raise SecAggError(f"evidence[{index}] needs a family of {', '.join(self.families)}")
            raw_value = str(item.get("value"))
            try:
                value = normalize_value(item["observable_type"], raw_value, allow_cidr=False)
            except PatternRejected as err:
                raise SecAggError(f"evidence[{index}].value: {err}") from err
            count, score = item.get("noised_entity_count"), item.get("noised_mean_score")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise SecAggError(f"evidence[{index}].noised_entity_count must be an integer >= 1")
            if not isinstance(score, (int, float)) or not math.isfinite(score) or not 0 <= score <= 1:
                raise SecAggError(f"evidence[{index}].noised_mean_score must be in [0, 1]")
            # A site may reveal only values heavy in every row of the unmasked sketch.
            # The site hashed the value as it stores it, so the check uses that text.
            key = sketch_key(family, item["observable_type"], raw_value)
            if not all(bucket in state.heavy for bucket in state.sketch.buckets(key)):
                raise SecAggError(f"evidence[{index}] is not in heavy buckets of the summed sketch")
            evidence.append(SiteEvidence(site_id=site, round_start_us=round_start_us,
                                         observable_type=item["observable_type"], value=value,
                                         noised_mean_score=float(score), noised_entity_count=count,
                                         family=family))
        return evidence

    def _publish_state(self, state: SecureRound) -> None:
        # Each stage is a new version. STIX versions must increase, so two stages within
        # one millisecond are a millisecond apart.
        now = max(self._clock(), state.modified + timedelta(milliseconds=1))
        state.modified = now
        config = state.config
        obj = build_secagg_round(
            round_id=state.round_id, created_by_ref=self.hub_identity, created=state.created, modified=now,
            stage=state.stage, site_ids=config.site_ids, threshold=config.threshold,
            min_sites=self.settings.min_sites, vector_length=config.vector_length,
            histogram_bins=HISTOGRAM_BINS, families=self.families, sketch_rows=state.sketch.rows,
            sketch_width=state.sketch.width,
            participants=state.participants, neighbours_per_site=config.neighbours_per_site,
            heavy_buckets=sorted(state.heavy) if state.stage == "reveal" else None,
            reason=state.reason or None,
            verify_keys={site: base64.b64encode(key).decode("ascii") for site, key in config.verify_keys.items()},
            consistency_signatures=state.relayed_signatures if state.stage == "unmask" else None,
            privacy=self.settings.round_privacy(),
        )
        self._store(obj)

    def _store(self, obj: dict[str, Any]) -> None:
        raw = json.dumps(obj, separators=(",", ":"))
        version = obj.get("modified") or obj.get("created")
        outcome, _ = self.storage.add_object(NewObject(
            collection_id=collection_id(_KEYS), id=obj["id"], type=obj["type"], spec_version="2.1",
            version_us=to_micros(parse_timestamp(version)), raw=raw,
            content_sha256=hashlib.sha256(canonical_json(obj)).hexdigest(), owner=None,
        ))
        if outcome is AddOutcome.CONFLICT:
            log.error("object %s version %s is stored with other content, so the round state was not updated",
                      obj["id"], version)
        elif outcome is AddOutcome.OTHER_OWNER:
            log.error("object %s has versions posted by a site, so the round state was not updated",
                      obj["id"])

