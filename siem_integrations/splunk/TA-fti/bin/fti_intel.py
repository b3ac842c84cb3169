"""Map a STIX 2.1 indicator to a Splunk Enterprise Security threat intelligence record.

Runs inside Splunk, so it uses the standard library only. The field names are those of the
ES threat intelligence KV store collections: ``ip`` (ip_intel), ``domain`` (domain_intel),
``url`` (http_intel), ``file_hash`` and ``file_name`` (file_intel), ``certificate_serial``,
``certificate_subject`` and ``certificate_issuer`` (certificate_intel), with
``description``, ``threat_key``, ``weight`` and ``time`` in every record. They match the HEC
events of fti (``stix_mappings.splunk``).

Only indicators whose pattern is one comparison, or comparisons joined by AND on one
object, are mapped. For anything else the mapping returns None, and the indicator is still
indexed as an event.
"""

import hashlib
import re
from datetime import datetime, timezone

THREAT_KEY = "fti"
# One comparison: [object-type:property = 'value'] with STIX escapes \\ and \'.
_COMPARISON = re.compile(r"([a-z0-9-]+):([A-Za-z0-9_.'\-]+)\s*=\s*'((?:[^'\\]|\\.)*)'")
_COLLECTIONS = {
    ("ipv4-addr", "value"): ("ip_intel", "ip"),
    ("ipv6-addr", "value"): ("ip_intel", "ip"),
    ("domain-name", "value"): ("domain_intel", "domain"),
    ("url", "value"): ("http_intel", "url"),
    ("file", "name"): ("file_intel", "file_name"),
    ("x509-certificate", "serial_number"): ("certificate_intel", "certificate_serial"),
    ("x509-certificate", "subject"): ("certificate_intel", "certificate_subject"),
    ("x509-certificate", "issuer"): ("certificate_intel", "certificate_issuer"),
}
ES_COLLECTIONS = ("ip_intel", "domain_intel", "http_intel", "file_intel", "certificate_intel")

# The fusion-details extension of fti indicators (stix_mappings.ids.FUSION_EXTENSION_ID).
FUSION_EXTENSION_ID = "extension-definition--c1848ec5-a246-4e74-ab7b-64b6837a0093"
# TLP 1.0 marking definitions of STIX 2.1 section 7.2.1.4, most restrictive first.
_TLP_MARKINGS = (
    ("RED", "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed"),
    ("AMBER", "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82"),
    ("GREEN", "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da"),
    ("WHITE", "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9"),
)
# Observable kind of each pattern property, as stix_mappings.patterns names them.
_PATTERN_KINDS = {
    ("ipv4-addr", "value"): "ipv4-addr",
    ("ipv6-addr", "value"): "ipv6-addr",
    ("domain-name", "value"): "domain-name",
    ("url", "value"): "url",
    ("file", "hashes.MD5"): "md5",
    ("file", "hashes.'SHA-1'"): "sha1",
    ("file", "hashes.'SHA-256'"): "sha256",
    ("file", "hashes.'SHA-512'"): "sha512",
    ("x509-certificate", "hashes.'SHA-1'"): "x509-sha1",
    ("x509-certificate", "hashes.'SHA-256'"): "x509-sha256",
    ("x-fti-tls-fingerprint", "ja3"): "ja3",
    ("x-fti-tls-fingerprint", "ja3s"): "ja3s",
}
# Kinds without an ES collection keep their value under their own name, as in HEC events.
_NO_ES_COLLECTION = {"ja3": "ja3", "ja3s": "ja3s", "x509-sha1": "certificate_sha1",
                     "x509-sha256": "certificate_sha256"}


