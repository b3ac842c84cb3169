"""Contract tests of the hub storage, run against every HubStorage implementation."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fusion_hub.errors import StorageError
from fusion_hub.postgres_storage import PIPELINE_BATCH_ROWS, PostgresHubStorage
from fusion_hub.sqlite_storage import SQLiteHubStorage
from fusion_hub.storage import (
    AddOutcome,
    ApiToken,
    Credential,
    HubStorage,
    NewObject,
    ObjectQuery,
    VersionFilter,
)
from fusion_hub.timeutil import to_micros

FROZEN = datetime(2024, 6, 3, 12, 0, tzinfo=timezone.utc)
COLLECTION = "c-1"
T1 = to_micros(datetime(2024, 6, 1, tzinfo=timezone.utc))
T2 = T1 + 1_000
T3 = T1 + 2_000


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HubStorage]:
    # A frozen clock: date_added must still increase strictly.
    backend: HubStorage
    if request.param == "sqlite":
        backend = SQLiteHubStorage(tmp_path / "hub.sqlite3", clock=lambda: FROZEN)
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        schema = request.getfixturevalue("postgres_schema")
        backend = PostgresHubStorage(dsn, schema=schema, clock=lambda: FROZEN)
    yield backend
    backend.close()


def new_object(object_id: str, version_us: int | None, raw: str = "{}", *,
               owner: str | None = None, object_type: str = "indicator",
               digest: str | None = None) -> NewObject:
    return NewObject(collection_id=COLLECTION, id=object_id, type=object_type,
                     spec_version="2.1", version_us=version_us, raw=raw,
                     content_sha256=digest or f"sha-{object_id}-{version_us}-{raw}", owner=owner)


def site(name: str) -> Credential:
    return Credential(name=name, kind="site", password_hash="$argon2id$x", created_us=0,
                      public_key_b64="A" * 44, read_collections=("summaries",),
                      trust_alpha=2.0, trust_beta=1.0)


def ids_of(storage: HubStorage, **query: object) -> list[tuple[str, int]]:
    page = storage.query_objects(ObjectQuery(collection_id=COLLECTION, limit=100, **query))
    return [(obj.id, obj.version_us) for obj in page.objects]


def test_date_added_strictly_increasing_with_frozen_clock(storage: HubStorage) -> None:
    for index in range(5):
        storage.add_object(new_object(f"indicator--{index}", T1))

    page = storage.query_objects(ObjectQuery(collection_id=COLLECTION, limit=10))

    stamps = [obj.date_added_us for obj in page.objects]
    assert stamps == [to_micros(FROZEN) + i for i in range(5)]


def test_raw_text_returned_verbatim(storage: HubStorage) -> None:
    raw = '{"type": "indicator",  "x": 12.70, "when": "2024-05-01T10:00:00.000Z"}'
    storage.add_object(new_object("indicator--a", T1, raw))

    page = storage.query_objects(ObjectQuery(collection_id=COLLECTION, limit=10))

    assert page.objects[0].raw == raw


def test_add_same_version_duplicate_or_conflict(storage: HubStorage) -> None:
    first = storage.add_object(new_object("indicator--a", T1, "{}", digest="d1"))
    again = storage.add_object(new_object("indicator--a", T1, "{ }", digest="d1"))
    changed = storage.add_object(new_object("indicator--a", T1, "{}", digest="d2"))

    assert first[0] is AddOutcome.CREATED
    assert again == (AddOutcome.DUPLICATE, None)
    assert changed == (AddOutcome.CONFLICT, None)
    assert storage.count_objects(COLLECTION) == 1


def test_version_filters_first_last_all_exact(storage: HubStorage) -> None:
    for version in (T2, T1, T3):
        storage.add_object(new_object("indicator--a", version))
    storage.add_object(new_object("indicator--b", T1))

    assert ids_of(storage) == [("indicator--a", T3), ("indicator--b", T1)]
    assert ids_of(storage, versions=VersionFilter(first=True, last=False)) == [
        ("indicator--a", T1), ("indicator--b", T1)]
    assert ids_of(storage, versions=VersionFilter(all=True)) == [
        ("indicator--a", T2), ("indicator--a", T1), ("indicator--a", T3), ("indicator--b", T1)]
    assert ids_of(storage, versions=VersionFilter(last=False, exact_us=(T2,))) == [
        ("indicator--a", T2)]
    assert ids_of(storage, versions=VersionFilter(first=True, last=True)) == [
        ("indicator--a", T1), ("indicator--a", T3), ("indicator--b", T1)]


def test_filters_type_id_added_after_owner(storage: HubStorage) -> None:
    storage.add_object(new_object("indicator--a", T1, owner="site-a"))
    storage.add_object(new_object("identity--b", T1, object_type="identity", owner="site-b"))
    storage.add_object(new_object("indicator--c", T1))
    first_added = to_micros(FROZEN)

    assert ids_of(storage, types=("identity",)) == [("identity--b", T1)]
    assert ids_of(storage, ids=("indicator--c", "indicator--a")) == [
        ("indicator--a", T1), ("indicator--c", T1)]
    assert ids_of(storage, added_after_us=first_added) == [("identity--b", T1),
                                                           ("indicator--c", T1)]
    assert ids_of(storage, visible_to="site-a") == [("indicator--a", T1), ("indicator--c", T1)]


def test_keyset_pages_stable_while_objects_arrive(storage: HubStorage) -> None:
    for index in range(5):
        storage.add_object(new_object(f"indicator--{index}", T1))

    first = storage.query_objects(ObjectQuery(collection_id=COLLECTION, limit=2))
    storage.add_object(new_object("indicator--late", T1))
    last = first.objects[-1]
    second = storage.query_objects(ObjectQuery(collection_id=COLLECTION, limit=10,
                                               after=(last.date_added_us, last.id)))

    assert first.more is True
    assert [o.id for o in first.objects] == ["indicator--0", "indicator--1"]
    assert [o.id for o in second.objects] == ["indicator--2", "indicator--3", "indicator--4",
                                              "indicator--late"]
    assert second.more is False


def test_add_summary_outcomes(storage: HubStorage) -> None:
    storage.insert_credential(site("site-a"))
    summary = new_object("x-fti-round-summary--1", T1, owner="site-a", digest="s1")
    other = new_object("x-fti-round-summary--1", T2, owner="site-a", digest="s2")

    created = storage.add_summary(summary, site_id="site-a", round_start_us=T1, received_us=5)
    resent = storage.add_summary(summary, site_id="site-a", round_start_us=T1, received_us=6)
    replaced = storage.add_summary(other, site_id="site-a", round_start_us=T1, received_us=7)

    assert created[0] is AddOutcome.CREATED
    assert resent == (AddOutcome.DUPLICATE, None)
    assert replaced == (AddOutcome.ROUND_CONFLICT, None)
    record = storage.get_round(T1)
    assert record is not None
    assert (record.first_contribution_us, record.closed_us) == (5, None)
    assert storage.count_active_contributors(T1) == 1


def test_add_summary_to_closed_round_rejected(storage: HubStorage) -> None:
    storage.insert_credential(site("site-a"))
    storage.insert_credential(site("site-b"))
    storage.add_summary(new_object("x-fti-round-summary--a", T1, digest="a"), site_id="site-a",
                        round_start_us=T1, received_us=1)
    storage.mark_round_closed(T1, 2, "forced")

    outcome = storage.add_summary(new_object("x-fti-round-summary--b", T1, digest="b"),
                                  site_id="site-b", round_start_us=T1, received_us=3)

    assert outcome == (AddOutcome.ROUND_CLOSED, None)


def test_mark_round_closed_once_under_concurrency(storage: HubStorage) -> None:
    storage.insert_credential(site("site-a"))
    storage.add_summary(new_object("x-fti-round-summary--a", T1), site_id="site-a",
                        round_start_us=T1, received_us=1)
    results: list[bool] = []
    lock = threading.Lock()

    def close() -> None:
        closed = storage.mark_round_closed(T1, 10, "quorum")
        with lock:
            results.append(closed)

    threads = [threading.Thread(target=close) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False] * 7 + [True]
    assert storage.open_rounds() == []


def test_revoked_site_leaves_contributions_and_quorum(storage: HubStorage) -> None:
    for name in ("site-a", "site-b"):
        storage.insert_credential(site(name))
        storage.add_summary(new_object(f"x-fti-round-summary--{name}", T1, raw=f'"{name}"'),
                            site_id=name, round_start_us=T1, received_us=1)

    storage.revoke_credential("site-b", 2)

    assert storage.count_active_contributors(T1) == 1
    assert [c.site_id for c in storage.contributions_between(T1, T1)] == ["site-a"]
    assert storage.contributions_between(T1, T1)[0].raw == '"site-a"'


def test_transaction_rolls_back_on_error(storage: HubStorage) -> None:
    with pytest.raises(RuntimeError):
        with storage.transaction():
            storage.add_object(new_object("indicator--a", T1))
            raise RuntimeError("abort")

    assert storage.count_objects(COLLECTION) == 0


def reopen(storage: HubStorage, request: pytest.FixtureRequest) -> HubStorage:
    """Open a second storage object on the same database, as another hub process would."""
    if isinstance(storage, SQLiteHubStorage):
        return SQLiteHubStorage(storage.path, clock=lambda: FROZEN)
    assert isinstance(storage, PostgresHubStorage)
    return PostgresHubStorage(request.getfixturevalue("postgres_dsn"), schema=storage.schema,
                              clock=lambda: FROZEN)


def test_collection_key_of_rollback_dropped(
        storage: HubStorage, request: pytest.FixtureRequest) -> None:
    """A collection first written by a transaction that rolls back gets a new key later."""
    with pytest.raises(RuntimeError):
        with storage.transaction():
            storage.add_object(new_object("indicator--a", T1))
            raise RuntimeError("abort")
    storage.add_object(new_object("indicator--b", T1)._replace(collection_id="c-2"))
    storage.add_object(new_object("indicator--c", T1))

    other = reopen(storage, request)
    try:
        seen = {collection: [o.id for o in other.query_objects(
                    ObjectQuery(collection_id=collection, limit=10)).objects]
                for collection in (COLLECTION, "c-2")}
    finally:
        other.close()

    assert seen == {COLLECTION: ["indicator--c"], "c-2": ["indicator--b"]}


def test_collection_key_of_other_thread_unseen(storage: HubStorage) -> None:
    """A reader never uses a collection key that another thread's open transaction made.

    On SQLite the key of a rolled-back collection goes to the next new one, so a reader
    holding it would be served that collection's objects.
    """
    storage.add_object(new_object("indicator--first", T1)._replace(collection_id="c-0"))
    pages: list[list[str]] = []

    def read() -> None:
        page = storage.query_objects(ObjectQuery(collection_id=COLLECTION, limit=10))
        pages.append([o.id for o in page.objects])

    reader = threading.Thread(target=read)
    with storage._lock:  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError):
            with storage.transaction():
                storage.add_object(new_object("indicator--rolled-back", T1))
                reader.start()
                # The reader looks the key up now, then waits for the lock.
                reader.join(timeout=0.3)
                raise RuntimeError("abort")
        storage.add_object(new_object("indicator--secret", T1)._replace(collection_id="c-2"))
    reader.join()

    assert pages == [[]]


def test_collection_key_shared_by_processes(
        storage: HubStorage, request: pytest.FixtureRequest) -> None:
    """Two storage objects that write one collection first both use one key."""
    other = reopen(storage, request)
    try:
        with storage.transaction():
            storage.add_object(new_object("indicator--a", T1))
        other.add_object(new_object("indicator--b", T1))
        storage.add_object(new_object("indicator--c", T1))
        from_other = [o.id for o in other.query_objects(
            ObjectQuery(collection_id=COLLECTION, limit=10)).objects]
    finally:
        other.close()

    assert from_other == ["indicator--a", "indicator--b", "indicator--c"]
    assert ids_of(storage) == [("indicator--a", T1), ("indicator--b", T1), ("indicator--c", T1)]


def test_credential_names_unique_and_repr_masked(storage: HubStorage) -> None:
    assert storage.insert_credential(site("site-a")) is True
    assert storage.insert_credential(site("site-a")) is False

    stored = storage.get_credential("site-a")

    assert stored is not None
    assert stored.read_collections == ("summaries",)
    assert "argon2id" not in repr(stored)


def test_meta_set_if_absent_keeps_first_value(storage: HubStorage) -> None:
    assert storage.set_meta_if_absent("k", "one") == "one"
    assert storage.set_meta_if_absent("k", "two") == "one"
    assert storage.get_meta("k") == "one"


def test_list_rounds_newest_first_with_limit(storage: HubStorage) -> None:
    storage.insert_credential(site("site-a"))
    for index, start in enumerate((T1, T2, T3)):
        storage.add_summary(new_object(f"x-fti-round-summary--{index}", start, digest=str(index)),
                            site_id="site-a", round_start_us=start, received_us=index)
    storage.mark_round_closed(T1, 9, "quorum")

    recent = storage.list_rounds(limit=2)
    every = storage.list_rounds(limit=10)

    assert [r.round_start_us for r in recent] == [T3, T2]
    assert [(r.round_start_us, r.close_reason) for r in every] == [
        (T3, None), (T2, None), (T1, "quorum")]


def test_next_date_added_survives_reopen(storage: HubStorage,
                                         request: pytest.FixtureRequest) -> None:
    """date_added stays increasing across two storage objects on one database."""
    storage.add_object(new_object("indicator--a", T1))
    other = reopen(storage, request)
    try:
        other.add_object(new_object("indicator--b", T1))
    finally:
        other.close()

    page = storage.query_objects(ObjectQuery(collection_id=COLLECTION, limit=10))

    assert [o.date_added_us for o in page.objects] == [to_micros(FROZEN), to_micros(FROZEN) + 1]


def test_delete_objects_owner_versions_contributions(storage: HubStorage) -> None:
    storage.insert_credential(site("site-a"))
    for version in (T1, T2):
        storage.add_object(new_object("opinion--a", version, owner="site-a"))
    storage.add_object(new_object("opinion--b", T1, owner="site-b"))
    storage.add_summary(new_object("x-fti-round-summary--a", T1, owner="site-a", digest="s"),
                        site_id="site-a", round_start_us=T1, received_us=1)

    first = storage.delete_objects(
        ObjectQuery(collection_id=COLLECTION, limit=1, ids=("opinion--a",),
                    versions=VersionFilter(first=True, last=False)), owner="site-a")
    foreign = storage.delete_objects(
        ObjectQuery(collection_id=COLLECTION, limit=1, ids=("opinion--b",),
                    versions=VersionFilter(all=True)), owner="site-a")
    evidence = storage.delete_objects(
        ObjectQuery(collection_id=COLLECTION, limit=1, ids=("x-fti-round-summary--a",),
                    versions=VersionFilter(all=True)), owner="site-a")

    assert first == (1, 0)
    assert foreign == (0, 0)
    assert evidence == (0, 1)
    assert ids_of(storage, versions=VersionFilter(all=True)) == [
        ("opinion--a", T2), ("opinion--b", T1), ("x-fti-round-summary--a", T1)]


def test_api_token_insert_get_revoke(storage: HubStorage) -> None:
    token = ApiToken(token_id="a1b2c3", credential="site-a", secret_hash="$argon2id$x",
                     created_us=5)

    storage.insert_api_token(token)
    first = storage.revoke_api_token("a1b2c3", 9)
    again = storage.revoke_api_token("a1b2c3", 12)
    missing = storage.revoke_api_token("ffffff", 9)

    assert (first, again, missing) == (True, True, False)
    assert storage.get_api_token("a1b2c3") == ApiToken("a1b2c3", "site-a", "$argon2id$x", 5, 9)
    assert storage.get_api_token("ffffff") is None
    assert "argon2id" not in repr(token)


def test_load_objects_continues_date_added(storage: HubStorage) -> None:
    storage.add_object(new_object("indicator--first", T1, owner="site-a"))
    loaded = [new_object(f"indicator--bulk-{index}", T1, raw=f'{{"n":{index}}}', owner="site-a")
              for index in range(3)]

    count = storage.load_objects(loaded)
    storage.add_object(new_object("indicator--after", None))

    page = storage.query_objects(ObjectQuery(collection_id=COLLECTION, limit=10))
    assert count == 3
    assert [o.id for o in page.objects] == ["indicator--first", "indicator--bulk-0",
                                            "indicator--bulk-1", "indicator--bulk-2",
                                            "indicator--after"]
    stamps = [o.date_added_us for o in page.objects]
    assert stamps == [to_micros(FROZEN) + i for i in range(5)]
    assert page.objects[2].raw == '{"n":1}'
    assert page.objects[2].owner == "site-a"
    assert page.objects[4].version_us == stamps[4]


def test_load_objects_existing_version_rolls_back(storage: HubStorage) -> None:
    storage.add_object(new_object("indicator--taken", T1))

    with pytest.raises(StorageError):
        storage.load_objects([new_object("indicator--new", T1),
                              new_object("indicator--taken", T1)])

    assert storage.count_objects(COLLECTION) == 1


def test_add_objects_batch_outcomes_in_order(storage: HubStorage) -> None:
    storage.add_object(new_object("indicator--old", T1, digest="same"))
    batch = [
        new_object("indicator--new", T1, digest="a"),
        new_object("indicator--old", T1, digest="same"),
        new_object("indicator--old", T2, digest="b"),
        new_object("indicator--new", T1, digest="a"),
        new_object("indicator--new", T1, digest="changed"),
        new_object("indicator--unversioned", None, digest="c"),
    ]

    outcomes = storage.add_objects(COLLECTION, batch, at_most=len(batch))

    assert outcomes == [AddOutcome.CREATED, AddOutcome.DUPLICATE, AddOutcome.CREATED,
                        AddOutcome.DUPLICATE, AddOutcome.CONFLICT, AddOutcome.CREATED]
    page = storage.query_objects(ObjectQuery(collection_id=COLLECTION, limit=10,
                                             versions=VersionFilter(all=True)))
    assert [(o.id, o.version_us) for o in page.objects] == [
        ("indicator--old", T1), ("indicator--new", T1), ("indicator--old", T2),
        ("indicator--unversioned", page.objects[3].date_added_us)]
    stamps = [o.date_added_us for o in page.objects]
    assert stamps == sorted(set(stamps))


def test_add_objects_other_owner_versions_rejected(storage: HubStorage) -> None:
    storage.add_object(new_object("indicator--a", T1, owner="site-a", digest="a1"))
    batch = [
        new_object("indicator--b", T1, owner="site-b", digest="b1"),
        new_object("indicator--a", T2, owner="site-b", digest="a2"),
        new_object("indicator--a", T1, owner="site-b", digest="a1"),
        new_object("indicator--a", T3, owner="site-b", digest="a3"),
    ]

    outcomes = storage.add_objects(COLLECTION, batch, at_most=len(batch))

    assert outcomes == [AddOutcome.CREATED, AddOutcome.OTHER_OWNER, AddOutcome.OTHER_OWNER,
                        AddOutcome.OTHER_OWNER]
    page = storage.query_objects(ObjectQuery(collection_id=COLLECTION, limit=10,
                                             versions=VersionFilter(all=True)))
    assert [(o.id, o.version_us, o.owner) for o in page.objects] == [
        ("indicator--a", T1, "site-a"), ("indicator--b", T1, "site-b")]


def test_object_exists_posted_by_counts_own_versions(storage: HubStorage) -> None:
    storage.add_object(new_object("indicator--a", T1, owner="site-a"))
    storage.add_object(new_object("indicator--hub", T1))

    assert storage.object_exists(COLLECTION, "indicator--a", None, posted_by="site-a")
    assert not storage.object_exists(COLLECTION, "indicator--a", None, posted_by="site-b")
    assert storage.object_exists(COLLECTION, "indicator--hub", "site-b")
    assert not storage.object_exists(COLLECTION, "indicator--hub", None, posted_by="site-b")


def test_add_objects_owner_adds_own_versions(storage: HubStorage) -> None:
    storage.add_object(new_object("indicator--a", T1, owner="site-a"))
    batch = [new_object("indicator--a", T2, owner="site-a"),
             new_object("indicator--c", T1, owner="site-a")]

    outcomes = storage.add_objects(COLLECTION, batch, at_most=len(batch))

    assert outcomes == [AddOutcome.CREATED, AddOutcome.CREATED]
    assert ids_of(storage, versions=VersionFilter(all=True)) == [
        ("indicator--a", T1), ("indicator--a", T2), ("indicator--c", T1)]


def test_add_object_other_owner_unless_shared(storage: HubStorage) -> None:
    storage.add_object(new_object("extension-definition--x", T1, owner="site-a", digest="x"))
    storage.add_object(new_object("indicator--a", T1, owner="site-a"))

    rejected, rejected_date = storage.add_object(new_object("indicator--a", T2, owner="site-b"))
    shared, _ = storage.add_object(
        new_object("extension-definition--x", T1, owner="site-b", digest="x"), shared_id=True)
    hub_object, _ = storage.add_object(new_object("indicator--a", T3))

    assert rejected is AddOutcome.OTHER_OWNER
    assert rejected_date is None
    assert shared is AddOutcome.DUPLICATE
    assert hub_object is AddOutcome.OTHER_OWNER
    assert ids_of(storage, versions=VersionFilter(all=True)) == [
        ("extension-definition--x", T1), ("indicator--a", T1)]


@pytest.mark.parametrize("stored_at", ["first batch", "last batch"])
def test_add_objects_lazy_across_batches(
    storage: HubStorage, stored_at: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Duplicates and conflicts are found across the batches that PostgreSQL sends apart,
    whether the first stored object comes while later batches are still being produced or
    at the end."""
    storage.add_object(new_object("indicator--stored", T1, digest="kept"))
    count = 2 * PIPELINE_BATCH_ROWS + 10
    fresh = [new_object(f"indicator--{index}", T1, digest=f"d{index}") for index in range(count)]
    late = [new_object("indicator--0", T1, digest="d0"),        # resend of the first batch
            new_object("indicator--1", T1, digest="other"),     # conflict with the first batch
            new_object("indicator--stored", T1, digest="kept"),
            new_object("indicator--stored", T2, digest="new version")]
    objects = fresh + late
    expected = [AddOutcome.CREATED] * count + [
        AddOutcome.DUPLICATE, AddOutcome.CONFLICT, AddOutcome.DUPLICATE, AddOutcome.CREATED]
    if stored_at == "first batch":
        objects = [objects[-2], *objects[:-2], objects[-1]]
        expected = [expected[-2], *expected[:-2], expected[-1]]

    # at_most also counts objects that the caller may still reject. Their slots stay unused.
    with caplog.at_level(logging.WARNING):
        outcomes = storage.add_objects(COLLECTION, iter(objects), at_most=len(objects) + 3)

    assert outcomes == expected
    # psycopg warns when a pipeline ends on an error while another is in flight.
    assert [record.getMessage() for record in caplog.records] == []
    assert storage.count_objects(COLLECTION) == count + 2
    page = storage.query_objects(ObjectQuery(collection_id=COLLECTION, limit=count + 10,
                                             versions=VersionFilter(all=True)))
    stamps = [obj.date_added_us for obj in page.objects]
    assert stamps == sorted(set(stamps))


