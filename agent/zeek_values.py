"""Convert Zeek log values to Python values: timestamps, ``\\xNN`` escapes and typed columns.

The rules come from Zeek's ASCII writer (``threading/formatters/Ascii.cc`` and
``util::get_escaped_string`` in the Zeek source). It writes ``time`` and ``interval`` values
with six decimals, and a few large ones in exponent notation. It writes any byte that is not
printable or that equals a separator as ``\\xNN``, and a backslash as two backslashes. Timestamps are parsed from their decimal text with integer arithmetic. A float
holds only about 16 significant digits, which is already too few for some microsecond epoch
values.

Types map as follows: ``time`` to an aware UTC ``datetime``; ``interval`` and ``double`` to
``float``; ``count``, ``int`` and ``port`` to ``int``; ``bool`` to ``bool``; ``addr``,
``subnet``, ``string``, ``enum`` and ``pattern`` to ``str``; ``set[T]``, ``vector[T]`` (and
``table[T]``, the older spelling of a set) to a ``list`` of converted elements.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# A `ts` outside [TS_MIN, TS_MAX) is treated as corrupt. The upper bound catches epoch
# milliseconds read as seconds (year 56,000 and beyond). Pcap-relative logs whose times start
# a few seconds after the epoch still pass.
TS_MIN = EPOCH
TS_MAX = datetime(2100, 1, 1, tzinfo=timezone.utc)
TS_MAX_MICROS = (TS_MAX - EPOCH) // timedelta(microseconds=1)

STRING_TYPES = frozenset({"string", "enum", "file", "func"})
CONTAINER_TYPE = re.compile(r"(set|vector|table)\[(\w+)\]")

# Decimal seconds as Zeek writes them, with an optional exponent.
_DECIMAL_SECONDS = re.compile(r"-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?")
_MAX_SECONDS_EXPONENT = 20

# `\\` (an escaped backslash) or `\xNN` (an escaped byte).
_ESCAPE = re.compile(rb"\\(?:x([0-9A-Fa-f]{2})|\\)")

# Dotted-quad IPv4 without leading zeros. This expression is tried before the ipaddress
# parser, which is several times slower, and the parser then checks anything else.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")

Converter = Callable[[str], Any]


class ImplausibleTimestamp(ValueError):
    """A `ts` value that lies outside [TS_MIN, TS_MAX)."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(
            f"timestamp {text} is outside {TS_MIN:%Y-%m-%d} to {TS_MAX:%Y-%m-%d}; "
            "epoch milliseconds read as seconds, or a corrupt value"
        )


def unescape(text: str) -> str:
    """Decode Zeek's ``\\xNN`` and ``\\\\`` escapes in one value.

    Escaped bytes are joined and decoded as UTF-8, so ``\\xc3\\xa9`` becomes ``é``. A byte
    sequence that is not UTF-8 becomes U+FFFD, which keeps every value a valid ``str``.
    """
    if "\\" not in text:
        return text
    raw = _ESCAPE.sub(_unescape_match, text.encode("utf-8"))
    return raw.decode("utf-8", "replace")


def _unescape_match(match: re.Match[bytes]) -> bytes:
    if match[1] is None:
        return b"\\"
    return bytes((int(match[1], 16),))


def micros_from_decimal(text: str) -> int:
    """Return the epoch microseconds written as decimal seconds, such as ``1545403816.962094``.

    Zeek writes most times with six decimals. It switches to exponent notation for some values
    (``2.385616957e+09`` in real x509 logs), which is read too. Digits past the sixth decimal
    are rounded half to even.

    Raises
    ------
    ValueError
        If ``text`` is not a decimal number of ASCII digits, or its magnitude is beyond 1e20 s.
    """
    # The common form, plain digits with at most six decimals, needs no Decimal.
    whole, _, fraction = text.partition(".")
    negative = whole.startswith("-")
    if negative:
        whole = whole[1:]
    if whole.isascii() and whole.isdigit() and len(fraction) <= 6 and (
            not fraction or (fraction.isascii() and fraction.isdigit())):
        micros = int(whole) * 1_000_000 + int(fraction.ljust(6, "0"))
        return -micros if negative else micros

    if _DECIMAL_SECONDS.fullmatch(text) is None:
        raise ValueError(f"invalid decimal seconds {text!r}")
    seconds = Decimal(text)

    # Bounding the exponent first keeps "1e999999999" from becoming a billion-digit integer.
    if seconds and seconds.adjusted() > _MAX_SECONDS_EXPONENT:
        raise ValueError(f"decimal seconds {text!r} are out of range")
    return int((seconds * 1_000_000).to_integral_value(ROUND_HALF_EVEN))