def parse_timestamp(value):
    """Return a STIX timestamp as an aware UTC datetime.

    STIX allows any number of fractional digits, but ``datetime.fromisoformat`` before
    Python 3.11 (Splunk runs the add-on on 3.9) reads exactly 3 or 6, so the fraction is cut
    or padded to 6 digits first.

    Raises
    ------
    ValueError
        If ``value`` is not an RFC 3339 timestamp.
    """
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        length = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:length][:6].ljust(6, '0')}{rest[length:]}"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def format_timestamp(value):
    """Write a STIX timestamp as fti's HEC events do: milliseconds and "Z"; None stays None."""
    if value is None:
        return None
    moment = parse_timestamp(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


def confidence_weight(confidence):
    """Return the ES weight 1 to 3 for a STIX confidence, as fti's HEC events do."""
    if confidence is None or confidence < 30:
        return 1
    if confidence < 70:
        return 2
    return 3


def record_key(indicator_id):
    """Return the KV store ``_key`` of an indicator: every version replaces the last one."""
    return hashlib.sha256(indicator_id.encode("utf-8")).hexdigest()[:40]


def is_withdrawn(indicator, now):
    """Return whether the indicator is revoked or its ``valid_until`` has passed."""
    if indicator.get("revoked"):
        return True
    valid_until = indicator.get("valid_until")
    return valid_until is not None and parse_timestamp(valid_until) <= now


def indicator_to_intel(indicator):
    """Return ``(collection, record)`` for the ES collection of the indicator, or None."""
    pattern = indicator.get("pattern", "")
    if indicator.get("pattern_type", "stix") != "stix" or " OR " in pattern:
        return None
    comparisons = _COMPARISON.findall(pattern)
    if not comparisons:
        return None

    collection = None
    record = {}
    for object_type, prop, raw in comparisons:
        value = raw.replace("\\'", "'").replace("\\\\", "\\")
        if object_type == "file" and prop.startswith("hashes."):
            target = ("file_intel", "file_hash")
        elif object_type == "file" and prop == "parent_directory_ref.path":
            target = ("file_intel", "file_path")
        else:
            target = _COLLECTIONS.get((object_type, prop))
        if target is None or (collection is not None and target[0] != collection):
            return None
        collection = target[0]
        record[target[1]] = value

    confidence = indicator.get("confidence")
    match_field = next(iter(k for k in record if k != "file_path"))
    record.update({
        "_key": record_key(indicator["id"]),
        "threat_key": THREAT_KEY,
        "threat_collection": collection,
        "threat_match_value": record[match_field],
        "indicator_id": indicator["id"],
        "description": indicator.get("description") or indicator.get("name") or pattern,
        "confidence": confidence,
        "weight": confidence_weight(confidence),
        "valid_until": indicator.get("valid_until"),
        "time": parse_timestamp(indicator["modified"]).timestamp(),
    })
    return collection, record


def confidence_level(confidence):
    """Return the STIX 2.1 Appendix A word for a confidence, as fti's HEC events do."""
    if confidence is None:
        return "Not Specified"
    if confidence == 0:
        return "None"
    if confidence < 30:
        return "Low"
    if confidence < 70:
        return "Medium"
    return "High"


def _join_file_path(directory, name):
    """Join a directory and a file name as stix_mappings.patterns does."""
    if directory.endswith(("/", "\\")):
        return directory + name
    windows = "\\" in directory or re.match(r"^[A-Za-z]:$", directory[:2]) is not None
    return directory + ("\\" if windows else "/") + name


def _observable(pattern):
    """Return ``(kind, value, collection, match field, fields)`` of a pattern fti writes, or None."""
    comparisons = [(t, p, raw.replace("\\'", "'").replace("\\\\", "\\"))
                   for t, p, raw in _COMPARISON.findall(pattern)]
    found = {(t, p): v for t, p, v in comparisons}
    if len(found) == 2 and set(found) == {("file", "name"), ("file", "parent_directory_ref.path")}:
        directory, name = found[("file", "parent_directory_ref.path")], found[("file", "name")]
        return ("file_path", _join_file_path(directory, name), "file_intel", "file_name",
                {"file_name": name, "file_path": directory})
    if len(found) != 1:
        return None
    (key, value), = found.items()
    if key == ("file", "name"):
        return "file_name", value, "file_intel", "file_name", {"file_name": value}
    kind = _PATTERN_KINDS.get(key)
    if kind is None:
        return None
    if kind in _NO_ES_COLLECTION:
        field = _NO_ES_COLLECTION[kind]
        return kind, value, None, field, {field: value}
    collection, field = _COLLECTIONS.get(key, ("file_intel", "file_hash"))
    return kind, value, collection, field, {field: value}


def indicator_to_event(indicator):
    """Return the event body fti's HEC events carry (``stix_mappings.splunk``), or None.

    The fields are the same as the hub's HEC events, so the dashboards and saved searches
    work whether the indicators arrive by HEC or by this add-on. None for an indicator
    whose pattern is not one fti writes; the caller indexes the STIX object then.
    """
    pattern = indicator.get("pattern", "")
    observable = _observable(pattern) if indicator.get("pattern_type") == "stix" else None
    if observable is None or " OR " in pattern:
        return None
    kind, value, collection, match_field, fields = observable

    confidence = indicator.get("confidence")
    if not isinstance(confidence, int) or isinstance(confidence, bool):
        confidence = None
    level = confidence_level(confidence)
    markings = indicator.get("object_marking_refs", [])
    tlp = next((name for name, marking in _TLP_MARKINGS if marking in markings), None)
    body = {
        "threat_key": THREAT_KEY,
        "threat_collection": collection,
        "threat_match_field": match_field,
        "threat_match_value": value,
    }
    body.update(fields)
    body.update({
        "description": indicator.get("description") or indicator.get("name") or pattern,
        "confidence": confidence,
        "confidence_level": level,
        "weight": confidence_weight(confidence),
        "indicator_id": indicator["id"],
        "indicator_types": list(indicator.get("indicator_types", [])),
        "observable_type": kind,
        "pattern": pattern,
        "modified": format_timestamp(indicator["modified"]),
        "valid_from": format_timestamp(indicator["valid_from"]),
        "valid_until": format_timestamp(indicator.get("valid_until")),
        "revoked": indicator.get("revoked") is True,
        "tlp": tlp,
    })
    details = (indicator.get("extensions") or {}).get(FUSION_EXTENSION_ID) or {}
    if details.get("strategy") is not None:
        body["fusion_strategy"] = details["strategy"]
        body["fused_score"] = details.get("fused_score")
        body["corroborating_sites"] = details.get("corroborating_sites")
        body["round_start"] = format_timestamp(details.get("round_start"))
    return body
