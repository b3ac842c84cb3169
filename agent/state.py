"""The agent's durable state: rounds, the outbox, local contacts and checkpoints (SQLite, WAL).

A round's summary enters the outbox in the same transaction that marks the round as queued,
so after a crash a round is either queued with its exact bytes or not processed at all. A
queued summary is resent byte for byte and never recomputed, because fresh noise would be a
second release. Contacts (which local entity talked to which observable) never leave the site:
the alert matcher reads them when fused indicators come back.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    round_start INTEGER PRIMARY KEY,
    status TEXT NOT NULL,            -- queued | sent | rejected | budget_exhausted | lost | beyond_horizon | dropped
    summary_id TEXT,
    observables INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    summary_id TEXT PRIMARY KEY,
    round_start INTEGER NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS contacts (
    round_start INTEGER NOT NULL,
    observable TEXT NOT NULL,
    entity TEXT NOT NULL,
    connections INTEGER NOT NULL,
    max_score REAL NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (round_start, observable, entity)
);
CREATE INDEX IF NOT EXISTS contacts_by_observable ON contacts (observable);
CREATE TABLE IF NOT EXISTS alerts (
    indicator_id TEXT NOT NULL,
    indicator_modified TEXT NOT NULL,
    entity TEXT NOT NULL,
    PRIMARY KEY (indicator_id, indicator_modified, entity)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _iso(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).isoformat()


@dataclass(frozen=True)
class Contact:
    round_start: int
    observable: str
    entity: str
    connections: int
    max_score: float
    first_seen: int
    last_seen: int


@dataclass(frozen=True)
class OutboxItem:
    summary_id: str
    round_start: int
    body: str
    attempts: int


class AgentState:
    """SQLite-backed state of one agent. Not shared between processes.

    Parameters
    ----------
    path : Path
        The SQLite file.
    max_outbox : int or None, default None
        Most summaries the outbox holds. When a new one would exceed it, the oldest rounds'
        summaries are dropped, marked ``dropped`` and counted in ``outbox_dropped``. None
        leaves the outbox unbounded.
    """

    def __init__(self, path: Path, *, max_outbox: int | None = None) -> None:
        if max_outbox is not None and max_outbox < 1:
            raise ValueError(f"max_outbox must be >= 1; got {max_outbox}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_outbox = max_outbox
        # Summaries dropped from a full outbox since this object was built.
        self.outbox_dropped = 0
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def round_status(self, round_start: int) -> str | None:
        row = self._db.execute("SELECT status FROM rounds WHERE round_start = ?", (round_start,)).fetchone()
        return row[0] if row else None

    def round_statuses(self) -> dict[int, str]:
        return dict(self._db.execute("SELECT round_start, status FROM rounds ORDER BY round_start"))

    def queue_summary(self, round_start: int, summary: dict, contacts: Iterable[Contact]) -> None:
        """Store a round's summary and local contacts and mark the round queued, atomically."""
        body = json.dumps(summary, sort_keys=True, separators=(",", ":"))
        rows = [(c.round_start, c.observable, c.entity, c.connections, c.max_score, c.first_seen, c.last_seen)
                for c in contacts]
        with self._transaction():
            self._db.execute(
                "INSERT INTO outbox (summary_id, round_start, body, created_at) VALUES (?, ?, ?, ?)",
                (summary["id"], round_start, body, _now()),
            )
            self._db.executemany("INSERT OR REPLACE INTO contacts VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute(
                "INSERT INTO rounds (round_start, status, summary_id, observables, updated_at) VALUES (?, 'queued', ?, ?, ?)",
                (round_start, summary["id"], len(summary.get("evidence", [])), _now()),
            )
            dropped = self._drop_oldest_beyond_limit(keep=summary["id"])
        if dropped:
            self.outbox_dropped += len(dropped)
            log.warning("outbox full (%d summaries, outbox.max_summaries): dropped the summaries of the oldest "
                        "rounds %s; they will not be sent", self.max_outbox,
                        ", ".join(_iso(start) for start in dropped))

    def _drop_oldest_beyond_limit(self, *, keep: str) -> list[int]:
        """Delete the oldest summaries beyond ``max_outbox``, never ``keep``, and return their rounds.

        The oldest go first because the hub is the least likely to still accept them: it
        rejects a summary for a round it has closed.
        """
        if self.max_outbox is None:
            return []
        (size,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        excess = size - self.max_outbox
        if excess <= 0:
            return []
        rows = self._db.execute(
            "SELECT summary_id, round_start FROM outbox WHERE summary_id != ? ORDER BY round_start, created_at "
            "LIMIT ?", (keep, excess),
        ).fetchall()
        for summary_id, _ in rows:
            self._db.execute("DELETE FROM outbox WHERE summary_id = ?", (summary_id,))
            self._db.execute("UPDATE rounds SET status = 'dropped', updated_at = ? WHERE summary_id = ?",
                             (_now(), summary_id))
        return [round_start for _, round_start in rows]

    def record_round(self, round_start: int, status: str, contacts: Iterable[Contact] = ()) -> None:
        """Record a round that releases nothing (budget spent, or lost in a crash)."""
        rows = [(c.round_start, c.observable, c.entity, c.connections, c.max_score, c.first_seen, c.last_seen)
                for c in contacts]
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO contacts VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute(
                "INSERT OR REPLACE INTO rounds (round_start, status, updated_at) VALUES (?, ?, ?)",
                (round_start, status, _now()),
            )

    def count_rounds_by_status(self) -> dict[str, int]:
        """Return the number of rounds in each status."""
        return dict(self._db.execute("SELECT status, COUNT(*) FROM rounds GROUP BY status"))

    def outbox_size(self) -> int:
        (size,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(size)

    def pending(self) -> list[OutboxItem]:
        rows = self._db.execute(
            "SELECT summary_id, round_start, body, attempts FROM outbox ORDER BY round_start"
        ).fetchall()
        return [OutboxItem(*row) for row in rows]

    def mark_attempt(self, summary_id: str, error: str) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE summary_id = ?", (error, summary_id)
        )

    def mark_delivered(self, summary_id: str, *, status: str = "sent") -> None:
        """Remove a summary from the outbox once the hub has accepted (or finally rejected) it."""
        with self._transaction():
            self._db.execute("DELETE FROM outbox WHERE summary_id = ?", (summary_id,))
            self._db.execute(
                "UPDATE rounds SET status = ?, updated_at = ? WHERE summary_id = ?", (status, _now(), summary_id)
            )

    def contacts_for(self, observable: str) -> list[Contact]:
        rows = self._db.execute(
            "SELECT round_start, observable, entity, connections, max_score, first_seen, last_seen "
            "FROM contacts WHERE observable = ? ORDER BY round_start, entity",
            (observable,),
        ).fetchall()
        return [Contact(*row) for row in rows]

    def remember_alert(self, indicator_id: str, modified: str, entity: str) -> bool:
        """Record an alert; return False when this indicator version already alerted on the entity."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO alerts VALUES (?, ?, ?)", (indicator_id, modified, entity)
        )
        return cursor.rowcount == 1

    def checkpoint(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM checkpoints WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_checkpoint(self, name: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", (name, value))

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")

