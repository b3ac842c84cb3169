"""Measure the hub's TAXII 2.1 server against medallion, the OASIS reference server.

Every number comes from taxii2-client talking HTTP to a server on 127.0.0.1, in one run:

- adding: envelopes of 100 and of 1,000 objects until 10,000 objects are stored (objects/s),
  timed from after the session's first request, which is reported on its own;
- paging: reading a 2,000-object collection page by page with ``limit`` 100 (seconds);
- scale (hub only): the adding rate with 1,000,000 objects stored against 10,000, with each
  envelope size, and the first page of a 1,000,000-object collection against a 1,000-object
  one.

medallion 3.0 runs with its memory backend in its own process. The hub runs in its own process
too, on SQLite (``synchronous=FULL``) and, when ``--postgres-dsn`` is given, on PostgreSQL.
Objects for the scale runs are preloaded through ``HubStorage.load_objects``, not over HTTP.
The results end with the 1-minute load average at the start and at the end of the run.

Usage::

    python benchmarks/hub_taxii_bench.py --postgres-dsn postgresql://fti:...@127.0.0.1:5432/postgres
    python benchmarks/hub_taxii_bench.py --scale-objects 100000   # a shorter scale run
    python benchmarks/hub_taxii_bench.py --measurements adding     # adding only, a few minutes
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from taxii2client.v21 import Collection, as_pages

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from medallion_server import running_medallion  # noqa: E402

from fusion_hub.backends import open_storage  # noqa: E402
from fusion_hub.config import (  # noqa: E402
    AuthSettings,
    HubConfig,
    ServerSettings,
    StorageSettings,
)
from fusion_hub.storage import NewObject  # noqa: E402
from stix_mappings.ids import collection_id, site_identity_id  # noqa: E402

SITE = "bench-site"
MEASUREMENTS = ("adding", "paging", "scale")
COLLECTION = "keys"
# Rows per load_objects call while preloading, which bounds the memory of one batch.
PRELOAD_BATCH = 50_000
# First-page timings are the median of this many requests, after one warm-up request.
FIRST_PAGE_REPEATS = 20


@dataclass(frozen=True)
class Sizes:
    """Sizes of each measurement. The defaults are those of the published benchmark."""

    add_total: int = 10_000
    envelope_sizes: tuple[int, ...] = (100, 1_000)
    paging_total: int = 2_000
    page_limit: int = 100
    scale_small: int = 10_000
    scale_large: int = 1_000_000
    first_page_small: int = 1_000


def make_object(index: int, owner_site: str = SITE) -> dict[str, Any]:
    """Return a STIX 2.1 indicator that the hub's ``keys`` collection accepts from the site."""
    octets = f"{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
    return {
        "type": "indicator", "spec_version": "2.1", "id": f"indicator--{uuid.uuid4()}",
        "created": "2024-06-03T00:00:00.000Z", "modified": "2024-06-03T00:00:00.000Z",
        "created_by_ref": site_identity_id(owner_site),
        "name": f"benchmark indicator {index}", "indicator_types": ["malicious-activity"],
        "pattern": f"[ipv4-addr:value = '198.{octets}']", "pattern_type": "stix",
        "valid_from": "2024-06-03T00:00:00Z",
    }


def envelope(start: int, count: int) -> str:
    """Return a TAXII envelope of ``count`` fresh objects as JSON text."""
    return json.dumps({"objects": [make_object(start + i) for i in range(count)]})


# The hub under test. The measuring side talks to it only over HTTP, as to medallion.


def hub_config(folder: Path, backend: str, dsn: str, schema: str) -> HubConfig:
    """Return the benchmark hub's configuration: no rate limit, default everything else."""
    if backend == "postgresql":
        storage = StorageSettings(backend="postgresql", postgresql_dsn=dsn,
                                  postgresql_schema=schema)
    else:
        storage = StorageSettings(path=folder / "hub.sqlite3")
    return HubConfig(
        hub=replace(ServerSettings(), name="bench-hub", rate_limit_per_minute=0,
                    tick_seconds=3600.0),
        storage=storage,
        # One argon2 hash per run; the credential cache serves the rest.
        auth=AuthSettings(),
    )


