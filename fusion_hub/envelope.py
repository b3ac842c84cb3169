"""Split a TAXII envelope into its objects while keeping each object's exact JSON text.

The hub serves objects back exactly as they were posted: numbers keep their spelling
(``12.70`` stays ``12.70``), timestamps keep their precision, keys keep their order.
``json.loads`` cannot give the source text of a value, so the envelope's outer object and its
``objects`` array are walked here and ``JSONDecoder.raw_decode`` parses each member, which
returns where the member ends.

The parser is stricter than ``json.loads`` on purpose. It rejects a key repeated inside an
object, because parsers disagree on which value wins, so a signature could cover one value
while a consumer reads another. It also rejects ``NaN`` and ``Infinity``, which are not JSON
(RFC 8259). Such an object fails alone. Only JSON that cannot be split into members fails the
whole envelope.

``split_envelope`` first tries the C path of ``fusion_hub.envelope_fast``, which returns the
same members for every envelope it vouches for, and otherwise runs the strict parser here
(``split_envelope_strict``). ``read_envelope`` gives the same objects one by one, to a caller
that stores them while the rest are still being split.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple

from fusion_hub.envelope_fast import FastEnvelope, StrictParseNeeded, open_envelope_fast
from fusion_hub.errors import EnvelopeInvalid, EnvelopeTooManyObjects

_WHITESPACE = " \t\n\r"

# Deepest nesting of objects and arrays accepted in one posted object, the object itself
# counting as one level. STIX objects nest a few levels (a summary's evidence is three), and
# the checks after parsing (schema, RFC 8785 canonical form) recurse once per level.
MAX_MEMBER_DEPTH = 64


class RawObject(NamedTuple):
    """One member of the envelope's ``objects`` array.

    ``value`` is the parsed member, or None when the strict parse failed for the reason in
    ``error``. ``plain_json`` is True when the text shows that orjson with sorted keys writes
    ``value`` in RFC 8785 form (see ``privacy.signing.canonical_json``). False means unknown.
    ``canonical`` is that RFC 8785 form when the parser has already written it. A named tuple
    rather than a frozen dataclass, because it is built several times faster.
    """

    text: str
    value: Any
    error: str | None = None
    plain_json: bool = False
    canonical: bytes | None = None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        repeated = next(key for key, count in counts.items() if count > 1)
        raise ValueError(f"key {repeated!r} appears twice in one object")
    return result


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


# The lenient decoder finds where a member ends, and _MemberDecoder judges the member alone.
_DECODER = json.JSONDecoder()

# Integers of up to 15 digits are below 2^53, the largest that RFC 8785 writes exactly.
_MAX_PLAIN_INTEGER_DIGITS = 15


class _MemberDecoder:
    """Strict decoder of one envelope's members that also notes inexact numbers.

    A member is in plain JSON form when it has no fraction or exponent, no integer longer
    than 15 digits and nothing outside the Basic Multilingual Plane. The number hooks record
    the first two while the member is parsed. One instance serves one request, so threads
    never share the record.
    """

    def __init__(self) -> None:
        self.inexact_number = False
        self.decoder = json.JSONDecoder(
            object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant,
            parse_float=self._parse_float, parse_int=self._parse_int,
        )

    def _parse_float(self, text: str) -> float:
        self.inexact_number = True
        return float(text)

    def _parse_int(self, text: str) -> int:
        if len(text.lstrip("-")) > _MAX_PLAIN_INTEGER_DIGITS:
            self.inexact_number = True
        return int(text)

    def decode(self, text: str, pos: int) -> tuple[Any, int, bool]:
        """Parse the value at ``pos`` and return it, where it ends and whether it is plain JSON.

        Raises ValueError or RecursionError as ``JSONDecoder.raw_decode`` does.
        """
        self.inexact_number = False
        value, end = self.decoder.raw_decode(text, pos)
        member = text[pos:end]
        # A \uD800-\uDFFF escape can encode a character outside the BMP. Any "\ud" escape
        # counts, which also excludes some BMP characters from the fast path but never admits
        # a wrong one.
        plain = (not self.inexact_number
                 and (member.isascii() or max(member) <= "\uffff")
                 and "\\ud" not in member and "\\uD" not in member)
        return value, end, plain


def split_envelope(body: bytes, *, max_objects: int | None = None) -> list[RawObject]:
    """Return the objects of a TAXII envelope body, as ``split_envelope_strict`` does.

    Raises
    ------
    EnvelopeInvalid, EnvelopeTooManyObjects
        As ``split_envelope_strict``.
    """
    return read_envelope(body, max_objects=max_objects).objects()


def read_envelope(body: bytes, *, max_objects: int | None = None) -> EnvelopeObjects:
    """Return the objects of a TAXII envelope body, to be read one by one or all at once.

    Raises
    ------
    EnvelopeInvalid, EnvelopeTooManyObjects
        As ``split_envelope_strict``, where the body alone shows it. Otherwise they come
        from ``EnvelopeObjects.objects`` or ``strict``.
    """
    fast = open_envelope_fast(body, max_depth=MAX_MEMBER_DEPTH, depth_of=_depth,
                              max_objects=max_objects)
    if fast is None:
        strict = split_envelope_strict(body, max_objects=max_objects)
        return EnvelopeObjects(body, max_objects, strict)
    return EnvelopeObjects(body, max_objects, fast)


class EnvelopeObjects:
    """The objects of one envelope, split as they are read where the C path allows.

    Iterating yields each object as a ``RawObject``. The C path learns only at the last
    member whether a key was repeated anywhere, so iteration may raise ``StrictParseNeeded``
    after some objects. A caller that acts on objects as they come, such as one that sends
    them to the database, can then roll back and start again from ``strict``.
    """

    def __init__(self, body: bytes, max_objects: int | None,
                 members: FastEnvelope | list[RawObject]) -> None:
        self._body = body
        self._max_objects = max_objects
        self._members = members

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[RawObject]:
        if isinstance(self._members, list):
            yield from self._members
            return
        for text, value, plain, canonical in self._members:
            yield RawObject(text, value, None, plain, canonical)

    def objects(self) -> list[RawObject]:
        """Return every object, from the strict parser where the C path cannot vouch."""
        try:
            return list(self)
        except StrictParseNeeded:
            return self.strict()

    def strict(self) -> list[RawObject]:
        """Return every object as ``split_envelope_strict`` parses it.

        Raises
        ------
        EnvelopeInvalid, EnvelopeTooManyObjects
            As ``split_envelope_strict``.
        """
        if isinstance(self._members, list):
            return self._members
        self._members = split_envelope_strict(self._body, max_objects=self._max_objects)
        return self._members


def split_envelope_strict(body: bytes, *, max_objects: int | None = None) -> list[RawObject]:
    """Return the objects of a TAXII envelope body, parsed by the strict parser.

    Parameters
    ----------
    body : bytes
        The request body.
    max_objects : int, optional
        Maximum number of members in the ``objects`` list. The walk stops at the first
        member past it, so a body packed with tiny members is not parsed to its end.

    Raises
    ------
    EnvelopeInvalid
        If the body is not UTF-8 JSON, not an object, a STIX bundle, or has no ``objects``
        list.
    EnvelopeTooManyObjects
        If the ``objects`` list has more than ``max_objects`` members.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise EnvelopeInvalid(f"not UTF-8 at byte {err.start}") from err
    try:
        members, objects = _walk_envelope(text, _MemberDecoder(), max_objects)
    except (ValueError, IndexError) as err:
        raise EnvelopeInvalid(str(err) or "truncated JSON") from err
    except RecursionError as err:
        raise EnvelopeInvalid("JSON nested too deeply to parse; post objects of ordinary depth") from err

    if members.get("type") == "bundle":
        raise EnvelopeInvalid("the body is a STIX bundle; send {\"objects\": [...]} with "
                              "Content-Type application/taxii+json;version=2.1")
    if objects is None:
        raise EnvelopeInvalid("it has no \"objects\" list")
    if not objects:
        raise EnvelopeInvalid("its \"objects\" list is empty")
    return objects


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _expect(text: str, pos: int, char: str) -> int:
    if pos >= len(text) or text[pos] != char:
        found = repr(text[pos]) if pos < len(text) else "the end of the body"
        raise ValueError(f"expected {char!r} at offset {pos}; found {found}")
    return pos + 1


