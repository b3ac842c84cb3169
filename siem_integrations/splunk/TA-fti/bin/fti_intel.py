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
