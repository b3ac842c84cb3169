"""Map a fused STIX indicator to a Splunk HTTP Event Collector (HEC) event.

An HEC event is a JSON object with ``time`` (epoch seconds), ``host``, ``source``,
``sourcetype``, an optional ``index``, the ``event`` body and optional indexed
``fields``. HEC rejects a blank ``event`` ("Event field cannot be blank", code 13)
and nested objects under ``fields`` ("Error in handling indexed fields", code 15),
so :func:`indicator_to_hec_event` writes ``fields`` flat with string values only,
and :func:`hec_event_problems` lets a sender check any event before it posts a
batch.

The ``event`` body uses the field names of Splunk Enterprise Security's threat
intelligence collections: ``ip`` (ip_intel), ``domain`` (domain_intel), ``url``
(http_intel), ``file_hash`` and ``file_name`` (file_intel). It adds ``threat_key``,
``description`` and ``weight``, so a saved search can feed the events into those
collections without renaming fields.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from stix_mappings.ecs import confidence_level
from stix_mappings.indicator import FusedIndicator, read_fused_indicator
from stix_mappings.patterns import split_file_path
from stix_mappings.timestamps import format_timestamp

__all__ = ["HEC_SOURCE", "HEC_SOURCETYPE", "THREAT_KEY", "hec_event_problems", "indicator_to_hec_event"]

log = logging.getLogger(__name__)

HEC_SOURCE = "fti"
HEC_SOURCETYPE = "fti:indicator"
# Splunk ES groups intel by threat_key; one key keeps every fti indicator together.
THREAT_KEY = "fti"

# weight scales the risk of a threat match in Splunk ES; 1 to 3 follows the ECS
# confidence words so that both SIEMs rank an indicator alike.
_WEIGHTS = {"Not Specified": 1, "None": 1, "Low": 1, "Medium": 2, "High": 3}


# Kinds that no ES threat intelligence collection contains. certificate_intel keys on issuer,
# subject and serial, not on fingerprints, and no collection has TLS client fingerprints.
# Such events carry the value under the kind's own name and no threat_collection, so that
# a JA3 hash is never matched as a file hash.
_NO_ES_COLLECTION = {"ja3": "ja3", "ja3s": "ja3s", "x509-sha1": "certificate_sha1",
                     "x509-sha256": "certificate_sha256"}


def _collection_fields(fused: FusedIndicator) -> tuple[str | None, str, dict[str, str]]:
    """Return (threat_collection or None, threat_match_field, observable fields) for the event."""
    if fused.kind in ("ipv4-addr", "ipv6-addr"):
        return "ip_intel", "ip", {"ip": fused.value}
    if fused.kind == "domain-name":
        return "domain_intel", "domain", {"domain": fused.value}
    if fused.kind == "url":
        return "http_intel", "url", {"url": fused.value}
    if fused.kind == "file_name":
        return "file_intel", "file_name", {"file_name": fused.value}
    if fused.kind == "file_path":
        directory, name = split_file_path(fused.value)
        return "file_intel", "file_name", {"file_name": name, "file_path": directory}
    if fused.kind in _NO_ES_COLLECTION:
        field = _NO_ES_COLLECTION[fused.kind]
        return None, field, {field: fused.value}
    return "file_intel", "file_hash", {"file_hash": fused.value}


def indicator_to_hec_event(indicator: dict[str, Any], *, index: str | None, host: str) -> dict[str, Any]:
    """Return the HEC event for one version of a fused indicator.

    Parameters
    ----------
    indicator : dict
        A STIX 2.1 indicator as built by indicator.build_fused_indicator.
    index : str or None
        Splunk index; None leaves ``index`` out so the token's default index applies.
    host : str
        Value of ``host``, normally the hub's host name.

    Returns
    -------
    dict
        ``time`` is the version's ``modified`` in epoch seconds with millisecond
        decimals, so one version always gets the same ``time``. ``fields`` is flat
        and contains strings only.

    Raises
    ------
    UnsupportedIndicator
        If the object is not an indicator with a supported pattern.
    """
    fused = read_fused_indicator(indicator)
    collection, match_field, observable = _collection_fields(fused)
    level = confidence_level(fused.confidence)

    body: dict[str, Any] = {
        "threat_key": THREAT_KEY,
        "threat_collection": collection,
        "threat_match_field": match_field,
        "threat_match_value": fused.value,
        **observable,
        "description": fused.description or fused.name or fused.pattern,
        "confidence": fused.confidence,
        "confidence_level": level,
        "weight": _WEIGHTS[level],
        "indicator_id": fused.id,
        "indicator_types": list(fused.indicator_types),
        "observable_type": fused.kind,
        "pattern": fused.pattern,
        "modified": format_timestamp(fused.modified),
        "valid_from": format_timestamp(fused.valid_from),
        "valid_until": format_timestamp(fused.valid_until) if fused.valid_until else None,
        "revoked": fused.revoked,
        "tlp": fused.tlp,
    }
    if fused.strategy is not None:
        body["fusion_strategy"] = fused.strategy
        body["fused_score"] = fused.fused_score
        body["corroborating_sites"] = fused.corroborating_sites
        body["round_start"] = format_timestamp(fused.round_start) if fused.round_start else None

    # Indexed fields: flat, strings only, and only what searches filter on.
    fields = {
        "indicator_id": fused.id,
        "observable_type": fused.kind,
        "revoked": "true" if fused.revoked else "false",
    }
    if collection is not None:
        fields["threat_collection"] = collection
    if fused.tlp is not None:
        fields["tlp"] = fused.tlp

    event: dict[str, Any] = {
        "time": round(fused.modified.timestamp(), 3),
        "host": host,
        "source": HEC_SOURCE,
        "sourcetype": HEC_SOURCETYPE,
    }
    if index is not None:
        event["index"] = index
    event["event"] = body
    event["fields"] = fields
    return event


def hec_event_problems(event: Mapping[str, Any]) -> list[str]:
    """Return the reasons HEC would reject ``event`` with a 400, or an empty list.

    Checks that ``event`` is present and not blank, that ``time`` (if present) is
    a number, that ``fields`` is an object whose values are strings, numbers or
    flat arrays of them, and that the whole event is JSON-serializable.
    """
    problems = []
    body = event.get("event")
    if body is None or body == "" or body == {} or body == []:
        problems.append("event must not be blank (HEC code 13)")
    time_value = event.get("time")
    if time_value is not None and (isinstance(time_value, bool) or not isinstance(time_value, (int, float))):
        problems.append(f"time must be epoch seconds as a number; got {time_value!r}")

    fields = event.get("fields")
    if fields is not None and not isinstance(fields, Mapping):
        problems.append(f"fields must be an object; got {type(fields).__name__}")
    elif fields is not None:
        for name, value in fields.items():
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in items):
                problems.append(
                    f"fields.{name} must be a string, a number or a flat array of them (HEC code 15); "
                    f"got {json.dumps(value, default=str)}"
                )
    try:
        json.dumps(event, allow_nan=False)
    except (TypeError, ValueError) as err:
        problems.append(f"event is not serializable as JSON: {err}")
    return problems
