"""Build, check and read the round summary, the custom STIX 2.1 object a site sends each round.

The summary is a new SDO type, ``x-fti-round-summary``, defined by the
extension-definition :data:`SUMMARY_EXTENSION_ID` with ``extension_types: ["new-sdo"]``
(STIX 2.1 section 7.3). stix2 3.0 parses such an object into a plain ``dict``
without checking any property, even with ``allow_custom=False``, so the checks live
here: the JSON schema ``schemas/round-summary.json`` first, then the rules a schema
cannot express (round_end after round_start, the deterministic id, first_seen before
last_seen, evidence above the partition threshold, evidence of a listed family, no
internal addresses or names).

Version 2.0.0 of the extension carries one section per detector family (network,
authentication, process): each with its detector, feature schema version, noised score
histogram and noised window count. Evidence items name the family that released them.

Nothing is registered with stix2 (no ``@CustomObject``), because stix2's registry
is process-wide.

The summary is signed by the site (Ed25519 over the RFC 8785 canonical JSON of the
object without ``signature``); :func:`build_summary` returns it unsigned and
``privacy.signing.sign_object`` adds the signature.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from stix_mappings.addresses import non_public_network
from stix_mappings.errors import PatternRejected, SummaryInvalid, TimestampInvalid
from stix_mappings.ids import SUMMARY_EXTENSION_ID, SUMMARY_TYPE, site_identity_id, summary_id
from stix_mappings.patterns import NETWORK_OBSERVABLE_TYPES, normalize_value
from stix_mappings.schema_validation import ROUND_SUMMARY_SCHEMA, join_path, schema_errors, show_value
from stix_mappings.timestamps import format_timestamp, parse_timestamp

__all__ = [
    "HISTOGRAM_BINS",
    "SUMMARY_EXTENSION_ID",
    "SUMMARY_TYPE",
    "FAMILIES",
    "Detector",
    "Evidence",
    "FamilySummary",
    "PrivacyParameters",
    "RoundSummary",
    "ScoreHistogram",
    "Signature",
    "build_summary",
    "parse_summary",
    "validate_summary",
]

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 10

# Detector families, in the order a summary lists them: one per kind of telemetry.
FAMILIES = ("network", "authentication", "process")

INTERNAL_DOMAIN_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")

# Observable types evidence may carry: the network types, TLS and certificate fingerprints,
# and file hashes (see stix_mappings.patterns for their STIX patterns).
EVIDENCE_OBSERVABLE_TYPES = NETWORK_OBSERVABLE_TYPES + ("ja3", "ja3s", "x509-sha1", "x509-sha256", "md5", "sha1",
                                                     "sha256")

# The ledger composes epsilon in floating point; allow for its rounding when
# comparing what a site reports as spent against its budget.
_BUDGET_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Detector:
    """Detector that scored one family's windows: name and version."""

    name: str
    version: str


@dataclass(frozen=True, slots=True)
class ScoreHistogram:
    """DP-noised histogram of calibrated window scores over 10 bins of [0, 1]."""

    bin_edges: tuple[float, ...]
    noised_counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FamilySummary:
    """One detector family's section: detector, feature schema, noised histogram and window count."""

    family: str
    detector: Detector
    feature_schema_version: str
    score_histogram: ScoreHistogram
    noised_window_count: int


@dataclass(frozen=True, slots=True)
class Evidence:
    """One observable released by DP partition selection, with its noised statistics."""

    family: str
    observable_type: str
    value: str
    noised_entity_count: int
    noised_mean_score: float
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class PrivacyParameters:
    """Privacy unit, mechanism, (epsilon, delta) of this round and the site's budget state."""

    unit: str
    mechanism: str
    epsilon: float
    delta: float
    partition_threshold: int
    max_observables_per_entity: int
    max_windows_per_entity: int
    epsilon_spent_in_period: float
    epsilon_budget: float
    period_days: float


@dataclass(frozen=True, slots=True)
class Signature:
    """Site signature: algorithm, key id (16 hex digits) and base64 value."""

    alg: str
    key_id: str
    value: str


