"""The Zeek reader on published real logs: row counts, labels and exact values from real rows.

The expected counts are the ones the datasets' providers published (IoT-23, Stratosphere,
Slips, brimdata/zed-sample-data).
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.zeek import ParseStats, ZeekRecord, iter_zeek_records

UTC = timezone.utc
IOT23 = "iot23/raw"
STRATOSPHERE = "stratosphere-testing"
ZED_TSV = "zed-sample-data/zeek-default"
ZED_JSON = "zed-sample-data/zeek-json"


def read_all(path: Path) -> tuple[list[ZeekRecord], ParseStats]:
    stats = ParseStats()
    return list(iter_zeek_records(path, stats=stats)), stats


@pytest.mark.parametrize(
    ("relative", "rows"),
    [
        (f"{IOT23}/CTU-IoT-Malware-Capture-34-1.conn.log.labeled", 23145),
        (f"{IOT23}/CTU-IoT-Malware-Capture-42-1.conn.log.labeled", 4426),
        (f"{IOT23}/CTU-Honeypot-Capture-4-1.conn.log.labeled", 452),
        (f"{STRATOSPHERE}/008-zeek-mixed/data/conn.log.labeled", 5663),
        (f"{STRATOSPHERE}/010-zeek-mixed/data/conn.log.labeled", 5347),
        ("slips/test9-mixed-zeek-dir/conn.log", 576),
        ("slips/test10-mixed-zeek-dir/conn.log", 141),
        (f"{ZED_TSV}/dns.log.gz", 53615),
        (f"{ZED_JSON}/dns.json.gz", 53615),
        (f"{ZED_TSV}/x509.log.gz", 348),
        (f"{ZED_TSV}/ntp.log.gz", 904),
    ],
)
def test_real_log_row_count(shared_data_dir: Path, relative: str, rows: int) -> None:
    records, stats = read_all(shared_data_dir / relative)

    assert len(records) == rows
    assert stats.records == rows
    assert stats.malformed_total == 0
    assert stats.invalid_utf8 == 0


@pytest.mark.parametrize(
    ("relative", "labels"),
    [
        (f"{IOT23}/CTU-IoT-Malware-Capture-34-1.conn.log.labeled",
         {("Malicious", "DDoS"): 14394, ("Malicious", "C&C"): 6706, ("Benign", None): 1923,
          ("Malicious", "PartOfAHorizontalPortScan"): 122}),
        (f"{IOT23}/CTU-IoT-Malware-Capture-42-1.conn.log.labeled",
         {("Benign", None): 4420, ("Malicious", "FileDownload"): 3, ("Malicious", "C&C-FileDownload"): 3}),
        (f"{IOT23}/CTU-Honeypot-Capture-4-1.conn.log.labeled", {("benign", None): 452}),
    ],
)
def test_iot23_labels_split_from_joined_column(shared_data_dir: Path, relative: str,
                                               labels: dict[tuple[str, str | None], int]) -> None:
    """The published label counts prove the three-space join was split on every row.

    IoT-23 writes "-" for a benign row's detailed label, which is Zeek's unset token.
    """
    records, _ = read_all(shared_data_dir / relative)

    counted = Counter((r.fields["label"], r.fields["detailed-label"]) for r in records)

    assert counted == labels
    assert {r.fields["tunnel_parents"] for r in records} == {None}


def test_iot23_34_1_without_close_or_final_newline(shared_data_dir: Path) -> None:
    path = shared_data_dir / IOT23 / "CTU-IoT-Malware-Capture-34-1.conn.log.labeled"

    records, stats = read_all(path)

    assert not path.read_bytes().endswith(b"\n")
    assert b"#close" not in path.read_bytes()
    assert (records[-1].line, records[-1].fields["uid"]) == (23153, "Ct2Yhy4d33oL3yyZY9")
    assert records[-1].fields["ts"] == datetime(2018, 12, 22, 14, 49, 58, 459568, tzinfo=UTC)
    assert stats.header_lines == 8


def test_iot23_crlf_file_first_row(shared_data_dir: Path) -> None:
    """42-1 has CRLF line endings; no value may keep the CR."""
    records, stats = read_all(shared_data_dir / IOT23 / "CTU-IoT-Malware-Capture-42-1.conn.log.labeled")

    assert records[0].fields == {
        "ts": datetime(2019, 1, 10, 13, 34, 48, 26074, tzinfo=UTC),
        "uid": "CXY5uG2sSmjJ0grfY2",
        "id.orig_h": "192.168.1.197",
        "id.orig_p": 58312,
        "id.resp_h": "104.24.96.120",
        "id.resp_p": 80,
        "proto": "tcp",
        "service": "http",
        "duration": 3.909013,
        "orig_bytes": 83,
        "resp_bytes": 67212,
        "conn_state": "SF",
        "local_orig": None,
        "local_resp": None,
        "missed_bytes": 4380,
        "history": "ShADadttFf",
        "orig_pkts": 54,
        "orig_ip_bytes": 3371,
        "resp_pkts": 50,
        "resp_ip_bytes": 69224,
        "tunnel_parents": None,
        "label": "Malicious",
        "detailed-label": "FileDownload",
    }
    assert stats.header_lines == 9  # #close is read as a header line


def test_stratosphere_008_first_row_exact(shared_data_dir: Path) -> None:
    records, _ = read_all(shared_data_dir / STRATOSPHERE / "008-zeek-mixed/data/conn.log.labeled")

    first = records[0]

    assert (first.log_path, first.line) == ("conn", 9)
    assert first.fields == {
        "ts": datetime(2022, 6, 12, 21, 59, 58, 444458, tzinfo=UTC),
        "uid": "CHLXQF2OBY4onAR0Ug",
        "id.orig_h": "147.32.81.167",
        "id.orig_p": 62771,
        "id.resp_h": "40.74.108.123",
        "id.resp_p": 443,
        "proto": "tcp",
        "service": "ssl",
        "duration": 1.135424,
        "orig_bytes": 1596,
        "resp_bytes": 4039,
        "conn_state": "SF",
        "local_orig": True,
        "local_resp": False,
        "missed_bytes": 5138,
        "history": "ShADdaFf",
        "orig_pkts": 14,
        "orig_ip_bytes": 1016,
        "resp_pkts": 16,
        "resp_ip_bytes": 1226,
        "tunnel_parents": [],
        "label": "Benign",
        "detailedlabel": "Microsoft",
    }


@pytest.mark.parametrize(
    ("scenario", "labels"),
    [
        ("008-zeek-mixed", {("Malicious", "External-Attack-to-Device"): 4201, ("Benign", "Microsoft"): 652,
                            ("Benign", "ESET"): 604, ("Benign", "Dropbox"): 135, ("Background", ""): 60,
                            ("Benign", "Cert-Validation"): 11}),
        ("010-zeek-mixed", {("Malicious", "External-Attack-to-Device"): 3373, ("Benign", ""): 1689,
                            ("Benign", "Microsoft"): 245, ("Background", ""): 37, ("Benign", "Cert-Validation"): 3}),
    ],
)
def test_stratosphere_labels(shared_data_dir: Path, scenario: str, labels: dict[tuple[str, str], int]) -> None:
    """Stratosphere writes "(empty)" where no rule set a detailed label: Zeek's empty string."""
    records, _ = read_all(shared_data_dir / STRATOSPHERE / scenario / "data/conn.log.labeled")

    assert Counter((r.fields["label"], r.fields["detailedlabel"]) for r in records) == labels


