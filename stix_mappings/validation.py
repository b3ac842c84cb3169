"""Check STIX objects before the hub publishes them and when it receives them.

:func:`validate_stix` runs the OASIS stix2-validator (3.3) over a bundle of the
objects, with its SHOULD checks promoted to errors (``strict``). One check is
turned off: "uuid-check" (103) wants UUIDv4 ids on domain objects, and our shared
ids are UUIDv5 by design (see :mod:`stix_mappings.ids`). The validator cannot
check our extensions, so the summary and fusion-details schemas are applied here
as well. Every indicator pattern also gets a per-type value check, because
stix2-patterns passes ``[ipv4-addr:value = 'http://198.51.100.7/login']``.

:func:`validate_object` is the hub's intake check for one object of a TAXII
envelope. stix2 3.0 reads an object without ``spec_version`` as STIX 2.0 and then
reports a misleading "Unexpected properties" error, and it returns any
extension-defined object as an unchecked ``dict``. So the type is dispatched here
first: our summary type goes to its schema, standard STIX 2.1 types need
``spec_version`` and go through stix2 and the validator, and everything else is
reported as not registered.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import stix2
from stix2.exceptions import STIXError
from stix2patterns.v21.pattern import Pattern
from stix2validator import ValidationOptions, validate_instance
from stix2validator.errors import ValidationError as ValidatorError
from stix2validator.v21 import enums as validator_enums

from stix_mappings.errors import PatternRejected
from stix_mappings.ids import FTI_NAMESPACE, FUSION_EXTENSION_ID, SUMMARY_TYPE, indicator_id
from stix_mappings.patterns import (
    NETWORK_OBSERVABLE_TYPES,
    build_pattern,
    normalize_value,
    pattern_observable,
    unescape_string_literal,
)
from stix_mappings.schema_validation import fusion_details_errors, show_value
from stix_mappings.summary import validate_summary

__all__ = ["UNKNOWN_TYPE_MESSAGE", "validate_object", "validate_stix"]

log = logging.getLogger(__name__)

UNKNOWN_TYPE_MESSAGE = "unknown type or extension-definition not registered"
SPEC_VERSION_MESSAGE = "spec_version required (STIX 2.1)"

# SDO, SRO and meta-object types of STIX 2.1 (bundle included), from the validator.
STANDARD_OBJECT_TYPES = frozenset(validator_enums.TYPES)
# Cyber-observable types; for these spec_version is optional (STIX 2.1 section 6).
STANDARD_OBSERVABLE_TYPES = frozenset(validator_enums.OBSERVABLE_TYPES)

# Extension-definition ids whose content this package can check.
REGISTERED_EXTENSIONS = frozenset({FUSION_EXTENSION_ID})

# Hash names in patterns and the hex digits they need.
_PATTERN_HASH_DIGITS = {"MD5": ("md5", 32), "SHA-1": ("sha1", 40), "SHA-256": ("sha256", 64), "SHA-512": ("sha512", 128)}


def _validator_options() -> ValidationOptions:
    # A new options object per call: ValidationOptions keeps its check lists on the
    # instance and resets the validator's output level, so nothing carries over.
    return ValidationOptions(version="2.1", strict=True, disabled="uuid-check")


def _oasis_errors(instance: Mapping[str, Any]) -> list[str]:
    try:
        result = validate_instance(dict(instance), _validator_options())
    except ValidatorError as err:
        return [f"stix2-validator could not check the object: {err}"]
    return [error.message for error in result.errors]


def _pattern_value_errors(indicator: Mapping[str, Any]) -> list[str]:
    pattern = indicator.get("pattern")
    if indicator.get("pattern_type") != "stix" or not isinstance(pattern, str):
        return []
    try:
        comparisons = Pattern(pattern).inspect().comparisons
    except Exception:  # stix2patterns raises ANTLR errors; the validator reports the syntax
        return []

    object_id = indicator.get("id", "")
    errors = []
    for object_type, expressions in comparisons.items():
        for path, operator, literal in expressions:
            if operator != "=" or not isinstance(literal, str) or not literal.startswith("'"):
                continue
            value = unescape_string_literal(literal)
            kind = None
            if object_type in NETWORK_OBSERVABLE_TYPES and list(path) == ["value"]:
                kind = object_type
            elif object_type == "file" and len(path) == 2 and path[0] == "hashes":
                kind = _PATTERN_HASH_DIGITS.get(str(path[1]), (None, 0))[0]
            if kind is None:
                continue
            try:
                normalize_value(kind, value)
            except PatternRejected as err:
                errors.append(
                    f"{object_id}: pattern value {show_value(value)} is not a valid {kind}: {err.reason}"
                )
    return errors


def _fused_indicator_errors(indicator: Mapping[str, Any]) -> list[str]:
    """Check an indicator that carries our fusion-details extension."""
    object_id = indicator.get("id", "")
    details = indicator["extensions"][FUSION_EXTENSION_ID]
    prefix = f"{object_id}: extensions.{FUSION_EXTENSION_ID}"
    errors = fusion_details_errors(details, prefix=prefix)

    # Our indicators are identified by their pattern, and the pattern is written in
    # exactly one form, so that a republished observable is a new version of the
    # same indicator rather than a near-duplicate.
    pattern = indicator.get("pattern")
    if not isinstance(pattern, str):
        return errors
    try:
        canonical = build_pattern(*pattern_observable(pattern))
    except PatternRejected as err:
        # A bad value inside a supported shape is already reported by _pattern_value_errors.
        if err.kind == "pattern":
            errors.append(f"{object_id}: pattern {show_value(pattern)} is not one fti builds: {err.reason}")
        return errors
    if canonical != pattern:
        errors.append(f"{object_id}: pattern must be written {show_value(canonical)}; got {show_value(pattern)}")
    lifetime = _fusion_lifetime(indicator)
    if object_id != indicator_id(pattern, lifetime):
        errors.append(f"{object_id}: id must be {indicator_id(pattern, lifetime)} (derived from the pattern"
                      + (f" and lifetime {lifetime})" if lifetime else ")"))
    return errors


def _fusion_lifetime(indicator: Mapping[str, Any]) -> int:
    details = (indicator.get("extensions") or {}).get(FUSION_EXTENSION_ID)
    lifetime = details.get("lifetime", 0) if isinstance(details, Mapping) else 0
    return lifetime if isinstance(lifetime, int) and not isinstance(lifetime, bool) and lifetime > 0 else 0


def _extension_errors(obj: Mapping[str, Any]) -> list[str]:
    extensions = obj.get("extensions")
    if not isinstance(extensions, Mapping):
        return []
    errors = []
    for key in extensions:
        if key.startswith("extension-definition--") and key not in REGISTERED_EXTENSIONS:
            errors.append(f"extensions.{key}: {UNKNOWN_TYPE_MESSAGE}")
    return errors


def _own_content_errors(obj: Mapping[str, Any]) -> list[str]:
    """Checks for content the OASIS validator cannot judge: our extensions and pattern values."""
    errors: list[str] = []
    if obj.get("type") == SUMMARY_TYPE:
        object_id = obj.get("id", "")
        errors.extend(f"{object_id}: {message}" for message in validate_summary(dict(obj)))
    if obj.get("type") == "indicator":
        errors.extend(_pattern_value_errors(obj))
        extensions = obj.get("extensions")
        if isinstance(extensions, Mapping) and FUSION_EXTENSION_ID in extensions:
            errors.extend(_fused_indicator_errors(obj))
    return errors


def validate_stix(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    """Validate objects as one STIX 2.1 bundle with the OASIS validator and our own schemas.

    Parameters
    ----------
    objects : sequence of dict
        STIX 2.1 objects, for example fused indicators with the hub identity, or
        summaries with the extension definitions.

    Returns
    -------
    list of str
        Error messages, most prefixed with the object id; empty when every object
        passes. SHOULD-level findings count as errors, except the UUIDv4
        recommendation (check 103).
    """
    if not objects:
        return []
    ids = ",".join(str(obj.get("id", "")) for obj in objects)
    bundle = {
        "type": "bundle",
        "id": f"bundle--{uuid.uuid5(FTI_NAMESPACE, 'bundle:' + ids)}",
        "objects": [copy.deepcopy(dict(obj)) for obj in objects],
    }

    errors = _oasis_errors(bundle)
    for obj in objects:
        errors.extend(_own_content_errors(obj))
    return errors


def validate_object(obj: object) -> list[str]:
    """Check one object received in a TAXII envelope, on its own.

    Parameters
    ----------
    obj : object
        The parsed JSON value of one envelope entry.

    Returns
    -------
    list of str
        Empty when the object is acceptable. Otherwise, for example:
        "spec_version required (STIX 2.1)" for a standard object without it,
        "unknown type or extension-definition not registered" for a type that is
        neither standard nor ours, or the summary's schema and semantic errors.
    """
    if not isinstance(obj, Mapping) or not isinstance(obj.get("type"), str):
        return [f"an object must be a JSON object with a string 'type'; got {show_value(obj)}"]
    object_type = obj["type"]

    if object_type == SUMMARY_TYPE:
        return validate_summary(dict(obj))
    if object_type not in STANDARD_OBJECT_TYPES and object_type not in STANDARD_OBSERVABLE_TYPES:
        return [UNKNOWN_TYPE_MESSAGE]

    if "spec_version" not in obj and object_type in STANDARD_OBJECT_TYPES:
        return [SPEC_VERSION_MESSAGE]
    if obj.get("spec_version", "2.1") != "2.1":
        return [f"spec_version must be \"2.1\"; got {show_value(obj['spec_version'])}"]

    # stix2 checks property types and the rules between properties; the validator
    # adds the JSON schemas and the SHOULD rules. Both get a copy, since stix2 keeps
    # references to the nested values it is given.
    try:
        stix2.parse(copy.deepcopy(dict(obj)), allow_custom=False, version="2.1")
    except STIXError as err:
        return [str(err)]
    errors = _extension_errors(obj)
    errors.extend(_oasis_errors(obj))
    errors.extend(_own_content_errors(obj))
    return errors
