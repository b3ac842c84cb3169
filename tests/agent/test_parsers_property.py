"""Property tests: arbitrary bytes never raise, and every line is an event, a skip or a counted error.

The tailer is checked the same way: under any interleaving of appends, partial writes, rename
rotations, copytruncate and polls, each complete line is delivered exactly once, in order.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import LogReadError
from agent.events import EventStats, LineReporter
from agent.sources import LINE_SOURCE_TYPES, iter_file_events, make_line_parser, parse_line
from agent.sysmon_files import EVTX_MAGIC
from agent.tailer import LogTailer

REFERENCE = datetime(2025, 1, 1, tzinfo=timezone.utc)

# Fragments of real lines, so generated input reaches the parsers' inner branches.
FRAGMENTS = [
    b"Jan  1 00:00:01 host sshd[1]: ", b"Failed password for ", b"invalid user ", b" from 203.0.113.9 port 22 ssh2",
    b"Invalid user x from 1.2.3.4", b"message repeated 3 times: [ ", b"]", b"2025-01-01T00:00:05+00:00 ",
    b'{"timestamp":"2024-05-01T10:00:00.000000+0000","event_type":"', b'alert"', b'dns"', b',"dns":{"rrname":"a"}',
    b"}", b"{", b"<Event><System><EventID>1</EventID>", b'<TimeCreated SystemTime="2024-05-01T10:00:00Z"/>',
    b"</System><EventData>", b'<Data Name="Image">', b"</Data>", b"</EventData></Event>", b"&lt", b"&", b"\x03",
    b"\xff\xfe", b"\xe2\x80\xa8", b"\r", b"\x00", b'"SourceName":"Microsoft-Windows-Sysmon","EventID":1,',
    b'<Provider Name="Linux-Sysmon"/>', b"<!DOCTYPE x>", b"-", b" ",
]
line_bytes = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=20)), max_size=12).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(source_type=st.sampled_from(LINE_SOURCE_TYPES), data=line_bytes)
def test_any_line_is_event_skip_or_counted_error(source_type: str, data: bytes) -> None:
    stats = EventStats()
    reporter = LineReporter("fuzz.log", stats, max_warnings=0)
    parser = make_line_parser(source_type, reference=REFERENCE)

    event = parse_line(parser, data.replace(b"\n", b" "), truncated=False, line=1, offset=0, stats=stats,
                       reporter=reporter)

    assert stats.lines == 1
    assert stats.events_total + stats.skipped + stats.errors_total == 1
    assert (event is not None) == (stats.events_total == 1)
    if event is not None:
        assert event.ts.tzinfo is not None
        event.to_json()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source_type=st.sampled_from(LINE_SOURCE_TYPES), lines=st.lists(line_bytes, max_size=8))
def test_any_file_accounts_for_every_line(source_type: str, lines: list[bytes]) -> None:
    data = b"\n".join(line.replace(b"\n", b" ") for line in lines)
    with tempfile.TemporaryDirectory() as folder:
        log_file = Path(folder) / "fuzz.log"
        log_file.write_bytes(data)
        stats = EventStats()

        try:
            events = list(iter_file_events(log_file, source_type, stats=stats))
        except LogReadError:
            # Only a file that starts like gzip, or a Sysmon file that starts like EVTX, and
            # is not valid as such is unreadable as a whole. Hypothesis (6.170) also draws
            # byte strings from the constants of the project's modules, such as the EVTX magic.
            assert data.startswith(b"\x1f\x8b") or (source_type == "sysmon"
                                                     and data.startswith(EVTX_MAGIC))
            return

    assert stats.events_total == len(events)
    assert stats.events_total + stats.skipped + stats.errors_total == stats.lines


# -- the tailer ----------------------------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(min_value=1, max_value=3)),
        st.tuples(st.just("partial"), st.integers(min_value=1, max_value=40)),
        st.tuples(st.just("rotate"), st.just(0)),
        st.tuples(st.just("copytruncate"), st.just(0)),
        st.tuples(st.just("poll"), st.just(0)),
    ),
    max_size=25,
)


def next_line(number: int) -> bytes:
    return f"line {number} {'x' * (number % 7)}".encode()


@settings(max_examples=60, deadline=None)
@given(steps=operations)
def test_tailer_delivers_each_line_once_in_order(steps: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        live = Path(folder) / "app.log"
        live.write_bytes(b"")
        tailer = LogTailer([str(live)], rotate_wait_secs=0, max_line_bytes=64)
        written: list[bytes] = []
        delivered: list[bytes] = list(line.data for line in tailer.poll())
        pending = b""
        rotations = 0
        polled_since_rotation = True

        def write(data: bytes) -> None:
            with live.open("ab") as stream:
                stream.write(data)

        for action, count in steps:
            if action == "append":
                for _ in range(count):
                    # A partial write already put the first bytes of this line in the file.
                    line = next_line(len(written))
                    write(line[len(pending):] + b"\n")
                    written.append(line)
                    pending = b""
            elif action == "partial" and not pending:
                pending = next_line(len(written))[: count % 8 + 1]
                write(pending)
            elif action == "rotate" and not pending and polled_since_rotation:
                # A rename rotation loses nothing, even without a poll before it, but a file
                # that is created and rotated away between two polls is never seen.
                polled_since_rotation = False
                rotations += 1
                live.rename(Path(folder) / f"app.{rotations}.log")
                live.write_bytes(b"")
            elif action == "copytruncate" and not pending:
                # copytruncate loses what was not read before it, so poll first, as logrotate's
                # delay before truncating gives a live tailer time to.
                delivered.extend(line.data for line in tailer.poll())
                live.write_bytes(b"")
            elif action == "poll":
                delivered.extend(line.data for line in tailer.poll())
                polled_since_rotation = True

        if pending:
            line = next_line(len(written))
            write(line[len(pending):] + b"\n")
            written.append(line)
        for _ in range(2):
            delivered.extend(line.data for line in tailer.poll())
        tailer.close()

    assert delivered == written


def test_truncated_evtx_file_unreadable() -> None:
    """The case the property test drew: the EVTX magic alone is a LogReadError naming the file."""
    with tempfile.TemporaryDirectory() as folder:
        log_file = Path(folder) / "fuzz.log"
        log_file.write_bytes(EVTX_MAGIC)
        with pytest.raises(LogReadError, match="not a readable evtx file") as caught:
            list(iter_file_events(log_file, "sysmon", stats=EventStats()))

    assert str(log_file) in str(caught.value)
