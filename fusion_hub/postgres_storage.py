"""PostgreSQL implementation of ``HubStorage``, for hubs that share one database.

Several hub processes behind a load balancer may use one database. The guarantees of
``HubStorage`` then hold across processes, not only across threads:

- ``date_added`` comes from a per-collection row (``collection_clocks``) that each insert
  advances and keeps locked until its transaction commits. Inserts into one collection
  therefore commit in ``date_added`` order, so a reader paging by ``(date_added, id)`` never
  sees a smaller ``date_added`` appear behind its cursor.
- ``mark_round_closed`` is an ``UPDATE ... WHERE closed_us IS NULL``. Under READ COMMITTED a
  second closer waits for the first one's row lock, rereads the row and updates nothing, so a
  round closes once (and the closing hub fuses it inside the same transaction). It first
  takes a transaction-scoped advisory lock, so closes of different rounds also run one after
  the other and each publishes from the indicator state the previous one committed.
- ``add_summary`` locks the round's row (``SELECT ... FOR UPDATE``) before it checks that the
  round is open, so a summary is never stored into a round another process is closing.

The statements are shared with SQLite in ``fusion_hub.sql_storage``; this module connects,
creates the schema and adds the locks. One connection serves all threads of a process, as in
the SQLite backend. The tables live in ``schema`` (default ``public``), so one database can
contain several hubs or test runs.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg

from fusion_hub.config import connection_problem, conninfo_problem, first_line, mask_dsn
from fusion_hub.errors import StorageError
from fusion_hub.sql_storage import (
    BULK_OBJECT_COLUMNS,
    SCHEMA_VERSION,
    SQLStorage,
    schema_statements,
)
from fusion_hub.timeutil import utc_now

log = logging.getLogger(__name__)


# Rows per INSERT statement when adding objects. Smaller batches let more of the server's work
# overlap the caller's, and each statement adds its own parse and plan.
PIPELINE_BATCH_ROWS = 250
# Seconds between warnings while the server stays unreachable.
RECONNECT_LOG_SECONDS = 60.0

# Keys of the advisory locks that serialise schema creation by hubs starting together, and
# the closing of rounds (fusion and publication) by hubs sharing the database.
_MIGRATION_LOCK_KEY = 0x66746968  # "ftih"
_PUBLICATION_LOCK_KEY = 0x66746970  # "ftip"

_SCHEMA_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresHubStorage(SQLStorage):
    """Hub state in a PostgreSQL database.

    Parameters
    ----------
    dsn : str
        libpq connection string or URI, for example
        ``postgresql://fti:secret@127.0.0.1:5432/fti``. Never logged unmasked.
    schema : str, default "public"
        Schema that contains the hub's tables, created when missing. Lower-case letters, digits
        and ``_``.
    clock : callable returning datetime, optional
        Source of ``date_added``; defaults to the system clock. Tests pass a fixed clock.
    connect_timeout_secs : int, default 10
        How long to wait for the server when connecting.
    sslmode : str or None, default None
        libpq ``sslmode`` (``disable`` to ``verify-full``); None keeps the DSN's value or
        libpq's default, ``prefer``. A value given here overrides the DSN's.
    sslrootcert, sslcert, sslkey : Path or None, default None
        libpq's CA bundle that the server's certificate must chain to, and the client
        certificate and key that the server may require.

    Raises
    ------
    StorageError
        If the schema name is invalid, the server is unreachable, rejects the login or the
        TLS settings, or the database contains a newer schema version.
    """

    _LOCK_ROW = " FOR UPDATE"
    _ID_IN_LIST = "id = ANY(?::text[])"
    _OTHER_OWNER_IDS = (
        "SELECT DISTINCT o.id FROM unnest(?::text[]) AS j(value) JOIN objects AS o "
        "ON o.collection_key = ? AND o.id = j.value WHERE o.owner IS DISTINCT FROM ?"
    )
    pipelines_inserts = True

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        clock: Callable[[], Any] = utc_now,
        connect_timeout_secs: int = 10,
        sslmode: str | None = None,
        sslrootcert: Path | None = None,
        sslcert: Path | None = None,
        sslkey: Path | None = None,
    ) -> None:
        if not _SCHEMA_NAME_RE.match(schema):
            raise StorageError(f"PostgreSQL schema name must match {_SCHEMA_NAME_RE.pattern}; "
                               f"got {schema!r}")
        super().__init__(clock=clock)
        self.schema = schema
        self.where = mask_dsn(dsn)
        tls = {name: str(value) for name, value in (
            ("sslmode", sslmode), ("sslrootcert", sslrootcert), ("sslcert", sslcert),
            ("sslkey", sslkey)) if value is not None}
        self._dsn = dsn
        # The search path is a connection option, so it applies to every later statement.
        self._connect_options: dict[str, Any] = {
            "autocommit": True, "connect_timeout": connect_timeout_secs,
            "options": f"-c search_path={schema}", **tls}
        self._conn = self._connect()
        self._reconnect_attempts = 0
        self._reconnect_logged_at = -RECONNECT_LOG_SECONDS
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._dsn, **self._connect_options)
        except UnicodeDecodeError as err:
            raise StorageError(f"cannot connect to hub database {self.where}: a percent "
                               "escape in the DSN does not decode to UTF-8 text") from err
        except psycopg.Error as err:
            settings = ", ".join(f"{name}={self._connect_options[name]}" for name in
                                 ("sslmode", "sslrootcert", "sslcert", "sslkey")
                                 if name in self._connect_options)
            # libpq quotes the parts of a connection string it cannot read, password included.
            problem = (conninfo_problem(err) if isinstance(err, psycopg.ProgrammingError)
                       else connection_problem(err, self._dsn))
            raise StorageError(
                f"cannot connect to hub database {self.where}: {problem}"
                + (f" (TLS settings: {settings})" if settings else "")
            ) from err

    def _reconnect_if_lost(self) -> None:
        """Open a new connection if the server ended the last one, outside a transaction.

        The request that met the loss has failed already. Inside a transaction the loss
        stays an error, because the transaction's work is gone with the connection.
        """
        if not self._conn.closed or self._depth > 0:
            return
        self._reconnect_attempts += 1
        now = time.monotonic()
        # While the server is down every request tries again, so the warning is rate-limited.
        if now - self._reconnect_logged_at >= RECONNECT_LOG_SECONDS:
            log.warning("hub database %s: the connection was lost, reconnecting (attempt %d)",
                        self.where, self._reconnect_attempts)
            self._reconnect_logged_at = now
        self._conn = self._connect()
        log.info("hub database %s: reconnected after %d attempts", self.where,
                 self._reconnect_attempts)
        self._reconnect_attempts = 0
        self._reconnect_logged_at = -RECONNECT_LOG_SECONDS

    @property
    def connection_info(self) -> psycopg.ConnectionInfo:
        """libpq's view of the connection: host, port and the TLS settings in force."""
        return self._conn.info

    def _migrate(self) -> None:
        with self.transaction():
            self._execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))
            self._execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            version = self._stored_schema_version()
            if version is not None and version > SCHEMA_VERSION:
                raise StorageError(
                    f"hub database {self.where} (schema {self.schema}) has schema version "
                    f"{version}, newer than this hub's {SCHEMA_VERSION}; upgrade fti or use "
                    "another storage.schema"
                )
            self._create_schema(
                schema_statements(
                    int64="BIGINT", float_type="DOUBLE PRECISION", bool_type="BOOLEAN",
                    serial="INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
                f"{self.where} (schema {self.schema})")
            # Rate-limit buckets shared by the hub processes (ratelimit.SharedRateLimiter).
            self._execute("CREATE TABLE IF NOT EXISTS rate_buckets (name TEXT PRIMARY KEY, "
                          "tokens DOUBLE PRECISION NOT NULL, updated_us BIGINT NOT NULL, "
                          "allowed BOOLEAN NOT NULL)")
            # Statuses of 1,000 objects (about 100 kB) stored three times as fast with lz4 as
            # with pglz in a scratch test. The ALTER blocks readers, so it runs only once.
            # Servers before PostgreSQL 14 have neither lz4 nor attcompression.
            lz4 = self._execute(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                "WHERE name = 'default_toast_compression'").fetchone()
            if lz4 is not None and lz4[0]:
                (method,) = self._execute(
                    "SELECT attcompression FROM pg_attribute "
                    "WHERE attrelid = 'statuses'::regclass AND attname = 'body'").fetchone()
                if method != "l":
                    self._execute("ALTER TABLE statuses ALTER COLUMN body SET COMPRESSION lz4")
            self._execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                          (str(SCHEMA_VERSION),))

    def _stored_schema_version(self) -> int | None:
        (meta,) = self._execute("SELECT to_regclass('meta')").fetchone()
        if meta is None:
            return None
        found = self._execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return None if found is None else int(found[0])

    def _column_names(self, table: str) -> set[str]:
        rows = self._execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ?", (self.schema, table)).fetchall()
        return {row[0] for row in rows}

    def _keep_old_objects_table(self) -> None:
        super()._keep_old_objects_table()
        # The new table's primary key index takes the name objects_pkey.
        self._execute("ALTER TABLE objects_schema1 RENAME CONSTRAINT objects_pkey "
                      "TO objects_schema1_pkey")

    def take_rate_token(self, name: str, *, capacity: float, per_second: float) -> float:
        """Take one token from the credential's shared bucket, refilled at ``per_second``.

        Returns 0 when the request may proceed, else the seconds until a token is free. The
        database's clock times the refill, so hub hosts need not agree on the time.
        """
        now = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint"
        refilled = f"LEAST(?, b.tokens + GREATEST(0, {now} - b.updated_us) * ?)"
        per_us = per_second / 1_000_000
        with self._lock:
            tokens, allowed = self._execute(
                f"INSERT INTO rate_buckets AS b (name, tokens, updated_us, allowed) "
                f"VALUES (?, ? - 1, {now}, TRUE) ON CONFLICT (name) DO UPDATE SET "
                f"tokens = CASE WHEN {refilled} >= 1 THEN {refilled} - 1 ELSE {refilled} END, "
                f"allowed = {refilled} >= 1, updated_us = GREATEST(b.updated_us, {now}) "
                "RETURNING tokens, allowed",
                (name, capacity, capacity, per_us, capacity, per_us, capacity, per_us,
                 capacity, per_us),
            ).fetchone()
        return 0.0 if allowed else (1.0 - float(tokens)) / per_second

    def _lock_publication(self) -> None:
        # Closing hubs publish one after the other: each reads the indicator state that the
        # previous closer committed. Without this, two processes closing different rounds
        # could both build the next version of one indicator from the same state.
        self._execute("SELECT pg_advisory_xact_lock(?)", (_PUBLICATION_LOCK_KEY,))

    def _rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK", prepare=False)
        except psycopg.Error as err:
            log.warning("rollback on hub database %s failed: %s", self.where, first_line(err))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        self._reconnect_if_lost()
        try:
            return self._conn.execute(_native(sql), params, prepare=False)
        except psycopg.Error as err:
            raise StorageError(f"hub database {self.where}: {first_line(err)} "
                               f"(in: {sql.split()[0]})") from err

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        self._reconnect_if_lost()
        try:
            with self._conn.cursor() as cursor:
                cursor.executemany(_native(sql), rows)
                # psycopg (checked with 3.3) sums the rows changed by every execution into rowcount.
                return cursor.rowcount
        except psycopg.Error as err:
            raise StorageError(f"hub database {self.where}: {first_line(err)} "
                               f"(in: {sql.split()[0]})") from err

    def _insert_new_objects(self, rows: Iterable[tuple[Any, ...]]) -> set[tuple[str, int]]:
        """Insert the rows in batches, pipelined so that the server inserts one batch while
        the caller produces the next; return ``(id, version_us)`` of the rows inserted.

        Most envelopes hold only new objects, so the batches first go as plain INSERTs, which
        cost the server about a third less than ON CONFLICT in a scratch test. A stored row
        fails that with a unique violation. The rows then go back to the savepoint and are
        sent again with ON CONFLICT DO NOTHING. NOTE: an envelope whose only stored object
        comes last is thus written twice, which doubles its WAL.
        """
        sent: list[tuple[Any, ...]] = []
        iterator = iter(rows)
        stored_row_met = False
        # An error of the caller's iterator, such as a check that needs the strict parser,
        # and one of the server other than a unique violation. Both are raised once the
        # pipeline has ended, so that psycopg does not log the errors that it still holds.
        caller_error: Exception | None = None
        database_error: psycopg.Error | None = None
        # Every statement here runs with prepare=False. psycopg 3 prepares a statement it has
        # seen five times (its default prepare_threshold), but not inside a pipeline that an error aborted, and would then
        # run a prepared statement that the server never made.
        try:
            with self._conn.pipeline():
                self._conn.execute("SAVEPOINT fti_new_objects", prepare=False)
                # A unique violation may surface here or when the pipeline ends. Caught here,
                # the pipeline ends with PipelineAborted for the statements after it.
                try:
                    for batch in _batches(iterator, PIPELINE_BATCH_ROWS):
                        sent.extend(batch)
                        statement, params = _insert_statement(batch, skip_stored=False)
                        self._conn.execute(statement, params, prepare=False)
                    self._conn.execute("RELEASE SAVEPOINT fti_new_objects", prepare=False)
                except psycopg.errors.UniqueViolation:
                    stored_row_met = True
                except psycopg.Error as err:
                    database_error = err
                except Exception as err:
                    caller_error = err
            if caller_error is None and database_error is None and not stored_row_met:
                return {(row[1], row[2]) for row in sent}
        except psycopg.errors.UniqueViolation:
            stored_row_met = True
        except psycopg.Error as err:
            # PipelineAborted follows an error caught above.
            failed_before = stored_row_met or caller_error or database_error
            if not (failed_before and isinstance(err, psycopg.errors.PipelineAborted)):
                database_error = database_error or err
        # The caller rolls the transaction back.
        if caller_error is not None:
            raise caller_error
        if database_error is not None:
            raise StorageError(f"hub database {self.where}: {first_line(database_error)} "
                               "(in: INSERT objects)") from database_error
        log.debug("hub database %s: an object of collection %s is stored already; adding the "
                  "envelope's rows again, skipping stored ones", self.where, sent[0][0])

        # Rows that the caller had not produced yet are read now.
        sent.extend(iterator)
        try:
            self._conn.execute("ROLLBACK TO SAVEPOINT fti_new_objects", prepare=False)
            cursors: list[psycopg.Cursor[Any]] = []
            with self._conn.pipeline():
                for batch in _batches(sent, PIPELINE_BATCH_ROWS):
                    statement, params = _insert_statement(batch, skip_stored=True)
                    cursors.append(self._conn.execute(statement, params, prepare=False))
            changed = sum(cursor.rowcount for cursor in cursors)
        except psycopg.Error as err:
            raise StorageError(f"hub database {self.where}: {first_line(err)} "
                               "(in: INSERT objects)") from err
        if changed == len(sent):
            return {(row[1], row[2]) for row in sent}
        return self._keys_added(sent)

    @staticmethod
    def _id_list(ids: Iterable[str]) -> Any:
        return list(ids)

    def _stored_digests(
        self, collection_key: int, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], str]:
        if not keys:
            return {}
        rows = self._execute(
            "SELECT id, version_us, content_sha256 FROM objects WHERE collection_key = ? "
            "AND (id, version_us) IN (SELECT * FROM unnest(?::text[], ?::bigint[]))",
            (collection_key, [key[0] for key in keys], [key[1] for key in keys]),
        ).fetchall()
        return {(object_id, int(version_us)): digest for object_id, version_us, digest in rows}

    def _bulk_insert_objects(self, rows: Sequence[Sequence[Any]]) -> None:
        # COPY streams every row in one statement instead of one INSERT per row.
        try:
            with self._conn.cursor() as cursor:
                with cursor.copy(f"COPY objects ({BULK_OBJECT_COLUMNS}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        except psycopg.Error as err:
            raise StorageError(f"hub database {self.where}: {first_line(err)} "
                               "(in: COPY objects)") from err


def _insert_statement(
    rows: Sequence[tuple[Any, ...]], *, skip_stored: bool
) -> tuple[str, list[Any]]:
    """Return the INSERT of a batch of ``objects`` rows and its parameters.

    With ``skip_stored`` it skips rows whose id and version are stored, else such a row
    fails it with a unique violation.

    The rows share one collection and carry consecutive ``date_added`` values, so both go as
    one value each. So do the spec version, type and owner when every row has the same,
    because every array element costs the client and the server a conversion.
    """
    columns = list(zip(*rows))
    # Columns sent as arrays, unnested as u.<name>, and their parameters.
    names = ["id", "version_us", "raw", "content_sha256"]
    arrays = ["%b::text[]", "%b::bigint[]", "%b::text[]", "%b::text[]"]
    params: list[Any] = [list(columns[1]), list(columns[2]), list(columns[6]), list(columns[7])]
    # Columns sent as single values, and their parameters.
    values = {"collection_key": "%b::integer", "date_added_us": "%b::bigint + u.n - 1"}
    head = [rows[0][0], rows[0][3]]
    for name, index in (("spec_version", 4), ("type", 5), ("owner", 8)):
        column = columns[index]
        if column.count(column[0]) == len(column):
            values[name] = "%b::text"
            head.append(column[0])
        else:
            names.append(name)
            arrays.append("%b::text[]")
            params.append(list(column))
    selected = ", ".join(values.get(name, f"u.{name}") for name in _BULK_NAMES)
    statement = (
        f"INSERT INTO objects ({BULK_OBJECT_COLUMNS}) SELECT {selected} "
        f"FROM unnest({', '.join(arrays)}) WITH ORDINALITY AS u({', '.join(names)}, n)"
    )
    if skip_stored:
        statement += " ON CONFLICT (collection_key, id, version_us) DO NOTHING"
    return statement, [*head, *params]


_BULK_NAMES = [name.strip() for name in BULK_OBJECT_COLUMNS.split(",")]


def _batches(rows: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def _native(sql: str) -> str:
    # The shared statements contain no literal '?' or '%', only parameter markers.
    return sql.replace("?", "%s")
