"""Turn Zeek ``conn`` records into oriented connections: the site's own host and the remote.

The entity of a connection is its endpoint inside the site's internal networks, whichever side
originated it, so that inbound scans and brute force count as well as outbound beacons. The
other endpoint is the observable. A connection between two internal hosts has an entity but
nothing shareable; a connection between two external hosts (traffic a sensor merely saw pass)
belongs to no entity and is skipped.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from stix_mappings.addresses import IPAddress, with_embedded_ipv4

if TYPE_CHECKING:
    from agent.zeek import ZeekRecord


# Zeek conn_state values in which the responder never completed a handshake or the attempt
# was rejected: S0 (no reply), REJ (rejected), RSTOS0 and RSTRH (reset before a reply),
# SH and SHR (half-open, one side only), OTH (no SYN seen). See Zeek's base/protocols/conn.
FAILED_CONN_STATES = frozenset({"S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"})

# TCP and UDP ports are 16-bit. For ICMP, Zeek writes the type and code in the port fields, which are smaller.
MAX_PORT = 65535

# Addresses repeat across a log, so their classification is cached. The cache is emptied when
# it reaches this size, which bounds its memory to roughly 16 MiB (an estimate at about 250
# bytes per entry) on a scan of many addresses.
MAX_CACHED_ADDRESSES = 1 << 16

_NOT_CACHED = object()


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made
# building a Connection several times slower than parsing its line.
@dataclass(slots=True)
class Connection:
    """One connection seen from the site: its entity, the remote endpoint and the traffic."""

    ts: float  # event time, epoch seconds
    entity: str
    peer: str  # the other endpoint; stays on the site
    remote: str | None  # the peer when it may be shared as an observable, else None
    remote_port: int | None
    outbound: bool  # True when the entity originated the connection
    bytes_out: int
    bytes_in: int
    duration: float
    failed: bool
    source: str
    line: int


class InternalNetworks:
    """Membership test for the site's own address space and for never-shared addresses."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._classified: dict[object, tuple[str, bool, bool] | None] = {}

    def classify(self, value: object) -> tuple[str, bool, bool] | None:
        """Return (normalised address, is internal, is shareable), or None if not an address."""
        if not isinstance(value, (str, int, bytes)):
            return None
        found = self._classified.get(value, _NOT_CACHED)
        if found is not _NOT_CACHED:
            return found  # type: ignore[return-value]
        try:
            address = ipaddress.ip_address(value)  # type: ignore[arg-type]
        except ValueError:
            found = None
        else:
            found = (str(address), self.is_internal(address), self.is_shareable(address))
        if len(self._classified) >= MAX_CACHED_ADDRESSES:
            self._classified.clear()
        self._classified[value] = found
        return found

    def is_internal(self, address: IPAddress) -> bool:
        """Return whether the address, or an IPv4 address embedded in it, is the site's own."""
        return any(
            candidate in network
            for candidate in with_embedded_ipv4(address)
            for network in self.networks
            if network.version == candidate.version
        )

    def is_shareable(self, address: IPAddress) -> bool:
        """Return whether an external address may leave the site as an observable.

        Besides the site's own ranges, addresses that identify nothing outside the site are
        withheld: private, loopback, link-local, multicast, unspecified and reserved space.
        An IPv6 address that carries an IPv4 address (mapped, compatible, 6to4, Teredo or the
        NAT64 prefix 64:ff9b::/96) is shareable only when the embedded address is too.
        """
        if self.is_internal(address):
            return False
        return all(c.is_global and not c.is_multicast for c in with_embedded_ipv4(address))


@dataclass
class OrientationStats:
    connections: int = 0
    both_external: int = 0
    missing_fields: int = 0


