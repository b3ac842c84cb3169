"""Measure the memory one live poll keeps while the tailer catches up on a large backlog.

Usage: python benchmarks/tailer_backlog_memory.py [MEGABYTES] [MAX_POLL_BYTES ...]

Writes a log of 100-byte lines (100 MB by default) to a temporary folder, then reads it with
:class:`agent.tailer.LogTailer` once per bound, keeping each poll's batches in a list as the
live agent does while it parses them. Prints the lines read, the polls, the peak of Python
allocations (tracemalloc) and the wall time. Without bounds it compares 2**40 (one poll reads
everything) with the default ``MAX_POLL_BYTES``.
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.tailer import MAX_POLL_BYTES, LogTailer  # noqa: E402

LINE = b"x" * 99 + b"\n"


def read_backlog(path: Path, max_poll_bytes: int) -> tuple[int, int, int, float]:
    """Return the lines, polls, peak traced bytes and seconds of reading ``path`` to its end."""
    tailer = LogTailer([str(path)], use_inotify=False, max_poll_bytes=max_poll_bytes)
    lines = polls = 0
    tracemalloc.start()
    started = time.perf_counter()
    try:
        while True:
            batches = list(tailer.poll_batches())
            polls += 1
            lines += sum(len(batch.lines) for batch in batches)
            del batches
            if not tailer.behind:
                break
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        tailer.close()
    return lines, polls, peak, time.perf_counter() - started


def main(argv: list[str]) -> None:
    megabytes = int(argv[0]) if argv else 100
    bounds = [int(value) for value in argv[1:]] or [1 << 40, MAX_POLL_BYTES]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "backlog.log"
        with path.open("wb") as stream:
            for _ in range(megabytes):
                stream.write(LINE * 10_000)
        for bound in bounds:
            lines, polls, peak, seconds = read_backlog(path, bound)
            print(f"max_poll_bytes={bound}: {lines} lines in {polls} polls, "
                  f"peak {peak / 2**20:.1f} MiB, {seconds:.2f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
