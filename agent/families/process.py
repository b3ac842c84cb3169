"""The process family: Sysmon activity per host window.

The entity is the event's ``Computer``. Features count what the host did (processes started,
connections, DNS queries, files, registry changes, handles opened on other processes) and how
varied it was (distinct images, parents and destinations). User names, command lines and
paths stay on the site.

Evidence: a ``network_connect`` event's ``DestinationIp`` and ``DestinationHostname``, a
``dns_query`` event's ``QueryName``, and the image hash of a ``process_create`` event
(``Hashes``, written ``SHA1=…,MD5=…,SHA256=…,IMPHASH=…``; SHA-256 when present, else SHA-1,
else MD5, so one image counts once).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agent.events import Event
from agent.families import FamilySpec
from agent.families.windows import WindowTable, counter_from
from agent.features import Window
from agent.observables import ObservableFilter

__all__ = ["PROCESS", "ProcessWindows", "observables_of_sysmon"]

# Event kinds counted by each feature (see agent.sysmon.EVENT_KINDS).
_COUNTED = {
    "process_create_count": ("process_create",),
    "network_connect_count": ("network_connect",),
    "dns_query_count": ("dns_query",),
    "file_create_count": ("file_create", "file_create_stream_hash", "file_delete", "file_delete_detected"),
    "registry_event_count": ("registry_object", "registry_value_set", "registry_rename"),
    "process_access_count": ("process_access", "create_remote_thread", "process_tampering"),
}

PROCESS = FamilySpec(
    name="process",
    feature_names=("event_count", *_COUNTED, "distinct_images", "distinct_parent_images", "distinct_destinations"),
    log_scaled=frozenset({"event_count", *_COUNTED, "distinct_images", "distinct_parent_images",
                          "distinct_destinations"}),
    feature_schema_version="process-1",
)


@dataclass
class ProcessAccumulator:
    entity: str
    start: int
    kinds: Counter[str] = field(default_factory=Counter)
    images: set[str] = field(default_factory=set)
    parents: set[str] = field(default_factory=set)
    destinations: set[str] = field(default_factory=set)
    remotes: Counter[str] = field(default_factory=Counter)


class ProcessWindows(WindowTable[ProcessAccumulator]):
    """Open process windows."""

    def add(self, event: Event, observables: ObservableFilter) -> None:
        computer = event.fields.get("Computer")
        if not isinstance(computer, str) or not computer:
            return
        accumulator = self.accumulator(computer, event.ts.timestamp())
        accumulator.kinds[event.kind] += 1
        for name, target in (("Image", accumulator.images), ("ParentImage", accumulator.parents),
                             ("DestinationIp", accumulator.destinations)):
            value = event.fields.get(name)
            if isinstance(value, str) and value:
                target.add(value)
        accumulator.remotes.update(observables_of_sysmon(event, observables))

    def new_accumulator(self, entity: str, start: int) -> ProcessAccumulator:
        return ProcessAccumulator(entity, start)

    def close_accumulator(self, accumulator: ProcessAccumulator) -> Window | None:
        total = sum(accumulator.kinds.values())
        if total == 0:
            return None
        counts = [float(sum(accumulator.kinds[kind] for kind in kinds)) for kinds in _COUNTED.values()]
        features = (float(total), *counts, float(len(accumulator.images)), float(len(accumulator.parents)),
                    float(len(accumulator.destinations)))
        return Window(accumulator.entity, accumulator.start, features, dict(accumulator.remotes))

    def dump_accumulator(self, accumulator: ProcessAccumulator) -> Any:
        return {"e": accumulator.entity, "s": accumulator.start, "k": dict(accumulator.kinds),
                "i": sorted(accumulator.images), "p": sorted(accumulator.parents),
                "d": sorted(accumulator.destinations), "r": dict(accumulator.remotes)}

    def load_accumulator(self, item: Any) -> ProcessAccumulator:
        return ProcessAccumulator(item["e"], int(item["s"]), counter_from(item["k"]), set(item["i"]), set(item["p"]),
                                  set(item["d"]), counter_from(item["r"]))

    def key_of(self, accumulator: ProcessAccumulator) -> tuple[str, int]:
        return accumulator.entity, accumulator.start


def observables_of_sysmon(event: Event, observables: ObservableFilter) -> list[str]:
    """Return the observable keys of one Sysmon event that may leave the site."""
    fields = event.fields
    found: list[str | None] = []
    if event.kind == "network_connect":
        found.append(observables.address(fields.get("DestinationIp")))
        found.append(observables.domain(fields.get("DestinationHostname")))
    elif event.kind == "dns_query":
        found.append(observables.domain(fields.get("QueryName")))
    elif event.kind == "process_create":
        found.append(_image_hash(fields.get("Hashes"), observables))
    return list(dict.fromkeys(key for key in found if key is not None))


def _image_hash(value: object, observables: ObservableFilter) -> str | None:
    if not isinstance(value, str):
        return None
    hashes = {}
    for part in value.split(","):
        name, _, digest = part.partition("=")
        hashes[name.strip().upper()] = digest.strip()
    for name, kind in (("SHA256", "sha256"), ("SHA1", "sha1"), ("MD5", "md5")):
        if name in hashes:
            return observables.fingerprint(kind, hashes[name])
    return None
