"""SQLite implementation of ``HubStorage``, the hub's embedded default.

The database runs in WAL mode, so another process that reads the file (the CLI) does not block
the hub's writes. It runs with ``synchronous=FULL`` because a summary that the hub acknowledged
with 202 must survive a power loss, since the agent then drops it from its outbox.

One connection is shared by the hub's threads behind a re-entrant lock. Writes are serialised
anyway by SQLite, and one connection makes ``transaction()`` nesting simple: the outermost
block issues ``BEGIN IMMEDIATE`` and the inner ones join it. Another process (the CLI enrolling
a site while the hub runs) waits up to ``busy_timeout_secs`` for the write lock.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fusion_hub.errors import StorageError
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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    collection_id  TEXT    NOT NULL,
    id             TEXT    NOT NULL,
    version_us     INTEGER NOT NULL,
    date_added_us  INTEGER NOT NULL,
    spec_version   TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    raw            TEXT    NOT NULL,
    content_sha256 TEXT    NOT NULL,
    owner          TEXT,
    PRIMARY KEY (collection_id, id, version_us)
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_by_date_added
    ON objects (collection_id, date_added_us, id);
CREATE TABLE IF NOT EXISTS statuses (
    id    TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    body  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    name             TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('site', 'consumer')),
    password_hash    TEXT NOT NULL,
    created_us       INTEGER NOT NULL,
    revoked_us       INTEGER,
    public_key_b64   TEXT,
    read_collections TEXT NOT NULL DEFAULT '',
    trust_alpha      REAL,
    trust_beta       REAL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id    TEXT PRIMARY KEY,
    credential  TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_us  INTEGER NOT NULL,
    revoked_us  INTEGER
);
CREATE TABLE IF NOT EXISTS rounds (
    round_start_us        INTEGER PRIMARY KEY,
    first_contribution_us INTEGER NOT NULL,
    closed_us             INTEGER,
    close_reason          TEXT,
    contributors          INTEGER NOT NULL DEFAULT 0,
    published             INTEGER NOT NULL DEFAULT 0,
    refused               INTEGER NOT NULL DEFAULT 0,
    revoked               INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS contributions (
    site_id        TEXT    NOT NULL,
    round_start_us INTEGER NOT NULL,
    collection_id  TEXT    NOT NULL,
    object_id      TEXT    NOT NULL,
    version_us     INTEGER NOT NULL,
    content_sha256 TEXT    NOT NULL,
    received_us    INTEGER NOT NULL,
    PRIMARY KEY (site_id, round_start_us)
);
CREATE INDEX IF NOT EXISTS contributions_by_round ON contributions (round_start_us);
CREATE TABLE IF NOT EXISTS indicator_state (
    indicator_id        TEXT PRIMARY KEY,
    observable_type     TEXT    NOT NULL,
    value               TEXT    NOT NULL,
    created_us          INTEGER NOT NULL,
    modified_us         INTEGER NOT NULL,
    valid_from_us       INTEGER NOT NULL,
    valid_until_us      INTEGER NOT NULL,
    fused_score         REAL    NOT NULL,
    corroborating_sites INTEGER NOT NULL,
    strategy            TEXT    NOT NULL,
    round_start_us      INTEGER NOT NULL,
    revoked             INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
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


class SQLiteHubStorage(HubStorage):
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

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], Any] = utc_now,
        busy_timeout_secs: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self.path), timeout=busy_timeout_secs, isolation_level=None,
                check_same_thread=False,
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
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
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            outermost = self._depth == 0
            if outermost:
                self._execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outermost:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outermost:
                self._execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as err:
            raise StorageError(f"hub database {self.path}: {err} (in: {sql.split()[0]})") from err

    def _query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._execute(sql, params).fetchall()

    # Objects.

    def _next_date_added(self, collection_id: str) -> int:
        # Strictly increasing per collection, even when the clock stalls or steps back, so
        # that (date_added, id) pagination stays stable.
        now_us = to_micros(self._clock())
        (last,) = self._execute(
            "SELECT MAX(date_added_us) FROM objects WHERE collection_id = ?", (collection_id,)
        ).fetchone()
        return now_us if last is None or now_us > last else last + 1

    def _insert_object(self, obj: NewObject) -> tuple[AddOutcome, int | None, int]:
        date_added = self._next_date_added(obj.collection_id)
        version_us = obj.version_us if obj.version_us is not None else date_added
        existing = self._execute(
            "SELECT content_sha256 FROM objects WHERE collection_id = ? AND id = ? "
            "AND version_us = ?",
            (obj.collection_id, obj.id, version_us),
        ).fetchone()
        if existing is not None:
            outcome = AddOutcome.DUPLICATE if existing[0] == obj.content_sha256 else (
                AddOutcome.CONFLICT
            )
            return outcome, None, version_us
        self._execute(
            "INSERT INTO objects (collection_id, id, version_us, date_added_us, spec_version, "
            "type, raw, content_sha256, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (obj.collection_id, obj.id, version_us, date_added, obj.spec_version, obj.type,
             obj.raw, obj.content_sha256, obj.owner),
        )
        return AddOutcome.CREATED, date_added, version_us

    def add_object(self, obj: NewObject) -> tuple[AddOutcome, int | None]:
        with self.transaction():
            outcome, date_added, _ = self._insert_object(obj)
            return outcome, date_added

    def add_summary(
        self, obj: NewObject, *, site_id: str, round_start_us: int, received_us: int
    ) -> tuple[AddOutcome, int | None]:
        with self.transaction():
            # A resend is judged against the contribution, not the object row, because the
            # site may have re-signed the same summary with a new modified timestamp.
            previous = self._execute(
                "SELECT content_sha256 FROM contributions WHERE site_id = ? AND "
                "round_start_us = ?",
                (site_id, round_start_us),
            ).fetchone()
            if previous is not None:
                if previous[0] == obj.content_sha256:
                    return AddOutcome.DUPLICATE, None
                return AddOutcome.ROUND_CONFLICT, None

            closed = self._execute(
                "SELECT closed_us FROM rounds WHERE round_start_us = ?", (round_start_us,)
            ).fetchone()
            if closed is not None and closed[0] is not None:
                return AddOutcome.ROUND_CLOSED, None

            outcome, date_added, version_us = self._insert_object(obj)
            if outcome is not AddOutcome.CREATED:
                return outcome, None
            self._execute(
                "INSERT INTO contributions (site_id, round_start_us, collection_id, object_id, "
                "version_us, content_sha256, received_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (site_id, round_start_us, obj.collection_id, obj.id, version_us,
                 obj.content_sha256, received_us),
            )
            self._execute(
                "INSERT OR IGNORE INTO rounds (round_start_us, first_contribution_us) "
                "VALUES (?, ?)",
                (round_start_us, received_us),
            )
            return AddOutcome.CREATED, date_added

    def query_objects(self, query: ObjectQuery) -> ObjectPage:
        where, params = object_filters(query)
        sql = (
            f"SELECT {_OBJECT_COLUMNS} FROM objects o WHERE {' AND '.join(where)} "
            "ORDER BY o.date_added_us, o.id LIMIT ?"
        )
        rows = self._query(sql, [*params, query.limit + 1])
        objects = [StoredObject(*row) for row in rows[: query.limit]]
        return ObjectPage(objects=objects, more=len(rows) > query.limit)

    def delete_objects(self, query: ObjectQuery, *, owner: str) -> tuple[int, int]:
        where, params = object_filters(query)
        with self.transaction():
            rows = self._execute(
                "SELECT o.id, o.version_us, EXISTS (SELECT 1 FROM contributions c "
                "WHERE c.collection_id = o.collection_id AND c.object_id = o.id "
                f"AND c.version_us = o.version_us) FROM objects o WHERE {' AND '.join(where)} "
                "AND o.owner = ?",
                [*params, owner],
            ).fetchall()
            deletable = [(object_id, version_us) for object_id, version_us, used in rows
                         if not used]
            for object_id, version_us in deletable:
                self._execute(
                    "DELETE FROM objects WHERE collection_id = ? AND id = ? "
                    "AND version_us = ?",
                    (query.collection_id, object_id, version_us),
                )
        return len(deletable), len(rows) - len(deletable)

    def object_exists(self, collection_id: str, object_id: str, visible_to: str | None) -> bool:
        sql = "SELECT 1 FROM objects WHERE collection_id = ? AND id = ?"
        params: list[Any] = [collection_id, object_id]
        if visible_to is not None:
            sql += " AND (owner = ? OR owner IS NULL)"
            params.append(visible_to)
        return bool(self._query(sql + " LIMIT 1", params))

    def count_objects(self, collection_id: str) -> int:
        rows = self._query("SELECT COUNT(*) FROM objects WHERE collection_id = ?",
                           (collection_id,))
        return int(rows[0][0])

    # Status resources.

    def save_status(self, status_id: str, owner: str, body: str) -> None:
        with self.transaction():
            self._execute("INSERT INTO statuses (id, owner, body) VALUES (?, ?, ?)",
                          (status_id, owner, body))

    def load_status(self, status_id: str) -> tuple[str, str] | None:
        rows = self._query("SELECT owner, body FROM statuses WHERE id = ?", (status_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    # Credentials.

    def insert_credential(self, credential: Credential) -> bool:
        with self.transaction():
            if self._execute("SELECT 1 FROM credentials WHERE name = ?",
                             (credential.name,)).fetchone():
                return False
            self._execute(
                f"INSERT INTO credentials ({_CREDENTIAL_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (credential.name, credential.kind, credential.password_hash,
                 credential.created_us, credential.revoked_us, credential.public_key_b64,
                 ",".join(credential.read_collections), credential.trust_alpha,
                 credential.trust_beta),
            )
            return True

    def get_credential(self, name: str) -> Credential | None:
        rows = self._query(f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE name = ?",
                           (name,))
        return credential_from_row(rows[0]) if rows else None

    def list_credentials(self) -> list[Credential]:
        rows = self._query(f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials ORDER BY name")
        return [credential_from_row(row) for row in rows]

    def revoke_credential(self, name: str, revoked_us: int) -> bool:
        with self.transaction():
            cursor = self._execute(
                "UPDATE credentials SET revoked_us = COALESCE(revoked_us, ?) WHERE name = ?",
                (revoked_us, name),
            )
            return cursor.rowcount == 1

    def insert_api_token(self, token: ApiToken) -> None:
        with self.transaction():
            self._execute(
                "INSERT INTO api_tokens (token_id, credential, secret_hash, created_us, "
                "revoked_us) VALUES (?, ?, ?, ?, ?)",
                (token.token_id, token.credential, token.secret_hash, token.created_us,
                 token.revoked_us),
            )

    def get_api_token(self, token_id: str) -> ApiToken | None:
        rows = self._query(
            "SELECT token_id, credential, secret_hash, created_us, revoked_us FROM api_tokens "
            "WHERE token_id = ?",
            (token_id,),
        )
        return ApiToken(*rows[0]) if rows else None

    def revoke_api_token(self, token_id: str, revoked_us: int) -> bool:
        with self.transaction():
            cursor = self._execute(
                "UPDATE api_tokens SET revoked_us = COALESCE(revoked_us, ?) "
                "WHERE token_id = ?",
                (revoked_us, token_id),
            )
            return cursor.rowcount == 1

    def update_trust(self, site_id: str, alpha: float, beta: float) -> None:
        with self.transaction():
            self._execute(
                "UPDATE credentials SET trust_alpha = ?, trust_beta = ? "
                "WHERE name = ? AND kind = 'site'",
                (alpha, beta, site_id),
            )

    # Rounds.

    def get_round(self, round_start_us: int) -> RoundRecord | None:
        rows = self._query(f"SELECT {_ROUND_COLUMNS} FROM rounds WHERE round_start_us = ?",
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
            f"SELECT {_ROUND_COLUMNS} FROM rounds ORDER BY round_start_us DESC LIMIT ?",
            (limit,),
        )
        return [RoundRecord(*row) for row in rows]

    def count_active_contributors(self, round_start_us: int) -> int:
        rows = self._query(
            "SELECT COUNT(*) FROM contributions c JOIN credentials k ON k.name = c.site_id "
            "WHERE c.round_start_us = ? AND k.kind = 'site' AND k.revoked_us IS NULL",
            (round_start_us,),
        )
        return int(rows[0][0])

    def mark_round_closed(self, round_start_us: int, closed_us: int, reason: str) -> bool:
        with self.transaction():
            cursor = self._execute(
                "UPDATE rounds SET closed_us = ?, close_reason = ? "
                "WHERE round_start_us = ? AND closed_us IS NULL",
                (closed_us, reason, round_start_us),
            )
            return cursor.rowcount == 1

    def record_round_outcome(
        self, round_start_us: int, *, contributors: int, published: int, refused: int,
        revoked: int,
    ) -> None:
        with self.transaction():
            self._execute(
                "UPDATE rounds SET contributors = ?, published = ?, refused = ?, revoked = ? "
                "WHERE round_start_us = ?",
                (contributors, published, refused, revoked, round_start_us),
            )

    def contributions_between(self, first_us: int, last_us: int) -> list[Contribution]:
        rows = self._query(
            "SELECT c.site_id, c.round_start_us, c.object_id, o.raw FROM contributions c "
            "JOIN objects o ON o.collection_id = c.collection_id AND o.id = c.object_id "
            "AND o.version_us = c.version_us "
            "JOIN credentials k ON k.name = c.site_id "
            "WHERE c.round_start_us BETWEEN ? AND ? AND k.revoked_us IS NULL "
            "ORDER BY c.round_start_us, c.site_id",
            (first_us, last_us),
        )
        return [Contribution(*row) for row in rows]

    # Fused indicators.

    def get_indicator_state(self, indicator_id: str) -> IndicatorState | None:
        rows = self._query(
            f"SELECT {_STATE_COLUMNS} FROM indicator_state WHERE indicator_id = ?",
            (indicator_id,),
        )
        return state_from_row(rows[0]) if rows else None

    def save_indicator_state(self, state: IndicatorState) -> None:
        with self.transaction():
            self._execute(
                f"INSERT OR REPLACE INTO indicator_state ({_STATE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (state.indicator_id, state.observable_type, state.value, state.created_us,
                 state.modified_us, state.valid_from_us, state.valid_until_us,
                 state.fused_score, state.corroborating_sites, state.strategy,
                 state.round_start_us, int(state.revoked)),
            )

    def expired_indicators(self, now_us: int) -> list[IndicatorState]:
        rows = self._query(
            f"SELECT {_STATE_COLUMNS} FROM indicator_state WHERE revoked = 0 "
            "AND valid_until_us <= ? ORDER BY indicator_id",
            (now_us,),
        )
        return [state_from_row(row) for row in rows]

    # Settings.

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta_if_absent(self, key: str, value: str) -> str:
        with self.transaction():
            self._execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            (stored,) = self._execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return str(stored)


def object_filters(query: ObjectQuery, *, placeholder: str = "?") -> tuple[list[str], list[Any]]:
    """Build the WHERE clauses of an object query; see TAXII 2.1 section 3.5.

    ``placeholder`` is the driver's parameter marker: ``?`` for sqlite3, ``%s`` for psycopg.
    """
    where, params = _object_filters_qmark(query)
    if placeholder != "?":
        # The clauses contain no literal question mark, only parameter markers.
        where = [clause.replace("?", placeholder) for clause in where]
    return where, params


def _object_filters_qmark(query: ObjectQuery) -> tuple[list[str], list[Any]]:
    where = ["o.collection_id = ?"]
    params: list[Any] = [query.collection_id]

    # Restrictions that also apply to the versions compared by first/last; {t} is the alias.
    scope: list[str] = []
    scope_params: list[Any] = []
    if query.visible_to is not None:
        scope.append("({t}.owner = ? OR {t}.owner IS NULL)")
        scope_params.append(query.visible_to)
    if query.spec_versions:
        scope.append(f"{{t}}.spec_version IN ({_marks(query.spec_versions)})")
        scope_params.extend(query.spec_versions)
    where.extend(clause.format(t="o") for clause in scope)
    params.extend(scope_params)

    if query.types:
        where.append(f"o.type IN ({_marks(query.types)})")
        params.extend(query.types)
    if query.ids:
        where.append(f"o.id IN ({_marks(query.ids)})")
        params.extend(query.ids)

    # match[version]: "first" and "last" are the oldest and newest versions of each object
    # among all of its versions in the collection, before added_after is applied.
    versions = query.versions
    if not versions.all:
        alternatives: list[str] = []
        inner = " AND ".join(["v.collection_id = o.collection_id", "v.id = o.id",
                              *(clause.format(t="v") for clause in scope)])
        if versions.last:
            alternatives.append(f"o.version_us = (SELECT MAX(v.version_us) FROM objects v "
                                f"WHERE {inner})")
            params.extend(scope_params)
        if versions.first:
            alternatives.append(f"o.version_us = (SELECT MIN(v.version_us) FROM objects v "
                                f"WHERE {inner})")
            params.extend(scope_params)
        if versions.exact_us:
            alternatives.append(f"o.version_us IN ({_marks(versions.exact_us)})")
            params.extend(versions.exact_us)
        where.append("(" + " OR ".join(alternatives or ["1 = 0"]) + ")")

    if query.added_after_us is not None:
        where.append("o.date_added_us > ?")
        params.append(query.added_after_us)
    if query.after is not None:
        where.append("(o.date_added_us > ? OR (o.date_added_us = ? AND o.id > ?))")
        params.extend([query.after[0], query.after[0], query.after[1]])
    return where, params


def _marks(values: tuple[Any, ...]) -> str:
    return ", ".join("?" for _ in values)


def credential_from_row(row: tuple[Any, ...]) -> Credential:
    (name, kind, password_hash, created_us, revoked_us, public_key_b64, read_collections,
     trust_alpha, trust_beta) = row
    return Credential(
        name=name, kind=kind, password_hash=password_hash, created_us=created_us,
        revoked_us=revoked_us, public_key_b64=public_key_b64,
        read_collections=tuple(c for c in read_collections.split(",") if c),
        trust_alpha=trust_alpha, trust_beta=trust_beta,
    )


def state_from_row(row: tuple[Any, ...]) -> IndicatorState:
    values = list(row)
    values[-1] = bool(values[-1])
    return IndicatorState(*values)
