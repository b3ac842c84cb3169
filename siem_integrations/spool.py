"""A durable queue of SIEM documents: pending, awaiting acknowledgment, delivered, dead.

Each document has a key, the indicator id and version (``<id>@<modified>``). A key already
pending or delivered is not queued again, so a hub that publishes the same version twice,
or a sync job that re-reads a page, sends it once. Documents stay on disk (SQLite, WAL)
until the SIEM confirmed them, so a SIEM outage or a crash of the sender loses nothing.
Rejected documents move to a dead-letter table with the SIEM's reason and code, where an
operator can read them (``dead_letters``) instead of their blocking the queue.

Both tables are capped so that a long-running hub does not grow the file without end: past
``max_delivered_rows`` the oldest delivered keys are forgotten, which only matters for a
version sent again after that many newer ones (the hub never does: each version has a
later ``modified``), and past ``max_dead_letters`` the oldest dead letters are dropped,
counted in ``dead_letters_dropped`` and logged.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    ack_id INTEGER,
    sent_at REAL
);
CREATE TABLE IF NOT EXISTS delivered (key TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letter (
    key TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    reason TEXT NOT NULL,
    code TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class SpooledDocument:
    """One queued document: its key and its serialised payload (one JSON line or two)."""

    key: str
    payload: str


@dataclass(frozen=True)
class DeadLetter:
    """A document the SIEM rejected, with the SIEM's reason and error code."""

    key: str
    payload: str
    reason: str
    code: str | None


