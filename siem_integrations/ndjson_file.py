"""Append-only NDJSON files, one JSON document per line, synced to disk per batch.

Each batch opens the file with ``O_APPEND``, writes all its lines, then ``fsync``s before
returning, so a batch the caller saw succeed survives a crash or power loss. Opening per batch
also follows log rotation: after logrotate renames the file, the next batch creates a new one.

A crash in the middle of a batch can leave a last line without its newline. The next batch
then starts with a newline, so the damage stays on that one line and every later line parses.
Documents are serialised with ``ensure_ascii=True``: U+2028 and U+2029 would otherwise reach
the file raw, and line readers that treat them as line breaks would split a document.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from siem_integrations.errors import SinkWriteFailed

log = logging.getLogger(__name__)


def dump_line(document: Mapping[str, Any]) -> str:
    """Serialise one document as a single NDJSON line, without the newline."""
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


class NdjsonAppender:
    """Append batches of lines to one file, each batch flushed and fsynced.

    Parameters
    ----------
    path : Path
        Output file; created (mode 0640) with the first batch. Its folder must exist.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, lines: Iterable[str]) -> int:
        """Append ``lines`` (no newlines inside) as one batch; return the bytes written.

        Raises
        ------
        SinkWriteFailed
            If the file cannot be opened, written or synced.
        """
        payload = "".join(line + "\n" for line in lines).encode("utf-8")
        if not payload:
            return 0
        with self._lock:
            try:
                return self._append_locked(payload)
            except OSError as err:
                raise SinkWriteFailed(self.path, err.strerror or str(err)) from err

    def _append_locked(self, payload: bytes) -> int:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            # Keep an earlier torn write from swallowing the first line of this batch.
            size = os.fstat(fd).st_size
            if size > 0 and _last_byte(self.path, size) != b"\n":
                log.warning("%s ends without a newline (an interrupted write); the incomplete "
                            "last line is left as it is", self.path)
                payload = b"\n" + payload
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            # The new directory entry must be durable too, or the file can vanish on power loss.
            _fsync_directory(self.path.parent)
        return len(payload)


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(size - 1)
        return handle.read(1)


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
