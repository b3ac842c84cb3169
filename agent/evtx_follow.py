"""Follow Sysmon ``.evtx`` files live and yield each record once, across restarts and archival.

An ``.evtx`` file is a header and 64 KiB chunks of binary records, not lines, so
:class:`agent.tailer.LogTailer` leaves it alone. :class:`EvtxFollower` polls the files that
match a source's patterns. When a file's size or modification time changed since the last
poll, it reads the file's whole chunks with the ``evtx`` binding, one at a time, and yields
the records past the last EventRecordID read from it. A chunk whose bytes are those read
before, and whose records were all read, is not parsed again, so a large live file costs a
checksum of each old chunk per change. A chunk that is not whole yet is left for a later
poll, so a file copied in pieces is read one whole chunk at a time.

A file is known by its first record, the EventRecordID and a SHA-256 of its XML, not by its
path or inode. A file renamed, copied, or replaced by a longer copy with the same first records
is therefore read only past the saved record id.

Windows numbers the records of a channel on one computer in order and keeps counting when it
archives a full log to a new file ("Archive the log when full"). A log that overwrites as
needed drops its oldest chunks, which changes its first record. So a file whose first record
is unknown is read only past the newest record already read from its channel and computer.
The exception is a file whose first record is newer in time than that record, because
clearing a log restarts the numbering at 1.

Nothing is persisted here: :meth:`EvtxFollower.to_state` returns the positions after the last
record yielded, and the caller stores them with whatever those records produced.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.errors import LogReadError
from agent.events import EventStats, LineReporter
from agent.sysmon_files import EVTX_CHUNK_BYTES, EVTX_HEADER_BYTES, EVTX_MAGIC, EvtxRecord, read_evtx_chunk

log = logging.getLogger(__name__)

__all__ = ["EvtxFollower"]

# Identities of files read before, so that an archived or copied file is recognised. Windows
# writes one archive each time the log fills, and each archive is one entry.
MAX_KNOWN_FILES = 256

_CHANNEL = re.compile(r"<Channel>([^<]*)</Channel>")
_COMPUTER = re.compile(r"<Computer>([^<]*)</Computer>")


@dataclass(frozen=True)
class _Chunk:
    """Result of reading one 64 KiB chunk, kept to skip the chunk while its bytes stay the same.

    ``positions`` counts its records and unreadable records, ``newest_id`` is its highest
    record id (0 without records), ``first`` its first record, and ``trailing_failures`` the
    unreadable records after its last readable one.
    """

    digest: int
    positions: int
    newest_id: int
    first: EvtxRecord | None
    trailing_failures: int


@dataclass
class _Mark:
    """The newest record read from one channel on one computer."""

    record_id: int
    timestamp: str


class EvtxFollower:
    """Yield the new records of every ``.evtx`` file matching ``patterns``, each once.

    Parameters
    ----------
    patterns : Iterable[str]
        Glob patterns (``**`` allowed). Files that do not start with the ``.evtx`` magic are
        skipped, because the line tailer reads them.
    state : dict, default {}
        What :meth:`to_state` returned before a restart.
    start_at : {"beginning", "end"}, default "beginning"
        With ``"end"``, the records in files found at the first poll of a first start are
        marked read without being yielded.
    max_poll_bytes : int, default 4 MiB
        Event XML yielded per poll, summed over files. The rest waits for the next poll, and
        :attr:`behind` is True until it is read.
    """

    def __init__(self, patterns: Iterable[str], *, state: dict | None = None, start_at: str = "beginning",
                 max_poll_bytes: int = 4 << 20) -> None:
        self.patterns = tuple(patterns)
        if start_at not in ("beginning", "end"):
            raise ValueError(f"start_at must be 'beginning' or 'end'; got {start_at!r}")
        if max_poll_bytes < 1:
            raise ValueError(f"max_poll_bytes must be at least 1; got {max_poll_bytes}")
        state = state or {}
        # First-record identity to the last record id read from that file, oldest first.
        self._files: dict[str, int] = dict(state.get("files", {}))
        self._marks: dict[str, _Mark] = {key: _Mark(*value) for key, value in state.get("marks", {}).items()}
        self._skip_existing = start_at == "end" and not state
        self._max_poll_bytes = max_poll_bytes
        # Path to (device, inode, size, mtime) at the last poll that read the file to its end.
        self._unchanged: dict[str, tuple[int, int, int, int]] = {}
        # Path to what each whole chunk of the file held when it was last read.
        # NOTE: kept in memory only, so after a restart every chunk is parsed once more and its
        # damaged records are reported again.
        self._chunks: dict[str, dict[int, _Chunk]] = {}
        # Path to the version of a file that could not be read, so it is reported once.
        self._unreadable: dict[str, tuple[int, int, int, int]] = {}
        self.behind = False

    def poll(self, reporter_of: Callable[[str], LineReporter]) -> Iterator[tuple[str, EvtxRecord]]:
        """Yield ``(path, record)`` for each record not read before, in file order.

        ``reporter_of(path)`` returns the reporter for a file's damaged records. A file that
        is not a readable ``.evtx`` file is reported as ``unreadable_file`` once per version
        (device, inode, size and modification time) and skipped.
        """
        budget = self._max_poll_bytes
        self.behind = False
        paths = self._discover()
        for gone in set(self._chunks).difference(paths):
            del self._chunks[gone]
        for path in paths:
            try:
                info = os.stat(path)
                with open(path, "rb") as stream:
                    magic = stream.read(len(EVTX_MAGIC))
            except OSError:
                continue  # removed between glob and open, or not readable: retried next poll
            if magic != EVTX_MAGIC:
                continue
            signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            if signature in (self._unchanged.get(path), self._unreadable.get(path)):
                continue
            if budget <= 0:
                self.behind = True
                continue
            try:
                spent = yield from self._read(path, reporter_of(path), budget)
            except LogReadError as err:
                self._unreadable[path] = signature
                reporter_of(path).reject(0, "unreadable_file", f"{err.reason}; the file is read again once it changes")
                continue
            budget -= spent
            if budget > 0:
                self._unchanged[path] = signature
            else:
                self.behind = True
        self._skip_existing = False

    def to_state(self) -> dict:
        """Return the positions to pass back as ``state`` after a restart."""
        return {"files": dict(self._files),
                "marks": {key: [mark.record_id, mark.timestamp] for key, mark in self._marks.items()}}

    # -- helpers ---------------------------------------------------------------------------

    def _discover(self) -> list[str]:
        """Return the files matching the patterns, one path per file, in pattern and name order."""
        seen: set[tuple[int, int]] = set()
        paths = []
        for pattern in self.patterns:
            for path in sorted(glob.glob(pattern, recursive=True)):
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                key = (info.st_dev, info.st_ino)
                if os.path.isdir(path) or key in seen:
                    continue
                seen.add(key)
                paths.append(path)
        return paths

    def _read(self, path: str, reporter: LineReporter, budget: int) -> Iterator[tuple[str, EvtxRecord]]:
        """Yield the new records of one file until ``budget`` bytes of XML; return the bytes yielded.

        The file is read one whole chunk at a time. A chunk whose bytes did not change since it
        was read, and whose records were all read before, is skipped without being parsed.
        """
        spent = 0
        known = self._chunks.get(path, {})
        seen: dict[int, _Chunk] = {}
        first: EvtxRecord | None = None
        identity, after = None, 0
        position, failures = 1, 0
        with open(path, "rb") as stream:
            header = stream.read(EVTX_HEADER_BYTES)
            if len(header) < EVTX_HEADER_BYTES:
                read_evtx_chunk(header, b"", path, reporter, first_position=position)  # raises LogReadError
                return 0
            index = -1
            while len(chunk := stream.read(EVTX_CHUNK_BYTES)) == EVTX_CHUNK_BYTES:
                index += 1
                digest = zlib.crc32(chunk)
                cached = known.get(index)
                if cached is not None and cached.digest == digest:
                    seen[index] = cached
                    if first is None and cached.first is not None:
                        first = cached.first
                        identity = _identity(first)
                        after = self._start_after(identity, first, path)
                    if first is not None and cached.newest_id <= after:
                        position += cached.positions
                        failures = cached.trailing_failures if cached.first is not None else \
                            failures + cached.positions
                        continue
                # A chunk parsed again unchanged reports no damaged record a second time.
                chunk_reporter = reporter if cached is None or cached.digest != digest else \
                    LineReporter(path, EventStats(), max_warnings=0)
                found = read_evtx_chunk(header, chunk, path, chunk_reporter, first_position=position,
                                        failures=failures)
                seen[index] = _Chunk(digest, found.positions, max((r.record_id for r in found.records), default=0),
                                     found.records[0] if found.records else None,
                                     found.failures if found.records else 0)
                position += found.positions
                failures = found.failures
                for record in found.records:
                    if identity is None:
                        first, identity = record, _identity(record)
                        after = self._start_after(identity, record, path)
                    if record.record_id <= after:
                        continue
                    if spent >= budget:
                        known.update(seen)
                        self._chunks[path] = known
                        return spent
                    self._files[identity] = max(self._files.get(identity, 0), record.record_id)
                    self._files[identity] = self._files.pop(identity)  # the newest identity goes last
                    self._advance_mark(record)
                    if self._skip_existing:
                        continue
                    spent += len(record.xml)
                    yield path, record
        self._chunks[path] = seen
        while len(self._files) > MAX_KNOWN_FILES:
            del self._files[next(iter(self._files))]
        return spent

    def _start_after(self, identity: str, first: EvtxRecord, path: str) -> int:
        """Return the record id after which a file's records are new."""
        if identity in self._files:
            return self._files[identity]
        # NOTE: an archive first seen after newer records of its channel were read loses the
        # records it has before the mark. Reading them would count the overlap twice.
        mark = self._marks.get(_channel_key(first))
        if mark is None or first.record_id > mark.record_id or first.timestamp > mark.timestamp:
            return 0
        log.info("evtx file %s starts inside records already read from its channel; reading it past "
                 "record %d", path, mark.record_id)
        return mark.record_id

    def _advance_mark(self, record: EvtxRecord) -> None:
        key = _channel_key(record)
        mark = self._marks.get(key)
        if mark is None or record.timestamp >= mark.timestamp:
            self._marks[key] = _Mark(record.record_id, record.timestamp)


def _identity(first: EvtxRecord) -> str:
    return f"{first.record_id}:{hashlib.sha256(first.xml.encode('utf-8')).hexdigest()}"


def _channel_key(record: EvtxRecord) -> str:
    """Return ``computer/channel`` of a record, the scope in which Windows numbers records."""
    channel = _CHANNEL.search(record.xml)
    computer = _COMPUTER.search(record.xml)
    return f"{computer.group(1) if computer else ''}/{channel.group(1) if channel else ''}"
