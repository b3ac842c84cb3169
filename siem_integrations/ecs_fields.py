"""Check an Elasticsearch document against the bundled ECS field definitions.

``elastic/ecs/fields.yml`` lists the ECS fields that indicator documents use, transcribed
from the Elastic Common Schema 8.x (Apache-2.0, see ``elastic/ecs/README.md``). A document
passes when every leaf outside the custom namespaces is an ECS field of the listed type,
every ``allowed_values`` field has an allowed value, and every ``expected_values`` field has an
expected one. ``fti.*`` is fti's own namespace and ``labels.*`` is ECS's free-form keyword
map, so only their value types are checked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

# Custom namespaces: ECS reserves no field under them.
CUSTOM_PREFIXES = ("fti.", "labels.")


@lru_cache(maxsize=1)
def load_ecs_fields() -> dict[str, dict[str, Any]]:
    """Return the bundled ECS definitions, flat field name -> definition."""
    text = resources.files("siem_integrations").joinpath("elastic/ecs/fields.yml").read_text()
    return yaml.safe_load(text)


def _leaves(document: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in document.items():
        path = f"{prefix}{name}"
        if isinstance(value, Mapping):
            yield from _leaves(value, prefix=f"{path}.")
        else:
            yield path, value


def _type_problem(path: str, ecs_type: str, value: Any) -> str | None:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if ecs_type in ("keyword", "wildcard") and not isinstance(item, str):
            return f"{path} is an ECS {ecs_type}, so it must be a string; got {item!r}"
        if ecs_type == "long" and (isinstance(item, bool) or not isinstance(item, int)):
            return f"{path} is an ECS long, so it must be an integer; got {item!r}"
        if ecs_type == "ip":
            try:
                ipaddress.ip_address(item)
            except (ValueError, TypeError):
                return f"{path} is an ECS ip, so it must be one IPv4 or IPv6 address; got {item!r}"
        if ecs_type == "date":
            try:
                datetime.fromisoformat(str(item).replace("Z", "+00:00"))
            except ValueError:
                return f"{path} is an ECS date, so it must be ISO 8601; got {item!r}"
    return None


def ecs_document_problems(document: Mapping[str, Any]) -> list[str]:
    """Return every way ``document`` breaks the bundled ECS definitions; empty when none."""
    fields = load_ecs_fields()
    problems: list[str] = []
    seen: set[str] = set()
    for path, value in _leaves(document):
        seen.add(path)
        if path.startswith(CUSTOM_PREFIXES):
            if path.startswith("labels.") and not isinstance(value, str):
                problems.append(f"{path}: labels are ECS keywords, so the value must be a string; "
                                f"got {value!r}")
            continue
        definition = fields.get(path)
        if definition is None:
            problems.append(f"{path} is not an ECS field; move it under fti.*")
            continue
        problem = _type_problem(path, definition["type"], value)
        if problem:
            problems.append(problem)
            continue
        values = value if isinstance(value, list) else [value]
        for key in ("allowed_values", "expected_values"):
            permitted = definition.get(key)
            if permitted is not None:
                problems.extend(f"{path} value {item!r} is not in the ECS {key}: {permitted}"
                                for item in values if item not in permitted)
    for path, definition in fields.items():
        if definition.get("required") and path not in seen:
            problems.append(f"{path} is required by ECS and missing")
    return problems
