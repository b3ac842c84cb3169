"""Time SQLite inserts of envelopes into three layouts of the hub's objects table.

Each layout gets a fresh database file in WAL mode with ``synchronous=FULL``, as the hub runs
it, and 20 envelopes of 1,000 benchmark indicators, each inserted and committed in one
transaction. The layouts differ only in how a row names its collection:

- ``id``: the 36-character collection id (schema 1);
- ``key``: a small integer key (schema 2, the current one);
- ``hash``: an 8-byte hash of the collection id, which needs no table of keys.

Usage::

    python benchmarks/sqlite_objects_layout.py [--envelopes 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]

from hub_taxii_bench import make_object  # noqa: E402

COLLECTION_ID = "5fdd16b5-3096-562d-9aab-4006d90062a1"
LAYOUTS = {
    "id": ("TEXT", COLLECTION_ID),
    "key": ("INTEGER", 2),
    "hash": ("INTEGER", int.from_bytes(hashlib.sha256(COLLECTION_ID.encode()).digest()[:8],
                                       "big") & (2**63 - 1)),
}
SCHEMA = """
CREATE TABLE objects (
    collection {column} NOT NULL, id TEXT NOT NULL, version_us INTEGER NOT NULL,
    date_added_us INTEGER NOT NULL, spec_version TEXT NOT NULL, type TEXT NOT NULL,
    raw TEXT NOT NULL, content_sha256 TEXT NOT NULL, owner TEXT,
    PRIMARY KEY (collection, id, version_us));
CREATE UNIQUE INDEX objects_by_date_added ON objects (collection, date_added_us, id);
"""


def envelopes(count: int) -> list[list[tuple[str, str, str]]]:
    """Return ``count`` envelopes of 1,000 objects as (id, raw text, digest)."""
    result = []
    for start in range(0, count * 1000, 1000):
        envelope = []
        for index in range(start, start + 1000):
            raw = json.dumps(make_object(index), separators=(",", ":"))
            envelope.append((json.loads(raw)["id"], raw, hashlib.sha256(raw.encode()).hexdigest()))
        result.append(envelope)
    return result


def time_layout(layout: str, data: list[list[tuple[str, str, str]]], folder: Path) -> tuple[float, int]:
    """Return the median milliseconds per envelope and the final file size in bytes."""
    column, collection = LAYOUTS[layout]
    path = folder / f"{layout}.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA.format(column=column))
    date_added = 1
    times = []
    for envelope in data:
        rows = [(collection, object_id, 1717372800000000, date_added + offset, "2.1",
                 "indicator", raw, digest, "bench-site")
                for offset, (object_id, raw, digest) in enumerate(envelope)]
        date_added += len(envelope)
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        times.append(time.perf_counter() - started)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return statistics.median(times) * 1000, os.path.getsize(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envelopes", type=int, default=20, help="envelopes per layout")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every layout")
    args = parser.parse_args()
    data = envelopes(args.envelopes)
    for round_number in range(1, args.rounds + 1):
        for layout in LAYOUTS:
            with tempfile.TemporaryDirectory(prefix="fti-layout-") as folder:
                millis, size = time_layout(layout, data, Path(folder))
            print(f"round {round_number} layout {layout:4}: median {millis:.2f} ms per envelope "
                  f"of 1,000, file {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
