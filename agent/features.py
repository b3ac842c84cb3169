"""Per-entity feature windows over event time.

Windows are tumbling and aligned to the epoch, so ``window_start = ts - ts % window_seconds``
and every round (a multiple of the window length) contains whole windows. Each window keeps,
besides its feature vector, the remote observables it contacted; those stay on the site and
feed only the DP evidence release and the local alert matcher.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from functools import partial, reduce
from itertools import islice
from operator import add
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from agent.network import Connection

FEATURE_SCHEMA_VERSION = "network-1"
FEATURE_NAMES: tuple[str, ...] = (
    "connection_count",
    "distinct_remote_hosts",
    "distinct_remote_ports",
    "remote_port_entropy",
    "bytes_out",
    "bytes_in",
    "failed_connection_ratio",
    "mean_duration",
    "interarrival_burstiness",
)


# Connections build_windows groups at once: enough to amortise the grouping, a few MiB of memory.
WINDOW_CHUNK_CONNECTIONS = 1 << 14


@dataclass
class WindowAccumulator:
    """Running state of one (entity, window) pair.

    ``timestamps`` contains one event time per connection, because burstiness needs every gap.
    During a replay of a large file the open windows therefore contain one per connection. They
    are kept in an ``array('d')``, the same doubles as Python floats in 8 bytes each instead of
    32 (a float object and its list slot).
    """

    entity: str
    start: int
    timestamps: array[float] = field(default_factory=partial(array, "d"))
    peers: set[str] = field(default_factory=set)
    ports: Counter[int] = field(default_factory=Counter)
    bytes_out: int = 0
    bytes_in: int = 0
    failed: int = 0
    duration_sum: float = 0.0
    remotes: Counter[str] = field(default_factory=Counter)

    def add(self, connection: Connection) -> None:
        self.timestamps.append(connection.ts)
        self.peers.add(connection.peer)
        if connection.remote_port is not None:
            self.ports[connection.remote_port] += 1
        self.bytes_out += connection.bytes_out
        self.bytes_in += connection.bytes_in
        self.failed += connection.failed
        self.duration_sum += connection.duration
        if connection.remote is not None:
            self.remotes[connection.remote] += 1

    def add_many(self, connections: list[Connection]) -> None:
        """Add connections in order, with the same result as :meth:`add` for each of them.

        Each field is updated by one C-level call over the whole list. The durations are
        still summed one by one, in order, so the float sum does not change.
        """
        self.timestamps.extend([c.ts for c in connections])
        self.peers.update([c.peer for c in connections])
        self.ports.update([c.remote_port for c in connections if c.remote_port is not None])
        self.bytes_out += sum([c.bytes_out for c in connections])
        self.bytes_in += sum([c.bytes_in for c in connections])
        self.failed += sum([c.failed for c in connections])
        self.duration_sum = reduce(add, [c.duration for c in connections], self.duration_sum)
        self.remotes.update([c.remote for c in connections if c.remote is not None])


@dataclass(frozen=True)
class Window:
    """A closed window: its features and the observables it contacted (local only)."""

    entity: str
    start: int
    features: tuple[float, ...]
    remotes: dict[str, int]


def port_entropy(ports: Counter[int]) -> float:
    """Shannon entropy in bits of the remote-port distribution (0 for one port or none)."""
    total = sum(ports.values())
    if total == 0:
        return 0.0
    entropy = -sum((n / total) * math.log2(n / total) for n in ports.values())
    return entropy + 0.0  # turns -0.0 into 0.0


def burstiness(timestamps: Sequence[float]) -> float:
    """Burstiness of inter-arrival times, (sigma - mu) / (sigma + mu), in [-1, 1].

    Goh and Barabasi, "Burstiness and memory in complex systems", EPL 81 (2008): -1 is a
    perfectly regular beacon, 0 a Poisson process, values near 1 bursts. Fewer than two gaps
    show no rhythm, so the window gets the neutral 0. So does a window whose
    connections all share one timestamp (mu = sigma = 0).
    """
    if len(timestamps) < 3:
        return 0.0
    ordered = np.sort(np.asarray(timestamps, dtype=float))
    gaps = np.diff(ordered)
    mean, deviation = float(gaps.mean()), float(gaps.std())
    if mean + deviation == 0.0:
        return 0.0
    return (deviation - mean) / (deviation + mean)


def close_window(accumulator: WindowAccumulator) -> Window:
    count = len(accumulator.timestamps)
    features = (
        float(count),
        float(len(accumulator.peers)),
        float(len(accumulator.ports)),
        port_entropy(accumulator.ports),
        float(accumulator.bytes_out),
        float(accumulator.bytes_in),
        accumulator.failed / count,
        accumulator.duration_sum / count,
        burstiness(accumulator.timestamps),
    )
    return Window(accumulator.entity, accumulator.start, features, dict(accumulator.remotes))


def build_windows(connections: Iterable[Connection], *, window_seconds: int) -> list[Window]:
    """Group connections into per-entity windows and close them all.

    Replay reads whole files, so every window is complete once the input ends.
    """
    # Grouping a chunk of connections by window and adding each group at once is several times
    # faster than adding one connection at a time. Chunks bound the connections held at once.
    open_windows: dict[tuple[str, int], WindowAccumulator] = {}
    stream = iter(connections)
    while chunk := list(islice(stream, WINDOW_CHUNK_CONNECTIONS)):
        groups: dict[tuple[str, int], list[Connection]] = {}
        for connection in chunk:
            key = (connection.entity, int(connection.ts // window_seconds) * window_seconds)
            group = groups.get(key)
            if group is None:
                groups[key] = [connection]
            else:
                group.append(connection)
        for key, group in groups.items():
            accumulator = open_windows.get(key)
            if accumulator is None:
                accumulator = open_windows[key] = WindowAccumulator(*key)
            accumulator.add_many(group)
    windows = [close_window(a) for a in open_windows.values()]
    windows.sort(key=lambda w: (w.start, w.entity))
    return windows
