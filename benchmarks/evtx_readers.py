"""Compare the two Python readers of Windows .evtx files on the same files, in one process each.

Usage: python benchmarks/evtx_readers.py {rust|python} FOLDER

``rust`` is the ``evtx`` package (a binding to the Rust evtx crate) and ``python`` is
``python-evtx``. The agent depends on ``evtx``; install ``python-evtx`` separately to compare.
Prints the records read, the records per second and the peak resident memory.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path


def read_with_rust(files: list[Path]) -> tuple[int, int]:
    from evtx import PyEvtxParser

    records = characters = 0
    for path in files:
        for record in PyEvtxParser(str(path)).records():
            records += 1
            characters += len(record["data"])
    return records, characters


def read_with_python(files: list[Path]) -> tuple[int, int]:
    import Evtx.Evtx as evtx

    records = characters = 0
    for path in files:
        with evtx.Evtx(str(path)) as log:
            for record in log.records():
                records += 1
                characters += len(record.xml())
    return records, characters


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("rust", "python"):
        print(__doc__, file=sys.stderr)
        return 2
    files = sorted(Path(sys.argv[2]).rglob("*.evtx"))
    reader = read_with_rust if sys.argv[1] == "rust" else read_with_python

    started = time.perf_counter()
    records, characters = reader(files)
    seconds = time.perf_counter() - started

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{sys.argv[1]}: {len(files)} files, {records} records in {seconds:.2f} s = "
          f"{records / seconds:.0f} records/s, {characters} XML characters, peak RSS {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
