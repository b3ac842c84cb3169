"""Sites cut from NSL-KDD, with a synthetic host and observable for every record.

NSL-KDD (Tavallaee, Bagheri, Lu and Ghorbani, "A Detailed Analysis of the KDD CUP 99 Data
Set", CISDA 2009) contains one labelled connection per line: 41 features, the attack name and a
difficulty score. It carries no addresses and no times, and its records are shuffled, so
the agent's pipeline, which needs a host, a remote address and a time, gets them by this
mapping:

- **host (entity)**: each record is its own internal host, ``10.<site>.x.y``, so each record
  is one 60 s window of one host, and the detector scores records one by one. Windows of
  several records would mix unrelated shuffled records.
- **observable**: the record's signature ``(protocol_type, service, flag)`` becomes a
  synthetic public address in ``11.0.0.0/8``, one per signature. The address names only the
  signature, not a host. The agent's DP partition selection and the hub's fusion therefore
  treat it as an observable that several records and sites share.
- **time**: the records of a site keep their file order, one second apart, and the site's
  span is cut into the scenario's rounds.
- **features**: the agent computes its window features from ``duration``, ``src_bytes``
  (sent by the host), ``dst_bytes``, ``flag`` (``S0``, ``REJ`` and the other Bro states
  count as failed by the agent's rule) and the protocol. The other 36 NSL-KDD features
  (``count``, ``serror_rate``, content features) have no place in a Zeek ``conn`` record
  and are not used.

What the scenario measures: whether sharing anomaly evidence about a signature helps a site
catch an attack class it sees rarely or first, under DP and with partial participation and
a poisoning site. What it cannot measure: address-based intelligence (one signature stands
for many unrelated hosts, benign ones included), detection latency in real time, or the
agent's multi-connection window features.

The domain-shift variant puts each site's share of ``KDDTrain+_20Percent`` in the first half
of its rounds and its share of ``KDDTest+``, whose 17 attack types never appear in the
training file, in the second half. Detectors and calibration come from the first rounds.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import zlib
from pathlib import Path

import numpy as np

from evaluation.datasets import SiteSpec
from evaluation.partition import dirichlet_partition

NSLKDD_FOLDER = "nsl-kdd"
TRAIN_FILE = "KDDTrain+_20Percent.txt"
TEST_FILE = "KDDTest+.txt"
NSLKDD_NETWORKS = ("10.0.0.0/8",)
# Rare classes of the training file that go whole to one site each: an attack seen at one
# site only.
NSLKDD_ONE_SITE_CLASSES = ("back", "teardrop", "pod", "guess_passwd", "warezclient", "nmap")
# 11.0.0.0/8 is global unicast, so the agent treats these as shareable. Each value names a
# signature, never a real host.
_SIGNATURE_NETWORK = ipaddress.ip_network("11.0.0.0/8")
_FIELDS = 43  # 41 features, the label and the difficulty


def write_nslkdd_sites(
    data_dir: Path, work_dir: Path, *, n_sites: int, alpha: float, seed: int, shift: bool
) -> list[SiteSpec]:
    """Partition NSL-KDD into sites and write each site's records as Zeek conn JSON lines.

    Parameters
    ----------
    shift : bool
        False for the training file alone; True to follow it with the test file (the
        domain-shift variant).

    Raises
    ------
    FileNotFoundError
        If a file is missing below ``data_dir``.
    ValueError
        If a line does not have 43 comma-separated fields, or a site gets more than 65,536
        records.
    """
    rng = np.random.default_rng(seed)
    parts = [_read(data_dir / NSLKDD_FOLDER / TRAIN_FILE)]
    if shift:
        parts.append(_read(data_dir / NSLKDD_FOLDER / TEST_FILE))

    # Each file is split by its own Dirichlet draw. Attack classes new in the test file are
    # spread the same way.
    per_site: list[list[dict[str, str]]] = [[] for _ in range(n_sites)]
    for rows in parts:
        labels = [row["label"] for row in rows]
        assignment = dirichlet_partition(labels, n_sites=n_sites, alpha=alpha,
                                         one_site_classes=NSLKDD_ONE_SITE_CLASSES, rng=rng)
        for row, site in zip(rows, assignment):
            per_site[site].append(row)

    specs = []
    for site, rows in enumerate(per_site):
        # One internal address per record, 10.<site>.x.y, leaves room for 65,536 records.
        if len(rows) > 65536:
            raise ValueError(f"site {site} has {len(rows)} records, more than 65,536; use more "
                             "sites")
        site_id = f"kdd-{site:02d}"
        capture = Path("nsl-kdd") / site_id / "conn.log"
        (work_dir / capture).parent.mkdir(parents=True, exist_ok=True)
        with (work_dir / capture).open("w", encoding="utf-8") as out:
            for index, row in enumerate(rows):
                out.write(json.dumps(_conn_record(site, index, row)) + "\n")
        attacks = sorted({row["label"] for row in rows} - {"normal"})
        specs.append(SiteSpec(site_id, str(capture),
                              f"NSL-KDD partition, {len(attacks)} attack classes", NSLKDD_NETWORKS))
    return specs


def signature_address(protocol: str, service: str, flag: str) -> str:
    """Return the synthetic public address that names one (protocol, service, flag) signature."""
    offset = zlib.crc32(f"{protocol}/{service}/{flag}".encode()) % (_SIGNATURE_NETWORK.num_addresses - 2)
    return str(_SIGNATURE_NETWORK.network_address + 1 + offset)


def _read(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"NSL-KDD file {path} not found; pass --data-dir pointing at the "
                                "shared data folder")
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for line_number, fields in enumerate(csv.reader(handle), start=1):
            if len(fields) != _FIELDS:
                raise ValueError(f"{path}:{line_number}: expected {_FIELDS} comma-separated fields, "
                                 f"found {len(fields)}")
            rows.append({"duration": fields[0], "protocol": fields[1], "service": fields[2],
                         "flag": fields[3], "src_bytes": fields[4], "dst_bytes": fields[5],
                         "label": fields[41]})
    return rows


def _conn_record(site: int, index: int, row: dict[str, str]) -> dict[str, object]:
    # A synthetic port per service keeps the record's service visible in id.resp_p.
    port = 1 + zlib.crc32(row["service"].encode()) % 1023
    return {
        "ts": float(index),
        "uid": f"kdd{site:02d}-{index}",
        "id.orig_h": f"10.{site}.{index >> 8}.{index & 255}",
        "id.orig_p": 40000,
        "id.resp_h": signature_address(row["protocol"], row["service"], row["flag"]),
        "id.resp_p": port,
        "proto": row["protocol"],
        "duration": float(row["duration"]),
        "orig_bytes": int(row["src_bytes"]),
        "resp_bytes": int(row["dst_bytes"]),
        "conn_state": row["flag"],
        "label": "Benign" if row["label"] == "normal" else "Malicious",
        "detailed-label": row["label"],
    }
