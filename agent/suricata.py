"""Parse Suricata's EVE JSON output (``eve.json``): one JSON object per line.

The agent keeps five event types: ``flow``, ``alert``, ``dns``, ``http`` and ``tls``. Other
types (``stats``, ``fileinfo``, ``anomaly``, ``netflow`` and the rest) are skipped. Nested
objects are flattened to dotted keys (``alert.signature_id``, ``tls.ja3.hash``), the naming
the Zeek reader uses, so features read both the same way.

Lines are framed by the tailer on ``\\n`` only. Suricata writes U+2028 and U+2029 raw inside
JSON strings (an HTTP user agent can carry them), and ``str.splitlines`` would cut the event
there. Suricata writes its timestamp as ``2024-05-01T10:00:00.000000+0000``, with no colon in
the offset, which ``datetime.fromisoformat`` accepts from Python 3.11 on.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import orjson

from agent import strict_json
from agent.events import Event, LineRejected

__all__ = ["KEPT_EVENT_TYPES", "SuricataParser"]

UTC = timezone.utc

KEPT_EVENT_TYPES = frozenset({"flow", "alert", "dns", "http", "tls"})


class SuricataParser:
    """Turn EVE JSON lines into events of the kept types."""

    source_type = "suricata"

    def parse(self, text: str, *, source: str, line: int) -> Event | None:
        """Return the line's event, or None for a blank line or a skipped event type.

        Raises
        ------
        LineRejected
            If the line is not a JSON object, or lacks a valid ``timestamp`` or ``event_type``.
        """
        if not text.strip():
            return None

        # orjson parses faster than json. Where it rejects a line for a lone surrogate escape
        # or deep nesting, json decides; NaN and infinite numbers stay rejected (agent.strict_json).
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            obj = _loads_with_json(text)
        if not isinstance(obj, dict):
            raise LineRejected("not_json_object", f"JSON {type(obj).__name__} where EVE writes an object")

        event_type = obj.get("event_type")
        if not isinstance(event_type, str):
            raise LineRejected("missing_field:event_type", "no string event_type")
        if event_type not in KEPT_EVENT_TYPES:
            return None
        ts = _timestamp(obj.get("timestamp"))
        return Event("suricata", event_type, ts, _flatten(obj), source, line)


def _loads_with_json(text: str) -> Any:
    # ValueError also covers integers longer than Python's 4300-digit conversion limit.
    try:
        return strict_json.loads(text)
    except json.JSONDecodeError as err:
        raise LineRejected("invalid_json", f"invalid JSON: {err.msg} at column {err.colno}") from err
    except (ValueError, RecursionError) as err:
        raise LineRejected("invalid_json", f"invalid JSON: {type(err).__name__}") from err


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise LineRejected("missing_field:timestamp", f"timestamp must be a string; got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as err:
        raise LineRejected("invalid_timestamp", f"invalid timestamp {value!r}") from err
    if parsed.tzinfo is None:
        raise LineRejected("invalid_timestamp", f"timestamp {value!r} has no UTC offset")
    return parsed.astimezone(UTC)


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
