"""SQLite checkpoints in the storage's own thread: the WAL stays bounded, nothing is lost."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fusion_hub import sqlite_storage
from fusion_hub.sqlite_storage import SQLiteHubStorage
from fusion_hub.storage import NewObject

REPO = Path(__file__).resolve().parents[2]
COLLECTION = "4d3d5a9e-93a1-4e57-9e51-6a0d7f3c1b22"
# A transaction of this many objects writes about 13 pages to the WAL.
OBJECTS_PER_BATCH = 20
RAW = '{"pattern":"' + "x" * 500 + '"}'


def batch(first: int) -> list[NewObject]:
    return [NewObject(collection_id=COLLECTION, id=f"indicator--{index:036d}", type="indicator",
                      spec_version="2.1", version_us=index, raw=RAW,
                      content_sha256=f"sha-{index}", owner="site-a")
            for index in range(first, first + OBJECTS_PER_BATCH)]


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def wal_pages(path: Path, page_size: int = 4096) -> int:
    """Return the pages the WAL file has room for: its high-water mark, not its content."""
    wal = Path(f"{path}-wal")
    return (wal.stat().st_size - 32) // (page_size + 24) if wal.exists() else 0


@pytest.fixture
def small_wal(monkeypatch: pytest.MonkeyPatch) -> int:
    """Make the WAL start over from 64 pages on, so that a test needs few writes."""
    monkeypatch.setattr(sqlite_storage, "WAL_RESET_BYTES", 64 * 4096)
    return 64


def test_wal_bounded_under_steady_writes(tmp_path: Path, small_wal: int) -> None:
    storage = SQLiteHubStorage(tmp_path / "hub.sqlite3")
    try:
        for first in range(0, 400 * OBJECTS_PER_BATCH, OBJECTS_PER_BATCH):
            outcomes = storage.add_objects(COLLECTION, batch(first), at_most=OBJECTS_PER_BATCH)
            assert len(outcomes) == OBJECTS_PER_BATCH
        assert storage.count_objects(COLLECTION) == 400 * OBJECTS_PER_BATCH
        # 400 transactions wrote about 5,000 pages. A transaction that begins while the
        # thread is still copying cannot start the WAL over, so it may pass 64 pages by a
        # few transactions. Without the wait in settle() it passed 600.
        assert 0 < wal_pages(storage.path) <= 3 * small_wal
    finally:
        storage.close()


def test_wal_file_shrinks_after_reader(tmp_path: Path, small_wal: int) -> None:
    storage = SQLiteHubStorage(tmp_path / "hub.sqlite3")
    reader = sqlite3.connect(storage.path, isolation_level=None)
    try:
        storage.add_objects(COLLECTION, batch(0), at_most=OBJECTS_PER_BATCH)
        # An open read transaction pins the WAL, which grows past its usual size.
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM objects").fetchone()
        for first in range(OBJECTS_PER_BATCH, 100 * OBJECTS_PER_BATCH, OBJECTS_PER_BATCH):
            storage.add_objects(COLLECTION, batch(first), at_most=OBJECTS_PER_BATCH)
        assert wal_pages(storage.path) > 8 * small_wal
        reader.execute("COMMIT")

        for first in range(100 * OBJECTS_PER_BATCH, 110 * OBJECTS_PER_BATCH, OBJECTS_PER_BATCH):
            storage.add_objects(COLLECTION, batch(first), at_most=OBJECTS_PER_BATCH)
        # journal_size_limit is four times the size at which the WAL starts over.
        assert wal_pages(storage.path) <= 4 * small_wal
        assert storage.count_objects(COLLECTION) == 110 * OBJECTS_PER_BATCH
    finally:
        reader.close()
        storage.close()


def test_checkpoint_copies_commits_to_file(tmp_path: Path) -> None:
    storage = SQLiteHubStorage(tmp_path / "hub.sqlite3")
    try:
        checkpointer = storage._checkpointer
        assert checkpointer is not None
        before = checkpointer.checkpoints
        storage.add_objects(COLLECTION, batch(0), at_most=OBJECTS_PER_BATCH)
        wait_until(lambda: checkpointer.checkpoints > before)
        # immutable=1 reads the database file alone and ignores the WAL, so the rows there
        # were copied by a checkpoint. SQLite's automatic one starts at 16,384 pages here.
        uri = f"file:{storage.path}?immutable=1"
        with sqlite3.connect(uri, uri=True) as frozen:
            (count,) = frozen.execute("SELECT COUNT(*) FROM objects").fetchone()
        assert count == OBJECTS_PER_BATCH
    finally:
        storage.close()


def test_close_stops_thread_removes_wal(tmp_path: Path) -> None:
    storage = SQLiteHubStorage(tmp_path / "hub.sqlite3")
    storage.add_objects(COLLECTION, batch(0), at_most=OBJECTS_PER_BATCH)
    assert storage._checkpointer is not None
    thread = storage._checkpointer._thread
    storage.close()
    assert not thread.is_alive()
    # The last connection to close checkpoints the WAL into the file and deletes it.
    assert not Path(f"{storage.path}-wal").exists()
    with sqlite3.connect(storage.path) as reopened:
        (count,) = reopened.execute("SELECT COUNT(*) FROM objects").fetchone()
    assert count == OBJECTS_PER_BATCH


def test_dropped_storage_stops_its_thread(tmp_path: Path) -> None:
    storage = SQLiteHubStorage(tmp_path / "hub.sqlite3")
    assert storage._checkpointer is not None
    thread = storage._checkpointer._thread
    del storage
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


class FailingConnection:
    """Stands in for the checkpoint thread's connection on a disk that fails."""

    def __init__(self) -> None:
        self.calls = 0

    def execute(self, sql: str) -> sqlite3.Cursor:
        self.calls += 1
        raise sqlite3.OperationalError("disk I/O error")

    def close(self) -> None:
        pass


