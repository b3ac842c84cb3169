"""The SQL that both storage backends run, written once for SQLite and PostgreSQL.

``SQLStorage`` implements every ``HubStorage`` method with statements that SQLite (3.35 or
later, for ``RETURNING``) and PostgreSQL read alike. Statements use ``?`` as the parameter
marker; the PostgreSQL backend rewrites it to ``%s``. What differs between the two databases
is left to the subclasses: connecting, the schema migration, the statement that opens a
transaction, and the row and advisory locks that only PostgreSQL needs because only there
several hub processes write at once.

``date_added`` comes from a per-collection row (``collection_clocks``) that each insert
advances. On PostgreSQL the row stays locked until the transaction commits, so inserts into
one collection commit in ``date_added`` order. A reader paging by ``(date_added, id)`` therefore
never finds a smaller ``date_added`` committed behind its cursor. SQLite has one writer at a time anyway.
"""

from __future__ import annotations

import abc
import json
import logging
import threading
from datetime import datetime
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

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

# Version of the schema below, which each backend records in the database.
SCHEMA_VERSION = 2

# Column types are filled in per database: {int64}, {float} and {bool}, and {serial} for a
# key that the database numbers itself.
SCHEMA_TEMPLATE = """
-- The objects table names a collection by a small integer key, not by its 36-character id,
-- because the name appears in the table and in both of its indexes. That cut SQLite's time
-- to insert 1,000 objects by a quarter to a third, and the file by a fifth
-- (benchmarks/sqlite_objects_layout.py).
CREATE TABLE IF NOT EXISTS collections (
    collection_key {serial},
    collection_id  TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS objects (
    collection_key INTEGER NOT NULL,
    id             TEXT    NOT NULL,
    version_us     {int64} NOT NULL,
    date_added_us  {int64} NOT NULL,
    spec_version   TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    raw            TEXT    NOT NULL,
    content_sha256 TEXT    NOT NULL,
    owner          TEXT,
    PRIMARY KEY (collection_key, id, version_us)
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_by_date_added
    ON objects (collection_key, date_added_us, id);
CREATE TABLE IF NOT EXISTS collection_clocks (
    collection_id      TEXT PRIMARY KEY,
    last_date_added_us {int64} NOT NULL
);
CREATE TABLE IF NOT EXISTS statuses (
    id    TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    body  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS status_times (
    id         TEXT PRIMARY KEY,
    created_us {int64} NOT NULL
);
CREATE INDEX IF NOT EXISTS status_times_by_created ON status_times (created_us);
CREATE TABLE IF NOT EXISTS credentials (
    name             TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('site', 'consumer')),
    password_hash    TEXT NOT NULL,
    created_us       {int64} NOT NULL,
    revoked_us       {int64},
    public_key_b64   TEXT,
    read_collections TEXT NOT NULL DEFAULT '',
    trust_alpha      {float},
    trust_beta       {float}
);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id    TEXT PRIMARY KEY,
    credential  TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_us  {int64} NOT NULL,
    revoked_us  {int64}
);
CREATE TABLE IF NOT EXISTS rounds (
    round_start_us        {int64} PRIMARY KEY,
    first_contribution_us {int64} NOT NULL,
    closed_us             {int64},
    close_reason          TEXT,
    contributors          INTEGER NOT NULL DEFAULT 0,
    published             INTEGER NOT NULL DEFAULT 0,
    refused               INTEGER NOT NULL DEFAULT 0,
    revoked               INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS contributions (
    site_id        TEXT    NOT NULL,
    round_start_us {int64} NOT NULL,
    collection_id  TEXT    NOT NULL,
    object_id      TEXT    NOT NULL,
    version_us     {int64} NOT NULL,
    content_sha256 TEXT    NOT NULL,
    received_us    {int64} NOT NULL,
    PRIMARY KEY (site_id, round_start_us)
);
CREATE INDEX IF NOT EXISTS contributions_by_round ON contributions (round_start_us);
CREATE TABLE IF NOT EXISTS indicator_state (
    indicator_id        TEXT PRIMARY KEY,
    observable_type     TEXT    NOT NULL,
    value               TEXT    NOT NULL,
    created_us          {int64} NOT NULL,
    modified_us         {int64} NOT NULL,
    valid_from_us       {int64} NOT NULL,
    valid_until_us      {int64} NOT NULL,
    fused_score         {float} NOT NULL,
    corroborating_sites INTEGER NOT NULL,
    strategy            TEXT    NOT NULL,
    round_start_us      {int64} NOT NULL,
    revoked             {bool}  NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
)
"""

