"""Deterministic identifiers shared by the agent, the hub and TAXII consumers.

Every id that more than one component must agree on is a UUIDv5 in the fti
namespace, so that the agent and the hub compute the same id from the same name
without talking to each other: a site's identity from its site id, a summary from
(site, round start), an indicator from its STIX pattern. STIX 2.1 (section 2.9)
recommends UUIDv4 for domain objects but allows other versions. A UUIDv5 producer
must use its own namespace and never 6ba7b810-9dad-11d1-80b4-00c04fd430c8, and
FTI_NAMESPACE is our own. The OASIS validator reports such ids under its "uuid-check" (103), so
:mod:`stix_mappings.validation` turns that one check off.

The two extension-definition ids are fixed UUIDv4 literals: they name versions of
the wire format, not things derived from data.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime

from stix_mappings.timestamps import format_timestamp

FTI_NAMESPACE = uuid.UUID("6f1c2a4e-8d3b-5c7a-9e0f-1a2b3c4d5e6f")

COLLECTIONS = ("summaries", "fused-indicators", "feedback", "keys")

# Type name of the round-summary SDO. The "x-<source>-<name>" form passes the OASIS
# validator's strictest custom-prefix check (101) as well as its extensions check.
SUMMARY_TYPE = "x-fti-round-summary"

# extension-definition of the round summary (extension_types ["new-sdo"]), version 2.0.0.
SUMMARY_EXTENSION_ID = "extension-definition--a45ba354-d240-4548-8651-a7578acf97da"

# extension-definition of the fusion details on indicators (["property-extension"]), 1.0.0.
FUSION_EXTENSION_ID = "extension-definition--c1848ec5-a246-4e74-ab7b-64b6837a0093"


# The hub derives the same few collection and site ids for every object it takes in.
@functools.lru_cache(maxsize=1024)
def _uuid5(name: str) -> str:
    return str(uuid.uuid5(FTI_NAMESPACE, name))


def collection_id(name: str) -> str:
    """Return the TAXII collection id of collection ``name`` (one of COLLECTIONS)."""
    return _uuid5("collection:" + name)


def site_identity_id(site_id: str) -> str:
    """Return the id of the STIX identity that stands for site ``site_id``."""
    return "identity--" + _uuid5("site:" + site_id)


def hub_identity_id(hub_name: str) -> str:
    """Return the id of the STIX identity of the hub named ``hub_name``."""
    return "identity--" + _uuid5("hub:" + hub_name)


def summary_id(site_id: str, round_start: datetime) -> str:
    """Return the id of the summary that site ``site_id`` sends for the round starting at ``round_start``.

    The round start enters the name as its STIX timestamp with milliseconds
    ("2024-05-01T10:00:00.000Z"), so equal instants in any time zone give one id.

    Raises
    ------
    TimestampInvalid
        If ``round_start`` is naive.
    """
    iso = format_timestamp(round_start, "round_start")
    return f"{SUMMARY_TYPE}--{_uuid5(f'summary:{site_id}:{iso}')}"


def indicator_id(pattern: str, lifetime: int = 0) -> str:
    """Return the id of the fused indicator for STIX pattern ``pattern``.

    Every version of an indicator keeps this id; versions differ by ``modified``. STIX 2.1
    allows no new version after a revocation, so when an observable returns after its
    indicator was revoked, the hub starts its next ``lifetime`` (1, 2, ...) under a new id.
    The first lifetime's id is the UUIDv5 of the pattern alone.
    """
    if lifetime < 0:
        raise ValueError(f"lifetime must be >= 0; got {lifetime}")
    name = "indicator:" + pattern if lifetime == 0 else f"indicator:{pattern}#lifetime={lifetime}"
    return "indicator--" + _uuid5(name)
