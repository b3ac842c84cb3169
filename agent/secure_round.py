"""The site's side of a secure round: sum the round's counts with the other sites through the hub.

In secure mode (``privacy.mode: secure``) a site sends no round summary. It runs the client
stages of secure aggregation (:class:`privacy.secagg.SecAggClient`) over the hub's ``keys``
collection, in this order, each after the hub's round object reaches that stage:

1. ``join``: ask the hub to open the round, then read its parameters and check them (this
   site is invited, the threshold is at least ``privacy.secure_min_sites``, the round's
   privacy settings equal this site's, the verify key listed for this site is its own, and
   every listed key matches the pinned keys of ``privacy.secure_peer_keys`` when that file
   is set);
2. ``advertise_keys`` (signed with the site's key); 3. ``share_keys`` (read the
   advertisements of the sites the hub lists and check their signatures);
4. ``mask_input``: one bounded score histogram per family of the round and one count-min
   sketch of every family's observables, each with this site's share of distributed discrete
   Gaussian noise, masked modulo 2^32. The ledger is charged for the whole round just before
   this first release;
5. ``consistency_check``: sign the survivor set the hub announced;
6. ``unmask``, only when ``threshold`` survivors signed the same set;
7. ``reveal``: the site's values in the sketch buckets that the unmasked sum made heavy,
   after its own partition selection per family, with noised counts and mean scores.

The vector's layout is the hub's (see :mod:`fusion_hub.secure_rounds`): one histogram of
``HISTOGRAM_BINS`` words per family in the order of the round object's ``families``, then the
sketch, whose keys are :func:`stix_mappings.secagg_objects.sketch_key`. A family this site does not configure
is sent as zeros with its share of noise, so every site's noise is calibrated alike.

The round's epsilon and delta are first split equally between the round's families, as plain
mode splits them between configured families. So a site that configures every family splits
its budget exactly as in plain mode. Each family's part is split as in plain mode:
``histogram_share`` for its summed histogram, ``count_share`` halved between the summed sketch
and its reveal's partition selection, and ``score_share`` for its revealed score sums; its
delta goes in three equal parts to the histogram, the sketch and the partition selection. The
families' sketch parts are spent on the one shared sketch, whose sensitivity covers a unit's
observables in every family. Basic composition adds the parts up to the round's
(epsilon, delta), which the ledger charges once.

A transient delivery error (a refused or reset connection, a timeout, HTTP 408, 425, 429
or 5xx) is retried with backoff, or after the hub's ``Retry-After``, until the current
stage's deadline (``privacy.secure_stage_timeout_secs`` after the stage opened), so a brief
hub outage or a busy login does not lose the round.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import requests
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import Collection, Status, as_pages

from agent.config import AgentConfig, PrivacySection
from agent.errors import ConfigError, DeliveryError
from agent.observables import split_observable_key
from agent.summariser import HISTOGRAM_BINS, SCORE_QUANTUM, BoundedRound
from agent.sender import backoff_delay_secs
from agent.taxii_client import delivery_error, open_collection
from privacy.errors import InvalidPrivacyParameter
from privacy.mechanisms import DiscreteLaplaceMechanism
from privacy.random import RandomSource
from privacy.secagg import (
    ConsistencySignature,
    EncryptedShare,
    KeyAdvertisement,
    SecAggClient,
    SecAggConfig,
    encode_signed,
)
from privacy.secagg.errors import SecAggError
from privacy.secagg.noise import calibrate_distributed_gaussian
from privacy.secagg.sketch import CountMinSketch
from privacy.signing import SigningKey
from stix_mappings.ids import hub_identity_id
from stix_mappings.secagg_objects import (
    SECAGG_ROUND_TYPE,
    build_secagg_message,
    secagg_message_id,
    secagg_round_id,
    sketch_key,
)
from stix_mappings.timestamps import format_timestamp

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_POLL_SECS = 0.05
_IDS_PER_REQUEST = 100
# Versions of one round object read per poll. The hub writes one per stage (under ten), so
# more means that something else writes under the round's id, and the site leaves the round.
_MAX_ROUND_VERSIONS = 1000


@dataclass(frozen=True)
class SecureBudget:
    """The round's (epsilon, delta) split between the secure releases; see the module docstring.

    ``histogram_epsilon``, ``reveal_epsilon``, ``score_epsilon`` and ``part_delta`` are each
    family's; ``sketch_epsilon`` and ``sketch_delta`` are the shared sketch's, the sum of the
    families' sketch parts.
    """

    histogram_epsilon: float
    sketch_epsilon: float
    reveal_epsilon: float
    score_epsilon: float
    part_delta: float
    sketch_delta: float

    @classmethod
    def split(cls, *, epsilon: float, delta: float, histogram_share: float, count_share: float,
              score_share: float, families: int = 1) -> SecureBudget:
        """Return the split of one round's (epsilon, delta) between ``families`` families."""
        family_epsilon, family_delta = epsilon / families, delta / families
        return cls(histogram_share * family_epsilon, count_share * epsilon / 2, count_share * family_epsilon / 2,
                   score_share * family_epsilon, family_delta / 3, delta / 3)