# Schema 1 named the collection of each object by its id. These statements copy the objects
# from that table, renamed objects_schema1, into the current objects table, then drop it.
# They also raise each clock to at least its collection's newest object, because databases
# made before the clocks existed have none.
UPGRADE_FROM_SCHEMA1 = """
INSERT INTO collections (collection_id)
    SELECT DISTINCT collection_id FROM objects_schema1 ORDER BY collection_id;
INSERT INTO objects (collection_key, id, version_us, date_added_us, spec_version, type, raw,
                     content_sha256, owner)
    SELECT k.collection_key, o.id, o.version_us, o.date_added_us, o.spec_version, o.type,
           o.raw, o.content_sha256, o.owner
    FROM objects_schema1 o JOIN collections k ON k.collection_id = o.collection_id;
INSERT INTO collection_clocks (collection_id, last_date_added_us)
    SELECT collection_id, MAX(date_added_us) FROM objects_schema1 GROUP BY collection_id
    ON CONFLICT (collection_id) DO UPDATE SET last_date_added_us = {greatest}(
        collection_clocks.last_date_added_us, excluded.last_date_added_us);
DROP TABLE objects_schema1
"""

BULK_OBJECT_COLUMNS = (
    "collection_key, id, version_us, date_added_us, spec_version, type, raw, content_sha256, owner"
)
_OBJECT_COLUMNS = "id, type, spec_version, version_us, date_added_us, raw, owner"
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


def schema_statements(*, int64: str, float_type: str, bool_type: str, serial: str) -> list[str]:
    """Return the schema's statements with the database's column types filled in."""
    return _statements(SCHEMA_TEMPLATE.format(int64=int64, float=float_type, bool=bool_type,
                                              serial=serial))