def orient_connections(
    records: Iterable[ZeekRecord],
    internal: InternalNetworks,
    *,
    time_shift: timedelta = timedelta(0),
    stats: OrientationStats | None = None,
) -> Iterator[Connection]:
    """Yield a :class:`Connection` for every ``conn`` record that involves an internal host."""
    stats = stats if stats is not None else OrientationStats()
    shift = time_shift.total_seconds()
    for record in records:
        if record.log_path != "conn":
            continue
        connection = orient_fields(record.fields, internal, source=record.source, line=record.line,
                                   time_shift_secs=shift, stats=stats)
        if connection is not None:
            yield connection


def orient_fields(
    fields: Mapping[str, Any],
    internal: InternalNetworks,
    *,
    source: str,
    line: int,
    time_shift_secs: float,
    stats: OrientationStats,
) -> Connection | None:
    """Return the connection of one conn record's typed fields, or None when it has no entity.

    A record without a usable ``ts``, ``id.orig_h`` or ``id.resp_h`` is counted in
    ``stats.missing_fields``, one between two external hosts in ``stats.both_external``.
    """
    ts = fields.get("ts")
    orig, resp = fields.get("id.orig_h"), fields.get("id.resp_h")
    if not isinstance(ts, datetime) or orig is None or resp is None:
        stats.missing_fields += 1
        return None
    orig_class, resp_class = internal.classify(orig), internal.classify(resp)
    if orig_class is None or resp_class is None:
        stats.missing_fields += 1
        return None

    # The internal side is the entity. When both are internal, the originator is.
    orig_internal, resp_internal = orig_class[1], resp_class[1]
    if not orig_internal and not resp_internal:
        stats.both_external += 1
        return None
    outbound = orig_internal
    entity_class, remote_class = (orig_class, resp_class) if outbound else (resp_class, orig_class)
    remote = remote_class[0] if remote_class[2] else None
    remote_port = fields.get("id.resp_p") if outbound else fields.get("id.orig_p")
    orig_bytes, resp_bytes = fields.get("orig_bytes") or 0, fields.get("resp_bytes") or 0

    stats.connections += 1
    return Connection(
        ts=ts.timestamp() + time_shift_secs,
        entity=entity_class[0],
        peer=remote_class[0],
        remote=remote,
        remote_port=remote_port,
        outbound=outbound,
        bytes_out=orig_bytes if outbound else resp_bytes,
        bytes_in=resp_bytes if outbound else orig_bytes,
        duration=float(fields.get("duration") or 0.0),
        failed=fields.get("conn_state") in FAILED_CONN_STATES,
        source=source,
        line=line,
    )


def conn_value_problem(fields: Mapping[str, Any]) -> tuple[str, str] | None:
    """Return (field, why) for the first value of a conn record that a connection cannot take, or None.

    Zeek writes ports as integers from 0 to 65535, byte counts as non-negative integers, the
    duration as a non-negative number of seconds and the state as a string. A JSON line or a
    TSV header can still declare anything, and such a value would otherwise stop the stream,
    put an impossible port in a window's counters or turn its features negative or NaN.
    Absent values are fine: they mean unknown.
    """
    for name in ("id.orig_p", "id.resp_p"):
        value = fields.get(name)
        if value is not None and (type(value) is not int or not 0 <= value <= MAX_PORT):
            return name, f"port {_shown(value)} is not an integer from 0 to {MAX_PORT}"
    for name in ("orig_bytes", "resp_bytes"):
        value = fields.get(name)
        if value is not None and (type(value) is not int or value < 0):
            return name, f"byte count {_shown(value)} is not a non-negative integer"
    duration = fields.get("duration")
    if duration is not None:
        if type(duration) not in (int, float):
            return "duration", f"duration {_shown(duration)} is not a number"
        try:
            finite = math.isfinite(duration)
        except OverflowError:
            finite = False
        if not finite:
            return "duration", f"duration {_shown(duration)} is not a finite number of seconds"
        if duration < 0:
            return "duration", f"duration {_shown(duration)} is negative"
    state = fields.get("conn_state")
    if state is not None and type(state) is not str:
        return "conn_state", f"state {_shown(state)} is not a string"
    return None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}..."


