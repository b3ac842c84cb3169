"""The fti wire contract: STIX 2.1 objects exchanged between sites, the hub and SIEMs.

Modules: ``ids`` (shared deterministic ids), ``summary`` (the round-summary SDO),
``indicator`` (fused indicators, identities, extension definitions), ``patterns``
(observable to STIX pattern), ``validation`` (OASIS validator and intake checks),
``ecs`` and ``splunk`` (SIEM mappings). The wire format is described in
docs/protocol.md.
"""