def test_slips_test10_stray_tab_before_separator(shared_data_dir: Path) -> None:
    path = shared_data_dir / "slips/test10-mixed-zeek-dir/conn.log"

    records, stats = read_all(path)

    assert path.read_bytes().startswith(b"\t#separator")
    assert stats.header_lines == 9
    assert (records[0].line, records[0].log_path) == (9, "conn")
    assert records[0].fields["ts"] == datetime(2020, 10, 6, 15, 32, 46, 785668, tzinfo=UTC)
    assert records[0].fields["id.orig_h"] == "2001:718:2:1663:dc58:6d9:ef13:51a5"
    assert records[-1].fields["uid"] == "CnTEQZ2KnyKLBFTivs"


def test_slips_test9_json_first_row(shared_data_dir: Path) -> None:
    records, _ = read_all(shared_data_dir / "slips/test9-mixed-zeek-dir/conn.log")

    first = records[0]

    assert first.log_path == "conn"
    assert first.fields["ts"] == datetime(1970, 1, 1, 0, 0, 22, 335172, tzinfo=UTC)
    assert first.fields["id.orig_h"] == "fe80::1cf4:44d2:904a:14f7"
    assert first.fields["id.resp_p"] == 5355
    assert first.fields["duration"] == 0.09628199999999865
    assert "local_orig" not in first.fields
    assert records[-1].fields["uid"] == "C6VlUE4fyYvUJHu3ei"
    assert "service" not in records[-1].fields