def preload(config: HubConfig, count: int) -> float:
    """Insert ``count`` objects through the storage layer and return the seconds it took."""
    storage = open_storage(config.storage)
    started = time.perf_counter()
    try:
        for first in range(0, count, PRELOAD_BATCH):
            batch = []
            for index in range(first, min(count, first + PRELOAD_BATCH)):
                raw = json.dumps(make_object(index), separators=(",", ":"))
                batch.append(NewObject(
                    collection_id=collection_id(COLLECTION), id=json.loads(raw)["id"],
                    type="indicator", spec_version="2.1",
                    version_us=1_717_372_800_000_000, raw=raw,
                    content_sha256=hashlib.sha256(raw.encode()).hexdigest(), owner=SITE,
                ))
            storage.load_objects(batch)
    finally:
        storage.close()
    elapsed = time.perf_counter() - started
    # A preload of 1,000,000 objects leaves about a gigabyte for the kernel to write back.
    # Without this, that writeback slowed SQLite's first envelopes several times over.
    os.sync()
    return elapsed


@contextmanager
def started_hub(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Preload, start the hub, enrol the site and yield its URL and credentials."""
    from fusion_hub.server import HubServer

    config = hub_config(Path(spec["folder"]), spec["backend"], spec["dsn"], spec["schema"])
    preload_secs = preload(config, spec["preload"]) if spec["preload"] else 0.0
    hub = HubServer(config)
    base_url = hub.start()
    try:
        password = hub.registry.enroll_site(SITE, spec["public_key_b64"])
        yield {"url": base_url, "password": password, "preload_secs": preload_secs}
    finally:
        hub.stop()


def serve_hub(spec: dict[str, Any]) -> None:
    """Child process: start the hub, print its URL and credentials, serve until EOF."""
    with started_hub(spec) as started:
        # As `fti hub serve` does once the hub has started.
        gc.freeze()
        print(json.dumps(started), flush=True)
        sys.stdin.readline()


@dataclass(frozen=True)
class Target:
    """A server under test: how to open its collection and what to call it."""

    name: str
    collection_url: str
    user: str
    password: str
    preload_secs: float = 0.0

    def collection(self) -> Collection:
        return Collection(self.collection_url, user=self.user, password=self.password)


@contextmanager
def running_hub(
    backend: str, dsn: str, *, preload_objects: int = 0, in_process: bool = False
) -> Iterator[Target]:
    """Start a hub with fresh storage, and drop that storage afterwards.

    The hub runs in a child process, like medallion, unless ``in_process`` is set. The tests
    set it because a child process spends seconds importing the hub at every start.
    """
    from privacy.signing import generate_signing_key

    with tempfile.TemporaryDirectory(prefix="fti-hub-bench-") as folder:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        spec = {"folder": folder, "backend": backend, "dsn": dsn, "schema": schema,
                "preload": preload_objects,
                "public_key_b64": generate_signing_key().public_key_b64}
        try:
            runner = started_hub(spec) if in_process else hub_in_child(spec)
            with runner as started:
                yield Target(
                    name=f"hub-{backend}",
                    collection_url=(f"{started['url']}/fti/collections/"
                                    f"{collection_id(COLLECTION)}/"),
                    user=SITE, password=started["password"],
                    preload_secs=started["preload_secs"],
                )
        finally:
            if backend == "postgresql":
                import psycopg

                with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextmanager
def hub_in_child(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Run ``serve_hub`` in a child process, yield what it printed and stop it afterwards."""
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve-hub", json.dumps(spec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark hub exited with code {child.wait()}")
        yield json.loads(line)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=60)
        if child.stdout is not None:
            child.stdout.close()


@contextmanager
def running_reference(folder: Path) -> Iterator[Target]:
    """Start medallion (memory backend) with one empty collection."""
    with running_medallion(folder, [COLLECTION]) as server:
        yield Target(name="medallion", collection_url=server.collection_url(COLLECTION),
                     user=server.user, password=server.password)


# Measurements.


