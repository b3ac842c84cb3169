"""Map a fused STIX indicator to an Elastic Common Schema (ECS 8.x) threat-indicator document.

Field names and allowed values follow the ECS threat field set (``threat.*``, ECS
8.x): ``threat.indicator.type`` takes STIX observable type names ("ipv4-addr",
"domain-name", "url", "file"...), ``threat.indicator.confidence`` takes "Not
Specified", "None", "Low", "Medium" or "High", and ``threat.indicator.marking.tlp``
takes the upper-case TLP names. The ``url`` field set is reused under
``threat.indicator.url``, which is also where ECS puts a bare domain
(``threat.indicator.url.domain``). Elastic's threat-intel detection rules select
documents with ``event.kind: enrichment``, ``event.category: threat``,
``event.type: indicator`` and an ``event.module`` matching ``ti_*``.

Values that ECS has no field for (fusion strategy, fused score, numeric STIX
confidence, validity window) go under ``fti.*``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from stix_mappings.indicator import FusedIndicator, read_fused_indicator
from stix_mappings.patterns import split_file_path
from stix_mappings.timestamps import format_timestamp

__all__ = ["ECS_VERSION", "confidence_level", "ecs_document_id", "indicator_to_ecs"]

log = logging.getLogger(__name__)

# The ECS release whose field definitions this mapping was checked against.
ECS_VERSION = "8.11.0"


def confidence_level(confidence: int | None) -> str:
    """Return the ECS confidence word for a STIX confidence of 0 to 100.

    ECS defines ``threat.indicator.confidence`` by the None/Low/Med/High scale of STIX 2.1
    Appendix A, so its ranges apply: 0 is "None", 1-29 "Low", 30-69 "Medium" and 70-100
    "High". None gives "Not Specified".
    """
    if confidence is None:
        return "Not Specified"
    if confidence == 0:
        return "None"
    if confidence < 30:
        return "Low"
    if confidence < 70:
        return "Medium"
    return "High"


def ecs_document_id(indicator: dict[str, Any]) -> str:
    """Return a stable Elasticsearch ``_id`` for one indicator version: ``<id>@<modified>``.

    Re-sending a version yields the same ``_id``, so a bulk ``create`` of a
    duplicate fails with 409 instead of indexing it twice.
    """
    fused = read_fused_indicator(indicator)
    return f"{fused.id}@{format_timestamp(fused.modified)}"


def _observable_fields(fused: FusedIndicator) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (threat.indicator fields, fti.indicator fields) for the pattern's observable."""
    if fused.kind in ("ipv4-addr", "ipv6-addr"):
        # The Elasticsearch ip type stores single addresses only, so a network goes to fti.*.
        if "/" in fused.value:
            return {"type": fused.kind}, {"network": fused.value}
        return {"type": fused.kind, "ip": fused.value}, {}
    if fused.kind == "domain-name":
        return {"type": "domain-name", "url": {"domain": fused.value}}, {}
    if fused.kind == "url":
        parts = urlsplit(fused.value)
        url: dict[str, Any] = {"full": fused.value, "original": fused.value, "scheme": parts.scheme.lower()}
        if parts.hostname:
            url["domain"] = parts.hostname
        if parts.port is not None:
            url["port"] = parts.port
        if parts.path:
            url["path"] = parts.path
        if parts.query:
            url["query"] = parts.query
        return {"type": "url", "url": url}, {}
    if fused.kind == "file_name":
        return {"type": "file", "file": {"name": fused.value}}, {}
    if fused.kind == "file_path":
        directory, name = split_file_path(fused.value)
        return {"type": "file", "file": {"path": fused.value, "name": name, "directory": directory}}, {}
    if fused.kind in ("x509-sha1", "x509-sha256"):
        # ECS's x509 field set has no fingerprint. Events carry it in tls.server.hash.*, so a
        # rule can match that field against fti.indicator.certificate_hash.*.
        return {"type": "x509-certificate"}, {"certificate_hash": {fused.kind.removeprefix("x509-"): fused.value}}
    if fused.kind in ("ja3", "ja3s"):
        # No ECS indicator field contains a TLS fingerprint. Events carry it in tls.client.ja3
        # and tls.server.ja3s. "software" is the indicator type closest to what a JA3 identifies.
        return {"type": "software"}, {fused.kind: fused.value}
    return {"type": "file", "file": {"hash": {fused.kind: fused.value}}}, {}


def indicator_to_ecs(indicator: dict[str, Any], *, provider: str = "fti") -> dict[str, Any]:
    """Return the ECS document for one version of a fused indicator.

    Parameters
    ----------
    indicator : dict
        A STIX 2.1 indicator as built by indicator.build_fused_indicator, or any
        indicator whose pattern has one of the forms patterns.build_pattern writes.
    provider : str, default "fti"
        ``threat.indicator.provider``; the hub passes its name.

    Returns
    -------
    dict
        A nested ECS document. ``@timestamp`` and ``modified_at`` are the version's
        ``modified``, ``first_seen`` is ``valid_from`` and ``last_seen`` is
        ``modified``, the last time the hub reported on the indicator. All dates
        are UTC with milliseconds.

    Raises
    ------
    UnsupportedIndicator
        If the object is not an indicator with a supported pattern.
    """
    fused = read_fused_indicator(indicator)
    observable, extra = _observable_fields(fused)
    modified = format_timestamp(fused.modified)

    threat_indicator: dict[str, Any] = {
        **observable,
        "confidence": confidence_level(fused.confidence),
        "first_seen": format_timestamp(fused.valid_from),
        "last_seen": modified,
        "modified_at": modified,
        "provider": provider,
    }
    if fused.tlp is not None:
        threat_indicator["marking"] = {"tlp": fused.tlp}
    if fused.description:
        threat_indicator["description"] = fused.description

    fti_indicator: dict[str, Any] = {
        "id": fused.id,
        "pattern": fused.pattern,
        "types": list(fused.indicator_types),
        "valid_from": format_timestamp(fused.valid_from),
        "revoked": fused.revoked,
        **extra,
    }
    if fused.confidence is not None:
        fti_indicator["confidence"] = fused.confidence
    if fused.valid_until is not None:
        fti_indicator["valid_until"] = format_timestamp(fused.valid_until)
    if fused.created_by_ref:
        fti_indicator["created_by_ref"] = fused.created_by_ref
    fti: dict[str, Any] = {"indicator": fti_indicator}
    if fused.strategy is not None:
        fti["fusion"] = {
            "strategy": fused.strategy,
            "fused_score": fused.fused_score,
            "corroborating_sites": fused.corroborating_sites,
            "round_start": format_timestamp(fused.round_start) if fused.round_start else None,
        }

    tags = ["fti", *fused.indicator_types]
    if fused.revoked:
        tags.append("revoked")
    return {
        "@timestamp": modified,
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "enrichment",
            "category": ["threat"],
            "type": ["indicator"],
            "module": "ti_fti",
            "dataset": "ti_fti.indicator",
        },
        "threat": {"feed": {"name": "fti"}, "indicator": threat_indicator},
        # Elastic's threat-intel integrations label the source data of their
        # latest-value transforms "true" and the final documents "false". These are final.
        "labels": {"is_ioc_transform_source": "false"},
        "tags": tags,
        "fti": fti,
    }
