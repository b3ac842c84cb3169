"""Lines per second and peak memory of fti's log readers and live pipeline, beside plain Python and zat.

Usage: python benchmarks/zeek_conn_throughput.py CONN_LOG [--lines N] [--data DIR] [--only NAME ...]

CONN_LOG is a Zeek TSV conn log. Its data rows are repeated, with the header once, into a
temporary file of N lines (default 1,000,000); a Zeek JSON copy is written beside it. With
``--data``, the folder of the shared datasets, the sshd, Suricata and Sysmon parsers are
measured too, each on one real file repeated to N / 4 lines (``PARSER_INPUTS``). Each
measurement runs in a fresh child process, one after the other in the same run, so its peak
resident memory (``ru_maxrss``) is its own:

- ``agent-imports``: no lines, only the peak memory and CPU time of importing the live agent
  with everything it loads at start-up (configuration, STIX, privacy). The agent imports the
  pyod detectors at their first fit, so this leaves them out.
- ``python-lines``: ``for line in file`` over the TSV file, the floor of any reader.
- ``split-and-type``: split on tabs and convert ts, ports and byte counts, no header logic.
- ``zat``: ``zat.zeek_log_reader.ZeekLogReader(...).readrows()`` (``pip install zat``, or
  the ``bench`` extra).
- ``fti-reader`` and ``fti-reader-json``: :func:`agent.zeek.iter_zeek_records`, the general
  reader that types every column, on the TSV file and on the JSON copy.
- ``fti-tail-parse`` and ``fti-tail-parse-json``: what the live agent does with new lines:
  :meth:`agent.tailer.LogTailer.poll_batches`, :func:`agent.zeek_conn.decode_lines` and
  :func:`agent.zeek_conn.iter_connections`, which parses and orients each conn line. Each
  batch is read as it arrives and its connections are not kept.
- ``fti-pipeline`` and ``fti-pipeline-json``: the same, streamed into per-entity windows
  (:func:`agent.features.build_windows`, the evaluation's window path; the live agent's
  family feeder is not measured), and an IsolationForest detector trained on the first
  fifth of the windows and scoring all of them.
- ``fti-pipeline-blocks``: the TSV pipeline as the live agent and the replay run read it:
  the lines of each poll are added to the network family's windows by
  :meth:`agent.families.feeding.FamilyFeeder.add_tsv_conn_lines`, with no connection object
  per line, then the same detector.
- ``fti-pipeline-blocks-json``: the same for the JSON copy, through
  :meth:`agent.families.feeding.FamilyFeeder.add_json_conn_lines`, which gets the tailer's
  bytes lines undecoded.
- ``sshd``, ``suricata`` and ``sysmon``: :func:`agent.sources.iter_file_events` on each
  parser's input.

Rates are lines per CPU second of the child (``time.process_time``), so they are per core.
The clock starts after the child has imported what it measures, the pipelines' pyod model
included, because an agent pays its imports once at start-up, not per line. The import time
is printed too.
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
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    import numpy as np

    from agent.network import Connection, OrientationStats
    from agent.tailer import LogTailer, TailBatch
    from agent.zeek_records import ParseStats

ZEEK_MEASUREMENTS = ("agent-imports", "python-lines", "split-and-type", "zat", "fti-reader", "fti-reader-json", "fti-tail-parse",
                     "fti-tail-parse-json", "fti-pipeline", "fti-pipeline-blocks", "fti-pipeline-json",
                     "fti-pipeline-blocks-json")
PARSER_MEASUREMENTS = ("sshd", "suricata", "sysmon")
MEASUREMENTS = ZEEK_MEASUREMENTS + PARSER_MEASUREMENTS

# Real files under the shared datasets folder, by parser. A .zip contains one file.
PARSER_INPUTS = {
    "sshd": "loghub/OpenSSH_2k.log",
    "suricata": "slips/suricata/test6-malicious.suricata.json",
    "sysmon": "otrf-security-datasets/atomic/windows/execution/host/psh_python_webserver.zip",
}

# Private ranges, and CTU's network 147.32.0.0/16, whose hosts the Stratosphere captures monitor.
BENCH_INTERNAL_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "147.32.0.0/16")


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


def build_parser_input(source: Path, lines: int, folder: Path) -> Path:
    """Write ``source``'s lines (from a .zip, its one member) repeated to ``lines`` lines."""
    if source.suffix == ".zip":
        with zipfile.ZipFile(source) as archive:
            data = archive.read(archive.namelist()[0])
    else:
        data = source.read_bytes()
    rows = [row for row in data.split(b"\n") if row.strip()]
    target = folder / source.name.removesuffix(".zip")
    with open(target, "wb") as stream:
        for start in range(0, lines, len(rows)):
            stream.write(b"\n".join(rows[: min(len(rows), lines - start)]) + b"\n")
    return target


