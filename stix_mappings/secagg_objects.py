"""Build and check the custom STIX 2.1 objects of secure aggregation in the hub's ``keys`` collection.

Two new SDO types, each defined by its own extension-definition (``extension_types:
["new-sdo"]``, STIX 2.1 section 7.3) and checked against a JSON schema shipped in
``schemas/``, as the round summary is:

``x-fti-secagg-message`` (schema ``secagg-message.json``)
    One message of a site, at stage ``join``, ``advertise_keys``, ``share_keys``,
    ``mask_input``, ``consistency_check``, ``unmask`` or ``reveal``. The hub stores key
    advertisements and shares in ``keys`` so the other sites can read them. It consumes the
    other stages and never stores them, so no other site or consumer reads them. It relays
    the consistency signatures in the round object instead.
    ``created_by_ref`` is the sender's identity, and the id is a UUIDv5 of round, stage,
    sender and recipient, so a resend is the same object.
``x-fti-secagg-round`` (schema ``secagg-round.json``)
    The hub's public state of one round: its parameters with every invited site's enrolled
    Ed25519 verify key, the stage, the sites taking part in it, at the unmask stage the
    survivors' consistency signatures and, once the sums are unmasked, the heavy buckets of
    the count-min sketch. Each
    stage is a new version of one object whose id is a UUIDv5 of the round.

The payload of a message is the JSON form of :mod:`privacy.secagg.messages`. Its byte
fields are checked there when the hub or a site parses it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from stix_mappings.ids import FTI_NAMESPACE, site_identity_id
from stix_mappings.patterns import NETWORK_OBSERVABLE_TYPES
from stix_mappings.indicator import _extension_definition
from stix_mappings.schema_validation import schema_errors
from stix_mappings.timestamps import format_timestamp

__all__ = [
    "HUB_ONLY_STAGES",
    "MESSAGE_STAGES",
    "ROUND_STAGES",
    "SECAGG_MESSAGE_EXTENSION_ID",
    "SECAGG_MESSAGE_TYPE",
    "SECAGG_ROUND_EXTENSION_ID",
    "SECAGG_ROUND_TYPE",
    "build_secagg_message",
    "build_secagg_round",
    "secagg_extension_definitions",
    "secagg_message_id",
    "secagg_round_id",
    "validate_secagg_object",
]

SECAGG_MESSAGE_TYPE = "x-fti-secagg-message"
SECAGG_ROUND_TYPE = "x-fti-secagg-round"
# Fixed UUIDv4 literals: they name version 1.0.0 of the two wire formats.
SECAGG_MESSAGE_EXTENSION_ID = "extension-definition--fb1488f6-727f-4405-b97f-82ffbe0692ed"
SECAGG_ROUND_EXTENSION_ID = "extension-definition--25380daf-104b-48bf-a6c0-9d1af4c03cd0"

MESSAGE_STAGES = ("join", "advertise_keys", "share_keys", "mask_input", "consistency_check", "unmask", "reveal")
# Stages whose messages the hub consumes and never stores in the collection. A masked
# vector, revealed shares or a reveal are for the hub alone. Consistency signatures are
# public but reach the sites through the round object.
HUB_ONLY_STAGES = frozenset({"mask_input", "consistency_check", "unmask", "reveal"})
ROUND_STAGES = ("advertise_keys", "share_keys", "mask_input", "consistency_check", "unmask", "reveal", "done",
                "aborted")

_SCHEMAS = {SECAGG_MESSAGE_TYPE: "secagg-message.json", SECAGG_ROUND_TYPE: "secagg-round.json"}


def secagg_round_id(round_id: str) -> str:
    """Return the id of the hub's round object for round ``round_id`` (its start timestamp)."""
    return f"{SECAGG_ROUND_TYPE}--{uuid.uuid5(FTI_NAMESPACE, 'secagg-round:' + round_id)}"


def secagg_message_id(round_id: str, stage: str, sender: str, recipient: str = "") -> str:
    """Return the id of a site's message for one slot of a round."""
    name = "\x00".join(("secagg-message", round_id, stage, sender, recipient))
    return f"{SECAGG_MESSAGE_TYPE}--{uuid.uuid5(FTI_NAMESPACE, name)}"


def build_secagg_message(
    *, round_id: str, stage: str, sender: str, payload: Mapping[str, Any], created: datetime,
    recipient: str | None = None,
) -> dict[str, Any]:
    """Return a site's message as an ``x-fti-secagg-message`` created by the site's identity.

    Raises
    ------
    ValueError
        If the object does not pass the message schema.
    """
    timestamp = format_timestamp(created, "created")
    obj: dict[str, Any] = {
        "type": SECAGG_MESSAGE_TYPE,
        "spec_version": "2.1",
        "id": secagg_message_id(round_id, stage, sender, recipient or ""),
        "created": timestamp,
        "modified": timestamp,
        "created_by_ref": site_identity_id(sender),
        "extensions": {SECAGG_MESSAGE_EXTENSION_ID: {"extension_type": "new-sdo"}},
        "round_id": round_id,
        "stage": stage,
        "sender": sender,
        "payload": dict(payload),
    }
    if recipient is not None:
        obj["recipient"] = recipient
    _raise_on_errors(obj)
    return obj


