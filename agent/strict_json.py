"""Parse a log line as JSON (RFC 8259), where Python's ``json`` module is more lenient.

``json.loads`` accepts ``NaN``, ``Infinity`` and ``-Infinity``, and reads a number too large
for a double, such as ``1e999``, as infinity. Zeek, Suricata and Sysmon exports never write
either, and a non-finite value would reach features and ``fti agent parse`` output, where it
is not JSON. The readers use orjson first, which rejects both, and this parser for the lines
orjson rejects for other reasons (lone surrogate escapes, deep nesting).
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["loads"]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is too large for a double")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def loads(text: str) -> Any:
    """Return the value of a JSON text, as ``json.loads`` does, but reject non-finite numbers.

    Raises
    ------
    ValueError
        For invalid JSON (``json.JSONDecodeError``), a non-finite number, or an integer over
        Python's digit limit.
    RecursionError
        For nesting too deep to parse.
    """
    return _DECODER.decode(text)
