"""Real Zeek conn logs from the shared datasets, for tests that compare two readers on them."""

from __future__ import annotations

import gzip
from pathlib import Path

# The Stratosphere and IoT-23 captures monitor hosts of CTU's network, 147.32.0.0/16.
NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "147.32.0.0/16")

# Paths below the shared datasets folder. Some logs are TSV and some JSON.
REAL_CONN_LOGS = [
    "stratosphere-testing/008-zeek-mixed/data/conn.log.labeled",
    "stratosphere-testing/002-zeek-scenario-port-scanning/conn.log",
    "slips/test10-mixed-zeek-dir/conn.log",
    "iot23/raw/CTU-Honeypot-Capture-4-1.conn.log.labeled",
    "slips/test9-mixed-zeek-dir/conn.log",
    "stratosphere-testing/001-zeek-scenario-malicious/conn.log",
]


def read_lines(path: Path, limit: int) -> list[str]:
    """Return the first ``limit`` lines of a log, gzip or plain, without line endings."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return [text.removesuffix("\r") for text in data.decode("utf-8").split("\n")[:limit]]
