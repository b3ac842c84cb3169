"""Build the fused indicators the hub publishes, the hub's identity and the extension definitions.

A fused indicator is a standard STIX 2.1 ``indicator`` (section 4.7). Its id is
UUIDv5 of its pattern (:func:`stix_mappings.ids.indicator_id`), so each round that
confirms an observable adds a new version of the same indicator (same id, later
``modified``) and an expired one is revoked by a last version with ``revoked: true``.
How the hub reached the decision travels in the property extension
:data:`FUSION_EXTENSION_ID` (STIX 2.1 section 7.3, ``extension_types:
["property-extension"]``), checked against ``schemas/fusion-details.json``.

Markings are the TLP 1.0 marking definitions that STIX 2.1 predefines (section
7.2.1.4) and that stix2 3.0 ships as ``stix2.TLP_WHITE`` ... ``stix2.TLP_RED``.
stix2 3.0 and stix2-validator 3.3 define no TLP 2.0 markings, and the validator's
interoperability profile lists only these four ids as TLP markings. So TLP 2.0
names such as CLEAR and AMBER+STRICT are not offered.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import stix2

from stix_mappings.errors import IndicatorInvalid, PatternRejected, TimestampInvalid, UnsupportedIndicator
from stix_mappings.ids import (
    FUSION_EXTENSION_ID,
    SUMMARY_EXTENSION_ID,
    hub_identity_id,
    indicator_id,
    site_identity_id,
)
from stix_mappings.patterns import build_pattern, canonical_kind, normalize_value, pattern_observable
from stix_mappings.schema_validation import fusion_details_errors
from stix_mappings.timestamps import format_timestamp, format_timestamp_stix2_any, parse_timestamp

__all__ = [
    "FUSION_EXTENSION_ID",
    "FusedIndicator",
    "MALICIOUS_SCORE_THRESHOLD",
    "PROTOCOL_OBJECTS_CREATED",
    "TLP_MARKING_IDS",
    "build_fused_indicator",
    "extension_definitions",
    "hub_identity",
    "read_fused_indicator",
    "site_identity",
    "tlp_name_of",
]

log = logging.getLogger(__name__)

# TLP 1.0 marking-definition ids from stix2 (STIX 2.1 section 7.2.1.4).
TLP_MARKING_IDS = {
    "white": stix2.TLP_WHITE.id,
    "green": stix2.TLP_GREEN.id,
    "amber": stix2.TLP_AMBER.id,
    "red": stix2.TLP_RED.id,
}

# From a fused score of 0.5 up, the sites' evidence more likely than not points at
# malicious activity. Below it, the indicator only reports an anomaly.
MALICIOUS_SCORE_THRESHOLD = 0.5

# created/modified of the objects that describe the protocol itself (identities and
# extension definitions): the day version 1.0.0 of both extensions was fixed. A
# constant keeps these objects byte-identical wherever they are built.
PROTOCOL_OBJECTS_CREATED = "2026-12-04T00:00:00.000Z"

PROTOCOL_VERSION = "1.0.0"

# Version 2.0.0 of the round summary replaced the single detector by one section per
# detector family. Its definition keeps its id, so a new version of the same object
# (STIX 2.1 section 3.6) announces the change to consumers that track it.
SUMMARY_PROTOCOL_VERSION = "2.0.0"
SUMMARY_PROTOCOL_MODIFIED = "2026-12-05T00:00:00.000Z"


def tlp_name_of(marking_id: str) -> str | None:
    """Return "WHITE", "GREEN", "AMBER" or "RED" for a TLP 1.0 marking id, else None."""
    for name, known_id in TLP_MARKING_IDS.items():
        if known_id == marking_id:
            return name.upper()
    return None


def _identity(identity_id: str, name: str, description: str) -> dict[str, Any]:
    return {
        "type": "identity",
        "spec_version": "2.1",
        "id": identity_id,
        # The validator's interoperability profile wants every producer identity to
        # name its own creator; a system identity creates itself.
        "created_by_ref": identity_id,
        "created": PROTOCOL_OBJECTS_CREATED,
        "modified": PROTOCOL_OBJECTS_CREATED,
        "name": name,
        "description": description,
        "identity_class": "system",
    }


def hub_identity(name: str) -> dict[str, Any]:
    """Return the STIX identity of the hub named ``name`` (id from ids.hub_identity_id)."""
    return _identity(hub_identity_id(name), name, "fti fusion hub")


def site_identity(site_id: str) -> dict[str, Any]:
    """Return the STIX identity of site ``site_id`` (id from ids.site_identity_id)."""
    return _identity(site_identity_id(site_id), site_id, "fti site")


def _extension_definition(
    definition_id: str,
    created_by_ref: str,
    *,
    name: str,
    description: str,
    schema_name: str,
    extension_type: str,
    version: str = PROTOCOL_VERSION,
    modified: str = PROTOCOL_OBJECTS_CREATED,
) -> dict[str, Any]:
    # Keys in stix2's property order, so a parsed copy serializes to the same text.
    return {
        "type": "extension-definition",
        "spec_version": "2.1",
        "id": definition_id,
        "created_by_ref": created_by_ref,
        "created": PROTOCOL_OBJECTS_CREATED,
        "modified": modified,
        "name": name,
        "description": description,
        "schema": (
            f"JSON Schema draft 2020-12 urn:fti:schema:{schema_name}:{version}, shipped in "
            f"the fti distribution as stix_mappings/schemas/{schema_name}.json and described in "
            "docs/protocol.md."
        ),
        "version": version,
        "extension_types": [extension_type],
    }


def extension_definitions(created_by_ref: str) -> list[dict[str, Any]]:
    """Return the extension-definition objects of the round summary and of the fusion details.

    Parameters
    ----------
    created_by_ref : str
        Identity id of the publisher, normally the hub's.

    Returns
    -------
    list of dict
        The "new-sdo" definition of ``x-fti-round-summary`` (SUMMARY_EXTENSION_ID),
        then the "property-extension" definition of the fusion details
        (FUSION_EXTENSION_ID), versions 2.0.0 and 1.0.0.
    """
    summary_definition = _extension_definition(
        SUMMARY_EXTENSION_ID,
        created_by_ref,
        name="fti round summary",
        description=(
            "New SDO x-fti-round-summary: one site's differentially private anomaly summary "
            "for one round (per detector family: noised score histogram and noised window "
            "count; evidence released by DP partition selection; privacy parameters), signed "
            "with Ed25519 over the RFC 8785 canonical JSON of the object without its signature "
            "property."
        ),
        schema_name="round-summary",
        extension_type="new-sdo",
        version=SUMMARY_PROTOCOL_VERSION,
        modified=SUMMARY_PROTOCOL_MODIFIED,
    )
    fusion_definition = _extension_definition(
        FUSION_EXTENSION_ID,
        created_by_ref,
        name="fti fusion details",
        description=(
            "Property extension on fused indicators: the fusion strategy, the fused score in "
            "[0, 1], the number of sites whose evidence corroborates the indicator and the "
            "start of the round that produced this version."
        ),
        schema_name="fusion-details",
        extension_type="property-extension",
    )
    return [summary_definition, fusion_definition]


def _identity_ref(hub: Mapping[str, Any] | str) -> str:
    identity_id = hub.get("id") if isinstance(hub, Mapping) else hub
    if not isinstance(identity_id, str) or not identity_id.startswith("identity--"):
        raise IndicatorInvalid("hub_identity", hub, "must be an identity object or its identity-- id")
    return identity_id


def _check_arguments(
    fused_score: float, corroborating_sites: int, tlp: str, revoked: bool
) -> None:
    if (
        not isinstance(fused_score, (int, float))
        or isinstance(fused_score, bool)
        or not math.isfinite(fused_score)
        or not 0 <= fused_score <= 1
    ):
        raise IndicatorInvalid("fused_score", fused_score, "must be a number in [0, 1]")
    if not isinstance(corroborating_sites, int) or isinstance(corroborating_sites, bool) or corroborating_sites < 1:
        raise IndicatorInvalid("corroborating_sites", corroborating_sites, "must be an integer >= 1")
    if not isinstance(tlp, str) or tlp.lower() not in TLP_MARKING_IDS:
        raise IndicatorInvalid("tlp", tlp, "must be one of white, green, amber, red (TLP 1.0 as in STIX 2.1)")
    if not isinstance(revoked, bool):
        raise IndicatorInvalid("revoked", revoked, "must be a bool")


def build_fused_indicator(
    *,
    observable_type: str,
    value: str,
    fused_score: float,
    corroborating_sites: int,
    strategy: str,
    round_start: datetime,
    valid_from: datetime,
    valid_until: datetime,
    created: datetime,
    modified: datetime,
    hub_identity: Mapping[str, Any] | str,
    tlp: str = "amber",
    revoked: bool = False,
    lifetime: int = 0,
) -> dict[str, Any]:
    """Build one version of a fused indicator.

    Parameters
    ----------
    observable_type : str
        Kind of the observable, as accepted by patterns.build_pattern
        ("ipv4-addr", "ipv6-addr", "domain-name", "url", ...).
    value : str
        The observable value.
    fused_score : float
        Fused probability in [0, 1]. ``confidence`` is ``round(100 * fused_score)``
        and ``indicator_types`` is ["malicious-activity"] from 0.5 up, else
        ["anomalous-activity"].
    corroborating_sites : int
        Number of sites (>= 1) whose evidence supports the indicator.
    strategy : str
        Fusion strategy name, 1 to 64 of [a-z0-9_-].
    round_start : datetime
        Start of the round whose fusion produced this version.
    valid_from, valid_until : datetime
        Validity window; valid_until must be later than valid_from.
    created, modified : datetime
        ``created`` of the first version and ``modified`` of this one
        (modified >= created; every new version needs a later modified).
    hub_identity : mapping or str
        The hub's identity object (from :func:`hub_identity`) or its id.
    tlp : str, default "amber"
        "white", "green", "amber" or "red".
    revoked : bool, default False
        True for the version that withdraws the indicator.
    lifetime : int, default 0
        Which lifetime of the observable's indicator this is; see ``ids.indicator_id``.

    Returns
    -------
    dict
        The indicator. It parses with ``stix2.parse(obj, allow_custom=True)`` and
        serializes back to the same JSON.

    Raises
    ------
    PatternRejected
        If the value does not fit the observable type.
    IndicatorInvalid
        If another argument is out of range.
    TimestampInvalid
        If a datetime is naive.
    """
    _check_arguments(fused_score, corroborating_sites, tlp, revoked)
    created_by_ref = _identity_ref(hub_identity)
    pattern = build_pattern(observable_type, value)
    kind = canonical_kind(observable_type)
    canonical_value = normalize_value(observable_type, value)

    created_text = format_timestamp(created, "created")
    modified_text = format_timestamp(modified, "modified")
    if modified_text < created_text:
        raise IndicatorInvalid("modified", modified_text, f"must not be before created ({created_text})")
    # valid_from and valid_until are written as stix2 writes them (no trailing zeros),
    # so that stix2.parse followed by serialize returns the same text.
    valid_from_text = format_timestamp_stix2_any(valid_from, "valid_from")
    valid_until_text = format_timestamp_stix2_any(valid_until, "valid_until")
    if format_timestamp(valid_until, "valid_until") <= format_timestamp(valid_from, "valid_from"):
        raise IndicatorInvalid("valid_until", valid_until_text, f"must be after valid_from ({valid_from_text})")
    round_start_text = format_timestamp(round_start, "round_start")

    details = {
        "extension_type": "property-extension",
        "strategy": strategy,
        "fused_score": float(fused_score),
        "corroborating_sites": corroborating_sites,
        "round_start": round_start_text,
    }
    if lifetime:
        details["lifetime"] = lifetime
    problems = fusion_details_errors(details)
    if problems:
        raise IndicatorInvalid("fusion details", details, "; ".join(problems))

    malicious = fused_score >= MALICIOUS_SCORE_THRESHOLD
    site_word = "site" if corroborating_sites == 1 else "sites"
    description = (
        f"Fused by fti from the evidence of {corroborating_sites} {site_word} in the round "
        f"starting {round_start_text}: {strategy} score {fused_score:.3f}."
    )

    # Keys follow stix2's property order for Indicator, so the serialized text of a
    # parsed copy equals json.dumps of this dict.
    indicator: dict[str, Any] = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": indicator_id(pattern, lifetime),
        "created_by_ref": created_by_ref,
        "created": created_text,
        "modified": modified_text,
        "name": f"fti fused {kind} {canonical_value}",
        "description": description,
        "indicator_types": ["malicious-activity" if malicious else "anomalous-activity"],
        "pattern": pattern,
        "pattern_type": "stix",
        "pattern_version": "2.1",
        "valid_from": valid_from_text,
        "valid_until": valid_until_text,
    }
    if revoked:
        indicator["revoked"] = True
    indicator["confidence"] = round(100 * fused_score)
    indicator["object_marking_refs"] = [TLP_MARKING_IDS[tlp.lower()]]
    indicator["extensions"] = {FUSION_EXTENSION_ID: details}
    return indicator


@dataclass(frozen=True, slots=True)
class FusedIndicator:
    """The fields of a fused indicator that SIEM mappings need, with typed values."""

    id: str
    kind: str
    value: str
    pattern: str
    name: str | None
    description: str | None
    indicator_types: tuple[str, ...]
    confidence: int | None
    created: datetime
    modified: datetime
    valid_from: datetime
    valid_until: datetime | None
    revoked: bool
    tlp: str | None
    created_by_ref: str | None
    strategy: str | None
    fused_score: float | None
    corroborating_sites: int | None
    round_start: datetime | None


def read_fused_indicator(indicator: Mapping[str, Any]) -> FusedIndicator:
    """Read an indicator whose pattern has one of the forms patterns.build_pattern writes.

    The fusion-details extension is optional, so indicators from other producers
    with such simple patterns can be mapped too; its fields are None then.

    Raises
    ------
    UnsupportedIndicator
        If the object is not a STIX 2.1 indicator with a supported pattern and valid
        timestamps.
    """
    object_id = indicator.get("id", "") if isinstance(indicator, Mapping) else ""
    object_id = object_id if isinstance(object_id, str) else ""
    if not isinstance(indicator, Mapping) or indicator.get("type") != "indicator":
        raise UnsupportedIndicator(object_id, "the object is not an indicator")
    if indicator.get("pattern_type") != "stix" or not isinstance(indicator.get("pattern"), str):
        raise UnsupportedIndicator(object_id, "only indicators with a STIX pattern can be mapped")
    try:
        kind, value = pattern_observable(indicator["pattern"])
    except PatternRejected as err:
        raise UnsupportedIndicator(object_id, f"pattern {indicator['pattern']!r}: {err.reason}") from err

    try:
        created = parse_timestamp(indicator.get("created"), "created")
        modified = parse_timestamp(indicator.get("modified"), "modified")
        valid_from = parse_timestamp(indicator.get("valid_from"), "valid_from")
        valid_until = (
            parse_timestamp(indicator["valid_until"], "valid_until") if "valid_until" in indicator else None
        )
        extensions = indicator.get("extensions") or {}
        details = extensions.get(FUSION_EXTENSION_ID) or {}
        round_start = (
            parse_timestamp(details["round_start"], "round_start") if "round_start" in details else None
        )
    except TimestampInvalid as err:
        raise UnsupportedIndicator(object_id, str(err)) from err

    # With several TLP markings the most restrictive one applies.
    names = [tlp_name_of(marking_id) for marking_id in indicator.get("object_marking_refs", [])]
    levels = [name for name in ("RED", "AMBER", "GREEN", "WHITE") if name in names]
    tlp = levels[0] if levels else None
    confidence = indicator.get("confidence")
    fused_score = details.get("fused_score")
    return FusedIndicator(
        id=object_id,
        kind=kind,
        value=value,
        pattern=indicator["pattern"],
        name=indicator.get("name"),
        description=indicator.get("description"),
        indicator_types=tuple(indicator.get("indicator_types", ())),
        confidence=confidence if isinstance(confidence, int) and not isinstance(confidence, bool) else None,
        created=created,
        modified=modified,
        valid_from=valid_from,
        valid_until=valid_until,
        revoked=indicator.get("revoked") is True,
        tlp=tlp,
        created_by_ref=indicator.get("created_by_ref"),
        strategy=details.get("strategy"),
        fused_score=float(fused_score) if isinstance(fused_score, (int, float)) else None,
        corroborating_sites=details.get("corroborating_sites"),
        round_start=round_start,
    )
