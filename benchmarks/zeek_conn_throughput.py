"""Lines per second and peak memory of fti's Zeek readers beside plain Python and zat.

Usage: python benchmarks/zeek_conn_throughput.py CONN_LOG [--lines N] [--only NAME ...]

CONN_LOG is a Zeek TSV conn log. Its data rows are repeated, with the header once, into a
temporary file of N lines (default 1,000,000); a Zeek JSON copy is written beside it. Each
measurement runs in a fresh child process, one after the other in the same run, so its peak
resident memory (``ru_maxrss``) is its own:

- ``python-lines``: ``for line in file`` over the TSV file, the floor of any reader.
- ``split-and-type``: split on tabs and convert ts, ports and byte counts, no header logic.
- ``zat``: ``zat.zeek_log_reader.ZeekLogReader(...).readrows()`` (needs ``pip install zat``).
- ``fti-reader``: :func:`agent.zeek.iter_zeek_records` on the TSV file.
- ``fti-reader-json``: the same on the JSON copy.
- ``fti-tail-parse``: :class:`agent.tailer.LogTailer` and the TSV parser, as the live agent
  reads, with each record oriented into a connection.
- ``fti-pipeline``: tail, parse, orient, per-entity windows, and an IsolationForest detector
  trained on the first fifth of the windows and scoring all of them.

Prints one line per measurement: lines per second on one core and peak RSS in MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEASUREMENTS = ("python-lines", "split-and-type", "zat", "fti-reader", "fti-reader-json", "fti-tail-parse",
                "fti-pipeline")


def build_inputs(source: Path, lines: int, folder: Path) -> tuple[Path, Path]:
    """Write a TSV conn log of ``lines`` data rows, and its JSON copy, built from ``source``."""
    header, rows = [], []
    with open(source, encoding="utf-8") as stream:
        for text in stream:
            if text.startswith("#"):
                if not text.startswith("#close"):
                    header.append(text)
            elif text.strip():
                rows.append(text)
    fields = next(h for h in header if h.startswith("#fields")).rstrip("\n").split("\t")[1:]

    tsv, jsonl = folder / "conn.log", folder / "conn.json.log"
    with open(tsv, "w", encoding="utf-8") as out_tsv, open(jsonl, "w", encoding="utf-8") as out_json:
        out_tsv.writelines(header)
        for number in range(lines):
            row = rows[number % len(rows)]
            out_tsv.write(row)
            values = row.rstrip("\n").split("\t")
            record = {name: value for name, value in zip(fields, values) if value not in ("-", "(empty)")}
            for name in ("ts", "duration"):
                if name in record:
                    record[name] = float(record[name])
            for name in ("id.orig_p", "id.resp_p", "orig_bytes", "resp_bytes", "orig_pkts", "resp_pkts"):
                if name in record and record[name].isdigit():
                    record[name] = int(record[name])
            out_json.write(json.dumps(record) + "\n")
    return tsv, jsonl


def measure(name: str, tsv: Path, jsonl: Path) -> int:
    """Run one measurement in this process; return the number of lines or records it read."""
    if name == "python-lines":
        with open(tsv, encoding="utf-8") as stream:
            return sum(1 for _ in stream)
    if name == "split-and-type":
        count = 0
        with open(tsv, encoding="utf-8") as stream:
            for text in stream:
                if text.startswith("#"):
                    continue
                values = text.rstrip("\n").split("\t")
                float(values[0]), int(values[3]), int(values[5])
                count += 1
        return count
    if name == "zat":
        from zat.zeek_log_reader import ZeekLogReader

        return sum(1 for _ in ZeekLogReader(str(tsv)).readrows())
    if name in ("fti-reader", "fti-reader-json"):
        from agent.zeek import iter_zeek_records

        return sum(1 for _ in iter_zeek_records(tsv if name == "fti-reader" else jsonl))
    return _measure_tail(tsv, score=name == "fti-pipeline")


def _measure_tail(tsv: Path, *, score: bool) -> int:
    from agent.config import DEFAULT_INTERNAL_NETWORKS
    from agent.network import InternalNetworks, orient_connections
    from agent.tailer import LogTailer
    from agent.zeek_records import MalformedLineReporter, ParseStats
    from agent.zeek_tsv import parse_tsv_lines

    tailer = LogTailer([str(tsv)], use_inotify=False)
    stats = ParseStats()
    numbered = ((number, line.data.decode("utf-8")) for number, line in enumerate(tailer.poll(), start=1))
    records = parse_tsv_lines(numbered, source=str(tsv), default_path="conn", stats=stats,
                              reporter=MalformedLineReporter(str(tsv), stats))
    # The Stratosphere captures monitor hosts of CTU's network, 147.32.0.0/16.
    internal = InternalNetworks(DEFAULT_INTERNAL_NETWORKS + ("147.32.0.0/16",))
    connections = orient_connections(records, internal)
    if not score:
        return sum(1 for _ in connections)
    import numpy as np

    from agent.detector import CalibratedDetector
    from agent.features import build_windows

    windows = build_windows(connections, window_seconds=60)
    features = np.array([w.features for w in windows], dtype=float)
    detector = CalibratedDetector("iforest", min_baseline_windows=8).fit(features[: max(8, len(features) // 5)])
    detector.score(features)
    return stats.records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("conn_log", type=Path)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--only", nargs="*", choices=MEASUREMENTS, default=list(MEASUREMENTS))
    parser.add_argument("--child", nargs=3, metavar=("NAME", "TSV", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        name, tsv, jsonl = args.child
        started = time.process_time()
        count = measure(name, Path(tsv), Path(jsonl))
        seconds = time.process_time() - started
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"name": name, "lines": count, "cpu_seconds": round(seconds, 3),
                          "lines_per_second": round(count / seconds), "peak_rss_mib": round(peak_mib)}))
        return 0

    with tempfile.TemporaryDirectory() as folder:
        tsv, jsonl = build_inputs(args.conn_log, args.lines, Path(folder))
        print(f"# {args.lines} conn lines from {args.conn_log.name}; TSV {tsv.stat().st_size >> 20} MiB, "
              f"JSON {jsonl.stat().st_size >> 20} MiB; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
        for name in args.only:
            result = subprocess.run([sys.executable, __file__, args.conn_log, "--child", name, tsv, jsonl],
                                    capture_output=True, text=True, check=False)
            print(result.stdout.strip() or json.dumps({"name": name, "error": result.stderr.strip()[-300:]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
