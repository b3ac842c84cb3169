"""Plain variant of the evaluation: the hub of ``fti hub serve`` in this process.

``PlainFederation`` builds a ``fusion_hub.server.HubServer`` on a temporary SQLite file and
never starts its HTTP server. The sites' signed summaries and STIX opinions enter through the
hub's own ``Intake.add_objects``, the code behind the TAXII Add Objects endpoint, which checks
signature, schema and round, stores the summary and applies feedback to trust
(``fusion_hub.feedback``) and to the ensemble. Rounds close with ``RoundManager``: at quorum
when every site sent, otherwise when the deadline passes, as the server's ticker closes them.
The ``Publisher`` then stores, versions and revokes the indicators, and the evaluation reads
them back from the ``fused-indicators`` collection as a consumer would.

The hub runs on an injected clock, so every timestamp, id and noise draw repeats for a seed:
sites post when their round ends, and the hub closes a round ``DEADLINE_SECONDS`` later.
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from agent.consumer import observables_in_pattern
from fusion_hub.config import (
    AuthSettings,
    FusionSettings,
    HubConfig,
    RoundSettings,
    ServerSettings,
    StorageSettings,
)
from fusion_hub.envelope import RawObject
from fusion_hub.publisher import FUSED_COLLECTION
from fusion_hub.registry import Principal
from fusion_hub.server import HubServer
from fusion_hub.storage import ObjectQuery
from fusion_hub.timeutil import parse_timestamp, to_micros
from privacy.random import seeded_random
from stix_mappings.ids import collection_id, site_identity_id
from stix_mappings.timestamps import format_timestamp

log = logging.getLogger(__name__)

# Hub time from a round's end (when the sites post) to its close by deadline.
DEADLINE_SECONDS = 60
# Registry passwords protect nothing here, so the minimal argon2 cost keeps enrolment fast.
_EVAL_AUTH = AuthSettings(argon2_time_cost=1, argon2_memory_cost_kib=1024, argon2_parallelism=1,
                          credential_cache_seconds=0.0)
# Namespace of the evaluation's opinion ids, so that they repeat for a seed.
_OPINION_NAMESPACE = uuid.UUID("6f1d1c0e-5a43-4b8f-9a55-2f6f1e0c7d21")
_PAGE_SIZE = 1000


class EvaluationHubError(RuntimeError):
    """The in-process hub rejected an object that the evaluation built."""


@dataclass(frozen=True)
class Indicator:
    """One indicator version the hub published: its id, observable value and fused score."""

    id: str
    value: str
    fused_score: float


@dataclass
class ClosedRound:
    """Indicators published when a round closed, and every indicator valid at that time."""

    published: list[Indicator]
    valid: dict[str, float]


@dataclass
class _ActiveIndicator:
    valid_until_us: int
    fused_score: float


@dataclass
class _Reader:
    """A consumer's position in ``fused-indicators`` and the indicators it holds."""

    cursor: tuple[int, str] | None = None
    active: dict[str, _ActiveIndicator] = field(default_factory=dict)


