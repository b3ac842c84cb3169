"""STIX form of the secure aggregation messages that sites exchange through the ``keys`` collection.

Key advertisements and encrypted shares go from site to site. The hub's ``keys``
collection carries them: every enrolled site may post there and read there, and the
hub's intake accepts an object only when its ``created_by_ref`` is the poster's own
identity. A site therefore cannot post keys in another site's name, and
:func:`message_from_stix` checks that the sender named inside the message is the site whose
identity created the object.

Each message is one custom STIX 2.1 object of type ``x-fti-secagg-message``. Its id is a
UUIDv5 of round, stage, sender and recipient, so a resend is the same object and a second,
different message for the same slot is visible as a new version of it. Encrypted shares are
readable by every site but open only for their recipient. Masked inputs and unmask
responses are meant for the hub alone and have no STIX form here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from privacy.secagg.errors import MessageRejected
from privacy.secagg.messages import EncryptedShare, KeyAdvertisement

__all__ = ["MESSAGE_TYPE", "message_from_stix", "message_to_stix"]

MESSAGE_TYPE = "x-fti-secagg-message"
_NAMESPACE = uuid.UUID("0b6a3f4e-58a4-5c53-9f67-5d1c2a6e2f10")
_STAGES = {"advertise_keys": KeyAdvertisement, "share_keys": EncryptedShare}


def message_to_stix(
    message: KeyAdvertisement | EncryptedShare, *, creator_identity: str, created: datetime
) -> dict[str, Any]:
    """Wrap a message as a STIX object created by the sending site's identity.

    Parameters
    ----------
    message : KeyAdvertisement or EncryptedShare
        The message to send.
    creator_identity : str
        STIX identity id of the sending site (``stix_mappings.ids.site_identity_id``).
    created : datetime
        Creation time, timezone-aware.
    """
    if isinstance(message, KeyAdvertisement):
        stage, sender, recipient = "advertise_keys", message.site_id, ""
    else:
        stage, sender, recipient = "share_keys", message.sender, message.recipient
    timestamp = created.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    name = "\x00".join((message.round_id, stage, sender, recipient))
    return {
        "type": MESSAGE_TYPE,
        "spec_version": "2.1",
        "id": f"{MESSAGE_TYPE}--{uuid.uuid5(_NAMESPACE, name)}",
        "created": timestamp,
        "modified": timestamp,
        "created_by_ref": creator_identity,
        "round_id": message.round_id,
        "stage": stage,
        "payload": message.to_dict(),
    }


def message_from_stix(
    obj: Mapping[str, Any], *, identity_of: Callable[[str], str]
) -> KeyAdvertisement | EncryptedShare:
    """Parse an ``x-fti-secagg-message`` object and check who created it.

    Parameters
    ----------
    obj : mapping
        The STIX object as read from the collection.
    identity_of : callable
        Maps a site id to its STIX identity id.

    Raises
    ------
    MessageRejected
        If the object is not a secure aggregation message, its payload is malformed, or
        it was created by another identity than its sender's.
    """
    stage = obj.get("stage")
    payload = obj.get("payload")
    if obj.get("type") != MESSAGE_TYPE or stage not in _STAGES or not isinstance(payload, Mapping):
        raise MessageRejected("read_keys", str(obj.get("id", "?")),
                              f"not an {MESSAGE_TYPE} object with a known stage and a payload")
    message = _STAGES[stage].from_dict(payload)
    sender = message.site_id if isinstance(message, KeyAdvertisement) else message.sender
    if obj.get("created_by_ref") != identity_of(sender) or obj.get("round_id") != message.round_id:
        raise MessageRejected(stage, sender,
                              f"object created by {obj.get('created_by_ref')!r}, not by the sender's identity")
    return message
