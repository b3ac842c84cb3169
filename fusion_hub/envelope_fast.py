"""Split a TAXII envelope in C where that gives exactly what the strict parser gives.

The strict parser of ``fusion_hub.envelope`` walks the envelope in Python and parses each
member with ``json``, and the digest then encodes each member again. Here msgspec (written in
C) decodes the envelope with each member kept as ``msgspec.Raw``, the member's exact bytes,
decodes each member on its own and writes the RFC 8785 form of plain members. On envelopes of
1,000 STIX indicators that takes about two thirds of the time of the strict parse and the
digest's encoding (docs/benchmarks.md).

msgspec differs from the strict parser in one rule that matters: like most parsers it keeps
the last of repeated keys without a word, where the strict parser rejects the object. A
repeated key is found by counting colons. In JSON text every key is followed by exactly one
colon outside strings, and every other colon lies inside a string. Encoding a decoded member
again writes one colon per key it kept and every colon of the strings it kept, and escapes
none. So the members encoded again, with one colon per envelope key, have as many colons as
the body exactly when no key was dropped, provided the body spells no colon as the escape
``\\u003a``. An envelope with such an escape goes to the strict parser.

The fast path vouches for every member or for none. A repeated key, NaN, bad UTF-8, a lone
surrogate, deep nesting or an unknown envelope member sends the whole body to the strict
parser, which then gives its own results and error messages. An envelope with a bad member
therefore costs two parses, and any other envelope one. Members can be read one by one
(``open_envelope_fast``). Some of those failures then show only part-way or after the last
member, as ``StrictParseNeeded``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import msgspec

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
_ENCODER = msgspec.json.Encoder()
_SORTED_ENCODER = msgspec.json.Encoder(order="sorted")


# One member that the fast path vouches for: its text, its value, whether it is in plain JSON
# form, and its RFC 8785 form when it is. The plain flag means what ``RawObject.plain_json``
# means, but a run of 16 digits in a string also clears it.
FastMember = tuple[str, Any, bool, "bytes | None"]


class StrictParseNeeded(Exception):
    """Raised while members are read one by one: the fast path cannot vouch for the envelope.

    The caller drops what it did with the members read so far and runs the strict parser.
    """


def split_members_fast(
    body: bytes, *, max_depth: int, depth_of: Callable[[Any], int],
    max_objects: int | None = None,
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
    max_objects : int, optional
        Maximum number of members. More make the result None before any member is decoded,
        and the strict parser, which stops at the first member past the limit, reports them.
    """
    envelope = open_envelope_fast(body, max_depth=max_depth, depth_of=depth_of,
                                  max_objects=max_objects)
    if envelope is None:
        return None
    try:
        return list(envelope)
    except StrictParseNeeded:
        return None


def open_envelope_fast(
    body: bytes, *, max_depth: int, depth_of: Callable[[Any], int],
    max_objects: int | None = None,
) -> FastEnvelope | None:
    """Check the envelope as a whole and return its members to read one by one.

    Returns None where the body alone shows that the strict parser must decide. The
    parameters are those of ``split_members_fast``.
    """
    # Bad UTF-8 and escaped colons are left to the strict parser.
    ascii_only = body.isascii()
    if not ascii_only:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    # Escapes are rare, so one search usually rules out both kinds that matter. A search for
    # one byte is much faster than one for two, so the backslash is looked for first.
    escapes = b"\\" in body and b"\\u" in body
    if escapes and (_ESCAPED_COLONS[0] in body or _ESCAPED_COLONS[1] in body):
        return None
    try:
        envelope = _ENVELOPE_DECODER.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    if envelope.objects is msgspec.UNSET or not envelope.objects:
        return None
    if max_objects is not None and len(envelope.objects) > max_objects:
        return None

    # What rules out plain JSON form is looked for in each member only if the body has it.
    doubts = _PlainDoubts(
        non_ascii=not ascii_only,
        surrogate_escape=escapes and (b"\\ud" in body or b"\\uD" in body),
        long_number=body.translate(_DIGITS_TO_ZERO).find(_LONG_NUMBER) != -1,
    )
    # Each envelope key takes one colon, and so does every colon of the "next" string.
    present = [field for field in (envelope.objects, envelope.more, envelope.next)
               if field is not msgspec.UNSET]
    next_colons = envelope.next.count(":") if isinstance(envelope.next, str) else 0
    return FastEnvelope(envelope.objects, doubts, body.count(b":") - len(present) - next_colons,
                        max_depth, depth_of)