class Spool:
    """SQLite-backed queue shared by one SIEM client; safe to use from several threads.

    Parameters
    ----------
    path : Path
        Database file; its folder must exist. ``":memory:"`` keeps everything in memory,
        which only tests should do.
    max_delivered_rows : int, default 1_000_000
        Maximum number of delivered keys kept for deduplication. The oldest go first.
    max_dead_letters : int, default 10_000
        Maximum number of dead letters kept. The oldest are dropped, counted and logged.
    """

    def __init__(self, path: Path | str, *, max_delivered_rows: int = 1_000_000,
                 max_dead_letters: int = 10_000) -> None:
        self.path = path
        self.max_delivered_rows = max_delivered_rows
        self.max_dead_letters = max_dead_letters
        self.dead_letters_dropped = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def enqueue(self, documents: Iterable[SpooledDocument]) -> int:
        """Queue documents whose key is neither queued, delivered nor dead; return how many."""
        added = 0
        with self._lock, self._db:
            for document in documents:
                known = self._db.execute(
                    "SELECT 1 FROM delivered WHERE key = ? UNION ALL "
                    "SELECT 1 FROM dead_letter WHERE key = ?",
                    (document.key, document.key)).fetchone()
                if known:
                    continue
                cursor = self._db.execute("INSERT OR IGNORE INTO queue (key, payload) VALUES (?, ?)",
                                          (document.key, document.payload))
                added += cursor.rowcount
        return added

    def pending(self, *, limit: int = 10_000) -> list[SpooledDocument]:
        """Return documents not yet sent or whose acknowledgment was given up, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT key, payload FROM queue WHERE ack_id IS NULL "
                                    "ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [SpooledDocument(key, payload) for key, payload in rows]

    def mark_awaiting_ack(self, keys: Sequence[str], ack_id: int, *, sent_at: float) -> None:
        """Record that HEC accepted ``keys`` under ``ack_id`` but has not confirmed indexing."""
        with self._lock, self._db:
            self._db.executemany("UPDATE queue SET ack_id = ?, sent_at = ? WHERE key = ?",
                                 [(ack_id, sent_at, key) for key in keys])

    def stale_acks(self, *, older_than: float) -> dict[int, list[str]]:
        """Return ack id -> keys for batches sent before ``older_than`` and still unconfirmed."""
        with self._lock:
            rows = self._db.execute("SELECT ack_id, key FROM queue WHERE ack_id IS NOT NULL "
                                    "AND sent_at < ? ORDER BY seq", (older_than,)).fetchall()
        stale: dict[int, list[str]] = {}
        for ack_id, key in rows:
            stale.setdefault(ack_id, []).append(key)
        return stale

    def awaiting_ack(self) -> dict[int, list[str]]:
        """Return ack id -> keys for every batch that waits for its acknowledgment."""
        with self._lock:
            rows = self._db.execute("SELECT ack_id, key FROM queue WHERE ack_id IS NOT NULL "
                                    "ORDER BY seq").fetchall()
        waiting: dict[int, list[str]] = {}
        for ack_id, key in rows:
            waiting.setdefault(ack_id, []).append(key)
        return waiting

    def requeue(self, keys: Sequence[str]) -> None:
        """Put documents whose acknowledgment never came back at the head of the queue."""
        with self._lock, self._db:
            self._db.executemany("UPDATE queue SET ack_id = NULL, sent_at = NULL WHERE key = ?",
                                 [(key,) for key in keys])

    def mark_delivered(self, keys: Sequence[str]) -> None:
        """Remove documents from the queue and remember their keys for deduplication."""
        now = time.time()
        with self._lock, self._db:
            self._db.executemany("DELETE FROM queue WHERE key = ?", [(key,) for key in keys])
            self._db.executemany("INSERT OR IGNORE INTO delivered (key, at) VALUES (?, ?)",
                                 [(key, now) for key in keys])
            self._trim_locked("delivered", self.max_delivered_rows)

    def dead_letter(self, key: str, *, reason: str, code: str | None) -> None:
        """Move one document from the queue to the dead-letter table."""
        with self._lock, self._db:
            row = self._db.execute("SELECT payload FROM queue WHERE key = ?", (key,)).fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM queue WHERE key = ?", (key,))
            self._db.execute("INSERT OR REPLACE INTO dead_letter (key, payload, reason, code, at) "
                             "VALUES (?, ?, ?, ?, ?)", (key, row[0], reason, code, time.time()))
            self._trim_dead_letters_locked()

    def record_dead_letter(self, document: SpooledDocument, *, reason: str,
                           code: str | None) -> None:
        """Store a document rejected before it was queued, such as one over the size limit."""
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO dead_letter (key, payload, reason, code, at) "
                             "VALUES (?, ?, ?, ?, ?)",
                             (document.key, document.payload, reason, code, time.time()))
            self._trim_dead_letters_locked()

    def _trim_dead_letters_locked(self) -> None:
        dropped = self._trim_locked("dead_letter", self.max_dead_letters)
        if dropped:
            self.dead_letters_dropped += dropped
            log.warning("spool %s: %d oldest dead letters dropped over the cap of %d "
                        "(%d dropped so far)", self.path, dropped, self.max_dead_letters,
                        self.dead_letters_dropped)

    def _trim_locked(self, table: str, cap: int) -> int:
        """Delete the oldest rows of ``table`` beyond ``cap`` and return how many were deleted."""
        (count,) = self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        if count <= cap:
            return 0
        cursor = self._db.execute(
            f"DELETE FROM {table} WHERE key IN "
            f"(SELECT key FROM {table} ORDER BY at, key LIMIT ?)", (count - cap,))
        return cursor.rowcount

    def dead_letters(self) -> list[DeadLetter]:
        """Return every rejected document, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT key, payload, reason, code FROM dead_letter "
                                    "ORDER BY at, key").fetchall()
        return [DeadLetter(*row) for row in rows]

    def is_delivered(self, key: str) -> bool:
        """Return whether the SIEM confirmed ``key``."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM delivered WHERE key = ?",
                                    (key,)).fetchone() is not None

    def queued_count(self) -> int:
        """Return the number of documents not yet confirmed, acknowledgments included."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]

    def get_state(self, name: str) -> str | None:
        """Return a stored client setting, such as the HEC channel, or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_state(self, name: str, value: str) -> None:
        """Store a client setting."""
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO state (name, value) VALUES (?, ?)",
                             (name, value))


def split_batches(documents: Sequence[SpooledDocument], *,
                  max_batch_bytes: int) -> list[list[SpooledDocument]]:
    """Group documents in order into batches whose newline-joined payloads fit the limit.

    A document larger than the limit alone gets a batch of its own; callers reject such
    documents before they are queued.
    """
    batches: list[list[SpooledDocument]] = []
    current: list[SpooledDocument] = []
    size = 0
    for document in documents:
        length = len(document.payload.encode()) + 1
        if current and size + length > max_batch_bytes:
            batches.append(current)
            current, size = [], 0
        current.append(document)
        size += length
    if current:
        batches.append(current)
    return batches
