"""Parse OpenSSH server lines from a syslog file (``/var/log/auth.log``, ``/var/log/secure``).

Two timestamp forms occur, sometimes in one file once a distribution changes rsyslog's
template:

- RFC 3164 ``Mmm dd hh:mm:ss``, with the day padded by a space (``Jan  1``) and no year or
  time zone. The configured time zone applies. The year comes from a reference instant: a
  line whose month is later than the reference month was written the year before. A file
  read to its end takes its modification time, not the wall clock, so a backlog read months
  later gets the same years as a live read. The live agent takes the time of each read, so
  ``Dec 31`` lines read on 1 January land in the old year.
- RFC 3339 (``2025-01-01T00:00:05.123456+00:00``), whose offset is honoured.

Event kinds: ``failed_<method>`` and ``accepted_<method>`` (method ``password``,
``publickey``, ``none``, ``keyboard-interactive``, ``hostbased`` or ``gssapi-with-mic``),
``invalid_user``, ``session_opened`` and ``session_closed``. ``invalid_user`` in the fields
is True for ``Invalid user`` lines and ``Failed ... for invalid user`` lines. An rsyslog
``message repeated N times: [ ... ]`` line gives one event with ``repeat`` set to N. Every
other sshd line, and every line from another program, is skipped.

The user name is attacker-controlled: ``ssh 'x from 10.0.0.1 port 1'@host`` puts a fake
``from`` clause into the line. The patterns therefore take the last ``from ADDRESS port N``
in the line, which sshd writes after the user name.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone, tzinfo
from typing import Any

from agent.events import Event, LineRejected

__all__ = ["SshdParser"]

UTC = timezone.utc

MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}

_SYSLOG = re.compile(
    r"(?:(?P<month>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<clock>\d{2}:\d{2}:\d{2})"
    r"|(?P<iso>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})))"
    r" (?P<host>\S+) (?P<rest>.*)"
)
# The tag of a well-formed line; other syslog lines (``syslogd 1.4.1: restart.``) are skipped.
_TAG = re.compile(r"(?P<program>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<message>.*)")

# Authentication methods as sshd names them; ``keyboard-interactive/pam`` carries its device.
_METHOD = r"(?P<method>password|publickey|none|keyboard-interactive(?:/\w+)?|hostbased|gssapi-with-mic)"
_FROM = r" from (?P<address>\S+) port (?P<port>\d+)(?: ssh2)?(?:: .*)?"
_AUTH = re.compile(rf"(?P<result>Failed|Accepted) {_METHOD} for (?P<invalid>invalid user )?(?P<user>.*){_FROM}")
_INVALID = re.compile(r"Invalid user (?P<user>.*) from (?P<address>\S+)(?: port (?P<port>\d+))?")
_SESSION = re.compile(
    r"(?:pam_unix\(sshd:session\): )?session (?P<state>opened|closed) for user (?P<user>[^\s(]+)"
)
_REPEATED = re.compile(r"message repeated (?P<count>\d+) times: \[ ?(?P<message>.*)\]")


class SshdParser:
    """Turn auth.log lines into sshd events.

    Parameters
    ----------
    reference : datetime
        Aware instant that year-less timestamps are placed before: the file's modification
        time for a file, the current time for a live tail.
    tz : tzinfo, default UTC
        Time zone of year-less timestamps.
    """

    source_type = "sshd"

    def __init__(self, *, reference: datetime, tz: tzinfo = UTC) -> None:
        if reference.tzinfo is None:
            raise ValueError(f"reference must be timezone-aware; got {reference.isoformat()}")
        self.reference = reference
        self.tz = tz

    def parse(self, text: str, *, source: str, line: int) -> Event | None:
        """Return the line's event, or None for a line without an authentication event.

        Raises
        ------
        LineRejected
            If the line is not a syslog line or its timestamp is invalid.
        """
        match = _SYSLOG.match(text)
        if match is None:
            raise LineRejected("not_syslog", "line does not start with a syslog timestamp and host")
        tag = _TAG.match(match["rest"])
        if tag is None:
            return None
        program = tag["program"]
        if not (program in ("sshd", "sshd-session") or program.startswith("sshd(")):
            return None

        message, repeat = tag["message"].rstrip(), 1
        repeated = _REPEATED.fullmatch(message)
        if repeated is not None:
            message, repeat = repeated["message"].rstrip(), int(repeated["count"])
        found = _classify(message)
        if found is None:
            return None
        kind, fields = found

        ts = self._timestamp(match)
        fields["host"] = match["host"]
        fields["pid"] = int(tag["pid"]) if tag["pid"] else None
        if repeat > 1:
            fields["repeat"] = repeat
        return Event("sshd", kind, ts, fields, source, line)

    def _timestamp(self, match: re.Match[str]) -> datetime:
        if match["iso"]:
            try:
                return datetime.fromisoformat(match["iso"]).astimezone(UTC)
            except ValueError as err:
                raise LineRejected("invalid_timestamp", f"invalid RFC 3339 timestamp {match['iso']!r}") from err

        # The year is the reference's, unless the month is later than the reference month.
        reference = self.reference.astimezone(self.tz)
        month = MONTHS.get(match["month"])
        if month is None:
            raise LineRejected("invalid_timestamp", f"unknown month {match['month']!r}")
        year = reference.year - 1 if month > reference.month else reference.year
        hour, minute, second = (int(part) for part in match["clock"].split(":"))
        try:
            local = datetime(year, month, int(match["day"]), hour, minute, second, tzinfo=self.tz)
        except ValueError as err:
            raise LineRejected("invalid_timestamp",
                               f"invalid date {match['month']} {match['day']} {match['clock']} in {year}") from err
        return local.astimezone(UTC)


def _classify(message: str) -> tuple[str, dict[str, Any]] | None:
    auth = _AUTH.fullmatch(message)
    if auth is not None:
        method = auth["method"].split("/", 1)[0]
        kind = f"{auth['result'].lower()}_{method}"
        return kind, {"user": auth["user"], "invalid_user": bool(auth["invalid"]), **_address(auth)}

    invalid = _INVALID.fullmatch(message)
    if invalid is not None:
        return "invalid_user", {"user": invalid["user"], "invalid_user": True, **_address(invalid)}

    session = _SESSION.match(message)
    if session is not None:
        return f"session_{session['state']}", {"user": session["user"], "invalid_user": False,
                                               "src_ip": None, "src_port": None}
    return None


def _address(match: re.Match[str]) -> dict[str, Any]:
    """Return the source address and port; a host name (sshd's ``UseDNS yes``) goes in ``src_host``."""
    port = int(match["port"]) if match["port"] else None
    try:
        return {"src_ip": str(ipaddress.ip_address(match["address"])), "src_port": port}
    except ValueError:
        return {"src_ip": None, "src_host": match["address"], "src_port": port}