@dataclass(frozen=True, slots=True)
class RoundSummary:
    """A checked round summary with typed fields."""

    id: str
    created_by_ref: str
    created: datetime
    modified: datetime
    site: str
    round_start: datetime
    round_end: datetime
    families: tuple[FamilySummary, ...]
    evidence: tuple[Evidence, ...]
    privacy: PrivacyParameters
    signature: Signature | None


def _as_dict(value: object, field: str) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise SummaryInvalid("", [f"{field} must be an object; got {show_value(value)}"])


def _timestamp_text(value: object, field: str) -> object:
    # Invalid values pass through unchanged so that validate_summary reports them.
    if isinstance(value, datetime):
        return format_timestamp(value, field)
    if isinstance(value, str):
        try:
            return format_timestamp(parse_timestamp(value, field), field)
        except TimestampInvalid:
            return value
    return value


def _float_or_keep(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def build_summary(
    *,
    site: str,
    round_start: datetime,
    round_end: datetime,
    families: Sequence[Mapping[str, Any] | FamilySummary],
    evidence: Sequence[Mapping[str, Any] | Evidence],
    privacy: Mapping[str, Any] | PrivacyParameters,
    created: datetime | None = None,
) -> dict[str, Any]:
    """Build an unsigned, checked round summary.

    Parameters
    ----------
    site : str
        The site id (1 to 128 letters, digits, '.', '_' or '-').
    round_start, round_end : datetime
        Aware datetimes; written with millisecond precision.
    families : sequence of mappings or FamilySummary
        One section per detector family (see FAMILIES): ``family``, ``detector``
        (``name`` "iforest", "ecod" or "hbos", and ``version``),
        ``feature_schema_version``, ``score_histogram`` (``bin_edges``, 11 increasing
        numbers from 0.0 to 1.0, and ``noised_counts``, 10 integers) and
        ``noised_window_count``. Written in the order of FAMILIES.
    evidence : sequence of mappings or Evidence
        Released observables with ``family``, ``observable_type``, ``value``,
        ``noised_entity_count`` (>= privacy.partition_threshold),
        ``noised_mean_score`` in [0, 1], ``first_seen`` and ``last_seen`` (datetimes
        or STIX timestamps). Values are written in canonical form (lower-case domain,
        compressed IPv6) and the list is sorted by (family, observable_type, value), so
        equal inputs give equal bytes whatever order the caller used.
    privacy : mapping or PrivacyParameters
        The ten privacy properties (see docs/protocol.md).
    created : datetime, optional
        ``created`` and ``modified``; defaults to ``round_end`` so that a rebuilt
        summary of the same round has the same bytes.

    Returns
    -------
    dict
        The summary without ``signature``.

    Raises
    ------
    SummaryInvalid
        Listing every schema and semantic error, when the result would not pass
        :func:`validate_summary`.
    TimestampInvalid
        If ``round_start``, ``round_end`` or ``created`` is naive.
    """
    start_text = format_timestamp(round_start, "round_start")
    end_text = format_timestamp(round_end, "round_end")
    created_text = format_timestamp(created, "created") if created is not None else end_text

    sections = [_family_fields(family, index) for index, family in enumerate(families)]
    sections.sort(key=lambda fields: _family_order(fields.get("family")))
    privacy_fields = _as_dict(privacy, "privacy")
    for name in ("epsilon", "delta", "epsilon_spent_in_period", "epsilon_budget"):
        if name in privacy_fields:
            privacy_fields[name] = _float_or_keep(privacy_fields[name])

    # Canonical values and a fixed order make the signed bytes independent of how
    # the caller collected the evidence.
    items = []
    for index, item in enumerate(evidence):
        fields = _as_dict(item, f"evidence[{index}]")
        for name in ("first_seen", "last_seen"):
            if name in fields:
                fields[name] = _timestamp_text(fields[name], f"evidence[{index}].{name}")
        if "noised_mean_score" in fields:
            fields["noised_mean_score"] = _float_or_keep(fields["noised_mean_score"])
        try:
            fields["value"] = normalize_value(fields["observable_type"], fields["value"], allow_cidr=False)
        except (KeyError, PatternRejected):
            pass  # reported by validate_summary below
        items.append(fields)
    items.sort(key=lambda fields: (_family_order(fields.get("family")), str(fields.get("observable_type")),
                                   str(fields.get("value"))))

    summary: dict[str, Any] = {
        "type": SUMMARY_TYPE,
        "spec_version": "2.1",
        "id": summary_id(site, round_start),
        "created_by_ref": site_identity_id(site),
        "created": created_text,
        "modified": created_text,
        "extensions": {SUMMARY_EXTENSION_ID: {"extension_type": "new-sdo"}},
        "site": site,
        "round_start": start_text,
        "round_end": end_text,
        "families": sections,
        "evidence": items,
        "privacy": privacy_fields,
    }

    errors = validate_summary(summary)
    if errors:
        raise SummaryInvalid(summary["id"], errors)
    return summary


def _family_order(family: object) -> tuple[int, str]:
    return (FAMILIES.index(family), "") if family in FAMILIES else (len(FAMILIES), str(family))


def _family_fields(family: Mapping[str, Any] | FamilySummary, index: int) -> dict[str, Any]:
    fields = _as_dict(family, f"families[{index}]")
    if "detector" in fields:
        fields["detector"] = _as_dict(fields["detector"], f"families[{index}].detector")
    if "score_histogram" in fields:
        histogram = _as_dict(fields["score_histogram"], f"families[{index}].score_histogram")
        fields["score_histogram"] = {
            "bin_edges": [_float_or_keep(edge) for edge in histogram.get("bin_edges", [])],
            "noised_counts": list(histogram.get("noised_counts", [])),
        }
    return fields


def _parsed_time(obj: Mapping[str, Any], name: str, label: str, errors: list[str]) -> datetime | None:
    """Parse ``obj[name]`` if the schema let it through; report impossible dates."""
    value = obj.get(name)
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value, label)
    except TimestampInvalid as err:
        if "not a valid date" in err.reason:
            errors.append(f"{label} is not a valid date and time; got {show_value(value)}")
        return None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _internal_reason(observable_type: str, value: str) -> str | None:
    if observable_type in ("ipv4-addr", "ipv6-addr"):
        network = non_public_network(ipaddress.ip_address(value))
        return None if network is None else f"is an internal address ({network})"
    if observable_type == "domain-name":
        domain = value.lower().rstrip(".")
        if domain == "localhost" or domain.endswith(INTERNAL_DOMAIN_SUFFIXES):
            return "is an internal name"
    if observable_type == "url":
        # A URL on an internal host names that host as surely as the host itself would. Browsers
        # read a backslash as a slash in web URLs, where urlsplit keeps it in the user part, so
        # http://10.0.0.1\@example.com/ is checked as both hosts.
        for url in dict.fromkeys((value, value.replace("\\", "/"))):
            if (reason := _host_reason(urlsplit(url).hostname or "")) is not None:
                return reason
    return None


