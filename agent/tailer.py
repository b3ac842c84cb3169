"""Follow the log files that match a set of glob patterns and yield each complete line once.

A file is identified by its device and inode together with a fingerprint of its first bytes
(up to ``FINGERPRINT_BYTES``), not by its path. That one rule covers the rotation schemes met
in practice:

- Rename rotation (logrotate ``create``, Zeek's ``conn.<time>.log``): the renamed file keeps
  its inode, so it is drained through the descriptor the tailer already holds. Lines that a
  writer flushes into it after the rename are read, and the file is closed once it has been
  quiet at its end for ``rotate_wait_secs``. The new file at the old path is a new inode and
  is read from offset 0.
- ``copytruncate``: same inode, but the size drops below the offset or the first bytes no
  longer match the fingerprint, so reading restarts at 0. A writer that keeps its old offset
  leaves a run of NUL bytes at the start of the file, and that run is skipped and counted.
- Delete and recreate with a reused inode: the fingerprint no longer matches, so the file is
  read from 0 as a new one.
- Symlinks: a path is resolved by ``os.stat``, so the identity is that of the target. Two
  patterns that reach one file through a link and directly read it once.
- Rotated copies that a pattern matches, plain or ``.gz``: the fingerprint of the
  (decompressed) first bytes is compared with every file read before, those of the
  checkpoints passed at a restart included. A copy of a known file is read only past the
  offset that was reached in the original, so no line is read twice and lines written just
  before the rotation are read once. A plain copy shorter than that offset is still being
  written, so it is left alone until it has grown past it. A compressed file is closed
  once read to its end and is not opened again while its size and mtime stay the same.

After a restart a checkpointed file is resumed when its inode still has the same first
bytes and a line ends just before the saved offset. When the file was renamed, copied or
compressed while the agent was stopped, the folder of its old path is searched for a file
that continues it, whether a pattern matches that file or not. That file is read past the
saved offset, and before the successor at the old path, so lines keep their order. A file
that was truncated or replaced while the agent was stopped is read from 0, and a checkpoint
whose file is nowhere is kept: in both cases a copy of the old content that turns up later
is still recognised.

A poll reads at most ``max_poll_bytes`` of each plain file, so a tailer started far behind
a large log keeps one bounded slice of it in memory at a time and catches up over several
polls. A slice ends at a line end. A poll that starts on a line longer than the bound still
reads that one line, and a ``.gz`` file is read in whole 1 MiB blocks of decompressed data.
The file's offset, and so its checkpoint, covers only the lines yielded.

A line is yielded only once its ``\\n`` has been written. A partial last line stays in the
file and is read again at the next poll, so the offset in a checkpoint always points at the
start of a line. A line longer than ``max_line_bytes`` is cut: its first ``max_line_bytes``
bytes are yielded with ``truncated=True`` and the rest, up to the newline, is skipped and
counted.

Change notification uses watchdog (inotify on Linux) only to wake the poll loop early. Every
poll looks at every file, so events that never arrive (NFS and SMB shares, a full inotify
watch table) cost latency, never lines: polling at ``poll_interval_secs`` is the fallback.

The tailer does not persist anything itself. :meth:`LogTailer.checkpoints` returns the
position after the last line yielded, and the caller stores it in the same transaction as
whatever the lines produced, then passes it back to the constructor after a restart.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import logging
import os
import stat
import threading
import time
import zlib
from collections import deque
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import overload

log = logging.getLogger(__name__)

__all__ = ["FINGERPRINT_BYTES", "LogTailer", "TailBatch", "TailCheckpoint", "TailLine", "TailLines", "TailStats"]

# The OpenTelemetry collector's filelog receiver uses 1000 bytes; 1 KiB covers a Zeek TSV
# header including its ``#open`` time, which is what makes two Zeek logs differ.
FINGERPRINT_BYTES = 1024

# Same limit as the Zeek reader: long enough for any real log line, short enough that a
# file without newlines cannot exhaust memory.
MAX_LINE_BYTES = 1 << 20

# Bytes read per system call. Lines are framed inside each block, so a larger block only
# costs memory.
READ_BLOCK_BYTES = 1 << 20

# How many finished files that no pattern matches any more are remembered, so that a
# compressed or copied version of one is recognised. Logrotate keeps a handful of
# generations per file, so a few hundred entries cover dozens of files. Finished files that a
# pattern still matches are all remembered: a compressed one would be read again otherwise.
MAX_FINISHED_FILES = 256

GZIP_MAGIC = b"\x1f\x8b"

# Bytes of one file read per poll. A backlog is read in slices of this size, which bounds the
# lines a caller keeps in memory at once.
MAX_POLL_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class TailLine:
    """One complete line, without its ``\\n`` (a ``\\r`` before it is kept).

    Attributes
    ----------
    path : str
        The path the file was found under when it was opened. A file that continues a
        checkpoint (renamed, copied or compressed) has the checkpoint's path instead.
    offset : int
        Byte offset of the line's first byte (in the decompressed stream for ``.gz`` files).
    data : bytes
        The line's bytes, at most ``max_line_bytes`` long.
    truncated : bool
        True when the line was longer than ``max_line_bytes`` and was cut.
    """

    path: str
    offset: int
    data: bytes
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class TailBatch:
    """Consecutive complete lines of one file, each without its ``\\n``.

    Attributes
    ----------
    path : str
        The path the file was found under when it was opened, or the path of the checkpoint
        it continues, as for :class:`TailLine`.
    offset : int
        Byte offset of the first line's first byte. Line ``i`` starts ``len(line) + 1`` bytes
        after line ``i - 1``.
    lines : list[bytes]
        The lines, each at most ``max_line_bytes`` long.
    truncated : bool
        True for a batch of one line that was longer than ``max_line_bytes`` and was cut.
    """

    path: str
    offset: int
    lines: list[bytes]
    truncated: bool = False


class TailLines(Sequence[TailLine]):
    """The lines of consecutive batches of one file, seen as one sequence of :class:`TailLine`.

    A :class:`TailLine` is built only when an item is read, which callers do for the few lines
    they report, so the batches keep their speed.
    """

    def __init__(self) -> None:
        self.batches: list[TailBatch] = []
        self._ends: list[int] = []  # lines up to and including each batch

    def append(self, batch: TailBatch) -> None:
        self.batches.append(batch)
        self._ends.append(len(self) + len(batch.lines))

    def data(self) -> list[bytes]:
        """Return the bytes of every line, in order."""
        if len(self.batches) == 1:
            return self.batches[0].lines
        return [data for batch in self.batches for data in batch.lines]

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, index: int) -> TailLine: ...

    @overload
    def __getitem__(self, index: slice) -> list[TailLine]: ...

    def __getitem__(self, index: int | slice) -> TailLine | list[TailLine]:
        if isinstance(index, slice):
            return [self[position] for position in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"line index {index} out of range for {len(self)} lines")
        which = bisect_right(self._ends, index)
        batch = self.batches[which]
        within = index - (self._ends[which - 1] if which else 0)
        offset = batch.offset + sum(map(len, batch.lines[:within])) + within
        return TailLine(batch.path, offset, batch.lines[within], batch.truncated)


@dataclass(frozen=True, slots=True)
class TailCheckpoint:
    """Where reading of one file stopped: its identity and the offset after the last line.

    ``fingerprint`` is the SHA-256 of the file's first ``fingerprint_size`` bytes. A file
    shorter than ``FINGERPRINT_BYTES`` has a shorter fingerprint, which grows as it does.
    ``skipping`` is True while the rest of a cut over-long line is being skipped.
    ``finished`` is True for a file that is fully read and closed; it is kept only so that a
    compressed copy or a copy under another name is recognised.
    """

    path: str
    device: int
    inode: int
    fingerprint: str
    fingerprint_size: int
    offset: int
    skipping: bool = False
    finished: bool = False
    compressed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TailCheckpoint":
        return cls(**data)


@dataclass
class TailStats:
    """Counters of one tailer since it was built.

    ``bytes_behind`` maps each open file's path to the bytes between the last line read and
    the file's size at the last poll. A rotated file still being drained keeps the path it
    was found at, so the entry of a path sums it and its successor.
    """

    lines: int = 0
    bytes_read: int = 0
    lines_cut: int = 0
    nul_bytes_skipped: int = 0
    files_opened: int = 0
    files_closed: int = 0
    truncations: int = 0
    rewrites: int = 0
    copies_found: int = 0
    read_errors: int = 0
    bytes_behind: dict[str, int] = field(default_factory=dict)


@dataclass
class _OpenFile:
    path: str
    fd: int
    device: int
    inode: int
    fingerprint: str
    fingerprint_size: int
    offset: int
    skipping: bool = False
    compressed: bool = False
    # Monotonic time at which the file stopped being reachable under its path, if it did.
    detached_at: float | None = None
    # Monotonic time of the last poll that found new bytes.
    last_growth: float = 0.0
    # A compressed file is complete, so it is read once and then only waits to be closed.
    exhausted: bool = False
    # True once a poll has read every complete line, so a rotated file may be closed.
    drained: bool = True
    # A compressed file read over several polls keeps its reader, positioned just after
    # ``gzip_pending``: the decompressed bytes past the offset that no line consumed yet.
    gzip_reader: gzip.GzipFile | None = None
    gzip_pending: bytes = b""
    # Bytes between the offset and the file's size at the last poll of a plain file.
    behind: int = 0

    def checkpoint(self) -> TailCheckpoint:
        return TailCheckpoint(self.path, self.device, self.inode, self.fingerprint, self.fingerprint_size,
                              self.offset, self.skipping, False, self.compressed)


class LogTailer:
    """Follow every file matching ``patterns`` and yield complete lines in file order.

    Parameters
    ----------
    patterns : Iterable[str]
        Glob patterns (``**`` allowed). Files that appear later are picked up at the next poll.
    start_at : {"beginning", "end"}, default "beginning"
        Where to start a file found at the first poll that has no checkpoint. Files created
        while the tailer runs are always read from their beginning, because every line of
        them is new.
    checkpoints : Iterable[TailCheckpoint], default ()
        Positions returned by :meth:`checkpoints` before a restart.
    max_line_bytes : int, default MAX_LINE_BYTES (1 MiB)
        Longest line yielded whole; a longer one is cut.
    poll_interval_secs : float, default 1.0
        Maximum wait between two polls in :meth:`follow`. One second keeps the delay behind a
        live log short without measurable CPU cost for a few dozen files.
    rotate_wait_secs : float, default 5.0
        How long a file that is no longer reachable under its path must stay quiet at its end
        before it is closed. Writers flush their buffers within a second or two of a
        rotation, so five seconds leaves a margin.
    use_inotify : bool, default True
        Wake the poll loop on file-system events through watchdog. Polling continues either way.
    max_poll_bytes : int, default MAX_POLL_BYTES (4 MiB)
        Bytes of each file read per poll. A larger backlog is read over several polls, and
        :attr:`behind` is True until it is.
    skip_magic : bytes, default b""
        Files that start with these bytes are left to another reader (``.evtx`` files). A
        file whose first bytes are still a prefix of them, an empty one included, is opened
        only once it has grown past them.

    Notes
    -----
    A file that is truncated and then grows past the old offset before the next poll, with
    first bytes identical to the old ones and a newline just before the old offset, cannot be
    told from a file that merely grew; the lines before the old offset are then lost. The byte
    before the offset is checked on every poll, which makes this unlikely but not impossible.

    A file that is created and rotated away between two polls is never seen, so its lines
    are lost. Rotation intervals of minutes or hours against a poll interval of seconds make
    this a concern only for a tailer that is stopped or stalled.

    Identity rests on the first ``FINGERPRINT_BYTES`` bytes. Two files whose first bytes are
    equal up to the shorter fingerprint are taken for the same content, and a copy shorter than
    the fingerprint of an original that is no longer open cannot be recognised. Logs that open
    with a header stamped with its time (Zeek's ``#open``) or with timestamped lines differ
    within a few bytes, so this matters only for files of a few identical lines.

    A new file whose first bytes equal those of a file that is still open is taken to be a copy
    (``cp``, the first half of ``copytruncate``) and is not read yet. ``TailStats.copies_found``
    counts each time a copy is recognised. Lines written to the original between the last poll and a
    ``copytruncate`` are therefore read from the copy only if the copy is found after the
    truncation was seen.
    """

    def __init__(
        self,
        patterns: Iterable[str],
        *,
        start_at: str = "beginning",
        checkpoints: Iterable[TailCheckpoint] = (),
        max_line_bytes: int = MAX_LINE_BYTES,
        poll_interval_secs: float = 1.0,
        rotate_wait_secs: float = 5.0,
        use_inotify: bool = True,
        max_poll_bytes: int = MAX_POLL_BYTES,
        skip_magic: bytes = b"",
    ) -> None:
        self.patterns = tuple(patterns)
        if not self.patterns:
            raise ValueError("patterns must name at least one glob pattern; got none")
        if start_at not in ("beginning", "end"):
            raise ValueError(f"start_at must be 'beginning' or 'end'; got {start_at!r}")
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1; got {max_line_bytes}")
        if max_poll_bytes < 1:
            raise ValueError(f"max_poll_bytes must be at least 1; got {max_poll_bytes}")
        if poll_interval_secs <= 0 or rotate_wait_secs < 0:
            raise ValueError("poll_interval_secs must be > 0 and rotate_wait_secs >= 0; got "
                             f"{poll_interval_secs} and {rotate_wait_secs}")
        self.start_at = start_at
        self.max_line_bytes = max_line_bytes
        self.poll_interval_secs = poll_interval_secs
        self.rotate_wait_secs = rotate_wait_secs
        self.use_inotify = use_inotify
        self.max_poll_bytes = max_poll_bytes
        self.skip_magic = skip_magic
        self.stats = TailStats()

        # NOTE: each open plain file keeps its descriptor until it is rotated away, so a pattern
        # over thousands of uncompressed files needs a raised open-file limit.
        self._open: dict[tuple[int, int], _OpenFile] = {}
        self._finished: deque[TailCheckpoint] = deque()
        self._restored: dict[tuple[int, int], TailCheckpoint] = {}
        # Compressed files read to their end, by (device, inode): their size and mtime then.
        self._done_compressed: dict[tuple[int, int], tuple[int, int]] = {}
        for saved in checkpoints:
            if saved.finished:
                self._finished.append(saved)
            else:
                self._restored[(saved.device, saved.inode)] = saved
        # With checkpoints this is a restart, and a file without one appeared while stopped.
        self._resumed = bool(self._finished or self._restored)
        self._first_poll = True
        self._wake = threading.Event()
        self._observer = None

    # -- public API ------------------------------------------------------------------------

    def poll(self) -> Iterator[TailLine]:
        """Read every file once, to its current end, and yield the complete lines.

        Files already open are read first, oldest first, so the end of a rotated file comes
        before the start of its successor. The checkpoint of a file advances past each line
        before that line is yielded.
        """
        return self._poll(batched=False)  # type: ignore[return-value]

    def poll_batches(self) -> Iterator[TailBatch]:
        """Read every file once, like :meth:`poll`, and yield the lines in batches.

        A batch holds the complete lines of one read block, so a reader of many lines pays
        the per-line cost of neither a :class:`TailLine` nor a generator step. The checkpoint
        of a file advances past a whole batch before the batch is yielded.
        """
        return self._poll(batched=True)  # type: ignore[return-value]

    def _poll(self, *, batched: bool) -> Iterator[TailLine | TailBatch]:
        now = time.monotonic()
        found = self._discover()

        # Files the tailer holds: drain them first, and notice rotation and truncation.
        for key in list(self._open):
            state = self._open[key]
            current = found.get(key)
            if current is None and state.detached_at is None:
                state.detached_at = now
                log.info("log file %s was rotated or removed; draining it before closing", state.path)
            elif current is not None and not (state.compressed and state.exhausted):
                state.detached_at = None  # a compressed file read to its end closes all the same
            yield from self._read_open(state, now, batched)
            if state.drained and state.detached_at is not None and \
                    now - max(state.detached_at, state.last_growth) >= self.rotate_wait_secs:
                self._close(key)

        # Restored checkpoints whose file no longer matches a pattern: it was rotated while
        # the agent was down, so look for it beside its old path and drain it.
        if self._first_poll:
            yield from self._drain_restored_elsewhere(found, now, batched)

        # Files seen for the first time. Those with a checkpoint of their own inode go first,
        # so that a copy listed before its original is taken for the copy.
        for key in [key for key in self._done_compressed if key not in found]:
            del self._done_compressed[key]
        for key, path in sorted(found.items(), key=lambda item: (item[0] not in self._restored, item[1])):
            if key not in self._open and not self._compressed_done(key, path):
                state = self._open_new(key, path, now)
                if state is not None:
                    yield from self._read_open(state, now, batched)

        # A file found nowhere may still turn up copied or compressed later, so its identity
        # is kept with the finished ones, which :meth:`checkpoints` returns.
        if self._first_poll:
            self._finished.extend(replace(saved, finished=True) for saved in self._restored.values()
                                  if saved.fingerprint_size)
            self._restored.clear()
        self._first_poll = False
        self._bound_finished(found)

    def _bound_finished(self, found: dict[tuple[int, int], str]) -> None:
        """Forget the oldest finished files beyond ``MAX_FINISHED_FILES`` that no pattern matches.

        A compressed file read to its end is skipped after a restart only by its finished
        checkpoint, so the checkpoints of files still found are kept whatever their number.
        """
        if len(self._finished) <= MAX_FINISHED_FILES:
            return
        matched = [done for done in self._finished if (done.device, done.inode) in found]
        gone = [done for done in self._finished if (done.device, done.inode) not in found]
        self._finished = deque(gone[-MAX_FINISHED_FILES:] + matched)

    def follow(self, stop: threading.Event) -> Iterator[TailLine]:
        """Poll until ``stop`` is set, waking early on file-system events when available."""
        self._start_observer()
        try:
            while not stop.is_set():
                yield from self.poll()
                self._wake.wait(self.poll_interval_secs)
                self._wake.clear()
        finally:
            self.close()

    @property
    def behind(self) -> bool:
        """True when the last poll stopped at ``max_poll_bytes`` before the end of a file."""
        return not all(state.drained for state in self._open.values())

    def checkpoints(self) -> list[TailCheckpoint]:
        """Return the position of every open file and the identities of finished ones.

        Checkpoints passed to the constructor and not yet taken up by a poll are returned as
        they came, so a tailer stopped before its first poll loses no position.
        """
        return [state.checkpoint() for state in self._open.values()] + list(self._restored.values()) + \
            list(self._finished)

    def close(self) -> None:
        """Stop the watcher and close every file. :meth:`checkpoints` still works after."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        for state in self._open.values():
            if state.gzip_reader is not None:
                state.gzip_reader.close()
                state.gzip_reader = None
            if state.fd >= 0:
                os.close(state.fd)
                state.fd = -1

    # -- discovery -------------------------------------------------------------------------

    def _discover(self) -> dict[tuple[int, int], str]:
        """Map (device, inode) to the first path, in pattern order, that reaches each file."""
        found: dict[tuple[int, int], str] = {}
        for pattern in self.patterns:
            for path in sorted(glob.glob(pattern, recursive=True)):
                try:
                    info = os.stat(path)
                except OSError:
                    continue  # removed between glob and stat, or a dangling symlink
                if os.path.isdir(path):
                    continue
                found.setdefault((info.st_dev, info.st_ino), path)
        return found

    def _open_new(self, key: tuple[int, int], path: str, now: float) -> _OpenFile | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            self.stats.read_errors += 1
            log.warning("cannot open log file %s: %s; will try again at the next poll", path, err.strerror)
            return None
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != key:
            os.close(fd)  # replaced between stat and open, so the next poll reads the new file
            return None
        # gzip creates its output before it writes a byte, and writes its trailer last: a
        # compressed file is read once it is whole.
        found = _read_head(fd, path)
        if found is None:
            os.close(fd)
            return None
        head, compressed = found
        if self.skip_magic and head[: len(self.skip_magic)] == self.skip_magic[: len(head)]:
            os.close(fd)
            return None

        # A copy of a file that is still open contains nothing new yet.
        if self._copies_open_file(head):
            os.close(fd)
            self.stats.copies_found += 1
            return None

        offset, skipping, stream_path = self._start_offset(key, fd, path, head, info.st_size, compressed)
        if offset is None:
            os.close(fd)
            return None
        state = _OpenFile(stream_path, fd, key[0], key[1], *_fingerprint(head), offset, skipping, compressed,
                          last_growth=now)
        self._open[key] = state
        self.stats.files_opened += 1
        log.info("following log file %s from offset %d", path, offset)
        return state

    def _compressed_done(self, key: tuple[int, int], path: str) -> bool:
        """Return whether ``path`` is a compressed file read to its end before, unchanged since.

        Such a file is not opened again: finding it would cost two decompressions of the
        whole file and an open descriptor for as long as a pattern matches it. After a
        restart, a finished checkpoint of the same inode vouches for it once its first bytes
        are checked, which decompresses only those.
        """
        try:
            info = os.stat(path)
        except OSError:
            return False
        known = self._done_compressed.get(key)
        if known is not None:
            if known == (info.st_size, info.st_mtime_ns):
                return True
            del self._done_compressed[key]
            return False
        for done in self._finished:
            if not (done.compressed and (done.device, done.inode) == key and done.fingerprint_size):
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                return False
            try:
                head = _gzip_head(fd, verify=False)
            finally:
                os.close(fd)
            if head is not None and _matches(head, done.fingerprint, done.fingerprint_size):
                self._done_compressed[key] = (info.st_size, info.st_mtime_ns)
                return True
        return False

    def _copies_open_file(self, head: bytes) -> bool:
        """Return whether ``head`` is the start of a file that is open.

        A copy of a file shorter than ``FINGERPRINT_BYTES`` is shorter than that file's
        fingerprint once the file has grown, so its bytes are compared with the file's own.
        """
        if not head:
            return False
        for state in self._open.values():
            if _matches(head, state.fingerprint, state.fingerprint_size):
                return True
            if len(head) < state.fingerprint_size and not state.compressed and state.fd >= 0:
                try:
                    if os.pread(state.fd, len(head), 0) == head:
                        return True
                except OSError:
                    continue
        return False

    def _start_offset(
        self, key: tuple[int, int], fd: int, path: str, head: bytes, size: int, compressed: bool
    ) -> tuple[int | None, bool, str]:
        """Return where to start a newly found file and the path to report its lines under.

        The offset is None when the file must not be read yet. A file that continues a
        checkpoint keeps that checkpoint's path, so a reader that keys state by path (a Zeek
        TSV header) goes on reading the content where it left off.
        """
        # Same inode and same content as before a restart: resume there. A file replaced
        # while the agent was stopped keeps its old identity, so that a copy of the old
        # content that turns up later is read only past the saved offset.
        saved = self._restored.pop(key, None)
        if saved is not None:
            if _continues(saved, fd, head, size, compressed):
                return saved.offset, saved.skipping, saved.path
            log.info("log file %s was truncated or replaced while the agent was stopped; reading it from "
                     "offset 0", path)
            if saved.fingerprint_size:
                self._finished.append(replace(saved, finished=True))

        # Content read before, under any inode, path or compression, is read only past its
        # offset. It may be a copy, a renamed and compressed file, or a file closed after
        # rotation. The longest fingerprint is the most specific match, and of two equal ones
        # the larger offset is the one read further.
        known = sorted([*self._restored.values(), *self._finished],
                       key=lambda done: (-done.fingerprint_size, -done.offset))
        for done in known:
            if not head or not done.fingerprint_size or not _matches(head, done.fingerprint, done.fingerprint_size):
                continue
            same_file = (done.device, done.inode) == key
            if not same_file and not compressed and size < done.offset:
                # A copy still being written (cp writes block by block): what it contains was read.
                log.debug("log file %s is a copy of %s still shorter than offset %d; waiting for it", path,
                          done.path, done.offset)
                return None, False, path
            if not _continues(done, fd, head, size, compressed):
                continue
            self._forget(done)
            if not same_file:
                self.stats.copies_found += 1
                log.info("log file %s is a copy of %s; reading only past offset %d", path, done.path, done.offset)
            return done.offset, done.skipping, done.path

        if self._first_poll and self.start_at == "end" and not self._resumed and saved is None:
            return (size if not compressed else None), False, path
        return 0, False, path

    def _forget(self, saved: TailCheckpoint) -> None:
        """Drop a checkpoint that a newly opened file takes over."""
        key = (saved.device, saved.inode)
        if self._restored.get(key) is saved:
            del self._restored[key]
        else:
            self._finished.remove(saved)

    def _drain_restored_elsewhere(self, found: dict[tuple[int, int], str], now: float,
                                  batched: bool) -> Iterator[TailLine | TailBatch]:
        """Find restored files that were renamed, copied or compressed while the agent was stopped.

        A restored file still reachable through a pattern with the content its checkpoint
        names is resumed by the caller. For any other, the folder of its old path is searched,
        which is where logrotate and Zeek put rotated files, whether a pattern matches them or
        not. The first file there that continues the checkpoint is opened at the saved offset
        and drained now, before a successor at the old path is read, so lines keep their
        order. The file itself under a new name comes first, because a writer may still
        append to it, then copies, compressed or not, in name order.
        """
        for key, saved in list(self._restored.items()):
            # An empty file was read up to nothing, and any file would match its empty head.
            if not saved.fingerprint_size:
                continue
            live = found.get(key)
            if live is not None and self._still_continues(key, live, saved):
                continue
            folder = os.path.dirname(saved.path) or "."
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                continue
            candidates: list[tuple[bool, str, tuple[int, int]]] = []
            for name in names:
                path = os.path.join(folder, name)
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                candidate = (info.st_dev, info.st_ino)
                # The live file at the old path no longer contains the saved content.
                if candidate in self._open or stat.S_ISDIR(info.st_mode) or (candidate == key and live is not None):
                    continue
                candidates.append((candidate != key, path, candidate))
            for _, path, candidate in sorted(candidates):
                state = self._open_if_matching(candidate, path, saved, now)
                if state is None:
                    continue
                del self._restored[key]
                state.detached_at = now
                if candidate != key:
                    self.stats.copies_found += 1
                log.info("log file %s was rotated to %s while the agent was stopped; reading it past offset %d",
                         saved.path, path, saved.offset)
                yield from self._read_open(state, now, batched)
                break

    def _still_continues(self, key: tuple[int, int], path: str, saved: TailCheckpoint) -> bool:
        """Return whether the file at ``path`` still contains what ``saved`` describes."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            info = os.fstat(fd)
            found = _read_head(fd, path)
            return (info.st_dev, info.st_ino) == key and found is not None and \
                _continues(saved, fd, found[0], info.st_size, found[1])
        finally:
            os.close(fd)

    def _open_if_matching(
        self, key: tuple[int, int], path: str, saved: TailCheckpoint, now: float
    ) -> _OpenFile | None:
        """Open ``path`` at the saved offset if it continues the content ``saved`` describes.

        A copy shorter than the saved offset is not opened: it is still being written, or
        contains only lines read already.
        """
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        info = os.fstat(fd)
        head = os.pread(fd, FINGERPRINT_BYTES, 0)
        compressed = head.startswith(GZIP_MAGIC)
        if compressed:
            head = _gzip_head(fd, verify=False) or b""
        matches = (info.st_dev, info.st_ino) == key and _continues(saved, fd, head, info.st_size, compressed)

        # gzip writes its trailer last, so a compressed file is read once it is whole. Only a
        # file whose first bytes match is decompressed to its end.
        if matches and compressed:
            matches = _gzip_head(fd) is not None
        if not matches:
            os.close(fd)
            return None
        state = _OpenFile(saved.path, fd, key[0], key[1], *_fingerprint(head), saved.offset, saved.skipping,
                          compressed, last_growth=now)
        self._open[key] = state
        self.stats.files_opened += 1
        return state

    # -- reading ---------------------------------------------------------------------------

    def _read_open(self, state: _OpenFile, now: float, batched: bool) -> Iterator[TailLine | TailBatch]:
        if state.fd < 0:
            raise RuntimeError("the tailer is closed; build a new one from its checkpoints")
        if state.compressed:
            yield from self._read_compressed(state, now, batched)
            return
        try:
            size = os.fstat(state.fd).st_size
            self._check_rewritten(state, size)
        except OSError as err:
            self.stats.read_errors += 1
            log.warning("cannot read log file %s: %s; will try again at the next poll", state.path, err)
            return
        if size > state.offset:
            state.last_growth = now
            yield from self._read_from(state, size, batched)
        state.behind = max(0, size - state.offset)
        self._count_behind(state.path)
        # A partial last line is not a backlog: it waits for its newline.
        state.drained = size - state.offset <= self._partial_line_bytes(state, size)

    def _partial_line_bytes(self, state: _OpenFile, size: int) -> int:
        """Return how many bytes after the offset belong to a line without its newline yet."""
        rest = size - state.offset
        if rest <= 0 or rest > self.max_line_bytes:
            return 0
        return rest if b"\n" not in os.pread(state.fd, rest, state.offset) else 0

    def _check_rewritten(self, state: _OpenFile, size: int) -> None:
        """Restart at 0 when the file was truncated or its first bytes changed."""
        if size < state.offset:
            self.stats.truncations += 1
            reason = f"truncated from {state.offset} to {size} bytes"
        else:
            head = os.pread(state.fd, FINGERPRINT_BYTES, 0)
            # Offsets always follow a newline, unless the rest of a cut line is being skipped.
            before = os.pread(state.fd, 1, state.offset - 1) if state.offset and not state.skipping else b"\n"
            if _matches(head, state.fingerprint, state.fingerprint_size) and before in (b"\n", b"\0"):
                state.fingerprint, state.fingerprint_size = _fingerprint(head)
                return
            self.stats.rewrites += 1
            reason = "rewritten in place (its first bytes changed)"
        log.warning("log file %s was %s; reading it again from offset 0", state.path, reason)
        self._finished.append(replace(state.checkpoint(), finished=True))
        state.offset, state.skipping = 0, False
        state.fingerprint, state.fingerprint_size = _fingerprint(os.pread(state.fd, FINGERPRINT_BYTES, 0))

    def _read_from(self, state: _OpenFile, size: int, batched: bool) -> Iterator[TailLine | TailBatch]:
        """Read the complete lines between the offset and ``size``, at most ``max_poll_bytes`` of them."""
        frame = self._frame_batch if batched else self._frame
        block_bytes = max(READ_BLOCK_BYTES, self.max_line_bytes + 1)
        start = state.offset
        whole_line = False
        while state.offset < size:
            available = min(block_bytes, size - state.offset)
            spent = state.offset - start
            if whole_line:
                request = available
            elif spent >= self.max_poll_bytes:
                return
            else:
                request = min(available, self.max_poll_bytes - spent)
            block = os.pread(state.fd, request, state.offset)
            if not block:
                return
            if whole_line and (newline := block.find(b"\n")) >= 0:
                block = block[: newline + 1]
            self.stats.bytes_read += len(block)
            consumed = yield from frame(state, block, at_end=False)
            whole_line = False
            if consumed:
                continue

            # No newline in the block: the rest of a line being skipped, a line that runs past
            # the poll's bound, an over-long line, or a partial last line that waits for its newline.
            if state.skipping:
                state.offset += len(block)
            elif len(block) < available:
                if spent:
                    return
                # The poll's first line is longer than the bound, so it is read whole.
                whole_line = True
            elif len(block) > self.max_line_bytes:
                yield self._cut(state, block, batched)
            else:
                return

    def _frame_batch(self, state: _OpenFile, block: bytes, *, at_end: bool) -> Iterator[TailBatch]:
        """Yield the complete lines of ``block`` as batches, as :meth:`_frame` yields them one by one.

        Returns the number of bytes consumed. A block without NUL bytes, over-long lines or a
        cut line in progress, which is nearly every block, becomes a single batch through one
        ``bytes.split``. Any other block is framed line by line.
        """
        if not state.skipping and b"\0" not in block:
            end = len(block) if at_end else block.rfind(b"\n") + 1
            lines = block[:end].split(b"\n") if end else []
            if lines and block[end - 1] == 0x0A:
                lines.pop()  # the empty text after the last newline
            if lines and max(map(len, lines)) <= self.max_line_bytes:
                start = state.offset
                state.offset += end
                self.stats.lines += len(lines)
                yield TailBatch(state.path, start, lines)
                return end

        single = self._frame(state, block, at_end=at_end)
        while True:
            try:
                line = next(single)
            except StopIteration as done:
                return done.value
            yield TailBatch(line.path, line.offset, [line.data], line.truncated)

    def _frame(self, state: _OpenFile, block: bytes, *, at_end: bool) -> Iterator[TailLine]:
        """Yield the complete lines of ``block``, which starts at ``state.offset``.

        Returns the number of bytes consumed. A trailing partial line is left unconsumed,
        unless ``at_end`` marks the data is complete (a compressed file), where it is yielded.
        """
        position = 0
        end = len(block)
        while position < end:
            # A NUL run is what a writer without O_APPEND leaves after a truncation.
            if block[position] == 0:
                skip = end - position - len(block[position:].lstrip(b"\0"))
                self.stats.nul_bytes_skipped += skip
                position += skip
                state.offset += skip
                continue

            newline = block.find(b"\n", position)
            if newline >= 0:
                line_end, next_position = newline, newline + 1
            elif at_end:
                line_end, next_position = end, end
            else:
                break
            line = block[position:line_end]
            start = state.offset
            state.offset += next_position - position
            position = next_position

            # The tail of a line that was already cut and yielded.
            if state.skipping:
                state.skipping = False
                continue
            truncated = len(line) > self.max_line_bytes
            if truncated:
                self.stats.lines_cut += 1
                line = line[: self.max_line_bytes]
            self.stats.lines += 1
            yield TailLine(state.path, start, line, truncated)
        return position

    def _cut(self, state: _OpenFile, block: bytes, batched: bool) -> TailLine | TailBatch:
        """Return the head of an over-long line and skip the rest of ``block``."""
        self.stats.lines_cut += 1
        self.stats.lines += 1
        start = state.offset
        state.offset += len(block)
        state.skipping = True
        if batched:
            return TailBatch(state.path, start, [block[: self.max_line_bytes]], True)
        return TailLine(state.path, start, block[: self.max_line_bytes], True)

    def _read_compressed(self, state: _OpenFile, now: float, batched: bool) -> Iterator[TailLine | TailBatch]:
        """Read a gzip file past ``state.offset``, ``max_poll_bytes`` per poll; it is complete, so it closes after.

        A poll that stops at the bound keeps the reader for the next one, so a large compressed
        backlog is decompressed once, not again from its start at every poll.
        """
        if state.exhausted:
            return
        state.detached_at = now - self.rotate_wait_secs
        state.last_growth = 0.0
        frame = self._frame_batch if batched else self._frame
        start = state.offset
        # Both stay False if the consumer stops part-way through this poll, so the next poll goes on.
        state.exhausted, state.drained = False, False
        stream, carry = self._gzip_reader_at_offset(state)
        if stream is None:
            state.exhausted, state.drained = True, True
            return
        kept = False
        try:
            while True:
                if state.offset - start >= self.max_poll_bytes:
                    state.gzip_reader, state.gzip_pending = stream, carry
                    kept = True
                    return
                data = stream.read(READ_BLOCK_BYTES)
                if not data:
                    state.exhausted, state.drained = True, True
                    break
                self.stats.bytes_read += len(data)
                block = carry + data
                consumed = yield from frame(state, block, at_end=False)
                carry = block[consumed:]
                if state.skipping and carry:
                    state.offset += len(carry)
                    carry = b""
                elif len(carry) > self.max_line_bytes:
                    yield self._cut(state, carry, batched)
                    carry = b""
        except (OSError, EOFError, zlib.error) as err:
            state.exhausted, state.drained = True, True
            self.stats.read_errors += 1
            log.warning("cannot decompress log file %s past offset %d: %s", state.path, state.offset, err)
            return
        finally:
            if not kept:
                stream.close()
        if carry:
            yield from frame(state, carry, at_end=True)

    def _gzip_reader_at_offset(self, state: _OpenFile) -> tuple[gzip.GzipFile | None, bytes]:
        """Return a reader of the compressed file and the bytes between the offset and its position.

        The reader kept by the previous poll is reused when it still lines up with the offset.
        Otherwise, or if the previous poll was abandoned, the file is opened again and
        decompressed up to the offset. Returns (None, b"") if that fails.
        """
        stream, pending = state.gzip_reader, state.gzip_pending
        state.gzip_reader, state.gzip_pending = None, b""
        if stream is not None:
            try:
                if stream.tell() == state.offset + len(pending):
                    return stream, pending
            except (OSError, ValueError):
                pass
            stream.close()
        try:
            stream = _open_gzip(state.fd)
            stream.seek(state.offset)
        except (OSError, EOFError, zlib.error) as err:
            self.stats.read_errors += 1
            log.warning("cannot decompress log file %s up to offset %d: %s; the rest of it is skipped",
                        state.path, state.offset, err)
            return None, b""
        return stream, b""

    def _close(self, key: tuple[int, int]) -> None:
        state = self._open.pop(key)
        if state.gzip_reader is not None:
            state.gzip_reader.close()
            state.gzip_reader = None
        if state.compressed and state.exhausted:
            try:
                info = os.fstat(state.fd)
                self._done_compressed[key] = (info.st_size, info.st_mtime_ns)
            except OSError:
                pass
        os.close(state.fd)
        self.stats.files_closed += 1
        self._count_behind(state.path)
        self._finished.append(replace(state.checkpoint(), finished=True))
        log.info("closed log file %s at offset %d", state.path, state.offset)

    def _count_behind(self, path: str) -> None:
        """Set the bytes behind of ``path`` from every open file found at it, or drop it if none is."""
        states = [state for state in self._open.values() if state.path == path]
        if states:
            self.stats.bytes_behind[path] = sum(state.behind for state in states)
        else:
            self.stats.bytes_behind.pop(path, None)

    # -- change notification ---------------------------------------------------------------

    def _start_observer(self) -> None:
        if not self.use_inotify or self._observer is not None:
            return
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            log.warning("watchdog is not installed; following logs by polling every %.1f s",
                        self.poll_interval_secs)
            return

        wake = self._wake

        class _Wake(FileSystemEventHandler):
            def on_any_event(self, event: object) -> None:
                wake.set()

        observer = Observer()
        try:
            for folder in sorted({_watch_root(p) for p in self.patterns}):
                if os.path.isdir(folder):
                    observer.schedule(_Wake(), folder, recursive=any(
                        _watch_root(p) == folder and _has_magic(os.path.dirname(p)) for p in self.patterns))
            observer.start()
        except OSError as err:
            log.warning("file-system events unavailable (%s); following logs by polling every %.1f s",
                        err, self.poll_interval_secs)
            return
        self._observer = observer


def _fingerprint(head: bytes) -> tuple[str, int]:
    return hashlib.sha256(head).hexdigest(), len(head)


def _matches(head: bytes, fingerprint: str, size: int) -> bool:
    """Return whether ``head`` starts with the bytes the fingerprint was taken of."""
    return len(head) >= size and hashlib.sha256(head[:size]).hexdigest() == fingerprint


def _continues(saved: TailCheckpoint, fd: int, head: bytes, size: int, compressed: bool) -> bool:
    """Return whether the file open as ``fd`` contains the content ``saved`` describes, up to its offset.

    The first bytes must match the fingerprint. A plain file must also reach the offset and
    end a line just before it, as every offset in a checkpoint does, unless the rest of a cut
    line was being skipped. A compressed file is complete, so reading past the offset is safe
    even when it is shorter.
    """
    if not _matches(head, saved.fingerprint, saved.fingerprint_size):
        return False
    if compressed:
        return True
    if size < saved.offset:
        return False
    if saved.offset and not saved.skipping:
        return os.pread(fd, 1, saved.offset - 1) in (b"\n", b"\0")
    return True


def _read_head(fd: int, path: str) -> tuple[bytes, bool] | None:
    """Return the first (decompressed) bytes of a file and whether it is gzip-compressed.

    Returns None for a ``.gz`` file without its gzip header yet, or an incomplete one.
    """
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    if path.endswith(".gz") and len(head) < len(GZIP_MAGIC):
        return None
    if head.startswith(GZIP_MAGIC):
        whole = _gzip_head(fd)
        return None if whole is None else (whole, True)
    return head, False


def _gzip_head(fd: int, *, verify: bool = True) -> bytes | None:
    """Return the first decompressed bytes of a gzip file, or None while it is incomplete.

    With ``verify`` the whole file is read, which checks the CRC and length trailer that
    gzip writes last. Without it only the first bytes are decompressed.
    """
    try:
        with _open_gzip(fd) as stream:
            head = stream.read(FINGERPRINT_BYTES)
            while verify and stream.read(READ_BLOCK_BYTES):
                pass
            return head
    except (OSError, EOFError, zlib.error):
        return None


def _open_gzip(fd: int) -> gzip.GzipFile:
    """Open a gzip reader on a duplicate of ``fd``, from the start of the file.

    The duplicate shares the file position with ``fd``, hence the explicit seek. Closing the
    reader closes only the duplicate.
    """
    raw = os.fdopen(os.dup(fd), "rb")
    raw.seek(0)
    return _ClosingGzipFile(fileobj=raw, mode="rb")


class _ClosingGzipFile(gzip.GzipFile):
    """A GzipFile that also closes the file object it was given."""

    def close(self) -> None:
        fileobj = self.fileobj
        try:
            super().close()
        finally:
            if fileobj is not None:
                fileobj.close()


def _has_magic(pattern: str) -> bool:
    return glob.has_magic(pattern)  # type: ignore[attr-defined]


def _watch_root(pattern: str) -> str:
    """Return the deepest folder of ``pattern`` without glob characters."""
    parts = Path(pattern).parts[:-1]
    root: list[str] = []
    for part in parts:
        if _has_magic(part):
            break
        root.append(part)
    return str(Path(*root)) if root else "."
