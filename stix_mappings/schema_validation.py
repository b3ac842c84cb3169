"""Load the JSON schemas shipped in ``stix_mappings/schemas`` and report their errors as sentences.

The schemas are JSON Schema draft 2020-12 and are validated with ``jsonschema``.
Two choices differ from the library defaults:

* "integer" accepts only JSON integers. jsonschema also accepts 12.0, but a count
  written as 12.0 changes the RFC 8785 canonical bytes that the site signed, so
  it is rejected instead of being silently reinterpreted.
* Errors are rewritten in the project's message shape (the thing, the rule, the
  value received), for example "privacy.epsilon must be > 0; got -1".

Nothing is registered globally: each schema gets its own validator instance.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

ROUND_SUMMARY_SCHEMA = "round-summary.json"
FUSION_DETAILS_SCHEMA = "fusion-details.json"

_MAX_SHOWN_VALUE_CHARS = 80

_TYPE_NAMES = {
    "array": "an array",
    "boolean": "a boolean",
    "integer": "an integer",
    "null": "null",
    "number": "a number",
    "object": "an object",
    "string": "a string",
}


def _is_strict_integer(checker: Any, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


_StrictIntegerValidator = jsonschema.validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer),
)


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Return the parsed schema file ``name`` from the package's ``schemas`` folder."""
    text = resources.files("stix_mappings").joinpath("schemas", name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    validator: Draft202012Validator = _StrictIntegerValidator(schema)
    return validator


def show_value(value: object) -> str:
    """Return ``value`` as JSON text, shortened for messages."""
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _MAX_SHOWN_VALUE_CHARS:
        text = text[: _MAX_SHOWN_VALUE_CHARS - 3] + "..."
    return text


def join_path(parts: Iterable[object], prefix: str = "") -> str:
    """Return a readable path like ``evidence[0].value`` from JSON path parts."""
    text = prefix
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = str(part)
    return text


def _format_error(error: ValidationError, prefix: str) -> list[str]:
    path = join_path(error.absolute_path, prefix)
    subject = path or "object"
    keyword = error.validator
    rule: Any = error.validator_value
    instance = error.instance
    got = show_value(instance)

    # One message per missing or unexpected property, so each reads on its own.
    if keyword == "required" and isinstance(instance, Mapping):
        messages = []
        for name in rule:
            if name in instance:
                continue
            if name == "spec_version" and not path:
                messages.append("spec_version required (STIX 2.1)")
            else:
                messages.append(f"{join_path([name], path)} is required")
        return messages
    if keyword == "additionalProperties" and isinstance(instance, Mapping):
        allowed = error.schema.get("properties", {})
        return [
            f"{join_path([name], path)} is not an allowed property"
            for name in instance
            if name not in allowed
        ]

    bounds = {
        "exclusiveMinimum": ">",
        "minimum": ">=",
        "maximum": "<=",
        "exclusiveMaximum": "<",
    }
    if keyword in bounds:
        return [f"{subject} must be {bounds[keyword]} {show_value(rule)}; got {got}"]
    if keyword == "const":
        return [f"{subject} must be {show_value(rule)}; got {got}"]
    if keyword == "enum":
        choices = ", ".join(show_value(choice) for choice in rule)
        return [f"{subject} must be one of {choices}; got {got}"]
    if keyword == "type":
        names = [rule] if isinstance(rule, str) else list(rule)
        expected = " or ".join(_TYPE_NAMES.get(name, name) for name in names)
        return [f"{subject} must be {expected}; got {got}"]
    if keyword == "pattern":
        title = error.schema.get("title")
        expected = title if title else f"a string matching {rule}"
        return [f"{subject} must be {expected}; got {got}"]
    if keyword in ("minItems", "maxItems") and isinstance(instance, list):
        low = error.schema.get("minItems")
        high = error.schema.get("maxItems")
        if low is not None and low == high:
            return [f"{subject} must have exactly {low} items; got {len(instance)}"]
        word = "at least" if keyword == "minItems" else "at most"
        return [f"{subject} must have {word} {rule} items; got {len(instance)}"]
    if keyword == "minLength" and isinstance(instance, str):
        if rule == 1:
            return [f"{subject} must not be empty"]
        return [f"{subject} must have at least {rule} characters; got {len(instance)}"]
    if keyword == "maxLength" and isinstance(instance, str):
        return [f"{subject} must have at most {rule} characters; got {len(instance)}"]
    return [f"{subject}: {error.message}"]


def schema_errors(name: str, instance: object, *, prefix: str = "") -> list[str]:
    """Validate ``instance`` against schema file ``name`` and return readable errors.

    Parameters
    ----------
    name : str
        File name inside ``stix_mappings/schemas`` (ROUND_SUMMARY_SCHEMA...).
    instance : object
        The parsed JSON value to check.
    prefix : str, default ""
        Path written in front of every property path, e.g. "extensions.<id>".

    Returns
    -------
    list of str
        One sentence per problem, in the schema's property order; empty when valid.
    """
    messages: list[str] = []
    for error in _validator(name).iter_errors(instance):
        for message in _format_error(error, prefix):
            if message not in messages:
                messages.append(message)
    return messages


def fusion_details_errors(details: object, *, prefix: str = "") -> list[str]:
    """Return the schema errors of one fusion-details extension value."""
    return schema_errors(FUSION_DETAILS_SCHEMA, details, prefix=prefix)


def all_schema_names() -> Sequence[str]:
    """Return the names of every schema file the package ships."""
    return (ROUND_SUMMARY_SCHEMA, FUSION_DETAILS_SCHEMA)