def _host_reason(host: str) -> str | None:
    """Return why a URL's host is internal, or None."""
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return _internal_reason("domain-name", host)
    return _internal_reason(f"ipv{address.version}-addr", str(address))


def _check_identity(obj: Mapping[str, Any], round_start: datetime | None, errors: list[str]) -> None:
    site = obj.get("site")
    if not isinstance(site, str):
        return
    # Deterministic ids stop a site from contributing twice to one round under two ids.
    if round_start is not None and isinstance(obj.get("id"), str):
        expected = summary_id(site, round_start)
        if obj["id"] != expected:
            errors.append(f"id must be {expected} (derived from site and round_start); got {obj['id']}")
    if isinstance(obj.get("created_by_ref"), str):
        expected = site_identity_id(site)
        if obj["created_by_ref"] != expected:
            errors.append(
                f"created_by_ref must be {expected} (the identity of site {site!r}); "
                f"got {obj['created_by_ref']}"
            )


def _check_families(obj: Mapping[str, Any], errors: list[str]) -> None:
    families = obj.get("families")
    if not isinstance(families, list):
        return
    seen: dict[str, int] = {}
    for index, section in enumerate(families):
        if not isinstance(section, Mapping):
            continue
        name = section.get("family")
        if isinstance(name, str):
            # One section per family: two would let a site split a family's windows and
            # charge each part a share of epsilon meant for the whole.
            if name in seen:
                errors.append(f"families[{index}] repeats family {name!r} from families[{seen[name]}]")
            else:
                seen[name] = index
        histogram = section.get("score_histogram")
        if not isinstance(histogram, Mapping):
            continue
        edges = histogram.get("bin_edges")
        if isinstance(edges, list) and len(edges) == HISTOGRAM_BINS + 1 and all(map(_is_number, edges)):
            increasing = all(low < high for low, high in zip(edges, edges[1:]))
            if edges[0] != 0 or edges[-1] != 1 or not increasing:
                errors.append(
                    f"families[{index}].score_histogram.bin_edges must increase strictly from 0.0 to 1.0; "
                    f"got {show_value(edges)}"
                )


