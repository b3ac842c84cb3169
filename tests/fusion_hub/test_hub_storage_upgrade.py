"""Opening a hub database of an older schema: the objects move to the current tables.

Each test writes a schema-1 database with plain SQL, as a hub of that schema left it, then
opens it with the current storage on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fusion_hub.errors import StorageError
from fusion_hub.postgres_storage import PostgresHubStorage
from fusion_hub.sql_storage import SCHEMA_VERSION, SQLStorage
from fusion_hub.sqlite_storage import SQLiteHubStorage
from fusion_hub.storage import AddOutcome, Credential, NewObject, ObjectQuery, VersionFilter
from fusion_hub.timeutil import to_micros

# The tables of schema 1 that the upgrade reads; the rest were as they are now.
SCHEMA1 = """
CREATE TABLE objects (
    collection_id  TEXT    NOT NULL,
    id             TEXT    NOT NULL,
    version_us     {int64} NOT NULL,
    date_added_us  {int64} NOT NULL,
    spec_version   TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    raw            TEXT    NOT NULL,
    content_sha256 TEXT    NOT NULL,
    owner          TEXT,
    PRIMARY KEY (collection_id, id, version_us)
);
CREATE UNIQUE INDEX objects_by_date_added ON objects (collection_id, date_added_us, id);
CREATE TABLE collection_clocks (
    collection_id      TEXT PRIMARY KEY,
    last_date_added_us {int64} NOT NULL
);
CREATE TABLE contributions (
    site_id        TEXT    NOT NULL,
    round_start_us {int64} NOT NULL,
    collection_id  TEXT    NOT NULL,
    object_id      TEXT    NOT NULL,
    version_us     {int64} NOT NULL,
    content_sha256 TEXT    NOT NULL,
    received_us    {int64} NOT NULL,
    PRIMARY KEY (site_id, round_start_us)
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)
"""

INDICATORS = "0f6a3a1e-6b4d-5d8c-9f51-2b7d8c1e4a10"
SUMMARIES = "8e0b8a43-2f0b-5d0e-8f1c-6c1f9b1e7d22"
T1 = to_micros(datetime(2024, 6, 1, tzinfo=timezone.utc))
# The frozen clock of the reopened storage is behind every stored date_added.
EARLIER = datetime(2024, 5, 1, tzinfo=timezone.utc)
# (collection, id, version, date_added, raw, owner)
ROWS = [
    (INDICATORS, "indicator--b", T1, T1 + 10, '{"v": 1}', None),
    (INDICATORS, "indicator--a", T1, T1 + 11, '{"v": 2}', "site-a"),
    (INDICATORS, "indicator--a", T1 + 5, T1 + 12, '{"v": 3}', "site-a"),
    (SUMMARIES, "x-fti-round-summary--1", T1, T1 + 20, '"summary"', "site-a"),
]


class Schema1:
    """Writes a schema-1 database and opens it with the current storage."""

    def __init__(self, execute: Callable[[str, tuple[Any, ...]], None],
                 opener: Callable[[], SQLStorage], int64: str) -> None:
        self._execute = execute
        self.open = opener
        for statement in SCHEMA1.format(int64=int64).split(";"):
            execute(statement, ())

    def write(self, *, clocks: bool = True) -> None:
        for collection, object_id, version, added, raw, owner in ROWS:
            self._execute(
                "INSERT INTO objects VALUES (?, ?, ?, ?, '2.1', ?, ?, ?, ?)",
                (collection, object_id, version, added, object_id.split("--")[0], raw,
                 f"sha-{raw}", owner))
        if clocks:
            for collection in (INDICATORS, SUMMARIES):
                self._execute("INSERT INTO collection_clocks VALUES (?, ?)",
                              (collection, max(r[3] for r in ROWS if r[0] == collection)))
        self._execute("INSERT INTO contributions VALUES (?, ?, ?, ?, ?, ?, ?)",
                      ("site-a", T1, SUMMARIES, "x-fti-round-summary--1", T1,
                       "sha-\"summary\"", T1 + 20))
        self.set_version(1)

    def set_version(self, version: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SQLiteSchema1(Schema1):
    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        super().__init__(lambda sql, params: self._conn.execute(sql, params),
                         lambda: SQLiteHubStorage(path, clock=lambda: EARLIER), "INTEGER")

    def set_version(self, version: int) -> None:
        self._conn.execute(f"PRAGMA user_version={version}")

    def close(self) -> None:
        self._conn.close()


class PostgresSchema1(Schema1):
    def __init__(self, dsn: str, schema: str) -> None:
        self._conn = psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}")
        self._conn.execute(f"CREATE SCHEMA {schema}")
        super().__init__(lambda sql, params: self._conn.execute(sql.replace("?", "%s"),
                                                                 params),
                         lambda: PostgresHubStorage(dsn, schema=schema,
                                                    clock=lambda: EARLIER), "BIGINT")

    def set_version(self, version: int) -> None:
        self._conn.execute("INSERT INTO meta VALUES ('schema_version', %s) ON CONFLICT (key) "
                           "DO UPDATE SET value = excluded.value", (str(version),))

    def close(self) -> None:
        self._conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def old(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Schema1]:
    database: Schema1
    if request.param == "sqlite":
        database = SQLiteSchema1(tmp_path / "hub.sqlite3")
    else:
        database = PostgresSchema1(request.getfixturevalue("postgres_dsn"),
                                   request.getfixturevalue("postgres_schema"))
    yield database
    database.close()


def page(storage: SQLStorage, collection: str, **query: Any) -> list[tuple[Any, ...]]:
    found = storage.query_objects(ObjectQuery(collection_id=collection, limit=10, **query))
    return [(o.collection_id, o.id, o.version_us, o.date_added_us, o.raw, o.owner)
            for o in found.objects]


def test_objects_keep_order_versions_and_contributions(old: Schema1) -> None:
    old.write()

    storage = old.open()
    try:
        everything = page(storage, INDICATORS, versions=VersionFilter(all=True))
        latest = page(storage, INDICATORS, versions=VersionFilter(last=True))
        summaries = page(storage, SUMMARIES, visible_to="site-a")
        storage.insert_credential(Credential(name="site-a", kind="site", password_hash="x",
                                             created_us=0))
        contributions = storage.contributions_between(T1, T1)
        assert storage.count_objects(INDICATORS) == 3
        assert storage.object_exists(INDICATORS, "indicator--a", "site-a")
        assert not storage.object_exists(SUMMARIES, "indicator--a", None)
    finally:
        storage.close()

    assert everything == [row for row in ROWS if row[0] == INDICATORS]
    assert latest == [ROWS[0], ROWS[2]]
    assert summaries == [ROWS[3]]
    assert [(c.site_id, c.object_id, c.raw) for c in contributions] == [
        ("site-a", "x-fti-round-summary--1", '"summary"')]


@pytest.mark.parametrize("clocks", [True, False], ids=["clocks", "no-clocks"])
def test_new_objects_follow_the_stored_ones(old: Schema1, clocks: bool) -> None:
    """date_added keeps increasing, also where the clocks table was still empty."""
    old.write(clocks=clocks)

    storage = old.open()
    try:
        created = storage.add_object(NewObject(INDICATORS, "indicator--c", "indicator", "2.1",
                                               T1, "{}", "sha-c", None))
        duplicate = storage.add_object(NewObject(INDICATORS, "indicator--b", "indicator", "2.1",
                                                 T1, '{"v": 1}', 'sha-{"v": 1}', None))
    finally:
        storage.close()

    assert duplicate == (AddOutcome.DUPLICATE, None)
    assert created == (AddOutcome.CREATED, T1 + 13)


def test_upgrade_runs_once(old: Schema1) -> None:
    old.write()
    old.open().close()

    storage = old.open()
    try:
        assert page(storage, INDICATORS, versions=VersionFilter(all=True))[:1] == ROWS[:1]
        assert "collection_id" not in storage._column_names("objects")
        assert storage._column_names("objects_schema1") == set()
    finally:
        storage.close()


def test_newer_schema_refused_and_left_alone(old: Schema1) -> None:
    old.write()
    old.set_version(SCHEMA_VERSION + 1)

    with pytest.raises(StorageError) as excinfo:
        old.open()

    assert f"has schema version {SCHEMA_VERSION + 1}, newer than this hub's " \
           f"{SCHEMA_VERSION}; upgrade fti" in str(excinfo.value)
    old.set_version(1)
    storage = old.open()
    try:
        assert len(page(storage, INDICATORS, versions=VersionFilter(all=True))) == 3
    finally:
        storage.close()
