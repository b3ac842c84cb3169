"""Split a TAXII envelope in C where that gives exactly what the strict parser gives.

The strict parser of ``fusion_hub.envelope`` walks the envelope in Python and parses each
member with ``json``. It costs about 10 µs per STIX object, a third of the hub's budget for
adding one. Here msgspec (written in C) decodes the envelope with each member kept as
``msgspec.Raw``, the member's exact bytes, and then decodes each member on its own.

msgspec differs from the strict parser in one rule that matters: like most parsers it keeps
the last of repeated keys without a word, where the strict parser rejects the object. A
repeated key is found by counting colons. In JSON text every key is followed by exactly one
colon outside strings, and every other colon lies inside a string. Encoding the decoded value
again writes one colon per key it kept and every colon of the strings it kept, and escapes
none. So the encoded value has as many colons as the member's text exactly when no key was
dropped, provided the text spells no colon as the escape ``\\u003a``. An envelope with such
an escape goes to the strict parser.

The fast path vouches for every member or for none. A repeated key, NaN, bad UTF-8, a lone
surrogate, deep nesting or an unknown envelope member sends the whole body to the strict
parser, which then gives its own results and error messages. An envelope with a bad member
therefore costs two parses, and any other envelope one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import orjson

# A colon written as an escape, which the colon count cannot see.
_ESCAPED_COLONS = (b"\\u003a", b"\\u003A")

# Maps every decimal digit to "0", so that a run of 16 digits shows as 16 zeros.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
# Integers of up to 15 digits are below 2^53, the largest that RFC 8785 writes exactly.
_LONG_NUMBER = b"0" * 16


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """The members of a TAXII 2.1 envelope (section 3.7) that the fast path accepts."""

    objects: list[msgspec.Raw] | msgspec.UnsetType = msgspec.UNSET
    more: bool | msgspec.UnsetType = msgspec.UNSET
    next: str | msgspec.UnsetType = msgspec.UNSET


_ENVELOPE_DECODER = msgspec.json.Decoder(_Envelope)


# One member that the fast path vouches for: its text, its value, whether it is in plain JSON
# form, and its RFC 8785 form written by orjson with sorted keys when it is. The plain flag
# means what ``RawObject.plain_json`` means, but a run of 16 digits in a string also clears it.
FastMember = tuple[str, Any, bool, "bytes | None"]


def split_members_fast(
    body: bytes, *, max_depth: int, depth_of: Callable[[Any], int]
) -> list[FastMember] | None:
    """Return the members of the envelope, or None if the strict parser must decide.

    Parameters
    ----------
    body : bytes
        The request body.
    max_depth : int
        Deepest nesting of objects and arrays accepted in one member. A deeper member makes
        the result None.
    depth_of : callable
        Returns the nesting depth of a decoded value.
    """
    # Bad UTF-8 and escaped colons are left to the strict parser.
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if _ESCAPED_COLONS[0] in body or _ESCAPED_COLONS[1] in body:
        return None
    try:
        envelope = _ENVELOPE_DECODER.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    if envelope.objects is msgspec.UNSET or not envelope.objects:
        return None

    # One decoder per call: its float hook records into this call's flag.
    floats_seen = [False]

    def note_float(text: str) -> float:
        floats_seen[0] = True
        return float(text)

    decoder = msgspec.json.Decoder(float_hook=note_float)
    members: list[FastMember] = []
    member_colons = 0
    for raw in envelope.objects:
        member = bytes(raw)
        floats_seen[0] = False
        try:
            value = decoder.decode(member)
        except (msgspec.DecodeError, RecursionError):
            return None
        # Every level of nesting opens with a bracket, so only members with many are walked.
        if member.count(b"{") + member.count(b"[") > max_depth and depth_of(value) > max_depth:
            return None
        text = member.decode("utf-8")
        encoded, canonical, plain = _encode(value, member, text, floats_seen[0])
        if encoded is None:
            return None
        colons = member.count(b":")
        if encoded.count(b":") != colons:
            return None
        member_colons += colons
        members.append((text, value, plain, canonical))

    # The envelope's own keys take one colon each, and a repeated envelope key one more.
    present = [field for field in (envelope.objects, envelope.more, envelope.next)
               if field is not msgspec.UNSET]
    next_colons = envelope.next.count(":") if isinstance(envelope.next, str) else 0
    if body.count(b":") != len(present) + member_colons + next_colons:
        return None
    return members


def _encode(
    value: Any, member: bytes, text: str, floats_seen: bool
) -> tuple[bytes | None, bytes | None, bool]:
    """Return the value encoded again, its RFC 8785 form if plain, and whether it is plain.

    The first item is None when the value cannot be encoded, which the caller treats as a
    member it cannot vouch for.
    """
    # Plain JSON form as in fusion_hub.envelope: no fraction or exponent, no integer of more
    # than 15 digits, nothing beyond the Basic Multilingual Plane, raw or escaped.
    plain = (not floats_seen
             and member.translate(_DIGITS_TO_ZERO).find(_LONG_NUMBER) == -1
             and (text.isascii() or max(text) <= "\uffff")
             and b"\\ud" not in member and b"\\uD" not in member)
    try:
        if plain:
            canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
            return canonical, canonical, True
        return msgspec.json.encode(value), None, False
    except (orjson.JSONEncodeError, msgspec.EncodeError, OverflowError):
        return None, None, False