class FastEnvelope:
    """The members of an envelope whose body passed the checks of ``open_envelope_fast``.

    Iterating decodes the members one by one and yields each as a ``FastMember``. It raises
    ``StrictParseNeeded`` at the first member that the fast path cannot vouch for, or after
    the last one when the colons show a repeated key.
    """

    def __init__(self, members: list[msgspec.Raw], doubts: _PlainDoubts, member_colons: int,
                 max_depth: int, depth_of: Callable[[Any], int]) -> None:
        self._members = members
        self._doubts = doubts
        self._member_colons = member_colons
        self._max_depth = max_depth
        self._depth_of = depth_of

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[FastMember]:
        # One decoder per pass: its float hook records into this pass's flag.
        floats_seen = [False]

        def note_float(text: str) -> float:
            floats_seen[0] = True
            return float(text)

        decoder = msgspec.json.Decoder(float_hook=note_float)
        doubts = self._doubts
        doubtful = doubts.non_ascii or doubts.surrogate_escape or doubts.long_number
        encoded_colons = 0
        for raw in self._members:
            floats_seen[0] = False
            try:
                value = decoder.decode(raw)
            except (msgspec.DecodeError, RecursionError) as err:
                raise StrictParseNeeded(str(err)) from err
            # The body is valid UTF-8, so each member is too.
            text = str(raw, "utf-8")
            # Every level of nesting opens with a bracket, so only members with many are
            # walked.
            if (text.count("{") + text.count("[") > self._max_depth
                    and self._depth_of(value) > self._max_depth):
                raise StrictParseNeeded("member nested too deeply")
            plain = not floats_seen[0] and (not doubtful or doubts.allow_plain(bytes(raw), text))
            try:
                # For plain JSON, msgspec with sorted keys writes the bytes of RFC 8785, as
                # orjson does for privacy.signing.canonical_json, in about half of orjson's
                # time. The tests compare it with the rfc8785 package.
                encoded = (_SORTED_ENCODER if plain else _ENCODER).encode(value)
            except (msgspec.EncodeError, OverflowError) as err:
                raise StrictParseNeeded(str(err)) from err
            encoded_colons += encoded.count(b":")
            yield text, value, plain, encoded if plain else None

        # Encoding a member again never adds a colon, and drops one with every repeated key.
        # A repeated envelope key drops a whole member list. So the counts are equal only if
        # no key anywhere was repeated.
        if encoded_colons != self._member_colons:
            raise StrictParseNeeded("a key is repeated")


class _PlainDoubts(NamedTuple):
    """Signs against plain JSON form that occur anywhere in the envelope's body.

    Plain JSON form is as in ``fusion_hub.envelope``: no fraction or exponent (seen by the
    float hook), no integer of more than 15 digits, and nothing beyond the Basic Multilingual
    Plane, raw or escaped as a surrogate pair.
    """

    non_ascii: bool
    surrogate_escape: bool
    long_number: bool

    def allow_plain(self, member: bytes, text: str) -> bool:
        """Return whether ``member`` shows none of the signs, looking only for those present."""
        if self.long_number and member.translate(_DIGITS_TO_ZERO).find(_LONG_NUMBER) != -1:
            return False
        if self.non_ascii and not text.isascii() and max(text) > "\uffff":
            return False
        return not (self.surrogate_escape and (b"\\ud" in member or b"\\uD" in member))