class PlainFederation:
    """A plain-mode hub in this process and the sites that post to it; a context manager.

    Parameters
    ----------
    site_ids : iterable of str
        Every site of the scenario; all are enrolled, so the quorum is all of them.
    fusion : FusionSettings
        The hub's strategy, lookback, thresholds, indicator lifetime and trust weighting.
    round_seconds : int
        Round length; round starts must be multiples of it.
    seed : int
        Seed of the hub's fusion noise (the ``corroboration`` strategy).

    Attributes
    ----------
    now : datetime
        Hub time. Set it to the round's end before the sites post, and ``close_round``
        moves it to the round's deadline.
    """

    def __init__(self, site_ids: Iterable[str], *, fusion: FusionSettings, round_seconds: int,
                 seed: int) -> None:
        self.site_ids = tuple(sorted(site_ids))
        self.fusion = fusion
        self.round_seconds = round_seconds
        self.seed = seed
        self.now = datetime(1970, 1, 1, tzinfo=timezone.utc)
        self._work: tempfile.TemporaryDirectory[str] | None = None
        self._hub: HubServer | None = None
        self._principals: dict[str, Principal] = {}
        self._reader = _Reader()

    def __enter__(self) -> PlainFederation:
        self._work = tempfile.TemporaryDirectory(prefix="fti-eval-hub-")
        config = HubConfig(
            hub=ServerSettings(name="fti-eval-hub", host="127.0.0.1", port=0),
            storage=StorageSettings(path=Path(self._work.name) / "hub.sqlite3"),
            auth=_EVAL_AUTH,
            rounds=RoundSettings(round_seconds=self.round_seconds, quorum_sites=len(self.site_ids),
                                 deadline_seconds=DEADLINE_SECONDS, retention_days=100_000),
            fusion=self.fusion,
        )
        try:
            self._hub = HubServer(config, clock=lambda: self.now, rng=seeded_random(self.seed))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._hub is not None:
            self._hub.stop()
            self._hub = None
        if self._work is not None:
            self._work.cleanup()
            self._work = None

    @property
    def hub(self) -> HubServer:
        """The running hub; raises RuntimeError outside the ``with`` block."""
        if self._hub is None:
            raise RuntimeError("the evaluation hub is not running; use PlainFederation in a with block")
        return self._hub

    def enroll(self, site_id: str, public_key_b64: str) -> None:
        """Enrol a site with its Ed25519 public key and keep its credential for posting."""
        password = self.hub.registry.enroll_site(site_id, public_key_b64)
        result = self.hub.registry.authenticate(site_id, password)
        if result.principal is None:
            raise EvaluationHubError(f"site {site_id} cannot log in after enrolment: {result.failure}")
        self._principals[site_id] = result.principal

    def post(self, site_id: str, collection: str, objects: list[dict[str, Any]]) -> int:
        """Post objects as ``site_id`` through the hub's intake; return the bytes of the envelope.

        Raises
        ------
        EvaluationHubError
            If the hub rejects any object, with the hub's reason.
        """
        if not objects:
            return 0
        texts = [json.dumps(obj, ensure_ascii=False, separators=(",", ":")) for obj in objects]
        raws = [RawObject(text, obj) for text, obj in zip(texts, objects)]
        status = self.hub.intake.add_objects(collection, self._principals[site_id], raws)
        if status["failure_count"]:
            failure = status["failures"][0]
            raise EvaluationHubError(f"the hub rejected {failure['id']} from site {site_id} in "
                                     f"{collection}: {failure.get('message')}")
        return len('{"objects":[]}') + len(",".join(texts).encode("utf-8"))

    def close_round(self, round_start: datetime) -> ClosedRound:
        """Close the round at its deadline, as the server's ticker does; read what it published.

        A round that every site contributed to closed at quorum already. ``valid`` contains
        the indicators whose latest version is unrevoked and valid at the deadline.
        """
        self.now = round_start + timedelta(seconds=self.round_seconds + DEADLINE_SECONDS)
        self.hub.rounds.close_due_rounds(self.now)
        published = self._read_new_versions()
        now_us = to_micros(self.now)
        valid = {value: item.fused_score for value, item in sorted(self._reader.active.items())
                 if item.valid_until_us > now_us}
        return ClosedRound(published=published, valid=valid)

    def trust_weights(self) -> dict[str, float]:
        """Return the hub's trust weight of every enrolled site."""
        return self.hub.registry.trust_weights()

    def _read_new_versions(self) -> list[Indicator]:
        """Page through the indicator versions added since the last call, as a consumer."""
        storage = self.hub.storage
        published = []
        while True:
            page = storage.query_objects(ObjectQuery(collection_id=collection_id(FUSED_COLLECTION),
                                                     limit=_PAGE_SIZE, types=("indicator",),
                                                     after=self._reader.cursor))
            for stored in page.objects:
                indicator = json.loads(stored.raw)
                published.extend(self._apply_version(indicator))
            if page.objects:
                self._reader.cursor = (page.objects[-1].date_added_us, page.objects[-1].id)
            if not page.more or not page.objects:
                return published

    def _apply_version(self, indicator: Mapping[str, Any]) -> list[Indicator]:
        values = observables_in_pattern(indicator["pattern"])
        if indicator.get("revoked"):
            for value in values:
                self._reader.active.pop(value, None)
            return []
        score = fused_score_of(indicator)
        valid_until_us = to_micros(parse_timestamp(indicator["valid_until"]))
        for value in values:
            self._reader.active[value] = _ActiveIndicator(valid_until_us, score)
        return [Indicator(indicator["id"], value, score) for value in values]


def fused_score_of(indicator: Mapping[str, Any]) -> float:
    """Return the ``fused_score`` of an indicator's fti fusion extension.

    Raises
    ------
    ValueError
        If the indicator carries no fusion extension.
    """
    for extension in (indicator.get("extensions") or {}).values():
        if isinstance(extension, Mapping) and "fused_score" in extension:
            return float(extension["fused_score"])
    raise ValueError(f"indicator {indicator.get('id')!r} has no fusion extension with a fused_score")


def build_opinion(site_id: str, indicator_id: str, *, agree: bool, created: datetime) -> dict[str, Any]:
    """Return a site's STIX 2.1 opinion on a fused indicator, with an id that repeats for a seed."""
    timestamp = format_timestamp(created)
    return {
        "type": "opinion",
        "spec_version": "2.1",
        "id": "opinion--" + str(uuid.uuid5(_OPINION_NAMESPACE, f"{site_id}|{indicator_id}|{timestamp}")),
        "created": timestamp,
        "modified": timestamp,
        "created_by_ref": site_identity_id(site_id),
        "opinion": "agree" if agree else "disagree",
        "object_refs": [indicator_id],
    }
