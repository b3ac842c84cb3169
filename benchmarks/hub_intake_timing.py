"""Time the hub's intake of envelopes of 1,000 indicators in one process, without HTTP.

The envelopes are those of ``hub_taxii_bench.py``, posted to the ``keys`` collection of a hub
on a fresh SQLite file. The script prints the median and mean time per envelope and, from
timers around the storage calls, the inserts, the commits and the wait for the checkpoint
thread. With ``--stub-storage`` the storage calls return at once, which leaves the Python
split and checks alone.

Usage::

    python benchmarks/hub_intake_timing.py                 # 20 envelopes, real storage
    python benchmarks/hub_intake_timing.py --stub-storage  # the Python work alone
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import hub_taxii_bench as bench  # noqa: E402

from fusion_hub.envelope import read_envelope  # noqa: E402
from fusion_hub.server import HubServer  # noqa: E402
from fusion_hub.sqlite_storage import SQLiteHubStorage  # noqa: E402
from fusion_hub.storage import AddOutcome  # noqa: E402
from privacy.signing import generate_signing_key  # noqa: E402

ENVELOPE_SIZE = 1_000


def timed(totals: Counter[str], name: str, call: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``call`` wrapped so that its time adds to ``totals[name]``."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - started
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envelopes", type=int, default=20,
                        help="envelopes of 1,000 objects to add (default 20)")
    parser.add_argument("--stub-storage", action="store_true",
                        help="replace the storage calls with stubs that return at once")
    args = parser.parse_args()

    totals: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="fti-intake-") as folder:
        config = bench.hub_config(Path(folder), "sqlite", "", "")
        hub = HubServer(config)
        storage = hub.storage
        assert isinstance(storage, SQLiteHubStorage)
        password = hub.registry.enroll_site(bench.SITE, generate_signing_key().public_key_b64)
        principal = hub.registry.authenticate(bench.SITE, password).principal
        assert principal is not None
        if args.stub_storage:
            storage.add_objects = (  # type: ignore[method-assign]
                lambda collection, objects, *, at_most: [AddOutcome.CREATED for _ in objects])
            storage.save_status = lambda *_args, **_kwargs: None  # type: ignore[method-assign]
        else:
            storage._executemany = timed(totals, "inserts",  # type: ignore[method-assign]
                                         storage._executemany)
            storage._before_begin = timed(totals, "checkpoint wait",  # type: ignore[method-assign]
                                          storage._before_begin)
            execute = storage._execute

            def execute_timed(sql: str, params: Any = ()) -> Any:
                if sql != "COMMIT":
                    return execute(sql, params)
                return timed(totals, "commit", execute)(sql, params)

            storage._execute = execute_timed  # type: ignore[method-assign]

        bodies = [bench.envelope(index * ENVELOPE_SIZE, ENVELOPE_SIZE).encode()
                  for index in range(args.envelopes)]
        # As `fti hub serve` does once the hub has started.
        gc.freeze()
        samples = []
        for body in bodies:
            started = time.perf_counter()
            objects = read_envelope(body, max_objects=config.hub.max_objects_per_request)
            hub.intake.add_objects_and_save_status("keys", principal, objects)
            samples.append(time.perf_counter() - started)
        storage.close()

    print(f"{args.envelopes} envelopes of {ENVELOPE_SIZE}, "
          f"{'stub storage' if args.stub_storage else 'SQLite'}: "
          f"median {statistics.median(samples) * 1000:.2f} ms, "
          f"mean {statistics.mean(samples) * 1000:.2f} ms per envelope")
    for name, seconds in totals.most_common():
        print(f"  {name}: {seconds / args.envelopes * 1000:.2f} ms per envelope")


if __name__ == "__main__":
    main()
