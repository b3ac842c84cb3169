"""Parse Sysmon events: Windows event XML, JSON exports and Sysmon for Linux lines in syslog.

Every form ends in the same two maps, the ``System`` values and the ``EventData`` values,
and EventData is always read by each ``Data`` element's ``Name`` attribute, never by
position, because Sysmon's schema adds fields between versions. A value of ``-`` means unset
(Sysmon writes it for an empty ``RuleName`` or an unresolved host name) and becomes None.

Sysmon for Linux writes one XML document per syslog message. A long event exceeds the syslog
daemon's message limit and arrives cut short without its closing tags, sometimes with the rest
as a separate message that starts mid-element. A cut event whose ``EventID`` and time survive
is salvaged: every complete ``Data`` element is kept and the event is flagged ``truncated``. A
continuation that starts mid-element is rejected as ``orphan_fragment`` and quarantined, never
read as an event of its own. Characters that XML 1.0 forbids (a raw ``\\x03`` typed on a
command line) are replaced by U+FFFD and the event is flagged ``sanitized``.

Documents with a DOCTYPE are rejected before parsing, so no entity can expand. Event kinds
follow Sysmon's event IDs (``process_create`` for 1, ``network_connect`` for 3 and so on);
an ID without a name here becomes ``event_<id>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timezone
from typing import Any
from xml.sax.saxutils import unescape

from agent import strict_json
from agent.events import Event, LineRejected

__all__ = ["EVENT_KINDS", "SysmonParser", "event_from_maps"]

UTC = timezone.utc

# Sysmon event IDs and the names the agent gives them.
EVENT_KINDS: dict[int, str] = {
    1: "process_create", 2: "file_create_time", 3: "network_connect", 4: "service_state",
    5: "process_terminate", 6: "driver_load", 7: "image_load", 8: "create_remote_thread",
    9: "raw_access_read", 10: "process_access", 11: "file_create", 12: "registry_object",
    13: "registry_value_set", 14: "registry_rename", 15: "file_create_stream_hash", 16: "config_change",
    17: "pipe_created", 18: "pipe_connected", 19: "wmi_filter", 20: "wmi_consumer", 21: "wmi_binding",
    22: "dns_query", 23: "file_delete", 24: "clipboard_change", 25: "process_tampering",
    26: "file_delete_detected", 27: "file_block_executable", 28: "file_block_shredding",
    29: "file_executable_detected", 255: "error",
}

SYSMON_PROVIDERS = frozenset({"Microsoft-Windows-Sysmon", "Linux-Sysmon"})

# EventData fields that hold integers in every Sysmon version.
INTEGER_FIELDS = frozenset({"ProcessId", "ParentProcessId", "SourcePort", "DestinationPort", "SourceProcessId",
                            "TargetProcessId", "SourceThreadId", "NewThreadId", "TerminalSessionId"})

# Characters XML 1.0 forbids (section 2.2, production [2] Char).
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_DOCTYPE = re.compile(r"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_NAMESPACE = re.compile(r"^\{[^}]*\}")
# Sysmon for Linux writes ``&lt unknown process&gt`` without the semicolons (seen in the
# Log4Shell capture of the OTRF security datasets).
_ENTITY_WITHOUT_SEMICOLON = re.compile(r"&(lt|gt|amp|quot|apos)(?![\w;])")
_BARE_AMPERSAND = re.compile(r"&(?!(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);)")
_SYSLOG_PREFIX = re.compile(r"[A-Z][a-z]{2} {1,2}\d{1,2} \d{2}:\d{2}:\d{2} \S+ (?P<program>[^\s\[:]+)(?:\[\d+\])?: ")

# Pieces of a cut event that can still be trusted: only complete elements.
_SALVAGE_EVENT_ID = re.compile(r"<EventID(?: [^>]*)?>(\d+)</EventID>")
_SALVAGE_SYSTEM_TIME = re.compile(r'<TimeCreated SystemTime="([^"]+)"')
_SALVAGE_COMPUTER = re.compile(r"<Computer>([^<]*)</Computer>")
_SALVAGE_PROVIDER = re.compile(r'<Provider Name="([^"]+)"')
_SALVAGE_DATA = re.compile(r'<Data Name="([^"]+)">([^<]*)</Data>')

# Keys of the Windows JSON export (OTRF's Mordor datasets, nxlog) that describe the record
# rather than the event's data.
_EXPORT_METADATA = frozenset({
    "@timestamp", "@version", "TimeCreated", "EventTime", "SourceName", "ProviderGuid", "Hostname", "Channel",
    "Level", "Task", "Keywords", "Message", "EventID", "EventRecordID", "Version", "Opcode", "OpcodeValue",
    "ExecutionProcessID", "ExecutionThreadID", "Severity", "SeverityValue", "EventType", "RecordNumber",
    "ThreadID", "AccountName", "AccountType", "Domain", "UserID", "Category", "port", "host", "tags",
})


class SysmonParser:
    """Turn one Sysmon line (syslog-wrapped XML, bare XML or a JSON export record) into an event."""

    source_type = "sysmon"

    def parse(self, text: str, *, source: str, line: int) -> Event | None:
        """Return the line's event, or None for a blank line or a record of another provider.

        Raises
        ------
        LineRejected
            For invalid JSON or XML, an orphan fragment, or an event without ID or time.
        """
        stripped = text.strip()
        if not stripped:
            return None
        if stripped.startswith("{"):
            return self._parse_json(stripped, source, line)
        start = text.find("<Event")
        if start < 0:
            prefix = _SYSLOG_PREFIX.match(text)
            if prefix is not None and prefix["program"] != "sysmon":
                return None
            raise LineRejected("orphan_fragment",
                               "text without an <Event> start: the rest of an event the syslog daemon split")
        return event_from_xml(text[start:], source=source, line=line)

    def _parse_json(self, text: str, source: str, line: int) -> Event | None:
        try:
            obj = strict_json.loads(text)
        except (ValueError, RecursionError) as err:
            raise LineRejected("invalid_json", f"invalid JSON: {err}") from err
        if not isinstance(obj, dict):
            raise LineRejected("not_json_object", f"JSON {type(obj).__name__} where an event object belongs")

        # Linux syslog exported as JSON (a Log Analytics Syslog table) carries the XML in SyslogMessage.
        message = obj.get("SyslogMessage")
        if isinstance(message, str):
            if obj.get("ProcessName") not in (None, "sysmon") or "<Event" not in message:
                return None
            return event_from_xml(message[message.find("<Event"):], source=source, line=line)

        if obj.get("SourceName") not in SYSMON_PROVIDERS:
            return None
        system = {"EventID": obj.get("EventID"), "SystemTime": obj.get("TimeCreated") or obj.get("@timestamp"),
                  "Computer": obj.get("Hostname"), "Provider": obj.get("SourceName"),
                  "EventRecordID": obj.get("EventRecordID")}
        data = {key: value for key, value in obj.items() if key not in _EXPORT_METADATA}
        return event_from_maps(system, data, set(), source=source, line=line)


def event_from_xml(xml: str, *, source: str, line: int) -> Event | None:
    """Build an event from one ``<Event>`` document, salvaging a cut one.

    Raises
    ------
    LineRejected
        If the XML has a DOCTYPE, is invalid but not merely cut, or lacks an ID or a time.
    """
    if _DOCTYPE.search(xml):
        raise LineRejected("doctype_forbidden", "event XML declares a DOCTYPE or ENTITY, which events never do")
    flags: set[str] = set()
    clean = _FORBIDDEN.sub("\ufffd", xml.rstrip())
    if clean != xml.rstrip():
        flags.add("sanitized")

    try:
        root = ElementTree.fromstring(clean)
    except ElementTree.ParseError as err:
        if "</Event>" not in clean:
            flags.add("truncated")
            return event_from_maps(*_salvage(clean), flags, source=source, line=line)
        root = _parse_repaired(clean, err)
        flags.add("sanitized")
    return event_from_maps(*_maps_from_element(root), flags, source=source, line=line)


def _parse_repaired(xml: str, error: ElementTree.ParseError) -> ElementTree.Element:
    """Parse again with entity references completed and bare ampersands escaped."""
    repaired = _BARE_AMPERSAND.sub("&amp;", _ENTITY_WITHOUT_SEMICOLON.sub(r"&\1;", xml))
    try:
        return ElementTree.fromstring(repaired)
    except ElementTree.ParseError:
        raise LineRejected("invalid_xml", f"invalid event XML: {error}") from error


def event_from_maps(system: dict[str, Any], data: dict[str, Any], flags: set[str], *, source: str,
                    line: int) -> Event | None:
    """Build an event from System and EventData values; None for another provider's event.

    Raises
    ------
    LineRejected
        If the event ID or both of its times are missing or invalid.
    """
    provider = system.get("Provider")
    if provider is not None and provider not in SYSMON_PROVIDERS:
        return None
    # A JSON export may hold any JSON value here. Only an integer or its text is an ID:
    # int() would take true as 1, cut 1.5 to 1 and raise OverflowError for Infinity.
    raw_id = system.get("EventID")
    try:
        if not isinstance(raw_id, (int, str)) or isinstance(raw_id, bool):
            raise TypeError(type(raw_id).__name__)
        event_id = int(raw_id)
    except (TypeError, ValueError) as err:
        raise LineRejected("missing_field:EventID", f"no integer EventID; got {raw_id!r}") from err

    fields: dict[str, Any] = {}
    for name, value in data.items():
        if value == "-" or value == "":
            value = None
        elif name in INTEGER_FIELDS and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                flags.add("invalid_value")
        fields[name] = value
    fields["EventID"] = event_id
    fields["Computer"] = system.get("Computer")
    if system.get("EventRecordID") is not None:
        fields["EventRecordID"] = system.get("EventRecordID")

    ts = _timestamp(fields.get("UtcTime"), system.get("SystemTime"))
    kind = EVENT_KINDS.get(event_id, f"event_{event_id}")
    return Event("sysmon", kind, ts, fields, source, line, frozenset(flags))


def _maps_from_element(root: ElementTree.Element) -> tuple[dict[str, Any], dict[str, Any]]:
    system: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for element in root.iter():
        tag = _NAMESPACE.sub("", element.tag)
        if tag == "EventID":
            system["EventID"] = (element.text or "").strip()
        elif tag == "TimeCreated":
            system["SystemTime"] = element.get("SystemTime")
        elif tag == "Computer":
            system["Computer"] = element.text
        elif tag == "Provider":
            system["Provider"] = element.get("Name")
        elif tag == "EventRecordID":
            system["EventRecordID"] = _int_or_none(element.text)
        elif tag == "Data" and element.get("Name") is not None:
            data[element.get("Name")] = element.text or ""
    return system, data


def _salvage(xml: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the complete elements of a cut event; unescape their text as XML would."""
    entities = {"&quot;": '"', "&apos;": "'"}
    system: dict[str, Any] = {}
    if (match := _SALVAGE_EVENT_ID.search(xml)) is not None:
        system["EventID"] = match[1]
    if (match := _SALVAGE_SYSTEM_TIME.search(xml)) is not None:
        system["SystemTime"] = match[1]
    if (match := _SALVAGE_COMPUTER.search(xml)) is not None:
        system["Computer"] = unescape(match[1], entities)
    if (match := _SALVAGE_PROVIDER.search(xml)) is not None:
        system["Provider"] = match[1]
    data = {name: unescape(value, entities) for name, value in _SALVAGE_DATA.findall(xml)}
    return system, data


def _timestamp(utc_time: Any, system_time: Any) -> datetime:
    """Return Sysmon's ``UtcTime`` (``2024-05-01 10:00:01.100``, UTC), else the System time."""
    for value in (utc_time, system_time):
        if not isinstance(value, str) or not value:
            continue
        text = value.strip().replace(" ", "T", 1)
        # Windows writes seven or nine fraction digits; Python reads at most six.
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            continue
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise LineRejected("invalid_timestamp", f"no valid UtcTime or SystemTime; got {utc_time!r} and {system_time!r}")


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
