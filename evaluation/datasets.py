"""Labelled sites of an evaluation scenario, read and scored by the agent's own code.

Each site is one real capture. Its Zeek ``conn`` records go through the agent's reader
(``agent.zeek``), orientation (``agent.network``), feature windows (``agent.features``) and
calibrated detector (``agent.detector``); the labels of the dataset authors are read here,
never by the agent, and attached to each flow by its file and line.

IoT-23 captures that exist only as CSV (one column per Zeek field) are first written as Zeek
JSON lines, so that the agent reads them through its ordinary JSON reader.

Event time is split per site: each capture's span becomes ``rounds`` rounds of equal length.
The captures were recorded on different days and last from 80 minutes to a day, so aligning
them on wall-clock time would leave most sites silent in most rounds.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.detector import CalibratedDetector
from agent.errors import DetectorError, LogReadError
from agent.features import Window, build_windows
from agent.network import InternalNetworks, orient_connections
from agent.service import baseline_round_count
from agent.zeek import iter_zeek_records

log = logging.getLogger(__name__)

# The lab networks behind the IoT-23 devices, and IPv6 link-local for the Somfy lock.
IOT_NETWORKS = ("192.168.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "fe80::/10")
# The CTU hosts of Stratosphere 008 and 010 have public addresses in the university's range.
CTU_NETWORKS = ("147.32.0.0/16",)

_CSV_INTEGERS = frozenset({"id.orig_p", "id.resp_p", "orig_bytes", "resp_bytes", "missed_bytes",
                           "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes"})
_CSV_FLOATS = frozenset({"ts", "duration"})


@dataclass(frozen=True)
class SiteSpec:
    """One site of a scenario: a capture below the data folder and the site's own networks."""

    site_id: str
    capture: str
    description: str
    internal_networks: tuple[str, ...] = IOT_NETWORKS


IOT23_SITES: tuple[SiteSpec, ...] = (
    SiteSpec("iot-34-1", "iot23/raw/CTU-IoT-Malware-Capture-34-1.conn.log.labeled",
             "IoT-23 34-1, Mirai"),
    SiteSpec("iot-42-1", "iot23/raw/CTU-IoT-Malware-Capture-42-1.conn.log.labeled",
             "IoT-23 42-1, trojan"),
    SiteSpec("iot-44-1", "iot23/csv/CTU-Malware-Capture-44-1-labeled.csv", "IoT-23 44-1, Mirai"),
    SiteSpec("iot-20-1", "iot23/csv/CTU-Malware-Capture-20-1-labeled.csv", "IoT-23 20-1, Torii"),
    SiteSpec("iot-4-1", "iot23/raw/CTU-Honeypot-Capture-4-1.conn.log.labeled",
             "IoT-23 4-1, Philips Hue (benign)"),
    SiteSpec("iot-5-1", "iot23/csv/CTU-Honeypot-Capture-5-1-labeled.csv",
             "IoT-23 5-1, Amazon Echo (benign)"),
    SiteSpec("iot-7-1", "iot23/csv/CTU-Honeypot-Capture-7-1-labeled.csv",
             "IoT-23 7-1, Somfy lock (benign)"),
    SiteSpec("ctu-008", "stratosphere-testing/008-zeek-mixed/data/conn.log.labeled",
             "Stratosphere 008, Windows PC attacked from the Internet", CTU_NETWORKS),
    SiteSpec("ctu-010", "stratosphere-testing/010-zeek-mixed/data/conn.log.labeled",
             "Stratosphere 010, Windows PC attacked from the Internet", CTU_NETWORKS),
)


@dataclass
class SiteData:
    """A site's windows and labelled flows, with each window's round and calibrated score.

    Flows whose label is neither malicious nor benign (Background, unlabelled) are dropped.
    A flow the agent cannot orient (both endpoints external) has ``flow_window == -1``.
    """

    spec: SiteSpec
    windows: list[Window]
    window_round: np.ndarray
    window_score: np.ndarray
    # The detector's raw scores, min-max scaled over the baseline and clipped to [0, 1]: the
    # ablation without calibration.
    window_uncalibrated_score: np.ndarray
    baseline_rounds: int
    flow_label: np.ndarray
    flow_round: np.ndarray
    flow_window: np.ndarray
    flow_remote: list[str | None]
    raw_bytes: int
    has_detector: bool
    # Process time of fitting the site's detector and scoring all its windows.
    detector_seconds: float = 0.0