def micros_from_float(value: float) -> int:
    """Return the epoch microseconds of float seconds, read from their shortest decimal text.

    ``repr`` gives the shortest text that reads back as the same float. For a value that Zeek
    wrote with six decimals, that text is the one Zeek wrote, so no binary rounding leaks in.
    """
    if not math.isfinite(value):
        raise ValueError(f"invalid seconds value {value!r}")
    text = repr(value)

    # Without an exponent the text is plain decimal seconds, whose common form needs no Decimal.
    if "e" not in text:
        return micros_from_decimal(text)
    return int((Decimal(text) * 1_000_000).to_integral_value(ROUND_HALF_EVEN))


def micros_from_iso8601(text: str) -> int:
    """Return the epoch microseconds of an ISO 8601 timestamp that carries its UTC offset.

    Raises
    ------
    ValueError
        If ``text`` is not ISO 8601 or has no offset. A timestamp without an offset could be
        in any zone, so guessing UTC could shift events by hours.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return (moment - EPOCH) // timedelta(microseconds=1)


def datetime_from_micros(micros: int) -> datetime:
    """Return the aware UTC datetime of epoch microseconds.

    Raises
    ------
    ValueError
        If the value is outside the years 1 to 9999 that ``datetime`` can hold.
    """
    try:
        return EPOCH + timedelta(microseconds=micros)
    except OverflowError as err:
        raise ValueError(f"epoch microseconds {micros} are outside the datetime range") from err


def check_plausible_ts(micros: int, text: str) -> None:
    """Raise :class:`ImplausibleTimestamp` if a `ts` lies outside [TS_MIN, TS_MAX)."""
    if not 0 <= micros < TS_MAX_MICROS:
        raise ImplausibleTimestamp(text)


def build_converter(
    type_name: str,
    *,
    field_name: str,
    set_separator: str,
    empty_field: str,
    unset_field: str,
) -> Converter | None:
    """Return the converter of one TSV value of a Zeek type, or None if the type is unknown.

    The caller handles the unset token for the whole value. A container's converter handles
    the unset token for its elements, which Zeek writes for a vector element never assigned.
    """
    container = CONTAINER_TYPE.fullmatch(type_name)
    if container is None:
        return _scalar_converter(type_name, field_name=field_name, empty_field=empty_field)

    element = _scalar_converter(container[2], field_name="", empty_field=empty_field)
    if element is None:
        return None

    def convert_container(raw: str) -> list[Any]:
        if raw == empty_field:
            return []
        return [None if item == unset_field else element(item) for item in raw.split(set_separator)]

    return convert_container


def string_converter(empty_field: str) -> Converter:
    """Return the converter of a string value, which maps the empty-field token to ``""``.

    Zeek 4 and later write an empty string as the empty-field token, and a value that really
    is that token with its first byte escaped (``\\x28empty)``).
    """

    def convert_string(raw: str) -> str:
        if raw == empty_field:
            return ""
        return unescape(raw) if "\\" in raw else raw

    return convert_string


def _scalar_converter(type_name: str, *, field_name: str, empty_field: str) -> Converter | None:
    if type_name in STRING_TYPES or type_name == "pattern":
        return string_converter(empty_field)
    if type_name == "time":
        return _convert_ts if field_name == "ts" else _convert_time
    return _SCALAR_CONVERTERS.get(type_name)


def _convert_time(raw: str) -> datetime:
    return datetime_from_micros(micros_from_decimal(raw))


def _convert_ts(raw: str) -> datetime:
    micros = micros_from_decimal(raw)
    check_plausible_ts(micros, raw)
    return datetime_from_micros(micros)


def _convert_count(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise ValueError(f"invalid unsigned integer {raw!r}")
    return int(raw)


def _convert_int(raw: str) -> int:
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"invalid integer {raw!r}")
    return int(raw)


def _convert_bool(raw: str) -> bool:
    if raw == "T":
        return True
    if raw == "F":
        return False
    raise ValueError(f"invalid bool {raw!r}; Zeek writes T or F")


def _convert_addr(raw: str) -> str:
    if _IPV4.fullmatch(raw) is None:
        ipaddress.ip_address(raw)
    return raw


def _convert_subnet(raw: str) -> str:
    ipaddress.ip_network(raw, strict=False)
    return raw


_SCALAR_CONVERTERS: dict[str, Converter] = {
    "count": _convert_count,
    "port": _convert_count,
    "int": _convert_int,
    "double": float,
    "interval": float,
    "bool": _convert_bool,
    "addr": _convert_addr,
    "subnet": _convert_subnet,
}