def test_zed_dns_tsv_and_json_agree(shared_data_dir: Path) -> None:
    """The same traffic in both formats gives the same records.

    Zeek rounds intervals to six decimals in TSV only, so `rtt` agrees to 5e-7 s.
    """
    tsv = list(itertools.islice(iter_zeek_records(shared_data_dir / ZED_TSV / "dns.log.gz"), 200))
    json_records = list(itertools.islice(iter_zeek_records(shared_data_dir / ZED_JSON / "dns.json.gz"), 200))

    for tsv_record, json_record in zip(tsv, json_records):
        assert tsv_record.log_path == json_record.log_path == "dns"
        assert tsv_record.line == json_record.line + 8
        for name, tsv_value in tsv_record.fields.items():
            json_value = json_record.fields.get(name)
            if name == "rtt" and tsv_value is not None:
                assert json_value == pytest.approx(tsv_value, abs=5e-7)
            else:
                assert json_value == tsv_value, name
        assert set(json_record.fields) - set(tsv_record.fields) == {"_write_ts"}


def test_zed_dns_first_record_exact(shared_data_dir: Path) -> None:
    (record,) = itertools.islice(iter_zeek_records(shared_data_dir / ZED_TSV / "dns.log.gz"), 1)

    assert record.fields["ts"] == datetime(2018, 3, 24, 17, 15, 20, 865716, tzinfo=UTC)
    assert record.fields["answers"] == ["ise.wrccdc.cpp.edu", "134.71.3.16"]
    assert record.fields["TTLs"] == [2230.0, 41830.0]
    assert (record.fields["AA"], record.fields["RD"]) == (False, True)
    assert record.fields["rtt"] == 0.00087


def test_zed_x509_escaped_backslash_and_times_agree(shared_data_dir: Path) -> None:
    """TSV writes a backslash as two; JSON writes it once. Both must read the same."""
    tsv, _ = read_all(shared_data_dir / ZED_TSV / "x509.log.gz")
    json_records, _ = read_all(shared_data_dir / ZED_JSON / "x509.json.gz")

    for name in ("certificate.subject", "certificate.not_valid_before", "certificate.not_valid_after"):
        assert [r.fields[name] for r in tsv] == [r.fields[name] for r in json_records]
    assert tsv[0].fields["certificate.subject"].startswith("unstructuredName=1315656901\\,564d")
    assert tsv[0].fields["certificate.not_valid_before"] == datetime(2011, 9, 10, 12, 15, 2, tzinfo=UTC)


def test_zed_x509_exponent_time(shared_data_dir: Path) -> None:
    """Zeek wrote this expiry as 2.385616957e+09; the JSON copy says 2045-08-06T07:22:37Z."""
    records, _ = read_all(shared_data_dir / ZED_TSV / "x509.log.gz")

    assert records[32].line == 41
    assert records[32].fields["certificate.not_valid_after"] == datetime(2045, 8, 6, 7, 22, 37, tzinfo=UTC)


def test_zed_ntp_binary_string_differs_by_format(shared_data_dir: Path) -> None:
    """TSV decodes `\\x00`; JSON keeps the text, because there it is ambiguous."""
    (tsv,) = itertools.islice(iter_zeek_records(shared_data_dir / ZED_TSV / "ntp.log.gz"), 1)
    (json_record,) = itertools.islice(iter_zeek_records(shared_data_dir / ZED_JSON / "ntp.json.gz"), 1)

    assert tsv.fields["ref_id"] == "\x00\x00\x00\x00"
    assert json_record.fields["ref_id"] == "\\x00\\x00\\x00\\x00"
    assert tsv.fields["xmt_time"] == json_record.fields["xmt_time"]
    assert json_record.fields["ref_time"] == datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("relative", "rows"),
    [
        ("iot23/CTU-IoT-Malware-Capture-34-1.conn.log.labeled", 23145),
        ("iot23/CTU-IoT-Malware-Capture-42-1.conn.log.labeled", 4426),
        ("iot23/CTU-Honeypot-Capture-4-1.conn.log.labeled", 452),
        ("stratosphere/008-conn.log.labeled", 5663),
        ("stratosphere/010-conn.log.labeled", 5347),
    ],
)
def test_bundled_sample_row_count(examples_data_dir: Path, relative: str, rows: int) -> None:
    """The copies shipped for the demo read like their originals, with no shared data at hand."""
    records, stats = read_all(examples_data_dir / relative)

    assert len(records) == rows
    assert stats.malformed_total == 0
    assert {r.log_path for r in records} == {"conn"}
