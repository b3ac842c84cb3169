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

One connection serves all threads of a process behind a re-entrant lock, as in the SQLite
backend, and ``transaction()`` nests the same way: the outermost block opens the database
transaction and inner blocks join it. The tables live in ``schema`` (default ``public``), so
one database can hold several hubs or test runs.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from fusion_hub.config import mask_dsn
from fusion_hub.errors import StorageError
from fusion_hub.sqlite_storage import credential_from_row, object_filters, state_from_row
from fusion_hub.storage import (
    AddOutcome,
    ApiToken,
    Contribution,
    Credential,
    HubStorage,
    IndicatorState,
    NewObject,
    ObjectPage,
    ObjectQuery,
    RoundRecord,
    StoredObject,
)
from fusion_hub.timeutil import to_micros, utc_now

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Keys of the advisory locks that serialise schema creation by hubs starting together, and
# the closing of rounds (fusion and publication) by hubs sharing the database.
_MIGRATION_LOCK_KEY = 0x66746968  # "ftih"
_PUBLICATION_LOCK_KEY = 0x66746970  # "ftip"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    collection_id  TEXT   NOT NULL,
    id             TEXT   NOT NULL,
    version_us     BIGINT NOT NULL,
    date_added_us  BIGINT NOT NULL,
    spec_version   TEXT   NOT NULL,
    type           TEXT   NOT NULL,
    raw            TEXT   NOT NULL,
    content_sha256 TEXT   NOT NULL,
    owner          TEXT,
    PRIMARY KEY (collection_id, id, version_us)
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_by_date_added
    ON objects (collection_id, date_added_us, id);
