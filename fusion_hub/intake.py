"""Check and store the objects of one TAXII Add Objects request.

Each object is judged on its own and gets its own entry in the status resource (TAXII 2.1,
section 4.3.1): one bad object never sinks the envelope, and no object goes unreported.

Every object must be a STIX 2.1 object: a JSON object with ``type``, an ``id`` of the form
``<type>--<UUID>`` and ``spec_version`` "2.1" (an object without it would be read as STIX 2.0).
Each collection then accepts only what its writers may send:

``summaries``
    ``x-fti-round-summary`` objects, checked in this order:

    1. the poster is the site named in ``site``;
    2. that site is enrolled and not revoked;
    3. the Ed25519 signature verifies against the site's enrolled key;
    4. the object passes the summary schema and semantic checks;
    5. its round starts on a multiple of ``round_seconds`` and lasts at most one round;
    6. the round does not end in the future (beyond the allowed clock skew) and is not older
       than the retention;
    7. it is the site's only contribution to the round. A resend with the same canonical JSON
       succeeds without change.

    The site's own ``identity`` and the fti ``extension-definition`` objects are accepted too.
``feedback``
    ``opinion`` objects created by the posting site's identity, with an ``opinion`` value of
    the STIX opinion-enum. Each newly stored opinion updates the trust of the sites behind the
    indicators it refers to (``fusion_hub.feedback``).
``keys``
    Any STIX 2.1 object created by the posting site's identity. In secure mode an
    ``x-fti-secagg-message`` first goes to :mod:`fusion_hub.secure_rounds`; only key
    advertisements and encrypted shares are then stored.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import chain, islice
from typing import Any, NamedTuple

import orjson
import rfc8785

from fusion_hub.config import RoundSettings
from fusion_hub.envelope import EnvelopeObjects, RawObject, StrictParseNeeded
from fusion_hub.errors import ObjectRejected
from fusion_hub.feedback import apply_feedback, fit_ensemble_from_feedback, verdict_of
from fusion_hub.fusion import EnsembleFusion
from fusion_hub.metrics import HubMetrics
from fusion_hub.registry import Principal, SiteRegistry
from fusion_hub.rounds import RoundManager
from fusion_hub.secure_rounds import SecureRoundCoordinator
from fusion_hub.storage import AddOutcome, HubStorage, NewObject
from fusion_hub.timeutil import (
    format_millis,
    parse_timestamp,
    timestamp_micros,
    to_micros,
    utc_now,
)
from privacy.errors import SignatureInvalid
from privacy.signing import canonical_json, verify_object
from stix_mappings.ids import (
    FUSION_EXTENSION_ID,
    SUMMARY_EXTENSION_ID,
    SUMMARY_TYPE,
    collection_id,
    site_identity_id,
)
from stix_mappings.secagg_objects import SECAGG_MESSAGE_TYPE, SECAGG_ROUND_TYPE
from stix_mappings.summary import validate_summary

log = logging.getLogger(__name__)

# STIX 2.1 section 2.9: identifiers are <object type>--<UUID>; types are 3-250 characters of
# lower-case letters, digits and hyphens.
_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,248}[a-z0-9]")
# The UUID in the RFC 4122 text form, 8-4-4-4-12 hex digits.
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
KNOWN_EXTENSIONS = (SUMMARY_EXTENSION_ID, FUSION_EXTENSION_ID)
# Objects of an envelope checked before its transaction opens, even where later ones are
# checked while the database stores the first (see ``Intake._add_batch``).
OVERLAP_AFTER = 250


class _SlowCheckNeeded(Exception):
    """An object met inside an overlapping transaction needs the slow RFC 8785 path."""

    def __init__(self, index: int) -> None:
        super().__init__(f"object {index} has no plain JSON form")
        self.index = index


def _collecting(items: Iterable[NewObject], collected: list[NewObject]) -> Iterator[NewObject]:
    """Yield ``items``, appending each to ``collected`` first."""
    for item in items:
        collected.append(item)
        yield item


class ObjectResult(NamedTuple):
    """Outcome of one posted object, as listed in the status resource.

    A named tuple rather than a frozen dataclass, because an envelope makes one per object
    and a tuple is built several times faster.
    """

    id: str
    version: str
    accepted: bool
    message: str | None
    # Metrics label: "accepted", "duplicate" or the rejection reason.
    reason: str


class Intake:
    """Apply the checks of the module docstring to posted objects and store the good ones.

    Parameters
    ----------
    storage : HubStorage
        Where accepted objects go.
    registry : SiteRegistry
        Enrolled sites and their public keys.
    rounds : RoundManager
        Told about every new contribution, so a round closes as soon as it has its quorum.
    settings : RoundSettings
        Round length, clock skew and retention used by the round checks.
    metrics : HubMetrics
        Accepted and rejected summaries by reason.
    clock : callable returning datetime, optional
        Hub time.
    secure : SecureRoundCoordinator, optional
        Coordinator of the secure rounds. Without it the ``keys`` collection only stores objects.
    """

    def __init__(
        self,
        storage: HubStorage,
        *,
        registry: SiteRegistry,
        rounds: RoundManager,
        settings: RoundSettings,
        metrics: HubMetrics,
        clock: Callable[[], datetime] = utc_now,
        secure: SecureRoundCoordinator | None = None,
    ) -> None:
        self.storage = storage
        self.secure = secure
        self.registry = registry
        self.rounds = rounds
        self.settings = settings
        self.metrics = metrics
        self._clock = clock

    def add_objects(
        self, collection: str, principal: Principal,
        objects: Sequence[RawObject] | EnvelopeObjects,
    ) -> dict[str, Any]:
        """Check and store every object; return the TAXII status resource (complete)."""
        status, _ = self._add_objects(collection, principal, objects, save_status=False)
        return status

    def add_objects_and_save_status(
        self, collection: str, principal: Principal,
        objects: Sequence[RawObject] | EnvelopeObjects,
    ) -> str:
        """Check and store every object, store the status resource and return its JSON text.

        Where the envelope is stored at once, the status is stored in the same transaction,
        so the request costs one commit. That saves a disk flush on SQLite and two round trips
        on PostgreSQL.

        Raises
        ------
        EnvelopeInvalid, EnvelopeTooManyObjects
            When ``objects`` is read as it goes and the strict parser rejects the envelope.
        """
        _, status_text = self._add_objects(collection, principal, objects, save_status=True)
        assert status_text is not None
        return status_text

    def _add_objects(
        self, collection: str, principal: Principal,
        objects: Sequence[RawObject] | EnvelopeObjects, *, save_status: bool,
    ) -> tuple[dict[str, Any], str | None]:
        request_time = self._clock()
        results: list[ObjectResult] = []
        new_rounds: set[datetime] = set()

        # Other collections store the whole envelope at once: one transaction, one disk flush
        # and, on PostgreSQL, a few round trips instead of two per object. Summaries keep a
        # transaction each: on PostgreSQL each one locks its round's row, and holding several
        # round locks at once could deadlock against another site's envelope. So do
        # secure-mode messages, which may advance a secure round as they arrive.
        if collection != "summaries" and self.secure is None:
            stored = self._add_batch_or_fall_back(collection, principal, objects,
                                                  request_time, save_status=save_status)
            objects, results, status, status_text = stored
        else:
            if isinstance(objects, EnvelopeObjects):
                objects = objects.objects()
            for index, raw in enumerate(objects):
                result, round_start = self._add_one(collection, principal, raw, index,
                                                    request_time)
                results.append(result)
                if round_start is not None:
                    new_rounds.add(round_start)
            status = build_status(results, request_time)
            status_text = self._save_status(principal, status) if save_status else None

        self._count_and_log(collection, principal, results)

        # Quorum is checked after storing everything, so one envelope can complete a round.
        for round_start in sorted(new_rounds):
            self.rounds.on_contribution(round_start)

        # Only newly stored opinions count, so a resent envelope does not count twice.
        if collection == "feedback":
            opinions = [raw.value for raw, result in zip(objects, results)
                        if result.accepted and result.reason == "accepted"]
            if opinions:
                apply_feedback(self.registry, self.storage, opinions,
                               round_seconds=self.settings.round_seconds,
                               lookback_rounds=self.rounds.fusion.lookback_rounds,
                               known_contributors=self.secure.contributors_of if self.secure else None)
                if isinstance(self.rounds.strategy, EnsembleFusion):
                    fit_ensemble_from_feedback(self.rounds.strategy, self.registry, self.storage,
                                               round_seconds=self.settings.round_seconds,
                                               lookback_rounds=self.rounds.fusion.lookback_rounds)
        return status, status_text

    def _save_status(self, principal: Principal, status: dict[str, Any]) -> str:
        """Store the status resource for Get Status and return its JSON text."""
        status_text = orjson.dumps(status).decode("utf-8")
        self.storage.save_status(status["id"], principal.name, status_text)
        return status_text

    def _check_secure_object(self, obj: dict[str, Any], object_id: str) -> None:
        """Reject secure-round objects that a site must never write here.

        The round object is the hub's own record of a secure round. A copy from a site, under
        the round's predictable id, could abort or steer the round for every site. Without
        secure rounds the hub only relays key advertisements and encrypted shares, because
        masked inputs, unmask shares and reveals would be stored where every site can read them.
        """
        if obj["type"] == SECAGG_ROUND_TYPE:
            raise ObjectRejected(object_id, "type-not-accepted",
                                 f"only the hub writes {SECAGG_ROUND_TYPE} objects")
        if (obj["type"] == SECAGG_MESSAGE_TYPE and self.secure is None
                and obj.get("stage") not in ("advertise_keys", "share_keys")):
            raise ObjectRejected(object_id, "type-not-accepted",
                                 f"this hub runs no secure rounds; stage {obj.get('stage')!r} is not accepted")

    def _add_batch_or_fall_back(
        self, collection: str, principal: Principal,
        objects: Sequence[RawObject] | EnvelopeObjects, request_time: datetime, *,
        save_status: bool,
    ) -> tuple[list[RawObject], list[ObjectResult], dict[str, Any], str | None]:
        """Run ``_add_batch``, and once more from the strict parser if the C split gives up.

        NOTE: an envelope that falls back is checked twice and, on PostgreSQL, may have been
        sent to the server in part before. Only an envelope that the C split gives up on
        part-way does that, such as one with a repeated key, NaN or deep nesting.
        """
        try:
            return self._add_batch(collection, principal, objects, request_time,
                                   save_status=save_status)
        except StrictParseNeeded as err:
            # The transaction rolled back, so nothing of the first pass was stored.
            log.debug("envelope for %s from %s needs the strict parser (%s)", collection,
                      principal.name, err)
        # Outside the except block, so that the first pass's objects are freed before the
        # second pass reads the envelope again.
        assert isinstance(objects, EnvelopeObjects)
        return self._add_batch(collection, principal, objects.strict(), request_time,
                               save_status=save_status)

    def _add_batch(
        self, collection: str, principal: Principal,
        objects: Sequence[RawObject] | EnvelopeObjects, request_time: datetime, *,
        save_status: bool,
    ) -> tuple[list[RawObject], list[ObjectResult], dict[str, Any], str | None]:
        """Check every object and store those that pass with one ``add_objects`` call.

        The checks run before the transaction opens, so that they do not hold the database
        lock, with one exception. Where the storage inserts while objects are still being
        checked (PostgreSQL), the objects after the first ``OVERLAP_AFTER`` are checked
        inside the transaction, overlapping the server's work. That holds the collection's
        lock longer, so it happens only for objects with a plain JSON form, whose canonical
        form the C split has written. The RFC 8785 form of other objects is written in
        Python and can take milliseconds each. When such an object turns up inside the
        transaction, the transaction rolls back, and the rest is checked before a new one.

        Objects read one by one from an ``EnvelopeObjects`` are checked as they come, and
        ``StrictParseNeeded`` rolls the transaction back. Return the objects as a list, the
        results, the status resource and, with ``save_status``, its stored text.
        """
        results: list[ObjectResult | None] = [None] * len(objects)
        # Index, id and version of each object that passed, in the order it went to storage.
        passed: list[tuple[int, str, str]] = []
        read: list[RawObject] = []
        members = enumerate(objects)
        # The member at which an overlapping pass stopped, checked by the next pass.
        stopped: list[tuple[int, RawObject]] = []
        collection_key = collection_id(collection)

        def check(index: int, raw: RawObject) -> NewObject | None:
            try:
                obj, object_id, version, version_us = check_stix_object(raw, index)
                check_collection_rules(collection, principal, obj, object_id)
                self._check_secure_object(obj, object_id)
                new = _new_object(collection_key, raw, obj, principal, version_us)
            except ObjectRejected as err:
                version = _version_text(raw.value) or format_millis(request_time)
                results[index] = ObjectResult(err.object_id, version, False, err.message,
                                              err.reason)
                return None
            passed.append((index, object_id, version))
            return new

        def checked(*, plain_only: bool) -> Iterator[NewObject]:
            while stopped:
                new = check(*stopped.pop())
                if new is not None:
                    yield new
            for index, raw in members:
                read.append(raw)
                if plain_only and not raw.plain_json:
                    stopped.append((index, raw))
                    raise _SlowCheckNeeded(index)
                new = check(index, raw)
                if new is not None:
                    yield new

        first = list(islice(checked(plain_only=False), OVERLAP_AFTER))
        if self.storage.pipelines_inserts and all(raw.plain_json for raw in read):
            overlapped: list[NewObject] = []
            lazy = chain(first, _collecting(checked(plain_only=True), overlapped))
            try:
                return self._store_batch(collection_key, principal, lazy, len(objects), read,
                                         results, passed, request_time, save_status=save_status)
            except _SlowCheckNeeded as err:
                # Nothing of the transaction was stored, and every check so far still holds.
                log.debug("envelope for %s from %s: object %d needs the RFC 8785 path, so "
                          "the rest is checked before the transaction", collection,
                          principal.name, err.index)
                first.extend(overlapped)
        new_objects = first + list(checked(plain_only=False))
        return self._store_batch(collection_key, principal, new_objects, len(objects), read,
                                 results, passed, request_time, save_status=save_status)

    def _store_batch(
        self, collection_key: str, principal: Principal, new_objects: Iterable[NewObject],
        at_most: int, read: list[RawObject], results: list[ObjectResult | None],
        passed: list[tuple[int, str, str]], request_time: datetime, *, save_status: bool,
    ) -> tuple[list[RawObject], list[ObjectResult], dict[str, Any], str | None]:
        """Store the objects that passed and the status resource in one transaction."""
        with self.storage.transaction():
            outcomes = self.storage.add_objects(collection_key, new_objects, at_most=at_most)
            for (index, object_id, version), outcome in zip(passed, outcomes, strict=True):
                results[index] = _result_for(outcome, object_id, version, round_text=None)
            complete = [result for result in results if result is not None]
            status = build_status(complete, request_time)
            status_text = self._save_status(principal, status) if save_status else None
        return read, complete, status, status_text

    def _add_one(
        self, collection: str, principal: Principal, raw: RawObject, index: int,
        request_time: datetime,
    ) -> tuple[ObjectResult, datetime | None]:
        try:
            obj, object_id, version, version_us = check_stix_object(raw, index)
            if collection == "summaries":
                return self._add_summary_collection_object(principal, raw, obj, object_id,
                                                           version, version_us, request_time)
            check_collection_rules(collection, principal, obj, object_id)
            self._check_secure_object(obj, object_id)
            # Secure aggregation messages go to the round first. Masked inputs, unmask
            # shares and reveals are for the hub alone and are never stored.
            if collection == "keys" and obj["type"] == SECAGG_MESSAGE_TYPE and self.secure is not None:
                outcomes: list[AddOutcome] = []

                def store() -> None:
                    outcome, _ = self.storage.add_object(
                        _new_object(collection_id(collection), raw, obj, principal, version_us))
                    outcomes.append(outcome)

                if not self.secure.accept_message(principal, obj, store=store):
                    return ObjectResult(object_id, version, True, None, "accepted"), None
                return _result_for(outcomes[0], object_id, version, round_text=None), None
            outcome, _ = self.storage.add_object(
                _new_object(collection_id(collection), raw, obj, principal, version_us))
            return _result_for(outcome, object_id, version, round_text=None), None
        except ObjectRejected as err:
            version = _version_text(raw.value) or format_millis(request_time)
            return ObjectResult(err.object_id, version, False, err.message, err.reason), None

    def _add_summary_collection_object(
        self, principal: Principal, raw: RawObject, obj: dict[str, Any], object_id: str,
        version: str, version_us: int | None, request_time: datetime,
    ) -> tuple[ObjectResult, datetime | None]:
        if obj["type"] != SUMMARY_TYPE:
            check_collection_rules("summaries", principal, obj, object_id)
            # Every site posts the same fti extension definitions.
            outcome, _ = self.storage.add_object(
                _new_object(collection_id("summaries"), raw, obj, principal, version_us),
                shared_id=obj["type"] == "extension-definition")
            return _result_for(outcome, object_id, version, round_text=None), None

        round_start = self.check_summary(principal, obj, object_id, request_time)
        outcome, _ = self.storage.add_summary(
            _new_object(collection_id("summaries"), raw, obj, principal, version_us),
            site_id=principal.name,
            round_start_us=to_micros(round_start), received_us=to_micros(request_time),
        )
        result = _result_for(outcome, object_id, version, round_text=obj["round_start"])
        return result, (round_start if outcome is AddOutcome.CREATED else None)

    def check_summary(
        self, principal: Principal, obj: dict[str, Any], object_id: str, now: datetime
    ) -> datetime:
        """Run the summary checks of the module docstring; return the round start.

        Raises
        ------
        ObjectRejected
            At the first check that fails.
        """
        # The credential, not the payload, identifies the sender.
        site = obj.get("site")
        if not isinstance(site, str):
            raise ObjectRejected(object_id, "schema", "site must be a string naming the sender")
        if site != principal.name:
            raise ObjectRejected(object_id, "wrong-site",
                                 f"{principal.name} may not post a summary for site {site}")
        enrolled = self.registry.get_site(site)
        if enrolled is None or enrolled.public_key_b64 is None:
            raise ObjectRejected(object_id, "site-unknown", f"site {site} is not enrolled")
        if enrolled.revoked:
            raise ObjectRejected(object_id, "site-revoked", f"site {site} is revoked")

        # A summary is only worth fusing if the site's key vouches for every byte of it.
        try:
            verify_object(obj, enrolled.public_key_b64)
        except SignatureInvalid as err:
            raise ObjectRejected(object_id, "signature", str(err)) from err

        problems = validate_summary(obj)
        if problems:
            raise ObjectRejected(object_id, "schema", "; ".join(problems))

        round_start = parse_timestamp(obj["round_start"])
        round_end = parse_timestamp(obj["round_end"])
        self.check_round(object_id, round_start, round_end, now)
        return round_start

    def check_round(
        self, object_id: str, round_start: datetime, round_end: datetime, now: datetime
    ) -> None:
        """Check a summary's round against the hub's round length, clock and retention.

        Raises
        ------
        ObjectRejected
            With reason ``round-misaligned``, ``round-future`` or ``round-expired``.
        """
        length = timedelta(seconds=self.settings.round_seconds)
        if to_micros(round_start) % (self.settings.round_seconds * 1_000_000) != 0:
            raise ObjectRejected(
                object_id, "round-misaligned",
                f"round_start {format_millis(round_start)} is not a multiple of the hub's round "
                f"length ({self.settings.round_seconds} s); align the agent's round_seconds",
            )
        if round_end - round_start > length:
            raise ObjectRejected(
                object_id, "round-misaligned",
                f"round_end {format_millis(round_end)} is more than one round "
                f"({self.settings.round_seconds} s) after round_start",
            )
        skew = timedelta(seconds=self.settings.max_clock_skew_seconds)
        if round_end > now + skew:
            raise ObjectRejected(
                object_id, "round-future",
                f"round_end {format_millis(round_end)} is in the future (hub time "
                f"{format_millis(now)}, allowed skew {self.settings.max_clock_skew_seconds} s); "
                "check the site's clock",
            )
        oldest = now - timedelta(days=self.settings.retention_days)
        if round_start < oldest:
            raise ObjectRejected(
                object_id, "round-expired",
                f"round_start {format_millis(round_start)} is older than the hub's retention "
                f"of {self.settings.retention_days} days",
            )

    def _count_and_log(
        self, collection: str, principal: Principal, results: Sequence[ObjectResult]
    ) -> None:
        reasons = Counter(result.reason for result in results if not result.accepted)
        if collection == "summaries":
            self.metrics.summaries_accepted.inc(sum(1 for r in results if r.reason == "accepted"))
            for reason, count in reasons.items():
                self.metrics.summaries_rejected.labels(reason=reason).inc(count)
        accepted = sum(1 for result in results if result.accepted)
        if reasons:
            log.warning("%s posted %d objects to %s: %d accepted, %d rejected (%s)",
                        principal.name, len(results), collection, accepted, len(results) - accepted,
                        ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items())))
        else:
            log.info("%s posted %d objects to %s: all accepted", principal.name, len(results),
                     collection)


def check_stix_object(raw: RawObject, index: int) -> tuple[dict[str, Any], str, str, int | None]:
    """Check the STIX 2.1 common properties of the object at ``index`` in the envelope.

    Return the object, its id and its version: ``modified``, else ``created``, as text and as
    epoch microseconds. An object with neither has the version ``""`` and None.

    Raises
    ------
    ObjectRejected
        With reason ``not-stix`` (or ``spec-version``) and what is wrong. An object without a
        usable id is named by its ``id`` if it is a string, else by ``objects[index]``.
    """
    obj = raw.value
    if raw.error is not None:
        raise ObjectRejected(_guess_id(obj, index), "not-stix",
                             f"invalid JSON member: {raw.error}")
    if not isinstance(obj, dict):
        raise ObjectRejected(_guess_id(obj, index), "not-stix",
                             f"a STIX object must be a JSON object; got {type(obj).__name__}")
    object_type = obj.get("type")
    if not isinstance(object_type, str) or not _TYPE_RE.fullmatch(object_type):
        raise ObjectRejected(_guess_id(obj, index), "not-stix",
                             f"type must be 3-250 lower-case letters, digits or '-'; got "
                             f"{object_type!r}")
    object_id = obj.get("id")
    if not isinstance(object_id, str) or not _is_identifier(object_id, object_type):
        raise ObjectRejected(_guess_id(obj, index), "not-stix",
                             f"id must be {object_type}--<UUID>; got {object_id!r}")
    if "spec_version" not in obj:
        raise ObjectRejected(object_id, "spec-version",
                             "spec_version required (STIX 2.1); without it the object reads "
                             "as STIX 2.0")
    if obj["spec_version"] != "2.1":
        raise ObjectRejected(object_id, "spec-version",
                             f"spec_version must be \"2.1\"; got {obj['spec_version']!r}")

    # Both timestamps must be valid. Most objects carry the same text in both, parsed once.
    created = obj.get("created", _ABSENT)
    modified = obj.get("modified", _ABSENT)
    if created is not _ABSENT:
        created_us = _timestamp_micros(object_id, "created", created)
    if modified is _ABSENT:
        if created is _ABSENT:
            return obj, object_id, "", None
        return obj, object_id, created, created_us
    if modified != created:
        return obj, object_id, modified, _timestamp_micros(object_id, "modified", modified)
    return obj, object_id, modified, created_us


# Marks a property missing from an object, where None would stand for a JSON null.
_ABSENT = object()


def _timestamp_micros(object_id: str, name: str, value: Any) -> int:
    try:
        if isinstance(value, str):
            return timestamp_micros(value)
        return to_micros(parse_timestamp(value))
    except ValueError as err:
        raise ObjectRejected(object_id, "not-stix", f"{name}: {err}") from err


def check_collection_rules(
    collection: str, principal: Principal, obj: dict[str, Any], object_id: str
) -> None:
    """Check that a non-summary object belongs in the collection and comes from its creator.

    Raises
    ------
    ObjectRejected
        With reason ``type-not-accepted`` or ``wrong-site``.
    """
    own_identity = site_identity_id(principal.name)
    object_type = obj["type"]
    if collection == "summaries":
        if object_type == "identity" and object_id == own_identity:
            return
        if object_type == "extension-definition" and object_id in KNOWN_EXTENSIONS:
            return
        if object_type == "identity":
            raise ObjectRejected(object_id, "wrong-site",
                                 f"{principal.name} may post only its own identity {own_identity}")
        raise ObjectRejected(
            object_id, "type-not-accepted",
            f"type {object_type} is not accepted in collection summaries: unknown type or "
            "extension-definition not registered",
        )
    if collection == "feedback" and object_type != "opinion":
        raise ObjectRejected(object_id, "type-not-accepted",
                             f"collection feedback takes opinion objects; got {object_type}")
    if collection == "feedback":
        try:
            verdict_of(obj)
        except ValueError as err:
            raise ObjectRejected(object_id, "not-stix", str(err)) from err
        # Each reference is looked up in storage, which must never see a string such as a
        # NUL that PostgreSQL cannot hold.
        for ref in obj["object_refs"]:
            ref_type, _, ref_uuid = ref.rpartition("--")
            if not (_TYPE_RE.fullmatch(ref_type) and _UUID_RE.fullmatch(ref_uuid)):
                raise ObjectRejected(object_id, "not-stix",
                                     f"object_refs must hold STIX identifiers "
                                     f"(<type>--<UUID>); got {ref!r}")
    if obj.get("created_by_ref") != own_identity:
        raise ObjectRejected(
            object_id, "wrong-site",
            f"created_by_ref must be {own_identity}, the identity of {principal.name}; got "
            f"{obj.get('created_by_ref')!r}",
        )


def build_status(results: Sequence[ObjectResult], request_time: datetime) -> dict[str, Any]:
    """Build a complete TAXII 2.1 status resource (section 4.3.1) from per-object results."""
    successes = [{"id": r.id, "version": r.version, "message": r.message} if r.message
                 else {"id": r.id, "version": r.version} for r in results if r.accepted]
    failures = [{"id": _status_text(r.id), "version": r.version,
                 "message": _status_text(r.message)}
                if r.message else {"id": _status_text(r.id), "version": r.version}
                for r in results if not r.accepted]
    status: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "status": "complete",
        "request_timestamp": format_millis(request_time),
        "total_count": len(results),
        "success_count": len(successes),
        "failure_count": len(failures),
        "pending_count": 0,
    }
    # TAXII lists are optional and must not be empty when present.
    if successes:
        status["successes"] = successes
    if failures:
        status["failures"] = failures
    return status


# Longest id or message of a failure entry. Entries repeat posted values, and the status is
# stored, so without a bound a rejected envelope would cost as much storage as a stored one.
MAX_FAILURE_TEXT = 1000


def _status_text(text: str) -> str:
    """Return ``text`` cut to ``MAX_FAILURE_TEXT`` characters, with lone surrogates escaped.

    A JSON escape can make a posted string a lone surrogate such as ``\\ud800``, which has no
    UTF-8 form, and the status resource must still be encoded. It is written as its escape.
    """
    if len(text) > MAX_FAILURE_TEXT:
        text = f"{text[:MAX_FAILURE_TEXT]}... ({len(text) - MAX_FAILURE_TEXT} more characters)"
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _result_for(
    outcome: AddOutcome, object_id: str, version: str, *, round_text: str | None
) -> ObjectResult:
    if outcome is AddOutcome.CREATED:
        return ObjectResult(object_id, version, True, None, "accepted")
    if outcome is AddOutcome.DUPLICATE:
        return ObjectResult(object_id, version, True, "already stored; no change", "duplicate")
    if outcome is AddOutcome.OTHER_OWNER:
        return ObjectResult(object_id, version, False,
                            f"{object_id} has versions posted by another site, and only an "
                            "object's creator may add versions; post it under a new id",
                            "other-owner")
    if outcome is AddOutcome.ROUND_CONFLICT:
        return ObjectResult(object_id, version, False,
                            f"site already contributed to round {round_text}; a round takes one "
                            "summary per site", "duplicate-round")
    if outcome is AddOutcome.ROUND_CLOSED:
        return ObjectResult(object_id, version, False,
                            f"round {round_text} is closed; its indicators are published",
                            "round-closed")
    return ObjectResult(object_id, version, False,
                        f"version {version} of {object_id} is stored with different content; "
                        "post a new version with a later modified", "conflict")


def _new_object(
    collection_key: str, raw: RawObject, obj: dict[str, Any], principal: Principal,
    version_us: int | None,
) -> NewObject:
    try:
        canonical = raw.canonical
        if canonical is None:
            canonical = canonical_json(obj, plain=raw.plain_json)
        digest = hashlib.sha256(canonical).hexdigest()
    except rfc8785.CanonicalizationError as err:
        raise ObjectRejected(obj["id"], "not-stix",
                             f"object has no RFC 8785 canonical form: {err}") from err
    return NewObject(collection_key, obj["id"], obj["type"], obj["spec_version"],
                     version_us, raw.text, digest, principal.name)


def _version_text(obj: Any) -> str | None:
    version = _version_of(obj)
    return version[0] if version else None


def _version_of(obj: Any) -> tuple[str, datetime] | None:
    """Return the text and time of the object's version: ``modified``, else ``created``."""
    if not isinstance(obj, dict):
        return None
    for name in ("modified", "created"):
        value = obj.get(name)
        if isinstance(value, str):
            try:
                return value, parse_timestamp(value)
            except ValueError:
                continue
    return None


def _guess_id(value: Any, index: int) -> str:
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return f"objects[{index}]"


def _is_identifier(object_id: str, object_type: str) -> bool:
    prefix = object_type + "--"
    return (object_id.startswith(prefix)
            and _UUID_RE.fullmatch(object_id, len(prefix)) is not None)

