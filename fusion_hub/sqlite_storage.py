"""SQLite implementation of ``HubStorage``, the hub's embedded default.

The database runs in WAL mode, so another process that reads the file (the CLI) does not block
the hub's writes. It runs with ``synchronous=FULL`` because a summary that the hub acknowledged
with 202 must survive a power loss, since the agent then drops it from its outbox.

One connection is shared by the hub's threads behind a re-entrant lock. Writes are serialised
anyway by SQLite, and one connection makes ``transaction()`` nesting simple: the outermost
block issues ``BEGIN IMMEDIATE`` and the inner ones join it. Another process (the CLI enrolling
a site while the hub runs) waits up to ``busy_timeout_secs`` for the write lock. The
statements themselves are shared with PostgreSQL in ``fusion_hub.sql_storage``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fusion_hub.errors import StorageError
from fusion_hub.sql_storage import SCHEMA_VERSION, SQLStorage, schema_statements
from fusion_hub.timeutil import utc_now

log = logging.getLogger(__name__)


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
            except BaseException:
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
            self._conn.close()

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
