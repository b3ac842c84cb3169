"""Turn fused observables into versions of STIX indicators and publish them.

For each observable selected by fusion, the publisher builds one indicator version with
``stix_mappings.indicator.build_fused_indicator``, checks it with the OASIS stix2-validator
(``stix_mappings.validation.validate_stix``) and stores it in the ``fused-indicators``
collection. An object that fails the builder or the validator is refused: it is counted by
reason, logged once per round, and never reaches a consumer or a SIEM.

Indicator ids are UUIDv5 of the pattern, so an observable confirmed round after round gets new
versions of one indicator (same id and ``created``, later ``modified``), each valid for
``indicator_ttl_seconds`` from its round's close. When a round closes after the ``valid_until``
of an indicator that no round confirmed since, a last version with ``revoked: true`` withdraws
it (STIX 2.1, section 3.6, versioning and revocation). STIX 2.1 allows no version after a
revocation, so an observable that returns later starts a new lifetime of its indicator under
a new id (``stix_mappings.ids.indicator_id`` with ``lifetime`` 1, 2, ...).

Notes
-----

Stored versions and the files of the SIEM sinks are not one transaction: the objects are
committed with the round, then appended to the files. When a file append fails, the
indicators stay published over TAXII, and the failure is logged and counted
(``fti_hub_sink_failures``) so the operator can export them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fusion_hub.config import FusionSettings
from fusion_hub.errors import HubError
from fusion_hub.fusion import FusedObservable
from fusion_hub.metrics import HubMetrics
from fusion_hub.storage import AddOutcome, HubStorage, IndicatorState, NewObject
from fusion_hub.timeutil import from_micros, parse_timestamp, to_micros, truncate_to_millis
from privacy.signing import canonical_json
from siem_integrations.errors import SiemError
from siem_integrations.sink import IndicatorSink
from stix_mappings.errors import StixMappingError
from stix_mappings.ids import collection_id, hub_identity_id, indicator_id
from stix_mappings.indicator import build_fused_indicator, extension_definitions, hub_identity
from stix_mappings.validation import validate_stix

log = logging.getLogger(__name__)

FUSED_COLLECTION = "fused-indicators"
_ONE_MS = timedelta(milliseconds=1)


@dataclass
class PublishReport:
    """Indicator versions one round added to the fused-indicator collection."""

    published: list[dict[str, Any]] = field(default_factory=list)
    revoked: list[dict[str, Any]] = field(default_factory=list)
    # reason -> number of indicators refused for it
    refused: Counter[str] = field(default_factory=Counter)

    @property
    def refused_total(self) -> int:
        """Number of indicators refused for any reason."""
        return sum(self.refused.values())


class Publisher:
    """Build, validate, store and export fused indicators.

    Parameters
    ----------
    storage : HubStorage
        Where indicator versions and their state are kept.
    hub_name : str
        Name of the hub's STIX identity, the ``created_by_ref`` of every indicator.
    fusion : FusionSettings
        Indicator lifetime and TLP marking.
    sinks : sequence of IndicatorSink
        SIEM files that receive every stored version.
    metrics : HubMetrics
        Counters of published, refused and revoked indicators.
    """

    def __init__(
        self,
        storage: HubStorage,
        *,
        hub_name: str,
        fusion: FusionSettings,
        sinks: Sequence[IndicatorSink],
        metrics: HubMetrics,
    ) -> None:
        self.storage = storage
        self.hub_name = hub_name
        self.fusion = fusion
        self.sinks = list(sinks)
        self.metrics = metrics
        self.collection_id = collection_id(FUSED_COLLECTION)
        self.hub_identity_id = hub_identity_id(hub_name)

    def publish_reference_objects(self) -> None:
        """Store the hub's identity and the extension definitions in the collection.

        Consumers need them to resolve ``created_by_ref`` and the fusion extension. Storing
        them again is a no-op.

        Raises
        ------
        HubError
            If a reference object fails validation or conflicts with a stored version; the
            hub cannot publish consistent indicators then.
        """
        objects = [hub_identity(self.hub_name), *extension_definitions(self.hub_identity_id)]
        problems = validate_stix(objects)
        if problems:
            raise HubError(f"the hub's reference objects fail stix2-validator: {problems[0]}")
        for obj in objects:
            outcome = self._store(obj)
            if outcome is AddOutcome.CONFLICT:
                raise HubError(
                    f"{obj['id']} is stored with different content under the same version; "
                    "the hub name or the fti version changed while keeping the database"
                )

    def publish_round(
        self, fused: Sequence[FusedObservable], *, round_start: datetime, now: datetime,
        strategy: str,
    ) -> PublishReport:
        """Store a new version of every fused indicator and revoke the expired ones.

        Call it inside the storage transaction that closes the round, then pass the report
        to :meth:`export` after the commit.
        """
        report = PublishReport()
        now_ms = truncate_to_millis(now)

        for item in fused:
            self._publish_one(item, round_start=round_start, now=now_ms, strategy=strategy,
                              report=report)
        self._revoke_expired(now_ms, report)

        self.metrics.indicators_published.inc(len(report.published))
        self.metrics.indicators_revoked.inc(len(report.revoked))
        for reason, count in report.refused.items():
            self.metrics.indicators_refused.labels(reason=reason).inc(count)
        if report.refused:
            log.warning("round %s: %d indicators rejected and not published (%s)", _iso(round_start),
                        report.refused_total,
                        ", ".join(f"{r}: {n}" for r, n in sorted(report.refused.items())))
        return report

    def export(self, report: PublishReport) -> None:
        """Append the round's new versions to every SIEM sink; failures are logged."""
        batch = [*report.published, *report.revoked]
        if not batch:
            return
        for sink in self.sinks:
            try:
                result = sink.write_indicators(batch)
            except SiemError as err:
                self.metrics.sink_failures.labels(sink=sink.name).inc()
                log.error("%s: batch of %d indicators not written: %s", sink.name, len(batch), err)
                continue
            if result.rejected:
                self.metrics.sink_failures.labels(sink=sink.name).inc()

    def flush_sinks(self, now: datetime) -> None:
        """Revoke expired indicators and send every sink's spooled backlog.

        Rounds do both when they close, but no round closes while sites send nothing. The
        ticker calls this then, to keep expired indicators out of the SIEMs and to resend what
        an outage left spooled. Each sink bounds its own retries in time, and failures are logged.
        """
        report = PublishReport()
        with self.storage.transaction():
            self._revoke_expired(truncate_to_millis(now), report)
        self.metrics.indicators_revoked.inc(len(report.revoked))
        if report.revoked:
            log.info("%d expired indicators revoked outside a round", len(report.revoked))
            # Writing the revocations flushes each sink's backlog too.
            self.export(report)
            return

        for sink in self.sinks:
            flush = getattr(sink, "flush", None)
            if flush is None:
                continue
            try:
                flush()
            except SiemError as err:
                self.metrics.sink_failures.labels(sink=sink.name).inc()
                log.error("%s: spooled backlog not flushed: %s", sink.name, err)

    def _publish_one(
        self, item: FusedObservable, *, round_start: datetime, now: datetime, strategy: str,
        report: PublishReport,
    ) -> None:
        valid_until = now + timedelta(seconds=self.fusion.indicator_ttl_seconds)
        try:
            candidate = self._build(item, round_start=round_start, created=now, modified=now,
                                    valid_from=now, valid_until=valid_until, strategy=strategy)
        except StixMappingError as err:
            report.refused["invalid-value"] += 1
            log.debug("indicator for %s %r rejected: %s", item.observable_type, item.value, err)
            return

        # The id depends on the pattern and the lifetime, so the stored state is found after
        # building. Revoked lifetimes are skipped: the observable returns under a new id.
        lifetime = 0
        state = self.storage.get_indicator_state(candidate["id"])
        while state is not None and state.revoked:
            lifetime += 1
            state = self.storage.get_indicator_state(indicator_id(candidate["pattern"], lifetime))

        # A new version keeps its lifetime's first created and needs a later modified.
        created, modified = now, now
        if state is not None:
            created = from_micros(state.created_us)
            modified = max(now, from_micros(state.modified_us) + _ONE_MS)
        if lifetime or state is not None:
            candidate = self._build(item, round_start=round_start, created=created,
                                    modified=modified, valid_from=now, valid_until=valid_until,
                                    strategy=strategy, lifetime=lifetime)

        if not self._validate_and_store(candidate, report):
            return
        report.published.append(candidate)
        self.storage.save_indicator_state(IndicatorState(
            indicator_id=candidate["id"], observable_type=item.observable_type,
            value=item.value, created_us=to_micros(created),
            modified_us=to_micros(parse_timestamp(candidate["modified"])),
            valid_from_us=to_micros(now), valid_until_us=to_micros(valid_until),
            fused_score=item.fused_score, corroborating_sites=item.corroborating_sites,
            strategy=strategy, round_start_us=to_micros(round_start), revoked=False,
        ))

    def _revoke_expired(self, now: datetime, report: PublishReport) -> None:
        for state in self.storage.expired_indicators(to_micros(now)):
            modified = max(now, from_micros(state.modified_us) + _ONE_MS)
            try:
                revoked = build_fused_indicator(
                    observable_type=state.observable_type, value=state.value,
                    fused_score=state.fused_score,
                    corroborating_sites=state.corroborating_sites, strategy=state.strategy,
                    round_start=from_micros(state.round_start_us),
                    valid_from=from_micros(state.valid_from_us),
                    valid_until=from_micros(state.valid_until_us),
                    created=from_micros(state.created_us), modified=modified,
                    hub_identity=self.hub_identity_id, tlp=self.fusion.tlp, revoked=True,
                )
            except StixMappingError as err:
                report.refused["invalid-value"] += 1
                log.error("revocation of %s could not be built: %s", state.indicator_id, err)
                continue
            if not self._validate_and_store(revoked, report):
                continue
            report.revoked.append(revoked)
            self.storage.save_indicator_state(IndicatorState(
                indicator_id=state.indicator_id, observable_type=state.observable_type,
                value=state.value, created_us=state.created_us,
                modified_us=to_micros(parse_timestamp(revoked["modified"])),
                valid_from_us=state.valid_from_us, valid_until_us=state.valid_until_us,
                fused_score=state.fused_score, corroborating_sites=state.corroborating_sites,
                strategy=state.strategy, round_start_us=state.round_start_us, revoked=True,
            ))

    def _build(
        self, item: FusedObservable, *, round_start: datetime, created: datetime,
        modified: datetime, valid_from: datetime, valid_until: datetime, strategy: str,
        lifetime: int = 0,
    ) -> dict[str, Any]:
        return build_fused_indicator(
            observable_type=item.observable_type, value=item.value,
            fused_score=item.fused_score, corroborating_sites=item.corroborating_sites,
            strategy=strategy, round_start=round_start, valid_from=valid_from,
            valid_until=valid_until, created=created, modified=modified,
            hub_identity=self.hub_identity_id, tlp=self.fusion.tlp, lifetime=lifetime,
        )

    def _validate_and_store(self, indicator: dict[str, Any], report: PublishReport) -> bool:
        problems = validate_stix([indicator])
        if problems:
            report.refused["stix-invalid"] += 1
            log.debug("indicator %s rejected by stix2-validator: %s", indicator["id"], problems)
            return False
        outcome = self._store(indicator)
        if outcome is not AddOutcome.CREATED:
            report.refused["version-exists"] += 1
            return False
        return True

    def _store(self, obj: dict[str, Any]) -> AddOutcome:
        raw = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        version = obj.get("modified") or obj.get("created")
        outcome, _ = self.storage.add_object(NewObject(
            collection_id=self.collection_id, id=obj["id"], type=obj["type"],
            spec_version=obj.get("spec_version", "2.1"),
            version_us=to_micros(parse_timestamp(version)) if version else None, raw=raw,
            content_sha256=hashlib.sha256(canonical_json(obj)).hexdigest(), owner=None,
        ))
        return outcome


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