def _check_privacy(privacy: object, errors: list[str]) -> None:
    if not isinstance(privacy, Mapping):
        return
    budget = privacy.get("epsilon_budget")
    if not _is_number(budget) or budget <= 0:
        return
    limit = budget * (1 + _BUDGET_TOLERANCE)
    for name in ("epsilon", "epsilon_spent_in_period"):
        value = privacy.get(name)
        if _is_number(value) and value > limit:
            errors.append(f"privacy.{name} must be <= privacy.epsilon_budget ({budget}); got {value}")


def _check_evidence(obj: Mapping[str, Any], errors: list[str]) -> None:
    evidence = obj.get("evidence")
    if not isinstance(evidence, list):
        return
    privacy = obj.get("privacy")
    threshold = privacy.get("partition_threshold") if isinstance(privacy, Mapping) else None
    families = obj.get("families")
    listed = None
    if isinstance(families, list):
        listed = {f["family"] for f in families if isinstance(f, Mapping) and isinstance(f.get("family"), str)}
    seen: dict[tuple[str, str, str], int] = {}

    for index, item in enumerate(evidence):
        if not isinstance(item, Mapping):
            continue
        label = f"evidence[{index}]"

        first = _parsed_time(item, "first_seen", f"{label}.first_seen", errors)
        last = _parsed_time(item, "last_seen", f"{label}.last_seen", errors)
        if first is not None and last is not None and last < first:
            errors.append(
                f"{label}.last_seen must not be before first_seen; "
                f"got first_seen {item['first_seen']}, last_seen {item['last_seen']}"
            )

        # Partition selection releases only observables whose noised count reached
        # the threshold; a lower count means the DP release rule was not applied.
        count = item.get("noised_entity_count")
        if isinstance(threshold, int) and isinstance(count, int) and count < threshold:
            errors.append(
                f"{label}.noised_entity_count must be >= privacy.partition_threshold "
                f"({threshold}); got {count}"
            )

        family = item.get("family")
        if listed is not None and isinstance(family, str) and family in FAMILIES and family not in listed:
            errors.append(f"{label}.family {family!r} has no section in families; list it there or drop the item")

        kind, value = item.get("observable_type"), item.get("value")
        if kind not in EVIDENCE_OBSERVABLE_TYPES or not isinstance(value, str) or not value:
            continue
        try:
            canonical = normalize_value(kind, value, allow_cidr=False)
        except PatternRejected as err:
            errors.append(f"{label}.value must be a valid {kind}: {err.reason}; got {show_value(value)}")
            continue
        if canonical != value:
            errors.append(f"{label}.value must be in canonical form {show_value(canonical)}; got {show_value(value)}")
        internal = _internal_reason(kind, canonical)
        if internal:
            errors.append(f"{label}.value {internal}; internal observables must never leave the site")
        key = (str(family), kind, canonical)
        if key in seen:
            errors.append(f"{label} repeats {family} {kind} {canonical} from evidence[{seen[key]}]")
        else:
            seen[key] = index


def _non_finite_numbers(value: object, path: list[object]) -> list[str]:
    # JSON has no NaN or Infinity, and RFC 8785 canonical JSON cannot sign them.
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{join_path(path)} must be a finite number; got {value}"]
    if isinstance(value, Mapping):
        return [message for key, item in value.items() for message in _non_finite_numbers(item, [*path, key])]
    if isinstance(value, list):
        return [message for index, item in enumerate(value) for message in _non_finite_numbers(item, [*path, index])]
    return []


