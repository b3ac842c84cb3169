"""Detector families: which source feeds which feature windows, scored by which detector.

A family is one kind of behaviour with its own feature vector and its own detector:

===============  ==============================================  =============================
family           sources                                         entity
===============  ==============================================  =============================
network          Zeek conn (and dns, http, ssl, files, notice,    internal endpoint of the
                 weird as evidence), Suricata flow (and dns,      connection
                 http, tls as evidence)
authentication   sshd in auth.log, Zeek ssh                      sshd's host; for Zeek, the
                                                                 internal endpoint
process          Sysmon                                           ``Computer``
===============  ==============================================  =============================

Each source type feeds the families in :data:`DEFAULT_FAMILIES` unless its configuration
lists others (a Zeek source may add ``authentication`` to read ssh.log). One round summary
covers every configured family. The round's epsilon and delta are split equally between the
configured families, whether or not a family saw data in the round, so the split reveals
nothing about the data (basic composition over the families).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stix_mappings.summary import FAMILIES

__all__ = ["ALLOWED_FAMILIES", "DEFAULT_FAMILIES", "FAMILIES", "FamilySpec", "configured_families"]

# Families each source type feeds by default, and the ones it can feed at all.
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "zeek": ("network",),
    "suricata": ("network",),
    "sshd": ("authentication",),
    "sysmon": ("process",),
}
ALLOWED_FAMILIES: dict[str, tuple[str, ...]] = {
    "zeek": ("network", "authentication"),
    "suricata": ("network",),
    "sshd": ("authentication",),
    "sysmon": ("process",),
}


@dataclass(frozen=True)
class FamilySpec:
    """A family's feature vector: names, which are log-scaled, and the schema version."""

    name: str
    feature_names: tuple[str, ...]
    log_scaled: frozenset[str]
    feature_schema_version: str

    @property
    def log_columns(self) -> tuple[bool, ...]:
        return tuple(name in self.log_scaled for name in self.feature_names)


def configured_families(sources: Iterable[object]) -> tuple[str, ...]:
    """Return the families the sources feed, in the order of :data:`FAMILIES`."""
    found: set[str] = set()
    for source in sources:
        found.update(families_of_source(source))
    return tuple(family for family in FAMILIES if family in found)


def families_of_source(source: object) -> tuple[str, ...]:
    """Return the families one configured source feeds: its own list, or its type's default."""
    listed = tuple(getattr(source, "families", ()) or ())
    return listed or DEFAULT_FAMILIES.get(getattr(source, "type", ""), ())