def measure_adding(target: Target, *, total: int, envelope_size: int) -> tuple[float, float]:
    """Add ``total`` objects in envelopes of ``envelope_size``.

    Returns the objects per second and the seconds of the session's first request. That
    request reads the collection's information before the clock starts: taxii2-client needs it
    to know it may write, and each server checks the credential for the first time (on the hub
    an argon2id verification, which its credential cache then saves). A publisher pays both
    once per session, not per envelope, so the rate leaves them out for both servers.
    """
    collection = target.collection()
    counts = [min(envelope_size, total - start) for start in range(0, total, envelope_size)]
    bodies = [envelope(start, count)
              for start, count in zip(range(0, total, envelope_size), counts)]
    started = time.perf_counter()
    collection.refresh()
    first_request_secs = time.perf_counter() - started
    if not collection.can_write:
        raise RuntimeError(f"{target.name} does not let the benchmark's credential write")
    started = time.perf_counter()
    for body, count in zip(bodies, counts):
        status = collection.add_objects(body)
        if status.success_count != count:
            raise RuntimeError(f"{target.name} stored {status.success_count} of {count} "
                               "objects in an envelope")
    return total / (time.perf_counter() - started), first_request_secs


def measure_paging(target: Target, *, total: int, limit: int) -> float:
    """Add ``total`` objects, read them all with pages of ``limit`` and return the seconds."""
    collection = target.collection()
    for start in range(0, total, 1_000):
        collection.add_objects(envelope(start, min(1_000, total - start)))
    started = time.perf_counter()
    seen: set[str] = set()
    for page in as_pages(collection.get_objects, per_request=limit):
        seen.update(obj["id"] for obj in page.get("objects", []))
    elapsed = time.perf_counter() - started
    if len(seen) != total:
        raise RuntimeError(f"{target.name} served {len(seen)} distinct objects of {total}")
    return elapsed


def measure_first_page(target: Target, *, limit: int) -> float:
    """Return the median seconds of a first page of ``limit`` objects."""
    collection = target.collection()
    collection.get_objects(limit=limit)
    samples = []
    for _ in range(FIRST_PAGE_REPEATS):
        started = time.perf_counter()
        page = collection.get_objects(limit=limit)
        samples.append(time.perf_counter() - started)
        if len(page.get("objects", [])) != limit:
            raise RuntimeError(f"{target.name} served a first page of "
                               f"{len(page.get('objects', []))} objects, not {limit}")
    return statistics.median(samples)


def run(
    sizes: Sizes, *, postgres_dsn: str = "", folder: Path, in_process: bool = False,
    measurements: tuple[str, ...] = MEASUREMENTS,
) -> dict[str, Any]:
    """Run the named measurements and return the results as one JSON-ready dictionary."""
    results: dict[str, Any] = {"sizes": sizes.__dict__ | {"envelope_sizes":
                                                          list(sizes.envelope_sizes)}}
    backends = ["sqlite"] + (["postgresql"] if postgres_dsn else [])
    if "adding" in measurements:
        _run_adding(sizes, results, backends, postgres_dsn, folder, in_process)
    if "paging" in measurements:
        _run_paging(sizes, results, backends, postgres_dsn, folder, in_process)
    if "scale" in measurements:
        _run_scale(sizes, results, backends, postgres_dsn, in_process)
    return results


def _run_adding(sizes: Sizes, results: dict[str, Any], backends: list[str], postgres_dsn: str,
                folder: Path, in_process: bool) -> None:
    """Measure adding on medallion and the hub, each on a fresh server, and the ratios."""
    for envelope_size in sizes.envelope_sizes:
        with running_reference(folder / f"add-{envelope_size}") as reference:
            results[f"medallion_add_{envelope_size}"], results[f"medallion_add_{envelope_size}_first_request_secs"] = \
                measure_adding(reference, total=sizes.add_total, envelope_size=envelope_size)
        for backend in backends:
            with running_hub(backend, postgres_dsn, in_process=in_process) as hub:
                results[f"{backend}_add_{envelope_size}"], results[f"{backend}_add_{envelope_size}_first_request_secs"] = \
                    measure_adding(hub, total=sizes.add_total, envelope_size=envelope_size)
    for backend in backends:
        for envelope_size in sizes.envelope_sizes:
            results[f"{backend}_add_{envelope_size}_ratio"] = (
                results[f"{backend}_add_{envelope_size}"]
                / results[f"medallion_add_{envelope_size}"])