def load_site(
    spec: SiteSpec,
    *,
    data_dir: Path,
    work_dir: Path,
    rounds: int,
    window_seconds: int,
    baseline_rounds: int,
    min_baseline_windows: int,
    random_state: int,
    span: tuple[float, float] | None = None,
) -> SiteData:
    """Read one capture, build its windows and score them with the agent's detector.

    ``span`` (first and last event time, epoch seconds) sets a round clock shared by all
    sites; by default the capture's own span is cut into ``rounds`` rounds.

    Raises
    ------
    FileNotFoundError
        If the capture is missing below ``data_dir``.
    LogReadError
        If a CSV capture has a value that is not a finite number in a numeric column.
    """
    source = data_dir / spec.capture
    if not source.is_file():
        raise FileNotFoundError(f"capture {spec.capture} not found below {data_dir}; pass "
                                "--data-dir pointing at the shared data folder")
    path = _zeek_path(source, work_dir / spec.site_id)

    # Labels by (file, line), read next to the agent's reader so both see the same records.
    records = list(iter_zeek_records(path))
    labels = {(r.source, r.line): _label(r.fields) for r in records}
    connections = list(orient_connections(records, InternalNetworks(spec.internal_networks)))
    windows = build_windows(connections, window_seconds=window_seconds)

    # Rounds of equal length over the capture's own span.
    if span is None:
        times = [r.fields["ts"].timestamp() for r in records if r.fields.get("ts") is not None]
        span = (min(times), max(times))
    start, end = span
    round_length = max((end - start) / rounds, 1e-9)

    def round_of(ts: float) -> int:
        return int(min(max((ts - start) // round_length, 0), rounds - 1))

    window_round = np.array([round_of(w.start + window_seconds / 2) for w in windows], dtype=int)
    window_index = {(w.entity, w.start): i for i, w in enumerate(windows)}
    began = time.process_time()
    scores, uncalibrated, taken, has_detector = _score(spec, windows, window_round, baseline_rounds,
                                                       min_baseline_windows, random_state)
    detector_seconds = time.process_time() - began

    flow_label, flow_round, flow_window, flow_remote = [], [], [], []
    oriented = {(c.source, c.line): c for c in connections}
    for record in records:
        label = labels[(record.source, record.line)]
        if label is None or record.fields.get("ts") is None:
            continue
        connection = oriented.get((record.source, record.line))
        flow_label.append(label)
        if connection is None:
            flow_round.append(round_of(record.fields["ts"].timestamp()))
            flow_window.append(-1)
            flow_remote.append(None)
            continue
        start_of_window = int(connection.ts // window_seconds) * window_seconds
        index = window_index[(connection.entity, start_of_window)]
        flow_round.append(int(window_round[index]))
        flow_window.append(index)
        flow_remote.append(connection.remote)

    log.info("site %s: %d flows labelled, %d windows, baseline %d rounds", spec.site_id,
             len(flow_label), len(windows), taken)
    return SiteData(
        spec=spec, windows=windows, window_round=window_round, window_score=scores,
        window_uncalibrated_score=uncalibrated,
        baseline_rounds=taken, flow_label=np.array(flow_label, dtype=bool),
        flow_round=np.array(flow_round, dtype=int), flow_window=np.array(flow_window, dtype=int),
        flow_remote=flow_remote, raw_bytes=source.stat().st_size, has_detector=has_detector,
        detector_seconds=detector_seconds,
    )


def baseline_mask(window_round: np.ndarray, baseline_rounds: int, min_windows: int) -> tuple[np.ndarray, int]:
    """Select the baseline windows by the agent's rule, on round indices.

    Returns the mask and the first round after the baseline, where evaluation starts.
    """
    present, counts = np.unique(window_round, return_counts=True)
    if present.size == 0:
        return np.zeros(0, dtype=bool), baseline_rounds
    taken = baseline_round_count(counts.tolist(), baseline_rounds=baseline_rounds,
                                 min_baseline_windows=min_windows)
    end = int(present[min(taken, present.size) - 1]) + 1
    return window_round < end, end


def _score(
    spec: SiteSpec, windows: list[Window], window_round: np.ndarray, baseline_rounds: int,
    min_windows: int, random_state: int,
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    if not windows:
        return np.zeros(0), np.zeros(0), baseline_rounds, False
    features = np.array([w.features for w in windows], dtype=float)
    mask, taken = baseline_mask(window_round, baseline_rounds, min_windows)
    detector = CalibratedDetector("iforest", min_baseline_windows=min_windows,
                                  random_state=random_state)
    try:
        detector.fit(features[mask])
    except DetectorError as err:
        log.warning("site %s: no local detector (%s); its windows score 0", spec.site_id, err)
        return np.zeros(len(windows)), np.zeros(len(windows)), taken, False

    raw = detector.raw_scores(features)
    low, high = float(np.min(raw[mask])), float(np.max(raw[mask]))
    uncalibrated = np.clip((raw - low) / (high - low), 0.0, 1.0) if high > low else np.zeros(len(raw))
    return detector.calibrate(raw), uncalibrated, taken, True


def _label(fields: dict) -> bool | None:
    label = str(fields.get("label") or "").strip().lower()
    if label == "malicious":
        return True
    if label == "benign":
        return False
    return None


def _zeek_path(source: Path, site_dir: Path) -> Path:
    """Return a path the agent's reader accepts, converting a CSV capture to Zeek JSON lines."""
    if source.suffix != ".csv":
        return source
    site_dir.mkdir(parents=True, exist_ok=True)
    target = site_dir / "conn.log"
    with source.open(newline="", encoding="utf-8") as rows, target.open("w", encoding="utf-8") as out:
        reader = csv.DictReader(rows)
        for row in reader:
            record: dict[str, object] = {}
            for name, value in row.items():
                if value in ("", None) or (value == "-" and name != "detailed-label"):
                    continue
                try:
                    if name in _CSV_INTEGERS:
                        record[name] = int(float(value))
                    elif name in _CSV_FLOATS:
                        number = float(value)
                        if not math.isfinite(number):
                            raise ValueError(value)
                        record[name] = number
                    else:
                        record[name] = value
                except (ValueError, OverflowError):
                    raise LogReadError(str(source), f"line {reader.line_num}: invalid {name} {value!r}, "
                                       "expected a finite number; restore the capture from its source") from None
            out.write(json.dumps(record) + "\n")
    return target