CREATE TABLE IF NOT EXISTS collection_clocks (
    collection_id      TEXT PRIMARY KEY,
    last_date_added_us BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS statuses (
    id    TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    body  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    name             TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('site', 'consumer')),
    password_hash    TEXT NOT NULL,
    created_us       BIGINT NOT NULL,
    revoked_us       BIGINT,
    public_key_b64   TEXT,
    read_collections TEXT NOT NULL DEFAULT '',
    trust_alpha      DOUBLE PRECISION,
    trust_beta       DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id    TEXT PRIMARY KEY,
    credential  TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_us  BIGINT NOT NULL,
    revoked_us  BIGINT
);
CREATE TABLE IF NOT EXISTS rounds (
    round_start_us        BIGINT PRIMARY KEY,
    first_contribution_us BIGINT NOT NULL,
    closed_us             BIGINT,
    close_reason          TEXT,
    contributors          INTEGER NOT NULL DEFAULT 0,
    published             INTEGER NOT NULL DEFAULT 0,
    refused               INTEGER NOT NULL DEFAULT 0,
    revoked               INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS contributions (
    site_id        TEXT   NOT NULL,
    round_start_us BIGINT NOT NULL,
    collection_id  TEXT   NOT NULL,
    object_id      TEXT   NOT NULL,
    version_us     BIGINT NOT NULL,
    content_sha256 TEXT   NOT NULL,
    received_us    BIGINT NOT NULL,
    PRIMARY KEY (site_id, round_start_us)
);
CREATE INDEX IF NOT EXISTS contributions_by_round ON contributions (round_start_us);
CREATE TABLE IF NOT EXISTS indicator_state (
    indicator_id        TEXT PRIMARY KEY,
    observable_type     TEXT    NOT NULL,
    value               TEXT    NOT NULL,
    created_us          BIGINT  NOT NULL,
    modified_us         BIGINT  NOT NULL,
    valid_from_us       BIGINT  NOT NULL,
    valid_until_us      BIGINT  NOT NULL,
    fused_score         DOUBLE PRECISION NOT NULL,
    corroborating_sites INTEGER NOT NULL,
    strategy            TEXT    NOT NULL,
    round_start_us      BIGINT  NOT NULL,
    revoked             BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
)
"""

_OBJECT_COLUMNS = "collection_id, id, type, spec_version, version_us, date_added_us, raw, owner"
_CREDENTIAL_COLUMNS = (
    "name, kind, password_hash, created_us, revoked_us, public_key_b64, read_collections, "
    "trust_alpha, trust_beta"
)
_ROUND_COLUMNS = (
    "round_start_us, first_contribution_us, closed_us, close_reason, contributors, published, "
    "refused, revoked"
)
_STATE_COLUMNS = (
    "indicator_id, observable_type, value, created_us, modified_us, valid_from_us, "
    "valid_until_us, fused_score, corroborating_sites, strategy, round_start_us, revoked"
)
_SCHEMA_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresHubStorage(HubStorage):
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

    Raises
    ------
    StorageError
        If the schema name is invalid, the server is unreachable or rejects the login, or
        the database holds a newer schema version.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        clock: Callable[[], Any] = utc_now,
        connect_timeout_secs: int = 10,
    ) -> None:
        if not _SCHEMA_NAME_RE.match(schema):
            raise StorageError(f"PostgreSQL schema name must match {_SCHEMA_NAME_RE.pattern}; "
                               f"got {schema!r}")
        self.schema = schema
        self.where = mask_dsn(dsn)
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        try:
            # The search path is a connection option, so it applies to every later statement.
            self._conn = psycopg.connect(dsn, autocommit=True,
                                         connect_timeout=connect_timeout_secs,
                                         options=f"-c search_path={schema}")
        except psycopg.Error as err:
            raise StorageError(f"cannot connect to hub database {self.where}: "
                               f"{_first_line(err)}") from err
        self._migrate()

    def _migrate(self) -> None:
        with self.transaction():
            self._execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
            self._execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._execute(statement)
            self._execute("INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                          "ON CONFLICT (key) DO NOTHING", (str(SCHEMA_VERSION),))
            (version,) = self._execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if int(version) > SCHEMA_VERSION:
            raise StorageError(
                f"hub database {self.where} (schema {self.schema}) has schema version "
                f"{version}, newer than this hub's {SCHEMA_VERSION}; upgrade fti or use "
                "another storage.schema"
            )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            outermost = self._depth == 0
            if outermost:
                self._execute("BEGIN")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outermost:
                    self._rollback()
                raise
            self._depth -= 1
            if outermost:
                self._execute("COMMIT")

    def _rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except psycopg.Error as err:
            log.warning("rollback on hub database %s failed: %s", self.where, _first_line(err))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _execute(self, sql: str, params: Any = ()) -> psycopg.Cursor[Any]:
        try:
            return self._conn.execute(sql, params, prepare=False)
        except psycopg.Error as err:
            raise StorageError(f"hub database {self.where}: {_first_line(err)} "
                               f"(in: {sql.split()[0]})") from err

    def _query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._execute(sql, params).fetchall()

    # Objects.

    def _next_date_added(self, collection_id: str) -> int:
        # The row stays locked until commit: see the module docstring.
        now_us = to_micros(self._clock())
        (stamp,) = self._execute(
            "INSERT INTO collection_clocks (collection_id, last_date_added_us) VALUES (%s, %s) "
            "ON CONFLICT (collection_id) DO UPDATE SET last_date_added_us = GREATEST("
            "EXCLUDED.last_date_added_us, collection_clocks.last_date_added_us + 1) "
            "RETURNING last_date_added_us",
            (collection_id, now_us),
        ).fetchone()
        return int(stamp)

    def _insert_object(self, obj: NewObject) -> tuple[AddOutcome, int | None, int]:
        date_added = self._next_date_added(obj.collection_id)
        version_us = obj.version_us if obj.version_us is not None else date_added
        inserted = self._execute(
            "INSERT INTO objects (collection_id, id, version_us, date_added_us, spec_version, "
            "type, raw, content_sha256, owner) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (collection_id, id, version_us) DO NOTHING",
            (obj.collection_id, obj.id, version_us, date_added, obj.spec_version, obj.type,
             obj.raw, obj.content_sha256, obj.owner),
        ).rowcount
        if inserted == 1:
            return AddOutcome.CREATED, date_added, version_us
        (existing,) = self._execute(
            "SELECT content_sha256 FROM objects WHERE collection_id = %s AND id = %s "
            "AND version_us = %s",
            (obj.collection_id, obj.id, version_us),
        ).fetchone()
        outcome = AddOutcome.DUPLICATE if existing == obj.content_sha256 else AddOutcome.CONFLICT
        return outcome, None, version_us

    def add_object(self, obj: NewObject) -> tuple[AddOutcome, int | None]:
        with self.transaction():
            outcome, date_added, _ = self._insert_object(obj)
            return outcome, date_added

    def add_summary(
        self, obj: NewObject, *, site_id: str, round_start_us: int, received_us: int
    ) -> tuple[AddOutcome, int | None]:
        with self.transaction():
            # Lock the round first: a closer in another process waits until this commits.
            closed = self._execute(
                "SELECT closed_us FROM rounds WHERE round_start_us = %s FOR UPDATE",
                (round_start_us,),
            ).fetchone()

            # A resend is judged against the contribution, not the object row, because the
            # site may have re-signed the same summary with a new modified timestamp.
            previous = self._execute(
                "SELECT content_sha256 FROM contributions WHERE site_id = %s AND "
                "round_start_us = %s",
                (site_id, round_start_us),
            ).fetchone()
            if previous is not None:
                if previous[0] == obj.content_sha256:
                    return AddOutcome.DUPLICATE, None
                return AddOutcome.ROUND_CONFLICT, None
            if closed is not None and closed[0] is not None:
                return AddOutcome.ROUND_CLOSED, None

            outcome, date_added, version_us = self._insert_object(obj)
            if outcome is not AddOutcome.CREATED:
                return outcome, None
            self._execute(
                "INSERT INTO contributions (site_id, round_start_us, collection_id, object_id, "
                "version_us, content_sha256, received_us) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (site_id, round_start_us, obj.collection_id, obj.id, version_us,
                 obj.content_sha256, received_us),
            )
            self._execute(
                "INSERT INTO rounds (round_start_us, first_contribution_us) VALUES (%s, %s) "
                "ON CONFLICT (round_start_us) DO NOTHING",
                (round_start_us, received_us),
            )
            return AddOutcome.CREATED, date_added

    def query_objects(self, query: ObjectQuery) -> ObjectPage:
        where, params = object_filters(query, placeholder="%s")
        sql = (
            f"SELECT {_OBJECT_COLUMNS} FROM objects o WHERE {' AND '.join(where)} "
            "ORDER BY o.date_added_us, o.id LIMIT %s"
        )
        rows = self._query(sql, [*params, query.limit + 1])
        objects = [StoredObject(*row) for row in rows[: query.limit]]
        return ObjectPage(objects=objects, more=len(rows) > query.limit)

    def delete_objects(self, query: ObjectQuery, *, owner: str) -> tuple[int, int]:
        where, params = object_filters(query, placeholder="%s")
        with self.transaction():
            rows = self._execute(
                "SELECT o.id, o.version_us, EXISTS (SELECT 1 FROM contributions c "
                "WHERE c.collection_id = o.collection_id AND c.object_id = o.id "
                f"AND c.version_us = o.version_us) FROM objects o WHERE {' AND '.join(where)} "
                "AND o.owner = %s",
                [*params, owner],
            ).fetchall()
            deletable = [(object_id, version_us) for object_id, version_us, used in rows
                         if not used]
            for object_id, version_us in deletable:
                self._execute(
                    "DELETE FROM objects WHERE collection_id = %s AND id = %s "
                    "AND version_us = %s",
                    (query.collection_id, object_id, version_us),
                )
        return len(deletable), len(rows) - len(deletable)

    def object_exists(self, collection_id: str, object_id: str, visible_to: str | None) -> bool:
        sql = "SELECT 1 FROM objects WHERE collection_id = %s AND id = %s"
        params: list[Any] = [collection_id, object_id]
        if visible_to is not None:
            sql += " AND (owner = %s OR owner IS NULL)"
            params.append(visible_to)
        return bool(self._query(sql + " LIMIT 1", params))

    def count_objects(self, collection_id: str) -> int:
        rows = self._query("SELECT COUNT(*) FROM objects WHERE collection_id = %s",
                           (collection_id,))
        return int(rows[0][0])

    # Status resources.

    def save_status(self, status_id: str, owner: str, body: str) -> None:
        with self.transaction():
            self._execute("INSERT INTO statuses (id, owner, body) VALUES (%s, %s, %s)",
                          (status_id, owner, body))

    def load_status(self, status_id: str) -> tuple[str, str] | None:
        rows = self._query("SELECT owner, body FROM statuses WHERE id = %s", (status_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    # Credentials.

    def insert_credential(self, credential: Credential) -> bool:
        with self.transaction():
            cursor = self._execute(
                f"INSERT INTO credentials ({_CREDENTIAL_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                (credential.name, credential.kind, credential.password_hash,
                 credential.created_us, credential.revoked_us, credential.public_key_b64,
                 ",".join(credential.read_collections), credential.trust_alpha,
                 credential.trust_beta),
            )
            return cursor.rowcount == 1

    def get_credential(self, name: str) -> Credential | None:
        rows = self._query(f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE name = %s",
                           (name,))
        return credential_from_row(rows[0]) if rows else None

    def list_credentials(self) -> list[Credential]:
        rows = self._query(f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials ORDER BY name")
        return [credential_from_row(row) for row in rows]

    def revoke_credential(self, name: str, revoked_us: int) -> bool:
        with self.transaction():
            cursor = self._execute(
                "UPDATE credentials SET revoked_us = COALESCE(revoked_us, %s) WHERE name = %s",
                (revoked_us, name),
            )
            return cursor.rowcount == 1

    def insert_api_token(self, token: ApiToken) -> None:
        with self.transaction():
            self._execute(
                "INSERT INTO api_tokens (token_id, credential, secret_hash, created_us, "
                "revoked_us) VALUES (%s, %s, %s, %s, %s)",
                (token.token_id, token.credential, token.secret_hash, token.created_us,
                 token.revoked_us),
            )

    def get_api_token(self, token_id: str) -> ApiToken | None:
        rows = self._query(
            "SELECT token_id, credential, secret_hash, created_us, revoked_us FROM api_tokens "
            "WHERE token_id = %s",
            (token_id,),
        )
        return ApiToken(*rows[0]) if rows else None

    def revoke_api_token(self, token_id: str, revoked_us: int) -> bool:
        with self.transaction():
            cursor = self._execute(
                "UPDATE api_tokens SET revoked_us = COALESCE(revoked_us, %s) "
                "WHERE token_id = %s",
                (revoked_us, token_id),
            )
            return cursor.rowcount == 1

    def update_trust(self, site_id: str, alpha: float, beta: float) -> None:
        with self.transaction():
            self._execute(
                "UPDATE credentials SET trust_alpha = %s, trust_beta = %s "
                "WHERE name = %s AND kind = 'site'",
                (alpha, beta, site_id),
            )

    # Rounds.

    def get_round(self, round_start_us: int) -> RoundRecord | None:
        rows = self._query(f"SELECT {_ROUND_COLUMNS} FROM rounds WHERE round_start_us = %s",
                           (round_start_us,))
        return RoundRecord(*rows[0]) if rows else None

    def open_rounds(self) -> list[RoundRecord]:
        rows = self._query(
            f"SELECT {_ROUND_COLUMNS} FROM rounds WHERE closed_us IS NULL "
            "ORDER BY round_start_us"
        )
        return [RoundRecord(*row) for row in rows]

    def list_rounds(self, *, limit: int) -> list[RoundRecord]:
        rows = self._query(
            f"SELECT {_ROUND_COLUMNS} FROM rounds ORDER BY round_start_us DESC LIMIT %s",
            (limit,),
        )
        return [RoundRecord(*row) for row in rows]

    def count_active_contributors(self, round_start_us: int) -> int:
        rows = self._query(
            "SELECT COUNT(*) FROM contributions c JOIN credentials k ON k.name = c.site_id "
            "WHERE c.round_start_us = %s AND k.kind = 'site' AND k.revoked_us IS NULL",
            (round_start_us,),
        )
        return int(rows[0][0])

    def mark_round_closed(self, round_start_us: int, closed_us: int, reason: str) -> bool:
        with self.transaction():
            # Closing hubs publish one after the other: each reads the indicator state that
            # the previous closer committed. Without this, two processes closing different
            # rounds could both build the next version of one indicator from the same state.
            self._execute("SELECT pg_advisory_xact_lock(%s)", (_PUBLICATION_LOCK_KEY,))
            cursor = self._execute(
                "UPDATE rounds SET closed_us = %s, close_reason = %s "
                "WHERE round_start_us = %s AND closed_us IS NULL",
                (closed_us, reason, round_start_us),
            )
            return cursor.rowcount == 1

    def record_round_outcome(
        self, round_start_us: int, *, contributors: int, published: int, refused: int,
        revoked: int,
    ) -> None:
        with self.transaction():
            self._execute(
                "UPDATE rounds SET contributors = %s, published = %s, refused = %s, "
                "revoked = %s WHERE round_start_us = %s",
                (contributors, published, refused, revoked, round_start_us),
            )

    def contributions_between(self, first_us: int, last_us: int) -> list[Contribution]:
        rows = self._query(
            "SELECT c.site_id, c.round_start_us, c.object_id, o.raw FROM contributions c "
            "JOIN objects o ON o.collection_id = c.collection_id AND o.id = c.object_id "
            "AND o.version_us = c.version_us "
            "JOIN credentials k ON k.name = c.site_id "
            "WHERE c.round_start_us BETWEEN %s AND %s AND k.revoked_us IS NULL "
            "ORDER BY c.round_start_us, c.site_id",
            (first_us, last_us),
        )
        return [Contribution(*row) for row in rows]

    # Fused indicators.

    def get_indicator_state(self, indicator_id: str) -> IndicatorState | None:
        rows = self._query(
            f"SELECT {_STATE_COLUMNS} FROM indicator_state WHERE indicator_id = %s",
            (indicator_id,),
        )
        return state_from_row(rows[0]) if rows else None

    def save_indicator_state(self, state: IndicatorState) -> None:
        columns = [c.strip() for c in _STATE_COLUMNS.split(",")]
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
        with self.transaction():
            self._execute(
                f"INSERT INTO indicator_state ({_STATE_COLUMNS}) "
                f"VALUES ({', '.join('%s' for _ in columns)}) "
                f"ON CONFLICT (indicator_id) DO UPDATE SET {updates}",
                (state.indicator_id, state.observable_type, state.value, state.created_us,
                 state.modified_us, state.valid_from_us, state.valid_until_us,
                 state.fused_score, state.corroborating_sites, state.strategy,
                 state.round_start_us, bool(state.revoked)),
            )

    def expired_indicators(self, now_us: int) -> list[IndicatorState]:
        rows = self._query(
            f"SELECT {_STATE_COLUMNS} FROM indicator_state WHERE NOT revoked "
            "AND valid_until_us <= %s ORDER BY indicator_id",
            (now_us,),
        )
        return [state_from_row(row) for row in rows]

    # Settings.

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = %s", (key,))
        return rows[0][0] if rows else None

    def set_meta_if_absent(self, key: str, value: str) -> str:
        with self.transaction():
            self._execute("INSERT INTO meta (key, value) VALUES (%s, %s) "
                          "ON CONFLICT (key) DO NOTHING", (key, value))
            (stored,) = self._execute("SELECT value FROM meta WHERE key = %s",
                                      (key,)).fetchone()
            return str(stored)


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