def _run_paging(sizes: Sizes, results: dict[str, Any], backends: list[str], postgres_dsn: str,
                folder: Path, in_process: bool) -> None:
    """Measure paging on medallion and the hub, each on a fresh server, and the ratios."""
    with running_reference(folder / "paging") as reference:
        results["medallion_paging_secs"] = measure_paging(
            reference, total=sizes.paging_total, limit=sizes.page_limit)
    for backend in backends:
        with running_hub(backend, postgres_dsn, in_process=in_process) as hub:
            results[f"{backend}_paging_secs"] = measure_paging(
                hub, total=sizes.paging_total, limit=sizes.page_limit)
        results[f"{backend}_paging_ratio"] = (results["medallion_paging_secs"]
                                              / results[f"{backend}_paging_secs"])


def _run_scale(sizes: Sizes, results: dict[str, Any], backends: list[str], postgres_dsn: str,
               in_process: bool) -> None:
    """Measure adding and first pages against small and large preloaded collections.

    Adding is measured with each envelope size of the adding runs. Each size adds
    ``scale_small`` objects: to a fresh small collection, and in turn to one large collection,
    which then grows by a few percent at most but is preloaded only once.
    """
    for backend in backends:
        with running_hub(backend, postgres_dsn, preload_objects=sizes.first_page_small,
                         in_process=in_process) as hub:
            results[f"{backend}_first_page_small_secs"] = measure_first_page(
                hub, limit=sizes.page_limit)
        for envelope_size in sizes.envelope_sizes:
            with running_hub(backend, postgres_dsn, preload_objects=sizes.scale_small,
                             in_process=in_process) as hub:
                results[f"{backend}_add_{envelope_size}_at_small"] = measure_adding(
                    hub, total=sizes.scale_small, envelope_size=envelope_size)[0]
        with running_hub(backend, postgres_dsn, preload_objects=sizes.scale_large,
                         in_process=in_process) as hub:
            results[f"{backend}_preload_large_secs"] = hub.preload_secs
            results[f"{backend}_first_page_large_secs"] = measure_first_page(
                hub, limit=sizes.page_limit)
            for envelope_size in sizes.envelope_sizes:
                results[f"{backend}_add_{envelope_size}_at_large"] = measure_adding(
                    hub, total=sizes.scale_small, envelope_size=envelope_size)[0]
        # How the hub slows down at scale.
        for envelope_size in sizes.envelope_sizes:
            results[f"{backend}_add_{envelope_size}_scale_ratio"] = (
                results[f"{backend}_add_{envelope_size}_at_large"]
                / results[f"{backend}_add_{envelope_size}_at_small"])
        results[f"{backend}_first_page_scale_ratio"] = (
            results[f"{backend}_first_page_large_secs"]
            / results[f"{backend}_first_page_small_secs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-dsn", default="",
                        help="PostgreSQL URI for the PostgreSQL runs; omitted: SQLite only")
    parser.add_argument("--scale-objects", type=int, default=Sizes.scale_large,
                        help="objects stored for the large scale runs (default 1000000)")
    parser.add_argument("--measurements", nargs="+", choices=MEASUREMENTS, default=MEASUREMENTS,
                        help="which measurements to run (default: all three)")
    parser.add_argument("--serve-hub", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_hub:
        serve_hub(json.loads(args.serve_hub))
        return

    sizes = Sizes(scale_large=args.scale_objects)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    with tempfile.TemporaryDirectory(prefix="fti-taxii-bench-") as folder:
        # Other processes on the machine move every rate; the load average shows how much.
        load_before = os.getloadavg()[0]
        results = run(sizes, postgres_dsn=args.postgres_dsn, folder=Path(folder),
                      measurements=tuple(args.measurements))
        results["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
