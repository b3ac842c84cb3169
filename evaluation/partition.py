"""Sites cut from one labelled flow dataset: a Dirichlet non-IID partition over classes.

CIC-IDS2017 (the corrected release of Engelen, Rimmer and Joosen, sampled per class) is one
network watched by one sensor, so its sites are simulated. The flows of each class are split
across the sites by proportions drawn from a symmetric Dirichlet distribution, a common way to
make federated partitions non-IID (Hsu, Qi and Brown, "Measuring the Effects of Non-Identical
Data Distribution for Federated Visual Classification", 2019). A smaller ``alpha`` gives each
site fewer classes. The rare classes named in ``one_site_classes`` go whole to one site each,
so an attack is seen at one site only.

Each flow is written as a Zeek ``conn`` record in JSON lines, so the agent's reader reads it.
CICFlowMeter has no ``conn_state``. A flow without a backward packet is written as ``S0``
(no reply), and every other flow as ``SF``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from evaluation.datasets import SiteSpec

CICIDS_FOLDER = "cicids2017-improved/sampled_rnd_2500"
# The victim network of CIC-IDS2017. The attackers' NAT address 172.16.0.1 is private, so it
# is an entity-less peer that never leaves a site; only public peers are shared.
CICIDS_NETWORKS = ("192.168.10.0/24",)
CICIDS_ONE_SITE_CLASSES = ("Heartbleed", "Infiltration", "Web Attack - SQL Injection", "Botnet")
_PROTOCOLS = {"6": "tcp", "17": "udp", "1": "icmp"}


def dirichlet_partition(
    labels: list[str], *, n_sites: int, alpha: float, one_site_classes: tuple[str, ...],
    rng: np.random.Generator,
) -> np.ndarray:
    """Return the site index of every record.

    Raises
    ------
    ValueError
        If ``n_sites`` < 2 or ``alpha`` <= 0.
    """
    if n_sites < 2:
        raise ValueError(f"n_sites must be >= 2; got {n_sites}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0; got {alpha}")
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[label].append(index)

    sites = np.empty(len(labels), dtype=int)
    for label in sorted(by_class):
        members = np.array(by_class[label])
        if label in one_site_classes:
            sites[members] = rng.integers(n_sites)
            continue
        shares = rng.dirichlet(np.full(n_sites, alpha))
        sites[members] = rng.choice(n_sites, size=len(members), p=shares)
    return sites


def write_cicids_sites(
    data_dir: Path, work_dir: Path, *, n_sites: int, alpha: float, seed: int
) -> tuple[list[SiteSpec], tuple[float, float]]:
    """Partition the CIC-IDS2017 sample into sites, write their Zeek logs, return specs and span.

    The specs name captures relative to ``work_dir``. The span is the first and last flow time
    of the whole dataset, so that all sites share one round clock.

    Raises
    ------
    FileNotFoundError
        If the dataset folder is missing below ``data_dir``.
    """
    folder = data_dir / CICIDS_FOLDER
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no CIC-IDS2017 CSV files in {folder}; pass --data-dir pointing "
                                "at the shared data folder")
    records, labels = [], []
    for path in files:
        with path.open(newline="", encoding="utf-8") as rows:
            for row in csv.DictReader(rows):
                records.append(_conn_record(row))
                labels.append(row["Label"])

    assignment = dirichlet_partition(labels, n_sites=n_sites, alpha=alpha,
                                     one_site_classes=CICIDS_ONE_SITE_CLASSES,
                                     rng=np.random.default_rng(seed))
    specs = []
    for site in range(n_sites):
        site_id = f"cic-{site:02d}"
        capture = Path("cicids2017") / site_id / "conn.log"
        (work_dir / capture).parent.mkdir(parents=True, exist_ok=True)
        chosen = sorted((records[i] for i in np.flatnonzero(assignment == site)),
                        key=lambda r: r["ts"])
        with (work_dir / capture).open("w", encoding="utf-8") as out:
            for record in chosen:
                out.write(json.dumps(record) + "\n")
        classes = sorted({labels[i] for i in np.flatnonzero(assignment == site)})
        specs.append(SiteSpec(site_id, str(capture), "CIC-IDS2017 partition: " + ", ".join(classes),
                              CICIDS_NETWORKS))
    times = [record["ts"] for record in records]
    return specs, (min(times), max(times))


def _conn_record(row: dict[str, str]) -> dict[str, object]:
    # CIC-IDS2017 timestamps carry no zone; only their differences matter here.
    ts = datetime.fromisoformat(row["Timestamp"]).replace(tzinfo=timezone.utc)
    backward_packets = int(float(row["Total Bwd packets"]))
    return {
        "ts": ts.timestamp(),
        "uid": row["id"],
        "id.orig_h": row["Src IP"], "id.orig_p": int(row["Src Port"]),
        "id.resp_h": row["Dst IP"], "id.resp_p": int(row["Dst Port"]),
        "proto": _PROTOCOLS.get(row["Protocol"], "unknown_transport"),
        # CICFlowMeter measures durations in microseconds.
        "duration": float(row["Flow Duration"]) / 1e6,
        "orig_bytes": int(float(row["Total Length of Fwd Packet"])),
        "resp_bytes": int(float(row["Total Length of Bwd Packet"])),
        "conn_state": "S0" if backward_packets == 0 else "SF",
        "label": "Benign" if row["Label"] == "BENIGN" else "Malicious",
        "detailed-label": row["Label"],
    }
