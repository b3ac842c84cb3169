"""Tests for agent.zeek_values: exact timestamps, Zeek escapes and typed column converters."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from agent.zeek_values import (
    ImplausibleTimestamp,
    build_converter,
    check_plausible_ts,
    datetime_from_micros,
    micros_from_decimal,
    micros_from_float,
    micros_from_iso8601,
    unescape,
)

UTC = timezone.utc


def converter(type_name: str, field_name: str = "f") -> Any:
    convert = build_converter(type_name, field_name=field_name, set_separator=",", empty_field="(empty)",
                              unset_field="-")
    assert convert is not None
    return convert


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("1545403816.962094", 1545403816962094),
        ("0.000001", 1),
        ("22.335172", 22335172),
        ("1714557602.5", 1714557602500000),
        ("1714557602", 1714557602000000),
        ("1714557602.", 1714557602000000),
        ("-1.5", -1500000),
        ("1.0000005", 1000000),  # half to even: 0.5 us rounds down to 0
        ("1.0000015", 1000002),  # half to even: 1.5 us rounds up to 2
        ("1.00000051", 1000001),
        ("1e9", 1_000_000_000_000_000),
        ("2.385616957e+09", 2385616957000000),  # as Zeek wrote it in a real x509 log
        ("-2.1504318496896954e+09", -2150431849689695),  # and in a real ntp log
        ("0e0", 0),
    ],
)
def test_micros_from_decimal_exact(text: str, micros: int) -> None:
    assert micros_from_decimal(text) == micros


@pytest.mark.parametrize(
    "text",
    ["", ".5", "1.2.3", "abc", "1,5", " 1.5", "1.5 ", "--1", "١٢.٣", "1.5x", "1e", "e5", "1_000", "NaN",
     "Infinity", "0x10", "1e999999999", "1.5e21"],
)
def test_micros_from_decimal_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        micros_from_decimal(text)


def test_decimal_time_exact_where_float_rounds() -> None:
    """A float has too few digits for microseconds near 1e10 s; the decimal text does not."""
    text = "9999999999.999999"

    exact = datetime_from_micros(micros_from_decimal(text))
    via_float = datetime.fromtimestamp(float(text), tz=UTC)

    assert exact == datetime(2286, 11, 20, 17, 46, 39, 999999, tzinfo=UTC)
    assert via_float != exact


@pytest.mark.parametrize(
    ("value", "micros"),
    [(1714557600.123456, 1714557600123456), (22.335172, 22335172), (0.0, 0), (1e-06, 1), (-0.5, -500000)],
)
def test_micros_from_float_uses_shortest_decimal(value: float, micros: int) -> None:
    assert micros_from_float(value) == micros


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_micros_from_float_rejects_non_finite(value: float) -> None:
    with pytest.raises(ValueError):
        micros_from_float(value)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2024-05-01T10:00:00.123456Z", 1714557600123456),
        ("2024-05-01T10:00:00Z", 1714557600000000),
        ("2024-05-01T12:00:00.5+02:00", 1714557600500000),
        ("1970-01-01T00:00:22.335172Z", 22335172),
    ],
)
def test_micros_from_iso8601(text: str, micros: int) -> None:
    assert micros_from_iso8601(text) == micros


@pytest.mark.parametrize("text", ["2024-05-01T10:00:00", "2024-13-01T00:00:00Z", "yesterday", ""])
def test_micros_from_iso8601_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        micros_from_iso8601(text)


def test_datetime_from_micros_out_of_range() -> None:
    with pytest.raises(ValueError, match="outside the datetime range"):
        datetime_from_micros(10**20)


@pytest.mark.parametrize("micros", [0, 4102444799999999])
def test_check_plausible_ts_accepts_bounds(micros: int) -> None:
    check_plausible_ts(micros, str(micros))


@pytest.mark.parametrize("micros", [-1, 4102444800000000, 10**20])
def test_check_plausible_ts_rejects(micros: int) -> None:
    with pytest.raises(ImplausibleTimestamp) as excinfo:
        check_plausible_ts(micros, "TEXT")

    assert excinfo.value.text == "TEXT"
    assert str(excinfo.value) == ("timestamp TEXT is outside 1970-01-01 to 2100-01-01; epoch milliseconds "
                                  "read as seconds, or a corrupt value")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("\\x2d", "-"),
        ("\\x28empty)", "(empty)"),
        ("a\\x2cb", "a,b"),
        ("curl/8.0\\x09beta", "curl/8.0\tbeta"),
        ("caf\\xc3\\xa9", "café"),  # escaped UTF-8 bytes join into one character
        ("\\xff", "\ufffd"),  # not UTF-8
        ("C:\\\\x41", "C:\\x41"),  # an escaped backslash followed by the text x41
        ("O=VMware\\\\, Inc", "O=VMware\\, Inc"),
        ("\\x4", "\\x4"),  # not an escape: too few hex digits
        ("\\n", "\\n"),
        ("\\X41", "\\X41"),
    ],
)
def test_unescape(raw: str, expected: str) -> None:
    assert unescape(raw) == expected


@pytest.mark.parametrize(
    ("type_name", "raw", "expected"),
    [
        ("count", "0", 0),
        ("count", "18446744073709551615", 2**64 - 1),
        ("port", "443", 443),
        ("int", "-42", -42),
        ("double", "3.25", 3.25),
        ("interval", "0.000870", 0.00087),
        ("interval", "-1.5", -1.5),
        ("bool", "T", True),
        ("bool", "F", False),
        ("addr", "192.168.1.195", "192.168.1.195"),
        ("addr", "2001:718:2:1663:dc58:6d9:ef13:51a5", "2001:718:2:1663:dc58:6d9:ef13:51a5"),
        ("subnet", "10.0.0.0/8", "10.0.0.0/8"),
        ("subnet", "2001:db8::/32", "2001:db8::/32"),
        ("string", "(empty)", ""),
        ("enum", "udp", "udp"),
        ("pattern", "/^?(a\\\\.b)$?/", "/^?(a\\.b)$?/"),
        ("time", "1521911720.865716", datetime(2018, 3, 24, 17, 15, 20, 865716, tzinfo=UTC)),
        ("set[string]", "(empty)", []),
        ("set[string]", "a\\x2cb,c", ["a,b", "c"]),
        ("table[string]", "x,y", ["x", "y"]),
        ("vector[string]", "-,text/plain", [None, "text/plain"]),
        ("vector[string]", "(empty),a", ["", "a"]),
        ("vector[string]", "\\x2d", ["-"]),
        ("vector[interval]", "2230.000000,41830.000000", [2230.0, 41830.0]),
        ("vector[count]", "1,-,3", [1, None, 3]),
        ("set[addr]", "192.0.2.1,2001:db8::1", ["192.0.2.1", "2001:db8::1"]),
        ("vector[bool]", "T,F", [True, False]),
    ],
)
def test_converter_values(type_name: str, raw: str, expected: Any) -> None:
    value = converter(type_name)(raw)

    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("type_name", "raw"),
    [
        ("count", "-1"),
        ("count", "1.5"),
        ("count", "abc"),
        ("count", "(empty)"),
        ("count", "١٢"),
        ("count", ""),
        ("port", "80/tcp"),
        ("int", "--1"),
        ("int", "-"),
        ("double", "x"),
        ("interval", ""),
        ("bool", "true"),
        ("bool", "1"),
        ("addr", "999.1.1.1"),
        ("addr", "01.2.3.4"),
        ("addr", "host.example.org"),
        ("subnet", "10.0.0.0/33"),
        ("time", "1.2.3"),
        ("time", "(empty)"),
        ("vector[count]", "1,x"),
        ("set[addr]", "192.0.2.1,nope"),
    ],
)
def test_converter_rejects(type_name: str, raw: str) -> None:
    with pytest.raises(ValueError):
        converter(type_name)(raw)


def test_ts_converter_checks_plausibility() -> None:
    convert_ts = converter("time", field_name="ts")
    convert_other = converter("time", field_name="certificate.not_valid_after")

    with pytest.raises(ImplausibleTimestamp):
        convert_ts("4102444800.000000")
    assert convert_other("4102444800.000000") == datetime(2100, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("type_name", ["record", "set[record]", "table[string,count]", "vector[vector[string]]"])
def test_unknown_type_has_no_converter(type_name: str) -> None:
    converted = build_converter(type_name, field_name="f", set_separator=",", empty_field="(empty)",
                                unset_field="-")

    assert converted is None