@pytest.mark.parametrize("mixed", ["", "spec_version", "type", "owner"])
def test_add_objects_keeps_each_row_values(storage: HubStorage, mixed: str) -> None:
    """Every stored row has its own values, whether a column is shared by the batch or not."""
    objects = []
    for index in range(4):
        obj = new_object(f"indicator--{index}", T1 + index, raw=f'{{"n": {index}}}',
                         owner="site-a")
        if mixed == "spec_version" and index == 2:
            obj = obj._replace(spec_version="2.0")
        if mixed == "type" and index == 2:
            obj = obj._replace(type="note", id="note--2")
        if mixed == "owner" and index == 2:
            obj = obj._replace(owner=None)
        objects.append(obj)

    assert storage.add_objects(COLLECTION, objects, at_most=4) == [AddOutcome.CREATED] * 4

    page = storage.query_objects(ObjectQuery(collection_id=COLLECTION, limit=10,
                                             versions=VersionFilter(all=True)))
    stored = [(o.collection_id, o.id, o.type, o.spec_version, o.version_us, o.raw, o.owner)
              for o in page.objects]
    assert stored == [(o.collection_id, o.id, o.type, o.spec_version, o.version_us, o.raw,
                       o.owner) for o in objects]
    stamps = [o.date_added_us for o in page.objects]
    assert stamps == list(range(stamps[0], stamps[0] + 4))