def test_failed_checkpoints_warn_once_a_minute(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    storage = SQLiteHubStorage(tmp_path / "hub.sqlite3")
    try:
        checkpointer = storage._checkpointer
        assert checkpointer is not None
        real, failing = checkpointer._conn, FailingConnection()
        checkpointer._conn = failing
        with caplog.at_level(logging.WARNING, logger="fusion_hub.sqlite_storage"):
            for first in (0, OBJECTS_PER_BATCH, 2 * OBJECTS_PER_BATCH):
                storage.add_objects(COLLECTION, batch(first), at_most=OBJECTS_PER_BATCH)
                calls = failing.calls
                wait_until(lambda: failing.calls > calls)
        warnings = [record.getMessage() for record in caplog.records
                    if "checkpoint failed" in record.getMessage()]
        assert warnings == [f"hub database {storage.path}: checkpoint failed, will retry: "
                            "disk I/O error"]
        assert storage.count_objects(COLLECTION) == 3 * OBJECTS_PER_BATCH
        checkpointer._conn = real
    finally:
        storage.close()


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from fusion_hub import sqlite_storage
    from fusion_hub.storage import NewObject
    # Start the WAL over often, so that the kill can land in any phase of a checkpoint.
    sqlite_storage.WAL_RESET_BYTES = 16 * 4096
    storage = sqlite_storage.SQLiteHubStorage(Path(sys.argv[1]))
    raw = '{"pattern":"' + "x" * 500 + '"}'
    first = 0
    while True:
        objects = [NewObject(collection_id="c", id=f"indicator--{i:036d}", type="indicator",
                             spec_version="2.1", version_us=i, raw=raw,
                             content_sha256=f"sha-{i}", owner="site-a")
                   for i in range(first, first + 20)]
        storage.add_objects("c", objects, at_most=20)
        first += 20
        print(first, flush=True)
""")


def test_kill_loses_no_acknowledged_object(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(REPO)],
                              stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    try:
        assert writer.stdout is not None
        deadline = time.monotonic() + 60
        while acknowledged < 4000 and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break
            acknowledged = int(line)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        if writer.stdout is not None:
            writer.stdout.close()
    assert acknowledged >= 4000, "the writer stopped early"

    storage = SQLiteHubStorage(path)
    try:
        stored = storage.count_objects("c")
        # Each printed count was committed; the kill may land after one more commit.
        assert acknowledged <= stored <= acknowledged + 20
        (integrity,) = storage._conn.execute("PRAGMA integrity_check").fetchone()
        assert integrity == "ok"
    finally:
        storage.close()