class SecureRoundAborted(Exception):
    """The secure round ended without this site's contribution being summed."""

    def __init__(self, round_id: str, reason: str) -> None:
        self.round_id, self.reason = round_id, reason
        super().__init__(f"secure round {round_id} aborted: {reason}")


class SecureRoundRunner:
    """Run the client stages of one secure round for one site.

    Parameters
    ----------
    config : AgentConfig
        The site's configuration; ``privacy`` gives the budget split and bounds.
    password : str
        The site's hub password.
    rng : RandomSource
        Secure generator for keys, shares and noise. Tests inject a seeded one.
    charge : callable or None
        Called with (epsilon, delta) just before the first release of the round. It
        raises to stop the round when the budget cannot pay. None charges nothing, for
        tests of the checks made before any release.
    signing_key : SigningKey, optional
        The site's enrolled Ed25519 key. By default it is read from ``site.signing_key``
        when the round starts.
    """

    def __init__(self, config: AgentConfig, password: str, *, rng: RandomSource,
                 charge: Callable[[float, float], None] | None, signing_key: SigningKey | None = None) -> None:
        self.config = config
        self.site_id = config.site.id
        self._password = password
        self._rng = rng
        self._charge = charge
        self._signing_key = signing_key
        self._collection: Collection | None = None
        self._hub_identity = hub_identity_id(config.hub.name)
        self._ignored_versions: set[tuple[str, str]] = set()
        self._stage_deadline = time.monotonic()
        # Jitter only spreads retries in time, so it needs no cryptographic generator.
        self._jitter = random.Random()  # noqa: S311

    def run(self, round_start: int, bounded: Mapping[str, BoundedRound] | BoundedRound) -> dict[str, dict[str, int]]:
        """Take part in the round starting at ``round_start`` and return each family's revealed values.

        ``bounded`` maps each family this site configures to its bounded round. A single
        :class:`BoundedRound` is the network family's. The revealed values are observable
        keys with their locally noised counts.

        Raises
        ------
        SecureRoundAborted
            If the hub aborted the round, the parameters are unsafe for this site, a stage
            timed out, or a message was rejected.
        DeliveryError
            If the hub rejects a request with a permanent HTTP error (a 4xx other than 408,
            425 and 429), or stays unreachable or busy until the current stage's deadline.
        """
        round_id = format_timestamp(datetime.fromtimestamp(round_start, tz=timezone.utc))
        # The join has as long as a stage: the hub opens the round on the first join.
        self._stage_deadline = time.monotonic() + self.config.privacy.secure_stage_timeout_secs
        if isinstance(bounded, BoundedRound):
            bounded = {"network": bounded}
        try:
            return self._run(round_id, bounded)
        except SecAggError as err:
            raise SecureRoundAborted(round_id, str(err)) from err

    def _run(self, round_id: str, bounded: Mapping[str, BoundedRound]) -> dict[str, dict[str, int]]:
        privacy = self.config.privacy

        # Stage 1: join and check the round's parameters before sending anything else.
        self._post([self._message(round_id, "join", {})])
        state = self._wait(round_id, "advertise_keys")
        config = self._check_round(round_id, state, tuple(bounded))
        families: tuple[str, ...] = tuple(state["families"])
        sketch = CountMinSketch(round_id=round_id, rows=state["sketch_rows"], width=state["sketch_width"])
        client = SecAggClient(config, self.site_id, rng=self._rng, signing_key=self._own_key())

        # Stages 2 and 3: keys, then one encrypted share per neighbour that advertised.
        self._post([self._message(round_id, "advertise_keys", client.advertise_keys().to_dict())])
        state = self._wait(round_id, "share_keys")
        adverts = [KeyAdvertisement.from_dict(o["payload"]) for o in self._read(round_id,
            [secagg_message_id(round_id, "advertise_keys", site) for site in state["participants"]])]
        shares = client.share_keys(adverts)
        self._post([self._message(round_id, "share_keys", m.to_dict(), recipient=m.recipient) for m in shares])

        # Stage 4: charge the ledger, then send the noised, masked sums of this site.
        state = self._wait(round_id, "mask_input")
        received = [EncryptedShare.from_dict(o["payload"]) for o in self._read(round_id,
            [secagg_message_id(round_id, "share_keys", sender, self.site_id)
             for sender in state["participants"] if sender != self.site_id])]
        budget = SecureBudget.split(epsilon=privacy.epsilon_per_round, delta=privacy.delta_per_round,
                                    histogram_share=privacy.histogram_share, count_share=privacy.count_share,
                                    score_share=privacy.score_share, families=len(families))
        try:
            vector = self._noised_vector(bounded, families, sketch, budget)
        except InvalidPrivacyParameter as err:
            raise SecureRoundAborted(round_id, f"this site's share of the noise cannot be drawn ({err}); raise "
                                               "privacy.epsilon_per_round, or list fewer families in the hub's "
                                               "secure.families") from err
        if self._charge is not None:
            self._charge(privacy.epsilon_per_round, privacy.delta_per_round)
        masked = client.mask_input(encode_signed(vector), received)
        self._post([self._message(round_id, "mask_input", masked.to_dict())])

        # Stage 5: sign the survivor set, then reveal exactly one share of each neighbour, once,
        # and only if threshold survivors signed the same set.
        state = self._wait(round_id, "consistency_check")
        signed = client.sign_survivors(tuple(state["participants"]))
        self._post([self._message(round_id, "consistency_check", signed.to_dict())])
        state = self._wait(round_id, "unmask")
        signatures = [ConsistencySignature.from_dict({"round_id": round_id, "site_id": site, "signature": value})
                      for site, value in state.get("consistency_signatures", {}).items()]
        self._post([self._message(round_id, "unmask", client.unmask(signatures).to_dict())])

        # Stage 6: reveal the site's own heavy values, gated by its partition selection.
        state = self._wait(round_id, "reveal")
        heavy = frozenset(state.get("heavy_buckets", ()))
        revealed: dict[str, dict[str, int]] = {}
        evidence = []
        for family in families:
            part = bounded.get(family)
            if part is None:
                continue
            revealed[family], items = self._reveal(family, part, sketch, heavy, budget)
            evidence.extend(items)
        self._post([self._message(round_id, "reveal", {"evidence": evidence})])
        self._wait(round_id, "done")
        log.info("site %s: secure round %s done: %d sites summed, %d observables revealed",
                 self.site_id, round_id, len(state["participants"]), len(evidence))
        return revealed

    def _reveal(self, family: str, bounded: BoundedRound, sketch: CountMinSketch, heavy: frozenset[int],
                budget: SecureBudget) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Return one family's revealed keys and their evidence items, with the family's budget."""
        privacy = self.config.privacy
        keys = {sketch_key(family, *split_observable_key(key)): key for key in bounded.unit_counts}
        selected = sketch.reveal({prefixed: bounded.unit_counts[key] for prefixed, key in keys.items()}, heavy,
                                 epsilon=budget.reveal_epsilon, delta=budget.part_delta,
                                 max_partitions_per_unit=privacy.max_observables_per_entity, rng=self._rng)
        revealed = {keys[prefixed]: count for prefixed, count in selected.items()}
        score_mechanism = DiscreteLaplaceMechanism(budget.score_epsilon,
                                                   privacy.max_observables_per_entity * SCORE_QUANTUM)
        evidence = []
        for key in sorted(revealed):
            kind, value = split_observable_key(key)
            (noised_sum,) = score_mechanism.release([bounded.score_sums[key]], self._rng)
            mean = min(1.0, max(0.0, noised_sum / (SCORE_QUANTUM * max(revealed[key], 1))))
            evidence.append({"family": family, "observable_type": kind, "value": value,
                             "noised_entity_count": max(1, revealed[key]), "noised_mean_score": round(mean, 4)})
        return revealed, evidence

    def _noised_vector(self, bounded: Mapping[str, BoundedRound], families: Sequence[str], sketch: CountMinSketch,
                       budget: SecureBudget) -> np.ndarray:
        """Return each family's histogram and the shared sketch, each with this site's share of the noise."""
        privacy = self.config.privacy
        per_unit_windows = privacy.max_windows_per_entity if privacy.unit == "entity" else 1
        histogram_noise = calibrate_distributed_gaussian(
            epsilon=budget.histogram_epsilon, delta=budget.part_delta, min_sites=privacy.secure_min_sites,
            l1_sensitivity=per_unit_windows, l2_sensitivity=per_unit_windows, dimension=HISTOGRAM_BINS)
        # One unit contributes at most max_observables_per_entity keys in each family.
        l1, l2 = sketch.sensitivity(len(families) * privacy.max_observables_per_entity)
        sketch_noise = calibrate_distributed_gaussian(
            epsilon=budget.sketch_epsilon, delta=budget.sketch_delta, min_sites=privacy.secure_min_sites,
            l1_sensitivity=l1, l2_sensitivity=l2, dimension=sketch.length)
        parts = []
        unit_keys: dict[object, list[str]] = {}
        for family in families:
            part = bounded.get(family)
            histogram = np.zeros(HISTOGRAM_BINS, dtype=np.int64) if part is None else np.asarray(
                part.histogram, dtype=np.int64)
            parts.append(histogram_noise.add_noise(histogram, self._rng))
            for unit, keys in ({} if part is None else part.unit_observables).items():
                unit_keys.setdefault(unit, []).extend(sketch_key(family, *split_observable_key(key)) for key in keys)
        parts.append(sketch_noise.add_noise(sketch.build(unit_keys), self._rng))
        return np.concatenate(parts)

    def _check_round(self, round_id: str, state: Mapping[str, Any], site_families: Sequence[str]) -> SecAggConfig:
        privacy = self.config.privacy
        if self.site_id not in state["site_ids"]:
            raise SecureRoundAborted(round_id, f"site {self.site_id} is not invited to the round")
        missing = sorted(set(site_families) - set(state["families"]))
        if missing:
            raise SecureRoundAborted(round_id, f"the round does not sum family {', '.join(missing)}, which this "
                                               "site configures; run the same fti version at the hub and the sites")
        if state["threshold"] < privacy.secure_min_sites:
            raise SecureRoundAborted(round_id, f"the round's threshold {state['threshold']} is below "
                                               f"privacy.secure_min_sites ({privacy.secure_min_sites}); "
                                               "the noise would not cover the sum")
        if state["vector_length"] != (len(state["families"]) * HISTOGRAM_BINS
                                      + state["sketch_rows"] * state["sketch_width"]):
            raise SecureRoundAborted(round_id, "the round's vector length does not match its layout")
        self._check_privacy(round_id, state)
        return SecAggConfig(round_id=round_id, site_ids=tuple(state["site_ids"]), threshold=state["threshold"],
                            vector_length=state["vector_length"],
                            neighbours_per_site=state.get("neighbours_per_site"),
                            verify_keys=self._check_verify_keys(round_id, state))

    def _check_privacy(self, round_id: str, state: Mapping[str, Any]) -> None:
        """Leave the round unless its privacy settings equal this site's.

        Every site's noise share assumes that the other sites draw theirs with the same
        settings, so a site with a larger epsilon or smaller bounds weakens the sum for all.
        Floats match within a relative 1e-9, so that writing ``1e-6`` or ``0.000001`` makes
        no difference.
        """
        listed = state.get("privacy")
        if not isinstance(listed, Mapping) or set(listed) != set(ROUND_PRIVACY_KEYS):
            raise SecureRoundAborted(round_id, "the round object does not carry the round's privacy settings; "
                                               "run the same fti version at the hub and the sites")
        privacy = self.config.privacy
        for key, hub_key in ROUND_PRIVACY_KEYS.items():
            own, required = getattr(privacy, key), listed[key]
            if not _same_setting(own, required):
                raise SecureRoundAborted(round_id, f"the round requires privacy.{key} = {required!r} but this site "
                                                   f"has {own!r}; set privacy.{key}: {required!r} at this site, "
                                                   f"or agree on another value and set it in the hub's {hub_key}")

    def _check_verify_keys(self, round_id: str, state: Mapping[str, Any]) -> dict[str, bytes]:
        """Return the round's verify keys after checking this site's own and the pinned ones.

        The keys come from the hub's registry. Without ``privacy.secure_peer_keys`` the site
        can check only its own entry, so a hub that lists a key of its own for another site
        could pose as that site.
        """
        listed = state.get("verify_keys")
        if not isinstance(listed, Mapping) or set(listed) != set(state["site_ids"]):
            raise SecureRoundAborted(round_id, "the round object does not list a verify key for every invited "
                                               "site; run the same fti version at the hub and the sites")
        if listed[self.site_id] != self._own_key().public_key_b64:
            raise SecureRoundAborted(round_id, f"the hub lists verify key {listed[self.site_id]!r} for this site, "
                                               "not the key in site.signing_key; enrol the site again with its key")
        pinned = self.config.privacy.secure_peer_keys
        if pinned is not None:
            try:
                keys = read_peer_keys(pinned)
            except ConfigError as err:
                raise SecureRoundAborted(round_id, str(err)) from err
            differing = sorted(site for site in listed if site != self.site_id and keys.get(site) != listed[site])
            if differing:
                raise SecureRoundAborted(round_id, f"the hub lists verify keys for {', '.join(differing)} that are "
                                                   f"missing from or differ from {pinned}; add the sites' enrolled "
                                                   "keys there if they are genuine")
        try:
            return {site: base64.b64decode(value, validate=True) for site, value in listed.items()}
        except (binascii.Error, ValueError) as err:
            raise SecureRoundAborted(round_id, f"the round object lists a verify key that is not base64: {err}") from err

    def _own_key(self) -> SigningKey:
        if self._signing_key is None:
            self._signing_key = SigningKey.from_file(self.config.site.signing_key)
        return self._signing_key

    # TAXII -----------------------------------------------------------------------------

    def _keys(self) -> Collection:
        if self._collection is None:
            self._collection = open_collection(self.config.hub, self._password, "keys")
        return self._collection

    def _message(self, round_id: str, stage: str, payload: dict[str, Any], *,
                 recipient: str | None = None) -> dict[str, Any]:
        return build_secagg_message(round_id=round_id, stage=stage, sender=self.site_id, payload=payload,
                                    created=datetime.now(timezone.utc), recipient=recipient)

    def _retrying(self, round_id: str, action: str, request: Callable[[], _T]) -> _T:
        """Run ``request``, retrying transient delivery errors until the current stage's deadline.

        The wait is the server's ``Retry-After`` when it sent one, else exponential backoff with
        jitter from ``hub.retry_backoff_secs``, and at least one poll interval. A permanent
        error, or a wait that would end after the deadline, raises the last error. A retried
        post sends the same bytes, so a retry never draws fresh noise.

        NOTE: when a response is lost after the hub took the message, the retry repeats it.
        The hub accepts an identical advertisement or share again, but it rejects a second
        masked input or consistency signature, and the site then leaves the round.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return request()
            except DeliveryError as err:
                if not err.transient:
                    raise
                delay = err.retry_after_secs
                if delay is None:
                    delay = backoff_delay_secs(attempt, self.config.hub.retry_backoff_secs, rng=self._jitter)
                delay = max(delay, _POLL_SECS)
                remaining = self._stage_deadline - time.monotonic()
                if delay >= remaining:
                    log.error("site %s: secure round %s: %s failed after %d attempts, and the stage's deadline "
                              "is %.1f s away: %s", self.site_id, round_id, action, attempt, max(remaining, 0.0),
                              err.reason)
                    raise
                log.warning("site %s: secure round %s: %s failed (%s); retry %d in %.2f s", self.site_id, round_id,
                            action, err.reason, attempt, delay)
                self._collection = None
                time.sleep(delay)

    def _post(self, objects: list[dict[str, Any]]) -> None:
        round_id, stage = objects[0]["round_id"], objects[0]["stage"]
        envelope = json.dumps({"objects": objects}, separators=(",", ":"))

        def add() -> Status:
            collection = self._keys()
            try:
                return collection.add_objects(envelope, wait_for_completion=True, poll_interval=_POLL_SECS,
                                              timeout=self.config.hub.timeout_secs)
            except (requests.RequestException, TAXIIServiceException, ValueError) as err:
                raise delivery_error(collection.url, err) from err

        status = self._retrying(round_id, f"sending {stage}", add)
        failures = status.failures or []
        if failures:
            first = failures[0]
            raise SecureRoundAborted(round_id, f"the hub rejected {first.get('id')}: {first.get('message')}")

    def _read(self, round_id: str, ids: list[str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), _IDS_PER_REQUEST):
            chunk = ",".join(ids[start:start + _IDS_PER_REQUEST])

            def get(chunk: str = chunk) -> dict[str, Any]:
                collection = self._keys()
                try:
                    return collection.get_objects(id=chunk, limit=_IDS_PER_REQUEST)
                except (requests.RequestException, TAXIIServiceException, ValueError) as err:
                    raise delivery_error(collection.url, err) from err

            found.extend(self._retrying(round_id, "reading messages", get).get("objects", []))
        return found

    def _wait(self, round_id: str, stage: str) -> dict[str, Any]:
        """Poll the hub's round object until it reaches ``stage``, then return that version."""
        object_id = secagg_round_id(round_id)
        timeout = self.config.privacy.secure_stage_timeout_secs
        self._stage_deadline = deadline = time.monotonic() + timeout
        while True:
            versions = self._retrying(round_id, "reading the round object",
                                      lambda: self._read_versions(round_id, object_id))
            objects = self._hub_versions(round_id, versions)
            state = max(objects, key=lambda o: o["modified"]) if objects else None
            if state is not None and state["stage"] == "aborted":
                raise SecureRoundAborted(round_id, state.get("reason", "aborted by the hub"))
            if state is not None and state["stage"] == stage:
                if stage != "done" and self.site_id not in state.get("participants", ()):
                    raise SecureRoundAborted(round_id, f"the hub went on to {stage} without this site")
                # The new stage has its own deadline, as the hub times each stage from when it opens.
                self._stage_deadline = time.monotonic() + timeout
                return state
            if state is not None and _STAGE_ORDER.index(state["stage"]) > _STAGE_ORDER.index(stage):
                raise SecureRoundAborted(round_id, f"the round moved past {stage} without this site")
            if time.monotonic() > deadline:
                raise SecureRoundAborted(round_id, f"stage {stage} did not start within "
                                                   f"{self.config.privacy.secure_stage_timeout_secs} s")
            time.sleep(_POLL_SECS)

    def _read_versions(self, round_id: str, object_id: str) -> list[dict[str, Any]]:
        """Return every stored version of one object, at most ``_MAX_ROUND_VERSIONS``."""
        collection = self._keys()
        found: list[dict[str, Any]] = []
        try:
            for envelope in as_pages(collection.get_objects, per_request=_IDS_PER_REQUEST, id=object_id,
                                     version="all"):
                found.extend(envelope.get("objects", []))
                if len(found) > _MAX_ROUND_VERSIONS:
                    raise SecureRoundAborted(round_id, f"the keys collection contains more than {_MAX_ROUND_VERSIONS} "
                                                       "versions of the round object, far more than the hub writes")
        except (requests.RequestException, TAXIIServiceException, ValueError) as err:
            raise delivery_error(collection.url, err) from err
        return found

    def _hub_versions(self, round_id: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Return the versions of the round object created by the hub's identity, and log any other once.

        The hub's intake rejects round objects from sites. A version from anyone else reached
        the collection some other way, so the site neither follows it nor sends anything for it.
        """
        from_hub = []
        for obj in objects:
            creator = obj.get("created_by_ref")
            if (obj.get("type") == SECAGG_ROUND_TYPE and creator == self._hub_identity
                    and obj.get("round_id") == round_id):
                from_hub.append(obj)
                continue
            version = (str(obj.get("id")), str(obj.get("modified")))
            if version not in self._ignored_versions:
                self._ignored_versions.add(version)
                log.warning("site %s: secure round %s: ignored a round object version (modified %s) created by %s, "
                            "not by the identity %s of hub.name %r", self.site_id, round_id, version[1], creator,
                            self._hub_identity, self.config.hub.name)
        return from_hub


_STAGE_ORDER = ("advertise_keys", "share_keys", "mask_input", "consistency_check", "unmask", "reveal", "done",
                "aborted")


# The privacy settings a round object carries: the agent's privacy key and the hub's key.
ROUND_PRIVACY_KEYS = {
    "epsilon_per_round": "secure.epsilon_per_round",
    "delta_per_round": "secure.delta_per_round",
    "unit": "secure.unit",
    "secure_min_sites": "secure.min_sites",
    "max_observables_per_entity": "secure.max_observables_per_entity",
    "max_windows_per_entity": "secure.max_windows_per_entity",
    "histogram_share": "secure.histogram_share",
    "count_share": "secure.count_share",
    "score_share": "secure.score_share",
}


def hub_secure_privacy(privacy: PrivacySection) -> dict[str, Any]:
    """Return the hub's ``secure`` settings that match a site's ``privacy``, as keyword arguments.

    ``fusion_hub.config.SecureSettings(mode="secure", **hub_secure_privacy(privacy))`` makes a
    hub whose rounds a site with ``privacy`` joins.
    """
    return {hub_key.removeprefix("secure."): getattr(privacy, key) for key, hub_key in ROUND_PRIVACY_KEYS.items()}


def _same_setting(own: object, required: object) -> bool:
    if isinstance(own, bool) or isinstance(required, bool):
        return own == required
    if isinstance(own, float) or isinstance(required, float):
        return (isinstance(own, (int, float)) and isinstance(required, (int, float))
                and math.isclose(own, required, rel_tol=1e-9, abs_tol=0.0))
    return own == required and type(own) is type(required)


def read_peer_keys(path: Path) -> dict[str, str]:
    """Read pinned verify keys: one ``<site id> <base64 Ed25519 public key>`` per line.

    Blank lines and lines starting with ``#`` are skipped.

    Raises
    ------
    ConfigError
        If the file cannot be read or a line is not a site id and a 32-byte base64 key.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), 0, "privacy.secure_peer_keys", str(path), f"cannot be read: {err}") from err
    keys: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) != 2 or not _is_public_key(fields[1]):
            raise ConfigError(str(path), number, "privacy.secure_peer_keys", text,
                              "each line must be '<site id> <base64 Ed25519 public key of 32 bytes>'")
        keys[fields[0]] = fields[1]
    return keys


def _is_public_key(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False