def prepare(name: str, inputs: dict[str, Path]) -> Callable[[], int]:
    """Import what measurement ``name`` needs and return a function that runs it and returns its line count."""
    tsv, jsonl = inputs["tsv"], inputs["json"]
    if name == "agent-imports":
        import agent.live  # noqa: F401
        import agent.service  # noqa: F401

        return lambda: 0
    if name == "python-lines":
        def run() -> int:
            with open(tsv, encoding="utf-8") as stream:
                return sum(1 for _ in stream)
        return run
    if name == "split-and-type":
        return lambda: _split_and_type(tsv)
    if name == "zat":
        from zat.zeek_log_reader import ZeekLogReader

        return lambda: sum(1 for _ in ZeekLogReader(str(tsv)).readrows())
    if name in ("fti-reader", "fti-reader-json"):
        from agent.zeek import iter_zeek_records

        return lambda: sum(1 for _ in iter_zeek_records(tsv if name == "fti-reader" else jsonl))
    if name in PARSER_MEASUREMENTS:
        from agent.events import EventStats
        from agent.sources import iter_file_events

        def run_parser() -> int:
            stats = EventStats()
            for _ in iter_file_events(inputs[name], name, stats=stats):
                pass
            return stats.lines
        return run_parser

    # Imported here so that the clock starts after them; _tail_connections finds them loaded.
    import agent.network
    import agent.tailer
    import agent.zeek_conn
    import agent.zeek_tsv  # noqa: F401

    is_json = name.endswith("-json")
    if name.startswith("fti-pipeline"):
        # The detector imports its pyod model at the first fit, which the agent does once.
        import pyod.models.iforest  # noqa: F401
    if name.startswith("fti-pipeline-blocks"):
        import agent.families.feeding  # noqa: F401 - _tail_block_windows finds it loaded
        from agent.detector import CalibratedDetector

        def run_blocks() -> int:
            lines_read: list[int] = []
            features = _tail_block_windows(jsonl if is_json else tsv, is_json=is_json, lines_read=lines_read)
            detector = CalibratedDetector("iforest", min_baseline_windows=8)
            detector.fit(features[: max(8, len(features) // 5)]).score(features)
            return lines_read[0]
        return run_blocks
    if name.startswith("fti-pipeline"):
        import numpy as np

        from agent.detector import CalibratedDetector
        from agent.features import build_windows

        def run_pipeline() -> int:
            lines_read: list[int] = []
            connections = _tail_connections(jsonl if is_json else tsv, is_json=is_json, lines_read=lines_read)
            windows = build_windows(connections, window_seconds=60)
            features = np.array([w.features for w in windows], dtype=float)
            detector = CalibratedDetector("iforest", min_baseline_windows=8)
            detector.fit(features[: max(8, len(features) // 5)]).score(features)
            return lines_read[0]
        return run_pipeline

    def run_tail() -> int:
        lines_read: list[int] = []
        for _ in _tail_connections(jsonl if is_json else tsv, is_json=is_json, lines_read=lines_read):
            pass
        return lines_read[0]
    return run_tail


def _split_and_type(tsv: Path) -> int:
    count = 0
    with open(tsv, encoding="utf-8") as stream:
        for text in stream:
            if text.startswith("#"):
                continue
            values = text.rstrip("\n").split("\t")
            float(values[0]), int(values[3]), int(values[5])
            count += 1
    return count


def _tail_connections(path: Path, *, is_json: bool, lines_read: list[int]) -> Iterator[Connection]:
    """Follow ``path`` once as the live agent does and yield its connections.

    Each tailer batch is decoded at once and read with one TSV header kept across batches.
    ``lines_read`` gets the number of lines read appended once the file is exhausted.

    Raises
    ------
    RuntimeError
        If a line is malformed or no connection is found, because the rate would then
        measure error handling.
    """
    from agent.network import InternalNetworks, OrientationStats
    from agent.tailer import LogTailer
    from agent.zeek_conn import decode_lines, iter_connections
    from agent.zeek_records import MalformedLineReporter, ParseStats
    from agent.zeek_tsv import TsvHeader

    tailer = LogTailer([str(path)], use_inotify=False)
    internal = InternalNetworks(BENCH_INTERNAL_NETWORKS)
    stats, orientation, header = ParseStats(), OrientationStats(), TsvHeader()
    reporter = MalformedLineReporter(str(path), stats)
    number = 0
    for batch in _drain(tailer):
        texts = decode_lines(batch.lines)
        yield from iter_connections(enumerate(texts, start=number + 1), is_json=is_json, source=str(path),
                                    default_path="conn", internal=internal, stats=stats,
                                    orientation=orientation, reporter=reporter, header=header)
        number += len(texts)
    tailer.close()
    _check_clean_read(path, stats, orientation)
    lines_read.append(number)


def _tail_block_windows(path: Path, *, is_json: bool, lines_read: list[int]) -> np.ndarray:
    """Follow a TSV or JSON conn log once, add each batch of lines to the windows, and return their features.

    ``lines_read`` gets the number of lines read appended.

    Raises
    ------
    RuntimeError
        If a line is malformed or no connection is found, as in :func:`_tail_connections`.
    """
    import numpy as np

    from agent.families.feeding import FamilyFeeder
    from agent.network import OrientationStats
    from agent.tailer import LogTailer
    from agent.zeek_conn import decode_lines
    from agent.zeek_records import MalformedLineReporter, ParseStats
    from agent.zeek_tsv import TsvHeader

    tailer = LogTailer([str(path)], use_inotify=False)
    feeder = FamilyFeeder(("network",), window_seconds=60, internal_networks=BENCH_INTERNAL_NETWORKS)
    stats, orientation, header = ParseStats(), OrientationStats(), TsvHeader()
    reporter = MalformedLineReporter(str(path), stats)
    number = 0
    for lines in _drain_polls(tailer):
        # The JSON block path reads the tailer's bytes lines and decodes only those it cannot read.
        if is_json:
            feeder.add_json_conn_lines(lines, number + 1, families=("network",), source=str(path),
                                       default_path="conn", stats=stats, orientation=orientation, reporter=reporter)
            number += len(lines)
            continue
        texts = decode_lines(lines)
        feeder.add_tsv_conn_lines(texts, number + 1, families=("network",), header=header, source=str(path),
                                  default_path="conn", stats=stats, orientation=orientation, reporter=reporter)
        number += len(texts)
    tailer.close()
    _check_clean_read(path, stats, orientation)
    lines_read.append(number)
    windows = feeder.close()["network"]
    return np.array([w.features for w in windows], dtype=float)


def _drain_polls(tailer: LogTailer) -> Iterator[list[bytes]]:
    """Yield the lines of each poll until the tailer has read every file to its end.

    The live agent passes the batches that one poll read from a file to the parsers as one
    run (:meth:`agent.live.LiveAgent.step`), up to ``live.max_poll_bytes`` (4 MiB by default),
    so the block pipeline gets them the same way. The benchmark follows one file that neither
    rotates nor truncates, so each poll is one run.
    """
    while True:
        lines = [line for batch in tailer.poll_batches() for line in batch.lines]
        if lines:
            yield lines
        if not tailer.behind:
            return


def _drain(tailer: LogTailer) -> Iterator[TailBatch]:
    """Yield the batches of polls until the tailer has read every file to its end.

    A poll reads at most ``max_poll_bytes`` of a file, so a large input takes several polls.
    """
    yield from tailer.poll_batches()
    while tailer.behind:
        yield from tailer.poll_batches()


def _check_clean_read(path: Path, stats: ParseStats, orientation: OrientationStats) -> None:
    """Raise RuntimeError unless every line parsed and some connection was found."""
    if stats.malformed_total or not orientation.connections:
        raise RuntimeError(f"{path}: expected no malformed line and some connections, but got "
                           f"{orientation.connections} connections and malformed lines {dict(stats.malformed)}. "
                           "Check that the file is a Zeek conn log")


def run_child(name: str, inputs: dict[str, Path]) -> dict[str, object]:
    """Run one measurement in this process and return its figures."""
    started = time.process_time()
    run = prepare(name, inputs)
    imported = time.process_time()
    count = run()
    seconds = time.process_time() - imported
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"name": name, "lines": count, "cpu_seconds": round(seconds, 3),
            "lines_per_second": round(count / seconds) if count else None, "import_cpu_seconds": round(imported - started, 3),
            "peak_rss_mib": round(peak_mib)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("conn_log", type=Path)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, help="folder of the shared datasets, for the sshd, Suricata and "
                                                  "Sysmon parsers; without it they are skipped")
    parser.add_argument("--only", nargs="*", choices=MEASUREMENTS)
    parser.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        inputs = {key: Path(value) for key, value in json.loads(args.inputs).items()}
        print(json.dumps(run_child(args.child, inputs)))
        return 0

    names = args.only or [n for n in MEASUREMENTS if args.data is not None or n not in PARSER_MEASUREMENTS]
    with tempfile.TemporaryDirectory() as folder:
        tsv, jsonl = build_inputs(args.conn_log, args.lines, Path(folder))
        inputs = {"tsv": str(tsv), "json": str(jsonl)}
        for name in PARSER_MEASUREMENTS:
            if name in names:
                inputs[name] = str(build_parser_input(args.data / PARSER_INPUTS[name], args.lines // 4, Path(folder)))
        print(f"# {args.lines} conn lines from {args.conn_log.name}; TSV {tsv.stat().st_size >> 20} MiB, "
              f"JSON {jsonl.stat().st_size >> 20} MiB; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
        for name in names:
            result = subprocess.run([sys.executable, __file__, str(args.conn_log), "--child", name,
                                     "--inputs", json.dumps(inputs)], capture_output=True, text=True, check=False)
            print(result.stdout.strip() or json.dumps({"name": name, "error": result.stderr.strip()[-300:]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
