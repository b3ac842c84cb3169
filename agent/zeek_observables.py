"""Turn Zeek application logs into observations: the site's entity and the external observables.

The logs and what each contributes (names as Zeek's base and policy scripts write them):

=========  ==========================================================================
log        observables
=========  ==========================================================================
dns        ``query`` as a domain name
http       ``host`` as a domain name, and ``http://host[:port]uri`` as a URL
ssl        ``server_name`` as a domain name, ``ja3`` and ``ja3s`` (from the ja3
           package, where installed), ``cert_chain_fps`` as certificate fingerprints
files      ``sha256``, else ``sha1``, else ``md5``; for a certificate (MIME type
           ``application/x-x509-*``) the hash is the certificate's fingerprint
x509       ``fingerprint`` (Zeek 4.2 and later), with no entity: x509 has no endpoints
notice     the remote address of ``id`` or of ``src``/``dst``
weird      the remote address of ``id``
ssh        the remote address; ``auth_success`` and ``auth_attempts`` feed the
           authentication family
=========  ==========================================================================

The entity is oriented as for ``conn`` (:mod:`agent.network`): the endpoint inside the site's
internal networks, the originator when both are. ``files`` records of Zeek before 5.0 name
their endpoints in the sets ``tx_hosts`` and ``rx_hosts`` instead of ``id``. A record with no
internal endpoint has no entity and feeds no window. Observables that must stay on the site are
dropped by :class:`agent.observables.ObservableFilter`.

Fingerprint lengths decide the hash: 64 hex digits are SHA-256 (Zeek's default since 4.2), 40
are SHA-1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from agent.observables import ObservableFilter
from agent.zeek_records import ZeekRecord

__all__ = ["OBSERVED_LOGS", "ObservationStats", "ZeekObservation", "observe_records"]

OBSERVED_LOGS = frozenset({"dns", "http", "ssl", "files", "notice", "ssh", "weird", "x509"})


@dataclass(frozen=True, slots=True)
class ZeekObservation:
    """One application-log record seen from the site.

    Attributes
    ----------
    ts : float
        Event time, epoch seconds.
    log_path : str
        The Zeek log (``dns``, ``http`` and so on).
    entity : str or None
        The internal endpoint; None when the record names none (x509, external traffic).
    observables : tuple of str
        Observable keys (:mod:`agent.observables`) that may leave the site.
    fields : dict
        For ``ssh`` only: ``auth_success`` (bool or None) and ``auth_attempts`` (int).
    """

    ts: float
    log_path: str
    entity: str | None
    observables: tuple[str, ...]
    source: str
    line: int
    fields: dict = field(default_factory=dict)


@dataclass
class ObservationStats:
    """Counts by log path of records observed, records without an entity and observables kept."""

    records: dict[str, int] = field(default_factory=dict)
    without_entity: dict[str, int] = field(default_factory=dict)
    observables: dict[str, int] = field(default_factory=dict)

    def count(self, observation: ZeekObservation) -> None:
        path = observation.log_path
        self.records[path] = self.records.get(path, 0) + 1
        if observation.entity is None:
            self.without_entity[path] = self.without_entity.get(path, 0) + 1
        self.observables[path] = self.observables.get(path, 0) + len(observation.observables)


def observe_records(records: Iterable[ZeekRecord], observables: ObservableFilter, *,
                    stats: ObservationStats | None = None) -> Iterator[ZeekObservation]:
    """Yield an observation for each record of an observed log that has a valid ``ts``."""
    for record in records:
        if record.log_path not in OBSERVED_LOGS:
            continue
        ts = record.fields.get("ts")
        if not isinstance(ts, datetime):
            continue
        observation = observe_record(record, observables, ts.timestamp())
        if stats is not None:
            stats.count(observation)
        yield observation


def observe_record(record: ZeekRecord, observables: ObservableFilter, ts: float) -> ZeekObservation:
    """Return the entity and the shareable observables of one record of an observed log."""
    fields, path = record.fields, record.log_path
    entity, remote = _orient(fields, observables)
    found: list[str | None] = []
    extra: dict = {}

    if path == "dns":
        found.append(observables.domain(fields.get("query")))
    elif path == "http":
        host = fields.get("host")
        found.append(observables.domain(host))
        found.append(observables.url(host, fields.get("uri"), port=fields.get("id.resp_p")))
    elif path == "ssl":
        found.append(observables.domain(fields.get("server_name")))
        found.append(observables.fingerprint("ja3", fields.get("ja3")))
        found.append(observables.fingerprint("ja3s", fields.get("ja3s")))
        found.extend(_certificate(observables, fp) for fp in _strings(fields.get("cert_chain_fps")))
    elif path == "files":
        if entity is None:
            entity = _internal_of(observables, [*_strings(fields.get("tx_hosts")), *_strings(fields.get("rx_hosts"))])
        # One hash per file, the strongest Zeek computed, so that one file counts once against
        # the entity's observable bound.
        mime = fields.get("mime_type")
        certificate = isinstance(mime, str) and mime.startswith("application/x-x509")
        for name in ("sha256", "sha1", "md5"):
            kind = f"x509-{name}" if certificate else name
            key = observables.fingerprint(kind, fields.get(name)) if kind != "x509-md5" else None
            if key is not None:
                found.append(key)
                break
    elif path == "x509":
        found.append(_certificate(observables, fields.get("fingerprint")))
    elif path == "notice":
        if entity is None:
            entity, remote = _orient({"id.orig_h": fields.get("src"), "id.resp_h": fields.get("dst")}, observables)
        found.append(remote)
    elif path in ("weird", "ssh"):
        found.append(remote)
        if path == "ssh":
            attempts = fields.get("auth_attempts")
            extra = {"auth_success": fields.get("auth_success"),
                     "auth_attempts": attempts if isinstance(attempts, int) and attempts > 0 else 0}

    kept = tuple(dict.fromkeys(key for key in found if key is not None))
    return ZeekObservation(ts, path, entity, kept if entity is not None else (), record.source, record.line, extra)


def _orient(fields: dict, observables: ObservableFilter) -> tuple[str | None, str | None]:
    """Return (entity, shareable remote address) for the record's ``id`` endpoints."""
    internal = observables.internal
    orig, resp = internal.classify(fields.get("id.orig_h")), internal.classify(fields.get("id.resp_h"))
    if orig is not None and orig[1]:
        return orig[0], resp[0] if resp is not None and resp[2] else None
    if resp is not None and resp[1]:
        return resp[0], orig[0] if orig is not None and orig[2] else None
    return None, None


def _internal_of(observables: ObservableFilter, hosts: list[str]) -> str | None:
    for host in hosts:
        classified = observables.internal.classify(host)
        if classified is not None and classified[1]:
            return classified[0]
    return None


def _certificate(observables: ObservableFilter, value: object) -> str | None:
    if not isinstance(value, str):
        return None
    kind = "x509-sha256" if len(value.replace(":", "")) == 64 else "x509-sha1"
    return observables.fingerprint(kind, value)


def _strings(value: object) -> list[str]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return [item for item in value if isinstance(item, str)]
    return []