def _walk_envelope(
    text: str, decoder: _MemberDecoder, max_objects: int | None
) -> tuple[dict[str, Any], list[RawObject] | None]:
    members: dict[str, Any] = {}
    objects: list[RawObject] | None = None
    pos = _expect(text, _skip(text, 0), "{")
    pos = _skip(text, pos)
    if pos < len(text) and text[pos] == "}":
        pos += 1
    else:
        while True:
            if pos >= len(text) or text[pos] != '"':
                raise ValueError(f"expected a member name at offset {pos}")
            key, pos = _DECODER.raw_decode(text, pos)
            if key in members or (key == "objects" and objects is not None):
                raise ValueError(f"member {key!r} appears twice in the envelope")
            pos = _expect(text, _skip(text, pos), ":")
            pos = _skip(text, pos)
            if key == "objects":
                objects, pos = _walk_objects(text, pos, decoder, max_objects)
            else:
                members[key], pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, pos)
            if pos < len(text) and text[pos] == ",":
                pos = _skip(text, pos + 1)
                continue
            pos = _expect(text, pos, "}")
            break
    if _skip(text, pos) != len(text):
        raise ValueError(f"unexpected data after the envelope at offset {_skip(text, pos)}")
    return members, objects


def _walk_objects(
    text: str, pos: int, decoder: _MemberDecoder, max_objects: int | None
) -> tuple[list[RawObject], int]:
    if pos >= len(text) or text[pos] != "[":
        raise ValueError(f"\"objects\" must be a list (offset {pos})")
    items: list[RawObject] = []
    pos = _skip(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return items, pos + 1
    while True:
        if max_objects is not None and len(items) == max_objects:
            raise EnvelopeTooManyObjects(max_objects)
        item, end = _decode_member(text, pos, decoder)
        items.append(item)
        pos = _skip(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip(text, pos + 1)
            continue
        return items, _expect(text, pos, "]")


def _decode_member(text: str, pos: int, decoder: _MemberDecoder) -> tuple[RawObject, int]:
    """Parse the member starting at ``pos`` and return it with the offset where it ends.

    Most members pass the strict decoder, which then also gives their end. Only a member it
    rejects is parsed again by the lenient decoder, to find its end, and fails alone.
    """
    too_deep = f"the object is nested more than {MAX_MEMBER_DEPTH} levels deep"
    try:
        value, end, plain = decoder.decode(text, pos)
    except (ValueError, RecursionError) as err:
        _, end = _DECODER.raw_decode(text, pos)
        error = too_deep if isinstance(err, RecursionError) else str(err)
        return RawObject(text=text[pos:end], value=None, error=error), end
    member = text[pos:end]
    # Every level of nesting opens with a bracket, so a member with few brackets, counted in
    # its strings too, cannot be too deep. Only the others are walked.
    brackets = member.count("{") + member.count("[")
    if brackets > MAX_MEMBER_DEPTH and _depth(value) > MAX_MEMBER_DEPTH:
        return RawObject(text=member, value=None, error=too_deep), end
    return RawObject(text=member, value=value, plain_json=plain), end


def _depth(value: Any) -> int:
    """Return how many objects and arrays nest in ``value``, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest
