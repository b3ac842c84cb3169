"""Tests of the TA-fti Splunk add-on: its indicator mapping, its TAXII polling, its build.

The mapping and polling functions run here with the same splunklib the build vendors; the
KV store is a small in-memory stand-in with splunklib's ``batch_save``/``delete_by_id``.
The build test packages the add-on and runs Splunk AppInspect on it.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
import sys
import tarfile
from io import BytesIO, StringIO
from types import SimpleNamespace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from siem_integrations import taxii_cursor
from siem_integrations.splunk.build import SOURCE, build_app
from splunklib.binding import HTTPError
from splunklib.modularinput import EventWriter

from stix_mappings.indicator import build_fused_indicator
from stix_mappings.splunk import indicator_to_hec_event
from tests.siem_integrations.test_taxii_sync import COLLECTION, CREDENTIALS, added
from tests.siem_integrations.taxii_server import TaxiiServer

sys.path.insert(0, str(SOURCE / "bin"))
# The build copies taxii_cursor into the add-on's lib/ folder. From the source tree the
# add-on imports the package's module under that top-level name.
sys.modules.setdefault("taxii_cursor", taxii_cursor)
import fti_intel  # noqa: E402
import fti_taxii  # noqa: E402

MOMENT = datetime(2024, 6, 3, 1, 0, tzinfo=timezone.utc)
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def indicator(kind: str, value: str, *, revoked: bool = False, fused_score: float = 0.76,
              valid_until: datetime = MOMENT + timedelta(days=1),
              modified: datetime = MOMENT) -> dict[str, Any]:
    return build_fused_indicator(
        observable_type=kind, value=value, fused_score=fused_score, corroborating_sites=2,
        strategy="trust-weighted-noisy-or", round_start=MOMENT - timedelta(hours=1),
        valid_from=MOMENT, valid_until=valid_until, created=MOMENT,
        modified=modified, hub_identity="identity--6f1c2a4e-8d3b-4c7a-9e0f-1a2b3c4d5e6f",
        revoked=revoked,
    )


@pytest.mark.parametrize("kind, value, collection, field", [
    ("ipv4-addr", "203.0.113.9", "ip_intel", "ip"),
    ("ipv6-addr", "2001:db8::1", "ip_intel", "ip"),
    ("domain-name", "login.example.org", "domain_intel", "domain"),
    ("url", "https://login.example.org/a?b='c'", "http_intel", "url"),
    ("sha256", SHA256, "file_intel", "file_hash"),
    ("file_name", "o'brien.exe", "file_intel", "file_name"),
])
def test_intel_record_matches_hec_event(kind: str, value: str, collection: str,
                                        field: str) -> None:
    source = indicator(kind, value)
    hec = indicator_to_hec_event(source, index=None, host="h")
    event = hec["event"]

    mapped = fti_intel.indicator_to_intel(source)

    assert mapped is not None
    assert mapped[0] == collection == event["threat_collection"]
    assert mapped[1][field] == value == event[field]
    assert mapped[1]["weight"] == event["weight"]
    assert mapped[1]["threat_key"] == event["threat_key"]
    assert mapped[1]["time"] == hec["time"]


@pytest.mark.parametrize("kind, value", [
    ("ipv4-addr", "203.0.113.9"), ("ipv6-addr", "2001:db8::1"),
    ("domain-name", "login.example.org"), ("url", "https://login.example.org/a?b='c'"),
    ("md5", "d41d8cd98f00b204e9800998ecf8427e"), ("sha256", SHA256),
    ("file_name", "o'brien.exe"), ("file_path", "C:\\Users\\o'brien\\run.exe"),
    ("file_path", "/tmp/run.sh"), ("ja3", "d41d8cd98f00b204e9800998ecf8427e"),
    ("x509-sha256", SHA256),
])
@pytest.mark.parametrize("revoked", [False, True])
def test_addon_event_matches_hec_event(kind: str, value: str, revoked: bool) -> None:
    source = indicator(kind, value, revoked=revoked)

    assert fti_intel.indicator_to_event(source) == \
        indicator_to_hec_event(source, index=None, host="h")["event"]


def test_addon_event_of_foreign_pattern_none() -> None:
    source = {**indicator("ipv4-addr", "203.0.113.9"),
              "pattern": "[ipv4-addr:value = '203.0.113.9'] OR [ipv4-addr:value = '1.2.3.4']"}

    assert fti_intel.indicator_to_event(source) is None


def test_intel_certificate_serial() -> None:
    source = indicator("ipv4-addr", "203.0.113.9")
    source["pattern"] = "[x509-certificate:serial_number = '36:f7:d4:32:f4:ab:70:ea']"

    collection, record = fti_intel.indicator_to_intel(source)

    assert collection == "certificate_intel"
    assert record["certificate_serial"] == "36:f7:d4:32:f4:ab:70:ea"


# STIX timestamps may carry any number of fractional digits.
STIX_TIMESTAMPS = {
    "2024-06-03T01:00:00Z": "2024-06-03T01:00:00+00:00",
    "2024-06-03T01:00:00.1Z": "2024-06-03T01:00:00.100000+00:00",
    "2024-06-03T01:00:00.12Z": "2024-06-03T01:00:00.120000+00:00",
    "2024-06-03T01:00:00.123Z": "2024-06-03T01:00:00.123000+00:00",
    "2024-06-03T01:00:00.123456789Z": "2024-06-03T01:00:00.123456+00:00",
    "2024-06-03T03:00:00.5+02:00": "2024-06-03T01:00:00.500000+00:00",
}


def python39() -> str | None:
    """Return a Python 3.9 interpreter, the Python of Splunk 9.x, or None if none runs here."""
    candidates = [shutil.which("python3.9")]
    if shutil.which("pyenv") is not None:
        versions = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True,
                                  text=True, timeout=30, check=False).stdout.split()
        for version in (v for v in versions if v.startswith("3.9.")):
            prefix = subprocess.run(["pyenv", "prefix", version], capture_output=True,
                                    text=True, timeout=30, check=False).stdout.strip()
            candidates.append(str(Path(prefix, "bin", "python3.9")) if prefix else None)

    # A pyenv shim named python3.9 exists even when it cannot run that version.
    for candidate in filter(None, candidates):
        check = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30, check=False)
        if check.returncode == 0 and check.stdout.strip() == "(3, 9)":
            return candidate
    return None


def test_intel_timestamps_any_fraction() -> None:
    for text, expected in STIX_TIMESTAMPS.items():
        assert fti_intel.parse_timestamp(text).isoformat() == expected, text


def test_intel_timestamps_on_python39() -> None:
    interpreter = python39()
    if interpreter is None:
        pytest.skip("no Python 3.9 interpreter is installed")
    script = ("import json, sys, fti_intel\n"
              "print(json.dumps([fti_intel.parse_timestamp(t).isoformat() "
              "for t in json.load(sys.stdin)]))")

    completed = subprocess.run([interpreter, "-c", script], input=json.dumps(list(STIX_TIMESTAMPS)),
                               capture_output=True, text=True, timeout=60, check=False,
                               cwd=SOURCE / "bin")

    assert completed.returncode == 0, completed.stderr[-1000:]
    assert json.loads(completed.stdout) == list(STIX_TIMESTAMPS.values())


def test_intel_unsupported_pattern_none() -> None:
    source = indicator("ipv4-addr", "203.0.113.9")
    source["pattern"] = "[ipv4-addr:value = '203.0.113.9'] OR [domain-name:value = 'a.example']"

    assert fti_intel.indicator_to_intel(source) is None


def test_intel_key_stable_across_versions() -> None:
    first = indicator("ipv4-addr", "203.0.113.9")
    later = dict(first, modified="2024-06-03T02:00:00.000Z")

    assert fti_intel.indicator_to_intel(first)[1]["_key"] == \
        fti_intel.indicator_to_intel(later)[1]["_key"]


class MemoryCollection:
    """A KV store collection with splunklib's ``data.batch_save`` and ``data.delete_by_id``."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.data = self

    def batch_save(self, *records: dict[str, Any]) -> None:
        for record in records:
            self.records[record["_key"]] = record

    def query(self, query: str = "{}", fields: str = "", sort: str = "_key", skip: int = 0,
              limit: int = 0) -> list[dict[str, Any]]:
        # splunklib passes the KV store's JSON query. Equality on each field is enough here.
        wanted = json.loads(query)
        found = sorted((r for r in self.records.values()
                        if all(r.get(k) == v for k, v in wanted.items())),
                       key=lambda r: r[sort])
        found = found[skip:skip + limit] if limit else found[skip:]
        names = fields.split(",") if fields else None
        return [{k: v for k, v in r.items() if names is None or k in names} for r in found]

    def delete_by_id(self, key: str) -> None:
        # splunklib raises HTTPError 404 for a key the collection does not hold.
        if key not in self.records:
            raise HTTPError(SimpleNamespace(status=404, reason="Not Found", headers=[],
                                            body=BytesIO(b"")))
        del self.records[key]


class MemoryKvStore(dict):  # type: ignore[type-arg]
    """``service.kvstore``: indexed by name, and iterating yields objects with a ``name``."""

    def __iter__(self) -> Any:
        return iter(SimpleNamespace(name=name) for name in self.keys())


class MemoryService:
    """The parts of a splunklib ``Service`` the input uses: KV store and stored passwords."""

    def __init__(self, *names: str, passwords: tuple[tuple[str, str], ...] = ()) -> None:
        self.collections = {name: MemoryCollection() for name in names}
        self.kvstore = MemoryKvStore(self.collections)
        self.storage_passwords = [
            SimpleNamespace(realm="TA-fti", username=user, clear_password=password)
            for user, password in passwords]


def test_update_collections_upserts_and_deletes() -> None:
    app = MemoryService("fti_indicators")
    es = MemoryService("ip_intel", "domain_intel", "http_intel", "file_intel",
                       "certificate_intel")
    now = MOMENT + timedelta(hours=1)
    fti_taxii.update_collections([indicator("ipv4-addr", "203.0.113.9"),
                                  indicator("domain-name", "bad.example")], app, es, now)

    fti_taxii.update_collections([indicator("ipv4-addr", "203.0.113.9", revoked=True)],
                                 app, es, now)

    assert [r["threat_match_value"] for r in app.collections["fti_indicators"].records.values()] \
        == ["bad.example"]
    assert es.collections["ip_intel"].records == {}
    assert [r["domain"] for r in es.collections["domain_intel"].records.values()] == [
        "bad.example"]


def test_purge_expired_reads_every_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fti_taxii, "PURGE_PAGE_SIZE", 2)
    app = MemoryService("fti_indicators")
    fti_taxii.update_collections([indicator("ipv4-addr", f"203.0.113.{n}") for n in range(1, 6)],
                                 app, None, MOMENT)

    deleted = fti_taxii.purge_expired(app, None, MOMENT + timedelta(days=2))

    assert deleted == 5
    assert app.collections["fti_indicators"].records == {}


def test_purge_expired_without_new_version() -> None:
    """An indicator that expires with no revocation published leaves every collection."""
    app = MemoryService("fti_indicators")
    es = MemoryService("ip_intel", "domain_intel", "http_intel", "file_intel",
                       "certificate_intel")
    es.collections["ip_intel"].records["other"] = {"_key": "other", "ip": "198.51.100.1",
                                                  "threat_key": "other-feed",
                                                  "valid_until": "2000-01-01T00:00:00Z"}
    fti_taxii.update_collections([indicator("ipv4-addr", "203.0.113.9"),
                                  indicator("domain-name", "bad.example",
                                            valid_until=MOMENT + timedelta(days=5))],
                                 app, es, MOMENT)

    deleted = fti_taxii.purge_expired(app, es, MOMENT + timedelta(days=2))

    assert deleted == 2
    assert [r["threat_match_value"] for r in app.collections["fti_indicators"].records.values()] \
        == ["bad.example"]
    assert list(es.collections["ip_intel"].records) == ["other"]
    assert len(es.collections["domain_intel"].records) == 1


def test_update_collections_removes_expired() -> None:
    app = MemoryService("fti_indicators")
    fti_taxii.update_collections([indicator("ipv4-addr", "203.0.113.9")], app, None, MOMENT)

    fti_taxii.update_collections([indicator("ipv4-addr", "203.0.113.9")], app, None,
                                 MOMENT + timedelta(days=2))

    assert app.collections["fti_indicators"].records == {}


@pytest.mark.parametrize("with_next", [True, False])
def test_input_pages_with_checkpoint(tmp_path: Path, with_next: bool) -> None:
    auth = "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS, with_next=with_next) as server:
        for n in range(5):
            server.state.add(added(n), indicator("ipv4-addr", f"203.0.113.{n + 1}"))
        cursor = taxii_cursor.TaxiiCursor(None, page_size=2)
        seen = []
        for _ in range(10):
            envelope, last = fti_taxii.fetch_page(server.api_root, COLLECTION, cursor.query(),
                                                  auth_header=auth, verify_tls=True)
            page = envelope.get("objects", [])
            seen.extend(o["pattern"] for o in cursor.new_objects(page))
            more = cursor.advance(page, more=bool(envelope.get("more")),
                                  next_value=envelope.get("next"), date_added_last=last)
            if not more:
                break

    assert len(seen) == 5
    assert (cursor.next, cursor.added_after) == (None, added(4))


def test_poll_stanza_writes_events_and_collections(tmp_path: Path) -> None:
    app = MemoryService("fti_indicators", passwords=(CREDENTIALS,))
    es = MemoryService("ip_intel", "domain_intel", "http_intel", "file_intel",
                       "certificate_intel")
    output, errors = StringIO(), StringIO()
    config = {"api_root": "", "collection": COLLECTION, "username": CREDENTIALS[0],
              "page_size": "2", "index": "threat"}
    far = datetime(2099, 1, 1, tzinfo=timezone.utc)
    with TaxiiServer(COLLECTION, credentials=CREDENTIALS, with_next=False) as server:
        config["api_root"] = server.api_root
        server.state.add(added(0), indicator("ipv4-addr", "203.0.113.1", valid_until=far))
        server.state.add(added(1), indicator("domain-name", "bad.example", valid_until=far))
        # Expired by the real clock: indexed, but kept out of the collections.
        server.state.add(added(2), indicator("ipv4-addr", "203.0.113.3"))

        fti_taxii.poll_stanza("fti_taxii://hub", config, app, es, str(tmp_path),
                              EventWriter(output=output, error=errors))
        # The new version gets a later modified, because the cursor keys versions by it.
        server.state.add(added(3), indicator("domain-name", "bad.example", revoked=True,
                                             valid_until=far,
                                             modified=MOMENT + timedelta(hours=1)))
        fti_taxii.poll_stanza("fti_taxii://hub", config, app, es, str(tmp_path),
                              EventWriter(output=output, error=errors))

    values = [r["threat_match_value"] for r in app.collections["fti_indicators"].records.values()]
    data = re.findall(r"<data>(.*?)</data>", output.getvalue(), re.DOTALL)
    events = [json.loads(html.unescape(text)) for text in data]
    assert [(e["observable_type"], e["revoked"]) for e in events] == [
        ("ipv4-addr", False), ("domain-name", False), ("ipv4-addr", False),
        ("domain-name", True)]
    assert events[0] == indicator_to_hec_event(
        indicator("ipv4-addr", "203.0.113.1", valid_until=far), index=None, host="h")["event"]
    assert output.getvalue().count("<event stanza=") == 4
    assert "<sourcetype>fti:indicator</sourcetype>" in output.getvalue()
    assert "<index>threat</index>" in output.getvalue()
    assert values == ["203.0.113.1"]
    assert [r["ip"] for r in es.collections["ip_intel"].records.values()] == ["203.0.113.1"]
    assert es.collections["domain_intel"].records == {}
    assert "fti_taxii://hub: 3 indicators read, 0 expired records deleted" in errors.getvalue()
    assert "fti_taxii://hub: 1 indicators read, 0 expired records deleted" in errors.getvalue()
    assert server.state.queries[-1]["added_after"] == ["2024-06-03T02:00:01.999999Z"]


class SimulatedCrash(BaseException):
    """Stands for the process being killed; BaseException passes every except clause."""


def written_keys(output: StringIO) -> list[str]:
    """Return ``<id>@<modified>`` of every event the input wrote, in order."""
    data = re.findall(r"<data>(.*?)</data>", output.getvalue(), re.DOTALL)
    objects = [json.loads(html.unescape(text)) for text in data]
    return [f"{o['indicator_id']}@{o['modified']}" for o in objects]


@pytest.mark.parametrize("with_next", [True, False])
def test_poll_crash_before_checkpoint_rereads_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_next: bool) -> None:
    """Objects sharing date_added across pages and polls are written, none skipped."""
    app = MemoryService("fti_indicators", passwords=(CREDENTIALS,))
    output = StringIO()
    config = {"api_root": "", "collection": COLLECTION, "username": CREDENTIALS[0],
              "page_size": "3"}
    objects = [indicator("ipv4-addr", f"203.0.113.{n + 1}") for n in range(12)]
    saves: list[int] = []
    real_save = fti_taxii.save_checkpoint

    def crash_on_second_save(path: str, checkpoint: dict[str, Any]) -> None:
        saves.append(1)
        if len(saves) == 2:
            raise SimulatedCrash()
        real_save(path, checkpoint)

    with TaxiiServer(COLLECTION, credentials=CREDENTIALS, with_next=with_next) as server:
        config["api_root"] = server.api_root
        server.state.add(added(0), objects[0])
        for obj in objects[1:8]:
            server.state.add(added(1), obj)
        monkeypatch.setattr(fti_taxii, "save_checkpoint", crash_on_second_save)
        with pytest.raises(SimulatedCrash):
            fti_taxii.poll_stanza("fti_taxii://hub", config, app, None, str(tmp_path),
                                  EventWriter(output=output, error=StringIO()))
        crashed = written_keys(output)
        monkeypatch.setattr(fti_taxii, "save_checkpoint", real_save)

        fti_taxii.poll_stanza("fti_taxii://hub", config, app, None, str(tmp_path),
                              EventWriter(output=output, error=StringIO()))
        # Later objects that share the last date_added seen, and one after it.
        for obj in objects[8:11]:
            server.state.add(added(1), obj)
        server.state.add(added(2), objects[11])
        fti_taxii.poll_stanza("fti_taxii://hub", config, app, None, str(tmp_path),
                              EventWriter(output=output, error=StringIO()))

    keys = written_keys(output)
    expected = [f"{o['id']}@{o['modified']}" for o in objects]
    # The first page (3 objects) was checkpointed. The second one was written, then the crash.
    crashed_page = crashed[3:]
    assert len(crashed_page) >= 3
    assert sorted(set(keys)) == sorted(expected)
    assert sorted(k for k in set(keys) if keys.count(k) > 1) == sorted(crashed_page)
    assert len(keys) == len(expected) + len(crashed_page)


def test_checkpoint_file_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "cp.json")
    state = {"next": "n1", "added_after": added(1), "delivered": ["indicator--a@1"],
             "past_added_after": False}

    fti_taxii.save_checkpoint(path, state)

    assert fti_taxii.load_checkpoint(path) == state
    assert fti_taxii.load_checkpoint(str(tmp_path / "none.json")) is None


def test_scheme_declares_arguments() -> None:
    scheme = fti_taxii.FtiTaxiiInput().get_scheme()

    assert [a.name for a in scheme.arguments] == [
        "api_root", "collection", "username", "verify_tls", "page_size", "write_es_collections"]


@pytest.mark.slow
def test_built_app_passes_appinspect(tmp_path: Path) -> None:
    package = build_app(tmp_path / "dist")
    report_path = tmp_path / "report.json"

    completed = subprocess.run(
        [str(Path(sys.executable).parent / "splunk-appinspect"), "inspect", str(package),
         "--output-file", str(report_path), "--data-format", "json"],
        capture_output=True, text=True, timeout=600, check=False)

    with tarfile.open(package) as archive:
        names = archive.getnames()
    summary = json.loads(report_path.read_text())["summary"]
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (summary["failure"], summary["error"]) == (0, 0)
    assert "TA-fti/bin/fti_taxii.py" in names
    assert "TA-fti/lib/splunklib/modularinput/script.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
