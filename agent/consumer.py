"""Read fused indicators back from the hub and raise local alerts.

The hub never learns which local host contacted an observable; only the agent does, from its
own contact table. When a fused indicator names an observable that a local entity contacted,
the agent writes one alert (a JSON line) per entity and indicator version: this is where the
federation's decision becomes actionable at the site.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import requests
from stix2patterns.pattern import Pattern
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import Collection, as_pages

from agent.config import HubSection
from agent.errors import DeliveryError
from agent.state import AgentState
from agent.taxii_client import last_date_added, open_collection
from stix_mappings.timestamps import parse_timestamp

log = logging.getLogger(__name__)

_CHECKPOINT = "fused_indicators_added_after"
# Object types and properties whose values the contact table can match.
_MATCHABLE = {("ipv4-addr", "value"), ("ipv6-addr", "value"), ("domain-name", "value")}


@dataclass(frozen=True)
class IndicatorMatch:
    indicator_id: str
    modified: str
    observable: str
    confidence: int
    corroborating_sites: int | None
    fused_score: float | None


def observables_in_pattern(pattern: str) -> list[str]:
    """Return the literal values a STIX pattern compares for equality on matchable properties."""
    comparisons = Pattern(pattern).inspect().comparisons
    values = []
    for object_type, expressions in comparisons.items():
        for path, operator, literal in expressions:
            if (object_type, ".".join(map(str, path))) in _MATCHABLE and operator == "=":
                values.append(_unquote(literal))
    return values


def _unquote(literal: str) -> str:
    text = literal[1:-1] if literal.startswith("'") and literal.endswith("'") else literal
    return text.replace("\\'", "'").replace("\\\\", "\\")


def _fusion_details(indicator: dict) -> dict:
    for extension in (indicator.get("extensions") or {}).values():
        if isinstance(extension, dict) and "fused_score" in extension:
            return extension
    return {}


class FusedIndicatorConsumer:
    """Poll the fused-indicator collection from a checkpoint and write local alerts."""

    def __init__(self, hub: HubSection, password: str, state: AgentState, *, site_id: str, alerts_path: Path) -> None:
        self.hub, self._password, self.state = hub, password, state
        self.site_id, self.alerts_path = site_id, alerts_path
        self._warned_no_header = False

    def poll(self) -> int:
        """Fetch indicators added since the last poll; return the number of alerts written."""
        collection = open_collection(self.hub, self._password, self.hub.fused_collection)
        alerts = 0
        newest = self.state.checkpoint(_CHECKPOINT)
        try:
            for envelope in self._pages(collection, newest):
                for indicator in envelope.get("objects", []):
                    alerts += self._handle(indicator)
                newest = self._last_added(envelope, newest, last_date_added(collection))
        except (requests.RequestException, TAXIIServiceException, ValueError) as err:
            raise DeliveryError(collection.url, f"{type(err).__name__}: {err}", transient=True) from err
        if newest:
            self.state.set_checkpoint(_CHECKPOINT, newest)
        log.info("site %s: fused-indicator poll wrote %d alerts", self.site_id, alerts)
        return alerts

    def _pages(self, collection: Collection, added_after: str | None) -> Iterator[dict]:
        filters = {"added_after": added_after} if added_after else {}
        yield from as_pages(collection.get_objects, per_request=500, **filters)

    def _last_added(self, envelope: dict, current: str | None, header: str | None) -> str | None:
        """Return the checkpoint after one page: the newest date_added read so far.

        TAXII filters ``added_after`` on the date the server added an object, and only the
        page's ``X-TAXII-Date-Added-Last`` header contains that date. Without that header (a server that
        does not follow TAXII 2.1 here), the objects' ``modified`` stands in. It is the
        publication time of hub versions, but a publisher's clock ahead of the server's
        could then skip objects, so that case is logged.
        """
        if not envelope.get("objects"):
            return current
        if header:
            stamp = header
        else:
            if not self._warned_no_header:
                log.warning("site %s: the fused-indicator collection sent no X-TAXII-Date-Added-Last header, "
                            "so the checkpoint uses the objects' modified times instead", self.site_id)
                self._warned_no_header = True
            stamp = max(o["modified"] for o in envelope["objects"] if isinstance(o.get("modified"), str))
        if current is None or _instant(stamp) > _instant(current):
            return stamp
        return current

    def _handle(self, indicator: dict) -> int:
        if indicator.get("type") != "indicator" or indicator.get("revoked"):
            return 0
        try:
            values = observables_in_pattern(indicator["pattern"])
        except Exception as err:  # stix2patterns raises several parser-specific types
            log.warning("site %s: skipping indicator %s with unreadable pattern: %s",
                        self.site_id, indicator.get("id"), err)
            return 0
        details = _fusion_details(indicator)
        written = 0
        for value in values:
            match = IndicatorMatch(
                indicator_id=indicator["id"],
                modified=indicator["modified"],
                observable=value,
                confidence=int(indicator.get("confidence", 0)),
                corroborating_sites=details.get("corroborating_sites"),
                fused_score=details.get("fused_score"),
            )
            written += self._alert_on(match)
        return written

    def _alert_on(self, match: IndicatorMatch) -> int:
        # One alert per entity and indicator version, however many rounds it was seen in.
        by_entity: dict[str, list] = {}
        for contact in self.state.contacts_for(match.observable):
            by_entity.setdefault(contact.entity, []).append(contact)
        written = 0
        for entity, contacts in sorted(by_entity.items()):
            if not self.state.remember_alert(match.indicator_id, match.modified, entity):
                continue
            alert = {
                "@timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "site": self.site_id,
                "entity": entity,
                "observable": match.observable,
                "indicator_id": match.indicator_id,
                "indicator_version": match.modified,
                "confidence": match.confidence,
                "fused_score": match.fused_score,
                "corroborating_sites": match.corroborating_sites,
                "connections": sum(c.connections for c in contacts),
                "local_max_score": round(max(c.max_score for c in contacts), 4),
                "first_seen": _iso(min(c.first_seen for c in contacts)),
                "last_seen": _iso(max(c.last_seen for c in contacts)),
            }
            self._append(alert)
            written += 1
        return written

    def _append(self, alert: dict) -> None:
        self.alerts_path.parent.mkdir(parents=True, exist_ok=True)
        with self.alerts_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(alert, sort_keys=True) + "\n")


def _iso(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _instant(stamp: str) -> datetime:
    """Parse a TAXII timestamp. An invalid one raises ValueError, which the poll treats as transient."""
    return parse_timestamp(stamp)