def _statements(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return [statement for statement in "\n".join(lines).split(";") if statement.strip()]


class SQLStorage(HubStorage):
    """``HubStorage`` over one DB-API connection shared by the process's threads.

    Calls are serialised by a re-entrant lock. ``transaction()`` nests: the outermost block
    opens the database transaction and the inner ones join it.

    Subclasses set ``_BEGIN`` and ``_GREATEST`` and implement ``_execute``, ``_executemany``
    and ``_rollback``; they override the lock hooks where the database needs them.
    """

    # Statement that opens a transaction.
    _BEGIN = "BEGIN"
    # Name of the function that returns the larger of two values.
    _GREATEST = "GREATEST"
    # Appended to the SELECT that reads a round before a summary joins it.
    _LOCK_ROW = ""
    # Condition that ``id`` is in the list bound by ``_id_list``.
    _ID_IN_LIST = "id IN (SELECT value FROM json_each(?))"
    # Ids of the list bound by ``_id_list`` with a stored version in the collection whose
    # owner is not the one bound last (NULL equal to NULL). The list drives the join, which
    # took half the time of ``_ID_IN_LIST`` for 1,000 ids.
    _OTHER_OWNER_IDS = (
        "SELECT DISTINCT o.id FROM json_each(?) AS j CROSS JOIN objects AS o "
        "ON o.collection_key = ? AND o.id = j.value WHERE o.owner IS NOT ?"
    )

    def __init__(self, *, clock: Callable[[], Any] = utc_now) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        self._status_times_filled = False
        # Collection keys known to be committed, and those assigned by the open transaction.
        self._collection_keys: dict[str, int] = {}
        self._new_collection_keys: dict[str, int] = {}

    @abc.abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement with ``?`` markers; return the cursor; raise StorageError."""

    @abc.abstractmethod
    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement once per row and return the rows changed, or raise StorageError."""

    @abc.abstractmethod
    def _rollback(self) -> None:
        """Roll back the open transaction."""

    @abc.abstractmethod
    def _column_names(self, table: str) -> set[str]:
        """Return the names of a table's columns, or an empty set if there is no such table."""

    def _keep_old_objects_table(self) -> None:
        """Rename ``objects`` to ``objects_schema1``, with what else the database needs."""
        self._execute("DROP INDEX objects_by_date_added")
        self._execute("ALTER TABLE objects RENAME TO objects_schema1")

    def _create_schema(self, statements: Sequence[str], where: str) -> None:
        """Create what is missing of the schema, moving schema-1 objects to the new table.

        Runs inside the caller's transaction, so an upgrade that fails leaves the database
        as it was. ``where`` names the database in the log.
        """
        upgrade = "collection_id" in self._column_names("objects")
        if upgrade:
            log.info("hub database %s: moving objects to schema %d, which reads each object "
                     "once", where, SCHEMA_VERSION)
            self._keep_old_objects_table()
        for statement in statements:
            self._execute(statement)
        if upgrade:
            for statement in _statements(UPGRADE_FROM_SCHEMA1.format(greatest=self._GREATEST)):
                self._execute(statement)
            (count,) = self._execute("SELECT COUNT(*) FROM objects").fetchone()
            log.info("hub database %s: moved %d objects to schema %d", where, count,
                     SCHEMA_VERSION)

    def _before_begin(self) -> None:
        """Run before each outermost transaction begins. SQLite waits for a checkpoint here."""

    def _committed(self) -> None:
        """Run after each outermost transaction commits. SQLite starts a checkpoint here."""

    def _lock_publication(self) -> None:
        """Make closes of different rounds run one after the other (PostgreSQL only)."""

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            outermost = self._depth == 0
            if outermost:
                self._before_begin()
                self._execute(self._BEGIN)
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outermost:
                    self._new_collection_keys.clear()
                    self._rollback()
                raise
            if not outermost:
                self._depth -= 1
                return
            # COMMIT runs while the depth still marks the transaction open, so that a lost
            # connection fails it instead of being reopened for a COMMIT of nothing.
            try:
                self._execute("COMMIT")
            finally:
                self._depth -= 1
                new_keys, self._new_collection_keys = self._new_collection_keys, {}
            self._collection_keys.update(new_keys)
            self._committed()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._execute(sql, params).fetchall())

    # Objects.

    def _collection_key(self, collection_id: str, *, create: bool = False) -> int | None:
        """Return the key of a collection in the objects table, or None if it has none.

        With ``create``, a collection without a key gets one inside the open transaction.
        Committed keys never change, so they are cached. A key assigned by a transaction
        that rolls back is dropped from the cache with it.
        """
        key = self._collection_keys.get(collection_id)
        if key is not None:
            return key
        select = "SELECT collection_key FROM collections WHERE collection_id = ?"
        # Under the lock, the new keys can only be this thread's own. A key of another
        # thread's open transaction may still roll back and go to another collection.
        with self._lock:
            key = self._new_collection_keys.get(collection_id)
            if key is not None:
                return key
            found = self._execute(select, (collection_id,)).fetchone()
            if found is not None:
                # Not assigned by the open transaction, so committed.
                self._collection_keys[collection_id] = int(found[0])
                return int(found[0])
            if not create:
                return None
            if self._depth == 0:
                raise RuntimeError("a collection key is created only inside a transaction")
            inserted = self._execute(
                "INSERT INTO collections (collection_id) VALUES (?) "
                "ON CONFLICT (collection_id) DO NOTHING", (collection_id,)).rowcount
            (key,) = self._execute(select, (collection_id,)).fetchone()
            # Without a row inserted here, another hub process committed it in between.
            keys = self._new_collection_keys if inserted == 1 else self._collection_keys
            keys[collection_id] = int(key)
            return int(key)

    def _reserve_date_added(self, collection_id: str, count: int) -> int:
        """Reserve ``count`` consecutive ``date_added`` values; return the first.

        They are strictly increasing per collection, even when the clock stalls or steps
        back, so that (date_added, id) pagination stays stable.
        """
        now_us = to_micros(self._clock())
        (last,) = self._execute(
            "INSERT INTO collection_clocks (collection_id, last_date_added_us) VALUES (?, ?) "
            "ON CONFLICT (collection_id) DO UPDATE SET last_date_added_us = "
            f"{self._GREATEST}(excluded.last_date_added_us, "
            "collection_clocks.last_date_added_us + ?) RETURNING last_date_added_us",
            (collection_id, now_us + count - 1, count),
        ).fetchone()
        return int(last) - count + 1

    @staticmethod
    def _id_list(ids: Iterable[str]) -> Any:
        """Return ``ids`` as the parameter of ``_ID_IN_LIST``."""
        return json.dumps(list(ids))

    def _ids_of_other_owners(self, collection_key: int, ids: Iterable[str],
                             owner: str | None) -> set[str]:
        """Return those of ``ids`` that have a stored version whose owner is not ``owner``."""
        found = self._execute(self._OTHER_OWNER_IDS,
                              (self._id_list(ids), collection_key, owner)).fetchall()
        return {object_id for (object_id,) in found}

    def _insert_object(self, obj: NewObject, *,
                       shared_id: bool = False) -> tuple[AddOutcome, int | None, int]:
        key = self._collection_key(obj.collection_id, create=True)
        assert key is not None
        if not shared_id and self._ids_of_other_owners(key, [obj.id], obj.owner):
            return AddOutcome.OTHER_OWNER, None, obj.version_us or 0
        date_added = self._reserve_date_added(obj.collection_id, 1)
        version_us = obj.version_us if obj.version_us is not None else date_added
        inserted = self._execute(
            f"INSERT INTO objects ({BULK_OBJECT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (collection_key, id, version_us) DO NOTHING",
            (key, obj.id, version_us, date_added, obj.spec_version, obj.type, obj.raw,
             obj.content_sha256, obj.owner),
        ).rowcount
        if inserted == 1:
            return AddOutcome.CREATED, date_added, version_us
        (existing,) = self._execute(
            "SELECT content_sha256 FROM objects WHERE collection_key = ? AND id = ? "
            "AND version_us = ?",
            (key, obj.id, version_us),
        ).fetchone()
        outcome = AddOutcome.DUPLICATE if existing == obj.content_sha256 else AddOutcome.CONFLICT
        return outcome, None, version_us

    def add_object(self, obj: NewObject, *, shared_id: bool = False) -> tuple[AddOutcome, int | None]:
        with self.transaction():
            outcome, date_added, _ = self._insert_object(obj, shared_id=shared_id)
            return outcome, date_added

    def add_objects(
        self, collection_id: str, objects: Iterable[NewObject], *, at_most: int
    ) -> list[AddOutcome]:
        with self.transaction():
            key = self._collection_key(collection_id, create=True)
            assert key is not None
            first = self._reserve_date_added(collection_id, at_most) if at_most > 0 else 0
            rows: list[tuple[Any, ...]] = []
            inserted = self._insert_new_objects(_rows_of(collection_id, key, objects, first,
                                                         at_most, collected=rows))
            outcomes: list[AddOutcome] = [AddOutcome.CREATED] * len(rows)
            others = self._other_owners_of_rows(key, rows)
            # As many keys inserted as rows means that every row went in.
            if len(inserted) == len(rows) and not others:
                return outcomes

            # Rows already stored (before or earlier in this call): same content is a resend,
            # other content a conflict. Of rows sharing an id and version, only the first can
            # have been inserted.
            skipped: list[tuple[int, tuple[Any, ...]]] = []
            seen: set[tuple[str, int]] = set()
            for index, row in enumerate(rows):
                if row[1] in others:
                    outcomes[index] = AddOutcome.OTHER_OWNER
                    continue
                id_version = (row[1], row[2])
                if id_version not in inserted or id_version in seen:
                    skipped.append((index, row))
                seen.add(id_version)
            stored = self._stored_digests(key, [(row[1], row[2]) for _, row in skipped])
            for index, row in skipped:
                same = stored.get((row[1], row[2])) == row[7]
                outcomes[index] = AddOutcome.DUPLICATE if same else AddOutcome.CONFLICT
            return outcomes

    def _other_owners_of_rows(self, collection_key: int,
                              rows: Sequence[tuple[Any, ...]]) -> set[str]:
        """Return the ids of ``rows`` that have versions of another owner; remove their rows.

        ``rows`` were just inserted by this transaction, with the ``date_added`` values it
        reserved. The rows it inserted under such an id are deleted again.
        """
        if not rows:
            return set()
        by_owner: dict[str | None, list[str]] = {}
        for row in rows:
            by_owner.setdefault(row[8], []).append(row[1])
        others: set[str] = set()
        for owner, ids in by_owner.items():
            others |= self._ids_of_other_owners(collection_key, ids, owner)
        if others:
            self._execute(
                "DELETE FROM objects WHERE collection_key = ? AND date_added_us BETWEEN ? AND ? "
                f"AND {self._ID_IN_LIST}",
                (collection_key, rows[0][3], rows[-1][3], self._id_list(others)),
            )
        return others

    def _insert_new_objects(self, rows: Iterable[tuple[Any, ...]]) -> set[tuple[str, int]]:
        """Insert rows unless their id and version exist; return ``(id, version_us)`` inserted.

        The rows share one collection and carry consecutive ``date_added`` values reserved by
        this transaction. ``rows`` comes from ``_rows_of``, which keeps every row it yields.
        """
        rows = list(rows)
        if not rows:
            return set()
        changed = self._executemany(
            f"INSERT INTO objects ({BULK_OBJECT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (collection_key, id, version_us) DO NOTHING",
            rows,
        )
        if changed == len(rows):
            return {(row[1], row[2]) for row in rows}
        return self._keys_added(rows)

    def _keys_added(self, rows: Sequence[tuple[Any, ...]]) -> set[tuple[str, int]]:
        """Return ``(id, version_us)`` of the rows that this transaction just inserted.

        No other row can have a ``date_added`` in the range the transaction reserved for
        ``rows``, so the rows found there are the ones it inserted.
        """
        found = self._execute(
            "SELECT id, version_us FROM objects WHERE collection_key = ? "
            "AND date_added_us BETWEEN ? AND ?",
            (rows[0][0], rows[0][3], rows[-1][3]),
        ).fetchall()
        return {(object_id, int(version_us)) for object_id, version_us in found}

    def _stored_digests(
        self, collection_key: int, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], str]:
        digests: dict[tuple[str, int], str] = {}
        for object_id, version_us in keys:
            found = self._execute(
                "SELECT content_sha256 FROM objects WHERE collection_key = ? AND id = ? "
                "AND version_us = ?",
                (collection_key, object_id, version_us),
            ).fetchone()
            if found is not None:
                digests[(object_id, version_us)] = found[0]
        return digests

    def load_objects(self, objects: Sequence[NewObject]) -> int:
        with self.transaction():
            by_collection: dict[str, list[NewObject]] = {}
            for obj in objects:
                by_collection.setdefault(obj.collection_id, []).append(obj)
            for collection, members in by_collection.items():
                key = self._collection_key(collection, create=True)
                first = self._reserve_date_added(collection, len(members))
                rows = [_object_row(obj, key, first + offset)
                        for offset, obj in enumerate(members)]
                self._bulk_insert_objects(rows)
        return len(objects)

    def _bulk_insert_objects(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows of the ``objects`` table, columns in ``BULK_OBJECT_COLUMNS`` order."""
        self._executemany(
            f"INSERT INTO objects ({BULK_OBJECT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def add_summary(
        self, obj: NewObject, *, site_id: str, round_start_us: int, received_us: int
    ) -> tuple[AddOutcome, int | None]:
        with self.transaction():
            # On PostgreSQL the round's row is locked first, so a closer in another process
            # waits until this commits.
            closed = self._execute(
                f"SELECT closed_us FROM rounds WHERE round_start_us = ?{self._LOCK_ROW}",
                (round_start_us,),
            ).fetchone()

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
                "INSERT INTO rounds (round_start_us, first_contribution_us) VALUES (?, ?) "
                "ON CONFLICT (round_start_us) DO NOTHING",
                (round_start_us, received_us),
            )
            return AddOutcome.CREATED, date_added

    def query_objects(self, query: ObjectQuery) -> ObjectPage:
        key = self._collection_key(query.collection_id)
        if key is None:
            return ObjectPage(objects=[], more=False)
        where, params = object_filters(query, key)
        sql = (
            f"SELECT {_OBJECT_COLUMNS} FROM objects o WHERE {' AND '.join(where)} "
            "ORDER BY o.date_added_us, o.id LIMIT ?"
        )
        rows = self._query(sql, [*params, query.limit + 1])
        objects = [StoredObject(query.collection_id, *row) for row in rows[: query.limit]]
        return ObjectPage(objects=objects, more=len(rows) > query.limit)

    def delete_objects(self, query: ObjectQuery, *, owner: str) -> tuple[int, int]:
        with self.transaction():
            key = self._collection_key(query.collection_id)
            if key is None:
                return 0, 0
            where, params = object_filters(query, key)
            rows = self._execute(
                "SELECT o.id, o.version_us, EXISTS (SELECT 1 FROM contributions c "
                "WHERE c.collection_id = ? AND c.object_id = o.id "
                f"AND c.version_us = o.version_us) FROM objects o WHERE {' AND '.join(where)} "
                "AND o.owner = ?",
                [query.collection_id, *params, owner],
            ).fetchall()
            deletable = [(key, object_id, version_us)
                         for object_id, version_us, used in rows if not used]
            if deletable:
                self._executemany(
                    "DELETE FROM objects WHERE collection_key = ? AND id = ? AND version_us = ?",
                    deletable,
                )
        return len(deletable), len(rows) - len(deletable)

    def object_exists(self, collection_id: str, object_id: str, visible_to: str | None, *,
                      posted_by: str | None = None) -> bool:
        key = self._collection_key(collection_id)
        if key is None:
            return False
        sql = "SELECT 1 FROM objects WHERE collection_key = ? AND id = ?"
        params: list[Any] = [key, object_id]
        if visible_to is not None:
            sql += " AND (owner = ? OR owner IS NULL)"
            params.append(visible_to)
        if posted_by is not None:
            sql += " AND owner = ?"
            params.append(posted_by)
        return bool(self._query(sql + " LIMIT 1", params))

    def count_objects(self, collection_id: str) -> int:
        key = self._collection_key(collection_id)
        if key is None:
            return 0
        rows = self._query("SELECT COUNT(*) FROM objects WHERE collection_key = ?", (key,))
        return int(rows[0][0])

    # Status resources.

    def save_status(self, status_id: str, owner: str, body: str) -> None:
        with self.transaction():
            self._execute("INSERT INTO statuses (id, owner, body) VALUES (?, ?, ?)",
                          (status_id, owner, body))
            self._execute("INSERT INTO status_times (id, created_us) VALUES (?, ?)",
                          (status_id, to_micros(self._clock())))

    def purge_statuses(self, before: datetime) -> int:
        with self.transaction():
            if not self._status_times_filled:
                # Statuses stored before the hub recorded their times count as saved now.
                # ON CONFLICT: another hub process on the same database may fill them at once.
                self._execute("INSERT INTO status_times (id, created_us) SELECT id, ? FROM statuses "
                              "WHERE id NOT IN (SELECT id FROM status_times) ON CONFLICT (id) DO NOTHING",
                              (to_micros(self._clock()),))
            cutoff = to_micros(before)
            deleted = self._execute("DELETE FROM statuses WHERE id IN "
                                    "(SELECT id FROM status_times WHERE created_us < ?)", (cutoff,)).rowcount
            self._execute("DELETE FROM status_times WHERE created_us < ?", (cutoff,))
        self._status_times_filled = True
        return max(deleted, 0)

    def load_status(self, status_id: str) -> tuple[str, str] | None:
        rows = self._query("SELECT owner, body FROM statuses WHERE id = ?", (status_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    # Credentials.

    def insert_credential(self, credential: Credential) -> bool:
        with self.transaction():
            cursor = self._execute(
                f"INSERT INTO credentials ({_CREDENTIAL_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (credential.name, credential.kind, credential.password_hash,
                 credential.created_us, credential.revoked_us, credential.public_key_b64,
                 ",".join(credential.read_collections), credential.trust_alpha,
                 credential.trust_beta),
            )
            return bool(cursor.rowcount == 1)

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
            return bool(cursor.rowcount == 1)

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
                "UPDATE api_tokens SET revoked_us = COALESCE(revoked_us, ?) WHERE token_id = ?",
                (revoked_us, token_id),
            )
            return bool(cursor.rowcount == 1)

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
            self._lock_publication()
            # A second closer updates nothing. On PostgreSQL it waits for the first one's row
            # lock, then rereads the row under READ COMMITTED and finds it closed.
            cursor = self._execute(
                "UPDATE rounds SET closed_us = ?, close_reason = ? "
                "WHERE round_start_us = ? AND closed_us IS NULL",
                (closed_us, reason, round_start_us),
            )
            return bool(cursor.rowcount == 1)

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
            "JOIN collections n ON n.collection_id = c.collection_id "
            "JOIN objects o ON o.collection_key = n.collection_key AND o.id = c.object_id "
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
        columns = [c.strip() for c in _STATE_COLUMNS.split(",")]
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        with self.transaction():
            self._execute(
                f"INSERT INTO indicator_state ({_STATE_COLUMNS}) "
                f"VALUES ({', '.join('?' for _ in columns)}) "
                f"ON CONFLICT (indicator_id) DO UPDATE SET {updates}",
                (state.indicator_id, state.observable_type, state.value, state.created_us,
                 state.modified_us, state.valid_from_us, state.valid_until_us,
                 state.fused_score, state.corroborating_sites, state.strategy,
                 state.round_start_us, bool(state.revoked)),
            )

    def expired_indicators(self, now_us: int) -> list[IndicatorState]:
        rows = self._query(
            f"SELECT {_STATE_COLUMNS} FROM indicator_state WHERE revoked = ? "
            "AND valid_until_us <= ? ORDER BY indicator_id",
            (False, now_us),
        )
        return [state_from_row(row) for row in rows]

    # Settings.

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta_if_absent(self, key: str, value: str) -> str:
        with self.transaction():
            self._execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                          "ON CONFLICT (key) DO NOTHING", (key, value))
            (stored,) = self._execute("SELECT value FROM meta WHERE key = ?",
                                      (key,)).fetchone()
            return str(stored)


def _rows_of(
    collection_id: str, collection_key: int, objects: Iterable[NewObject], first: int,
    at_most: int, *, collected: list[tuple[Any, ...]],
) -> Iterator[tuple[Any, ...]]:
    """Yield the rows of ``objects`` with ``date_added`` from ``first`` on, keeping each in
    ``collected``. ``collection_key`` stands for ``collection_id`` in the rows.

    Raises
    ------
    ValueError
        At an object of another collection, or at the object past ``at_most``.
    """
    for offset, obj in enumerate(objects):
        if obj.collection_id != collection_id:
            raise ValueError(f"object {obj.id} belongs to collection {obj.collection_id}, "
                             f"not {collection_id}")
        if offset == at_most:
            raise ValueError(f"more than the {at_most} objects announced")
        row = _object_row(obj, collection_key, first + offset)
        collected.append(row)
        yield row


def _object_row(obj: NewObject, collection_key: int, date_added_us: int) -> tuple[Any, ...]:
    """Return the ``BULK_OBJECT_COLUMNS`` values of an object, whose version defaults to date_added."""
    version_us = obj.version_us if obj.version_us is not None else date_added_us
    return (collection_key, obj.id, version_us, date_added_us, obj.spec_version, obj.type,
            obj.raw, obj.content_sha256, obj.owner)


def object_filters(query: ObjectQuery, collection_key: int) -> tuple[list[str], list[Any]]:
    """Build the WHERE clauses of an object query (TAXII 2.1 section 3.5), with ``?`` marks.

    ``collection_key`` is the key of the query's collection.
    """
    where = ["o.collection_key = ?"]
    params: list[Any] = [collection_key]

    # Restrictions that also apply to the versions compared by first/last. {t} is the table alias.
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
    # among all of its versions in the collection, before added_after is applied. NOT EXISTS
    # lets PostgreSQL plan an anti-join that walks the date_added index and stops at the
    # page's end. With "= (SELECT MAX ...)" it underestimated the matching rows, so it sorted
    # the whole collection for every first page.
    versions = query.versions
    if not versions.all:
        alternatives: list[str] = []
        inner = " AND ".join(["v.collection_key = o.collection_key", "v.id = o.id",
                              *(clause.format(t="v") for clause in scope)])
        if versions.last:
            alternatives.append(f"NOT EXISTS (SELECT 1 FROM objects v WHERE {inner} "
                                "AND v.version_us > o.version_us)")
            params.extend(scope_params)
        if versions.first:
            alternatives.append(f"NOT EXISTS (SELECT 1 FROM objects v WHERE {inner} "
                                "AND v.version_us < o.version_us)")
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
    """Build a credential from the columns of ``_CREDENTIAL_COLUMNS``."""
    (name, kind, password_hash, created_us, revoked_us, public_key_b64, read_collections,
     trust_alpha, trust_beta) = row
    return Credential(
        name=name, kind=kind, password_hash=password_hash, created_us=created_us,
        revoked_us=revoked_us, public_key_b64=public_key_b64,
        read_collections=tuple(c for c in read_collections.split(",") if c),
        trust_alpha=trust_alpha, trust_beta=trust_beta,
    )


def state_from_row(row: tuple[Any, ...]) -> IndicatorState:
    """Build an indicator state from the columns of ``_STATE_COLUMNS``."""
    values = list(row)
    values[-1] = bool(values[-1])
    return IndicatorState(*values)