@pytest.mark.parametrize("bad", ["other collection", "past at_most", "caller fails"])
def test_add_objects_interrupted_stores_nothing(storage: HubStorage, bad: str) -> None:
    """An object that breaks the call, or a caller that fails while yielding, after whole
    batches have gone to the database, leaves nothing stored and the storage usable."""
    count = PIPELINE_BATCH_ROWS + 5

    def objects() -> Iterator[NewObject]:
        yield from (new_object(f"indicator--{index}", T1) for index in range(count))
        if bad == "other collection":
            yield new_object("indicator--elsewhere", T1)._replace(collection_id="c-2")
        elif bad == "caller fails":
            raise RuntimeError("check failed unexpectedly")

    expected = RuntimeError if bad == "caller fails" else ValueError
    with pytest.raises(expected):
        storage.add_objects(COLLECTION, objects(),
                            at_most=count - 1 if bad == "past at_most" else count + 1)

    assert storage.count_objects(COLLECTION) == 0
    assert storage.count_objects("c-2") == 0
    assert storage.add_objects(COLLECTION, [new_object("indicator--after", T1)],
                               at_most=1) == [AddOutcome.CREATED]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_statuses_purged_after_retention(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    now = [FROZEN]
    if backend == "sqlite":
        storage: HubStorage = SQLiteHubStorage(tmp_path / "hub.sqlite3", clock=lambda: now[0])
    else:
        storage = PostgresHubStorage(request.getfixturevalue("postgres_dsn"),
                                     schema=request.getfixturevalue("postgres_schema"), clock=lambda: now[0])
    try:
        storage.save_status("status-old", "site-a", '{"id": "status-old"}')
        now[0] = FROZEN + timedelta(days=3)
        storage.save_status("status-new", "site-a", '{"id": "status-new"}')
        with storage.transaction():  # as if saved by a version that kept no times
            storage._execute("INSERT INTO statuses (id, owner, body) VALUES (?, ?, ?)",  # type: ignore[attr-defined]
                             ("status-legacy", "site-a", "{}"))

        first = storage.purge_statuses(FROZEN + timedelta(days=1))
        kept = [storage.load_status(name) is not None for name in ("status-old", "status-new", "status-legacy")]
        now[0] = FROZEN + timedelta(days=10)
        second = storage.purge_statuses(FROZEN + timedelta(days=5))
        left = [storage.load_status(name) is not None for name in ("status-new", "status-legacy")]
    finally:
        storage.close()

    assert (first, kept) == (1, [False, True, True])
    assert (second, left) == (2, [False, False])