def validate_summary(obj: dict[str, Any]) -> list[str]:
    """Check a round summary against its JSON schema and the semantic rules.

    Parameters
    ----------
    obj : dict
        The summary as received (signed or not; a ``signature`` is checked for form
        only, ``privacy.signing.verify_object`` checks its value).

    Returns
    -------
    list of str
        Readable errors such as "privacy.epsilon must be > 0; got -1" or
        "round_end must be after round_start; got ..."; empty when the summary is valid.
    """
    if not isinstance(obj, Mapping):
        return [f"a round summary must be a JSON object; got {show_value(obj)}"]
    errors = schema_errors(ROUND_SUMMARY_SCHEMA, obj)
    errors.extend(_non_finite_numbers(obj, []))

    # The semantic checks run even when the schema failed, on the fields that have
    # the right type, so one report lists every problem.
    start = _parsed_time(obj, "round_start", "round_start", errors)
    end = _parsed_time(obj, "round_end", "round_end", errors)
    if start is not None and end is not None and end <= start:
        errors.append(
            f"round_end must be after round_start; got round_start {obj['round_start']}, "
            f"round_end {obj['round_end']}"
        )
    created = _parsed_time(obj, "created", "created", errors)
    modified = _parsed_time(obj, "modified", "modified", errors)
    if created is not None and modified is not None and modified < created:
        errors.append(
            f"modified must not be before created; got created {obj['created']}, modified {obj['modified']}"
        )

    _check_identity(obj, start, errors)
    _check_families(obj, errors)
    _check_privacy(obj.get("privacy"), errors)
    _check_evidence(obj, errors)
    return errors


def parse_summary(obj: dict[str, Any]) -> RoundSummary:
    """Check a round summary and return it as typed, frozen dataclasses.

    Raises
    ------
    SummaryInvalid
        With the summary's id and every error from :func:`validate_summary`.
    """
    errors = validate_summary(obj)
    if errors:
        object_id = obj.get("id", "") if isinstance(obj, Mapping) else ""
        raise SummaryInvalid(object_id if isinstance(object_id, str) else "", errors)

    privacy = obj["privacy"]
    signature = obj.get("signature")
    return RoundSummary(
        id=obj["id"],
        created_by_ref=obj["created_by_ref"],
        created=parse_timestamp(obj["created"], "created"),
        modified=parse_timestamp(obj["modified"], "modified"),
        site=obj["site"],
        round_start=parse_timestamp(obj["round_start"], "round_start"),
        round_end=parse_timestamp(obj["round_end"], "round_end"),
        families=tuple(
            FamilySummary(
                family=section["family"],
                detector=Detector(**section["detector"]),
                feature_schema_version=section["feature_schema_version"],
                score_histogram=ScoreHistogram(
                    bin_edges=tuple(float(edge) for edge in section["score_histogram"]["bin_edges"]),
                    noised_counts=tuple(section["score_histogram"]["noised_counts"]),
                ),
                noised_window_count=section["noised_window_count"],
            )
            for section in obj["families"]
        ),
        evidence=tuple(
            Evidence(
                family=item["family"],
                observable_type=item["observable_type"],
                value=item["value"],
                noised_entity_count=item["noised_entity_count"],
                noised_mean_score=float(item["noised_mean_score"]),
                first_seen=parse_timestamp(item["first_seen"], "first_seen"),
                last_seen=parse_timestamp(item["last_seen"], "last_seen"),
            )
            for item in obj["evidence"]
        ),
        privacy=PrivacyParameters(
            unit=privacy["unit"],
            mechanism=privacy["mechanism"],
            epsilon=float(privacy["epsilon"]),
            delta=float(privacy["delta"]),
            partition_threshold=privacy["partition_threshold"],
            max_observables_per_entity=privacy["max_observables_per_entity"],
            max_windows_per_entity=privacy["max_windows_per_entity"],
            epsilon_spent_in_period=float(privacy["epsilon_spent_in_period"]),
            epsilon_budget=float(privacy["epsilon_budget"]),
            period_days=float(privacy["period_days"]),
        ),
        signature=Signature(**signature) if signature is not None else None,
    )
