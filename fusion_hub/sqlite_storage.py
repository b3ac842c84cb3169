"""SQLite implementation of ``HubStorage``, the hub's embedded default.

The database runs in WAL mode, so another process that reads the file (the CLI) does not block
the hub's writes. It runs with ``synchronous=FULL`` because a summary that the hub acknowledged
with 202 must survive a power loss, since the agent then drops it from its outbox.

Checkpoints, which copy the WAL back into the database file and sync it, run in a thread of
their own (``_Checkpointer``) rather than inside the commit that crosses SQLite's threshold.

One connection is shared by the hub's threads behind a re-entrant lock. Writes are serialised
anyway by SQLite, and one connection makes ``transaction()`` nesting simple: the outermost
block issues ``BEGIN IMMEDIATE`` and the inner ones join it. Another process (the CLI enrolling
a site while the hub runs) waits up to ``busy_timeout_secs`` for the write lock. The
statements themselves are shared with PostgreSQL in ``fusion_hub.sql_storage``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fusion_hub.errors import StorageError
from fusion_hub.sql_storage import SCHEMA_VERSION, SQLStorage, schema_statements
from fusion_hub.timeutil import utc_now

log = logging.getLogger(__name__)

# The checkpoint thread wakes after each commit, and at this interval to catch writes made
# outside a transaction.
CHECKPOINT_INTERVAL_SECS = 1.0
# Once the WAL contains this many bytes, a transaction waits for the checkpoint that copies the
# last commit before it begins, so that it writes the WAL from its start (see _Checkpointer).
WAL_RESET_BYTES = 8 * 1024 * 1024
# A transaction also waits once this many commits are not yet checkpointed, which bounds
# the WAL while the thread waits for the interpreter behind a busy request thread.
MAX_COMMITS_AHEAD = 4
# Maximum seconds a transaction waits for that checkpoint.
CHECKPOINT_WAIT_SECS = 5.0
# Seconds between two warnings about failed checkpoints.
CHECKPOINT_WARNING_INTERVAL_SECS = 60.0


class _Checkpointer:
    """Copy the WAL back into the database file in a thread, beside the requests.

    SQLite's automatic checkpoint runs inside the commit that takes the WAL over 1,000 pages.
    That commit then writes back and syncs the pages of the transactions before it too, so
    every few envelopes one request took several times longer than the others. In a large
    collection, where each object changes a page of the id index of its own, that was half of
    the time to add an envelope.

    Here a second connection runs a passive checkpoint after each commit, which waits for no
    reader and no writer, while the hub checks the next envelope. The commits still sync the
    WAL, so what the hub acknowledged is as durable as before.

    SQLite writes the WAL from its start again only when a transaction begins after a
    checkpoint has copied all of it. Under a steady stream of envelopes the next one would
    begin first every time, and a growing WAL makes every page lookup slower. So once the WAL
    passes ``WAL_RESET_BYTES``, or the thread falls ``MAX_COMMITS_AHEAD`` commits behind,
    ``settle`` makes the next transaction wait for the checkpoint of the last commit before it
    begins. The hub's own connection keeps SQLite's automatic checkpoint at eight times that
    size, in case this thread stops keeping up.
    """

    def __init__(self, path: Path, *, busy_timeout_secs: float) -> None:
        self._path = path
        self._conn = sqlite3.connect(str(path), timeout=busy_timeout_secs,
                                     isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA synchronous=FULL")
            (page_size,) = self._conn.execute("PRAGMA page_size").fetchone()
        except BaseException:
            self._conn.close()
            raise
        self.reset_frames = max(1, WAL_RESET_BYTES // page_size)
        self._changed = threading.Condition()
        # Commits announced, and how many of them the last finished checkpoint started after.
        self._commits = 0
        self._copied_commits = 0
        # WAL pages seen by the last checkpoint.
        self._wal_frames = 0
        self._stopping = False
        self._running = True
        self._last_warning = float("-inf")
        self.checkpoints = 0
        self._thread = threading.Thread(target=self._run, name="fti-hub-sqlite-checkpoint",
                                        daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """Ask for a checkpoint of what was just committed."""
        with self._changed:
            self._commits += 1
            self._changed.notify_all()

    def settle(self) -> None:
        """Wait, before a transaction, until a large WAL can start over."""
        with self._changed:
            if (self._wal_frames < self.reset_frames
                    and self._commits - self._copied_commits < MAX_COMMITS_AHEAD):
                return
            self._changed.wait_for(
                lambda: self._copied_commits >= self._commits or not self._running,
                timeout=CHECKPOINT_WAIT_SECS)

    def stop(self, *, wait: bool = True) -> None:
        """End the thread after its current checkpoint. The thread closes its connection."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if wait:
            self._thread.join()

    def _run(self) -> None:
        try:
            while self._next():
                self._checkpoint()
        finally:
            self._conn.close()
            with self._changed:
                self._running = False
                self._changed.notify_all()

    def _next(self) -> bool:
        """Wait for a commit to copy or for the interval. Return False once stopping."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._stopping or self._copied_commits < self._commits,
                timeout=CHECKPOINT_INTERVAL_SECS)
            return not self._stopping

    def _checkpoint(self) -> None:
        with self._changed:
            commits = self._commits
        try:
            _, wal_frames, _ = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as err:
            # The next commit or interval tries again, and the hub's own automatic
            # checkpoint still bounds the WAL.
            wal_frames = 0
            now = time.monotonic()
            if now - self._last_warning >= CHECKPOINT_WARNING_INTERVAL_SECS:
                self._last_warning = now
                log.warning("hub database %s: checkpoint failed, will retry: %s",
                            self._path, err)
        with self._changed:
            # A checkpoint that could not copy everything, because a reader still needs old
            # pages, also ends the wait: the WAL cannot start over before that reader ends.
            self._copied_commits = commits
            self._wal_frames = max(wal_frames, 0)
            self.checkpoints += 1
            self._changed.notify_all()


class SQLiteHubStorage(SQLStorage):
    """Hub state in one SQLite file.

    Parameters
    ----------
    path : Path
        Database file; created with its folder when missing.
    clock : callable returning datetime, optional
        Source of ``date_added``; defaults to the system clock. Tests pass a fixed clock.
    busy_timeout_secs : float, default 30.0
        How long to wait for another process holding the write lock.
    """

    # IMMEDIATE takes the write lock at once, so two hub transactions never deadlock by both
    # upgrading a read lock. The second one waits up to busy_timeout_secs instead.
    _BEGIN = "BEGIN IMMEDIATE"
    # SQLite's two-argument MAX is the scalar maximum, like PostgreSQL's GREATEST.
    _GREATEST = "MAX"

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], Any] = utc_now,
        busy_timeout_secs: float = 30.0,
    ) -> None:
        super().__init__(clock=clock)
        self.path = Path(path)
        self._checkpointer: _Checkpointer | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self.path), timeout=busy_timeout_secs, isolation_level=None,
                check_same_thread=False,
            )
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA foreign_keys=ON")
                self._migrate()
                self._checkpointer = _Checkpointer(self.path,
                                                   busy_timeout_secs=busy_timeout_secs)
                # A storage dropped without close() must not leave the thread running.
                weakref.finalize(self, self._checkpointer.stop, wait=False)
                self._conn.execute(
                    f"PRAGMA wal_autocheckpoint={8 * self._checkpointer.reset_frames}")
                # A reader with an old snapshot keeps the WAL from starting over, so it grows.
                # SQLite cuts the file back to this size when the WAL next starts over.
                self._conn.execute(f"PRAGMA journal_size_limit={4 * WAL_RESET_BYTES}")
            except BaseException:
                if self._checkpointer is not None:
                    self._checkpointer.stop()
                self._conn.close()
                raise
        except sqlite3.Error as err:
            raise StorageError(f"cannot open hub database {self.path}: {err}") from err

    def _migrate(self) -> None:
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"hub database {self.path} has schema version {version}, newer than this "
                f"hub's {SCHEMA_VERSION}; upgrade fti or use another storage.path"
            )
        with self.transaction():
            self._create_schema(
                schema_statements(int64="INTEGER", float_type="REAL", bool_type="INTEGER",
                                  serial="INTEGER PRIMARY KEY"),
                str(self.path))
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            self._conn.close()

    def _before_begin(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.settle()

    def _committed(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.committed()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as err:
            raise StorageError(f"hub database {self.path}: {err} (in: {sql.split()[0]})") from err

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        try:
            # sqlite3 sums the rows changed by every execution into rowcount.
            return self._conn.executemany(sql, rows).rowcount
        except sqlite3.Error as err:
            raise StorageError(f"hub database {self.path}: {err} (in: {sql.split()[0]})") from err

    def _rollback(self) -> None:
        self._conn.execute("ROLLBACK")

    def _column_names(self, table: str) -> set[str]:
        return {row[1] for row in self._execute(f"PRAGMA table_info({table})")}