def build_secagg_round(
    *, round_id: str, created_by_ref: str, created: datetime, modified: datetime, stage: str,
    site_ids: Sequence[str], threshold: int, min_sites: int, vector_length: int, histogram_bins: int,
    families: Sequence[str], sketch_rows: int, sketch_width: int, participants: Sequence[str],
    neighbours_per_site: int | None = None, heavy_buckets: Sequence[int] | None = None,
    reason: str | None = None, verify_keys: Mapping[str, str] | None = None,
    consistency_signatures: Mapping[str, str] | None = None, privacy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return one version of the hub's ``x-fti-secagg-round`` object.

    ``privacy`` holds the privacy settings every site must use, keyed by the names of the
    agent's ``privacy`` section. The hub always sets it; it is optional only so that the
    ``aborted`` version of a round object stored by an older hub can still be written.

    ``verify_keys`` and ``consistency_signatures`` map site ids to standard base64 of an
    Ed25519 public key and of a signature of the survivor set.

    Raises
    ------
    ValueError
        If the object does not pass the round schema.
    """
    obj: dict[str, Any] = {
        "type": SECAGG_ROUND_TYPE,
        "spec_version": "2.1",
        "id": secagg_round_id(round_id),
        "created": format_timestamp(created, "created"),
        "modified": format_timestamp(modified, "modified"),
        "created_by_ref": created_by_ref,
        "extensions": {SECAGG_ROUND_EXTENSION_ID: {"extension_type": "new-sdo"}},
        "round_id": round_id,
        "stage": stage,
        "site_ids": sorted(site_ids),
        "threshold": threshold,
        "min_sites": min_sites,
        "vector_length": vector_length,
        "histogram_bins": histogram_bins,
        "families": list(families),
        "sketch_rows": sketch_rows,
        "sketch_width": sketch_width,
    }
    # STIX 2.1 forbids empty lists, so an empty one is left out.
    if participants:
        obj["participants"] = sorted(participants)
    if verify_keys:
        obj["verify_keys"] = dict(sorted(verify_keys.items()))
    if consistency_signatures:
        obj["consistency_signatures"] = dict(sorted(consistency_signatures.items()))
    if privacy is not None:
        obj["privacy"] = dict(sorted(privacy.items()))
    if neighbours_per_site is not None:
        obj["neighbours_per_site"] = neighbours_per_site
    if heavy_buckets:
        obj["heavy_buckets"] = sorted(heavy_buckets)
    if reason:
        obj["reason"] = reason
    _raise_on_errors(obj)
    return obj


def validate_secagg_object(obj: Mapping[str, Any]) -> list[str]:
    """Return the schema errors of a secure aggregation object, an empty list when it is valid.

    Beyond the schema, a message must be created by its sender's identity, and a
    ``share_keys`` message must name a recipient other than its sender.
    """
    schema = _SCHEMAS.get(str(obj.get("type")))
    if schema is None:
        return [f"type must be {SECAGG_MESSAGE_TYPE} or {SECAGG_ROUND_TYPE}; got {obj.get('type')!r}"]
    errors = schema_errors(schema, dict(obj))
    if errors or obj["type"] != SECAGG_MESSAGE_TYPE:
        return errors
    if obj["created_by_ref"] != site_identity_id(obj["sender"]):
        errors.append(f"created_by_ref must be the identity of sender {obj['sender']}; "
                      f"got {obj['created_by_ref']}")
    if obj["id"] != secagg_message_id(obj["round_id"], obj["stage"], obj["sender"], obj.get("recipient", "")):
        errors.append("id must be the UUIDv5 of round_id, stage, sender and recipient")
    if obj["stage"] == "share_keys" and obj.get("recipient") in (None, obj["sender"]):
        errors.append("a share_keys message needs a recipient other than its sender")
    return errors


def secagg_extension_definitions(created_by_ref: str) -> list[dict[str, Any]]:
    """Return the extension-definition objects of the two secure aggregation types, version 1.0.0."""
    return [
        _extension_definition(
            SECAGG_MESSAGE_EXTENSION_ID, created_by_ref,
            name="fti secure aggregation message",
            description=(
                "New SDO x-fti-secagg-message: one message of a site in a secure aggregation "
                "round (Bonawitz et al., CCS 2017): key advertisement, encrypted Shamir shares, "
                "masked input, unmask shares or the reveal of heavy observables."
            ),
            schema_name="secagg-message", extension_type="new-sdo",
        ),
        _extension_definition(
            SECAGG_ROUND_EXTENSION_ID, created_by_ref,
            name="fti secure aggregation round",
            description=(
                "New SDO x-fti-secagg-round: the hub's public state of one secure aggregation "
                "round: parameters, current stage, participating sites and heavy sketch buckets."
            ),
            schema_name="secagg-round", extension_type="new-sdo",
        ),
    ]


def _raise_on_errors(obj: Mapping[str, Any]) -> None:
    errors = validate_secagg_object(obj)
    if errors:
        raise ValueError(f"{obj.get('id')}: " + "; ".join(errors))


def sketch_key(family: str, observable_type: str, value: str) -> str:
    """Return the count-min sketch key under which sites hash one family's observable.

    Addresses, domain names and URLs are their own key; fingerprints and hashes are
    ``"<kind>:<hex>"``, as the agent keeps them. The family prefix makes the same value
    seen by two families count in each.
    """
    key = value if observable_type in NETWORK_OBSERVABLE_TYPES else f"{observable_type}:{value}"
    return f"{family}/{key}"
