"""The network family: connection windows from Zeek conn and Suricata flow, with their evidence.

The nine features are those of :mod:`agent.features`, computed by its accumulator, so replay
and live mode score a connection the same way. Application logs (Zeek dns, http, ssl, files,
notice, weird; Suricata dns, http, tls) add no feature: they add the domains, URLs,
fingerprints and hashes the entity's window contacted to that window's evidence. A window
with observations but no connection is dropped when it closes, because it has no features to
score. Zeek logs every application record's connection in conn.log, so this happens only when
conn.log is not among the configured files.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.events import Event
from agent.families import FamilySpec
from agent.families.windows import WindowTable, counter_from
from agent.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, Window, WindowAccumulator, close_window
from agent.network import FAILED_CONN_STATES, MAX_PORT, Connection, InternalNetworks
from agent.observables import ObservableFilter

__all__ = ["NETWORK", "NetworkWindows", "connection_from_flow", "flow_start", "observables_of_suricata"]

NETWORK = FamilySpec(
    name="network",
    feature_names=FEATURE_NAMES,
    log_scaled=frozenset({"connection_count", "distinct_remote_hosts", "distinct_remote_ports", "bytes_out",
                          "bytes_in", "mean_duration"}),
    feature_schema_version=FEATURE_SCHEMA_VERSION,
)


@dataclass
class NetworkAccumulator:
    """A connection window and the application observables of the same entity and window."""

    connections: WindowAccumulator
    observed: Counter[str] = field(default_factory=Counter)


class NetworkWindows(WindowTable[NetworkAccumulator]):
    """Open network windows."""

    def add_connection(self, connection: Connection) -> None:
        self.accumulator(connection.entity, connection.ts).connections.add(connection)

    def connections_at(self, entity: str, start: int) -> WindowAccumulator:
        """Return the connection accumulator of the window of ``entity`` that starts at ``start``."""
        return self.accumulator_at(entity, start).connections

    def add_observables(self, entity: str, ts: float, keys: tuple[str, ...]) -> None:
        if keys:
            self.accumulator(entity, ts).observed.update(keys)

    def new_accumulator(self, entity: str, start: int) -> NetworkAccumulator:
        return NetworkAccumulator(WindowAccumulator(entity, start))

    def close_accumulator(self, accumulator: NetworkAccumulator) -> Window | None:
        if not accumulator.connections.timestamps:
            return None
        window = close_window(accumulator.connections)
        remotes = Counter(window.remotes)
        remotes.update(accumulator.observed)
        return Window(window.entity, window.start, window.features, dict(remotes))

    def dump_accumulator(self, accumulator: NetworkAccumulator) -> Any:
        c = accumulator.connections
        return {"e": c.entity, "s": c.start, "t": c.timestamps.tolist(), "p": sorted(c.peers),
                "o": {str(port): n for port, n in c.ports.items()}, "bo": c.bytes_out, "bi": c.bytes_in,
                "f": c.failed, "d": c.duration_sum, "r": dict(c.remotes), "x": dict(accumulator.observed)}

    def load_accumulator(self, item: Any) -> NetworkAccumulator:
        connections = WindowAccumulator(
            entity=item["e"], start=int(item["s"]), timestamps=array("d", [float(t) for t in item["t"]]),
            peers=set(item["p"]),
            ports=Counter({int(port): int(n) for port, n in item["o"].items()}), bytes_out=int(item["bo"]),
            bytes_in=int(item["bi"]), failed=int(item["f"]), duration_sum=float(item["d"]),
            remotes=counter_from(item["r"]))
        return NetworkAccumulator(connections, counter_from(item["x"]))

    def key_of(self, accumulator: NetworkAccumulator) -> tuple[str, int]:
        return accumulator.connections.entity, accumulator.connections.start


def connection_from_flow(event: Event, internal: InternalNetworks) -> Connection | None:
    """Orient a Suricata ``flow`` event as :func:`agent.network.orient_connections` orients conn.

    The connection's time is ``flow.start``, as a Zeek conn record's is its first packet: the
    event's own ``timestamp`` is when Suricata wrote it, which in an offline run can be the
    same for every flow. A flow whose responder sent no packet counts as failed, as Zeek's S0
    and OTH states do.
    """
    fields = event.fields
    source, destination = internal.classify(fields.get("src_ip")), internal.classify(fields.get("dest_ip"))
    if source is None or destination is None or not (source[1] or destination[1]):
        return None
    outbound = source[1]
    entity, remote = (source, destination) if outbound else (destination, source)
    to_server, to_client = _count(fields.get("flow.bytes_toserver")), _count(fields.get("flow.bytes_toclient"))
    port = fields.get("dest_port") if outbound else fields.get("src_port")
    state = fields.get("tcp.state")
    return Connection(
        ts=flow_start(fields.get("flow.start"), event.ts.timestamp()),
        entity=entity[0], peer=remote[0], remote=remote[0] if remote[2] else None,
        remote_port=port if type(port) is int and 0 <= port <= MAX_PORT else None, outbound=outbound,
        bytes_out=to_server if outbound else to_client, bytes_in=to_client if outbound else to_server,
        duration=max(0.0, _flow_duration(fields)),
        failed=_count(fields.get("flow.pkts_toclient")) == 0 or (isinstance(state, str) and state in FAILED_CONN_STATES),
        source=event.source, line=event.line,
    )


def observables_of_suricata(event: Event, observables: ObservableFilter) -> tuple[str | None, tuple[str, ...]]:
    """Return (entity, observable keys) of a Suricata ``dns``, ``http`` or ``tls`` event."""
    fields = event.fields
    source = observables.internal.classify(fields.get("src_ip"))
    destination = observables.internal.classify(fields.get("dest_ip"))
    entity = source[0] if source is not None and source[1] else (
        destination[0] if destination is not None and destination[1] else None)
    if entity is None:
        return None, ()
    found: list[str | None] = []
    if event.kind == "dns":
        found.append(observables.domain(fields.get("dns.rrname")))
    elif event.kind == "http":
        host = fields.get("http.hostname")
        found.append(observables.domain(host))
        found.append(observables.url(host, fields.get("http.url"), port=fields.get("http.http_port")))
    elif event.kind == "tls":
        found.append(observables.domain(fields.get("tls.sni")))
        found.append(observables.fingerprint("ja3", fields.get("tls.ja3.hash")))
        found.append(observables.fingerprint("ja3s", fields.get("tls.ja3s.hash")))
        # Suricata's tls.fingerprint is the SHA-1 of the server certificate, colon-separated.
        found.append(observables.fingerprint("x509-sha1", fields.get("tls.fingerprint")))
    return entity, tuple(dict.fromkeys(key for key in found if key is not None))


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def flow_start(value: object, fallback: float) -> float:
    """Return a flow's ``flow.start`` in epoch seconds, or ``fallback`` when it is missing or invalid."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    return fallback


def _flow_duration(fields: dict) -> float:
    start, end = fields.get("flow.start"), fields.get("flow.end")
    if isinstance(start, str) and isinstance(end, str):
        try:
            return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
        except ValueError:
            return 0.0
    return 0.0
