"""Read the columns of a run of Zeek TSV data lines from their UTF-8 bytes with numpy.

A run of lines is joined and encoded once. The positions of the separators and line ends
give every field's start and end, so no Python string is made per value. Each field is then
read as 64-bit words, eight bytes at a time, and digits are checked and converted with
SIMD-within-a-register arithmetic on whole columns of words. The checks and conversions here
follow Python's own rules for the common forms (ASCII digits and plain decimals). They give
every other value to those rules one at a time, so each value gets the verdict and the number
that ``str.isdigit``, ``int``, ``float`` and ``re`` give it.

UTF-8 encodes each ASCII character as its own byte, and every byte of a longer sequence is
0x80 or above. So splitting the bytes on an ASCII separator splits the text at the same places.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["TsvRunBytes", "split_run"]

# Bytes before and after the lines, so that a word read at any field ends inside the data.
# Values up to this long are read as words. Longer ones are rare (an address with a long
# IPv6 scope, a hostile line) and are read as Python strings instead.
_PAD_BYTES = 64

# Longer digit strings may not fit int64. A plain decimal with at most this many digits and a
# value of at most 2**53 converts exactly (see TsvRunBytes.plain_decimals).
_MAX_INT64_DIGITS = 18
_MAX_EXACT_INTEGER = 1 << 53

# Zeek writes times and intervals with six decimals, so the dot of a plain decimal is
# looked for there first.
_USUAL_DECIMALS = 6

_NEWLINE, _DOT = 10, ord(".")
_FLOAT_POWERS_OF_TEN = np.array([10.0**k for k in range(_MAX_INT64_DIGITS + 1)])
_POWERS_OF_TEN = np.array([10**k for k in range(_MAX_INT64_DIGITS + 1)], dtype=np.uint64)


def _repeat_byte(value: int) -> int:
    return int.from_bytes(bytes([value]) * 8, "little")


# Word masks by the number of field bytes in a word (0 to 8). A little-endian word that ends
# at a field's end has the field's last bytes in its high bytes. A word that starts at a
# field's start has its first bytes in its low bytes.
_ALL_BITS = (1 << 64) - 1
_KEEP_HIGH = np.array([_ALL_BITS ^ ((1 << (64 - 8 * n)) - 1) for n in range(9)], dtype=np.uint64)
_KEEP_LOW = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)
_ZERO_FILL = np.uint64(_repeat_byte(ord("0"))) & ~_KEEP_HIGH
_NEWLINE_FILL = np.uint64(_repeat_byte(_NEWLINE)) & ~_KEEP_LOW

_HIGH_NIBBLES = np.uint64(_repeat_byte(0xF0))
_ZEROS = np.uint64(_repeat_byte(0x30))
_SIXES = np.uint64(_repeat_byte(0x06))

# Multiplier of the word hash in TsvRunBytes.factorize: the 64-bit golden-ratio constant,
# odd, so that multiplying by it permutes the words.
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def split_run(texts: list[str], separator: str, width: int) -> TsvRunBytes | None:
    """Split lines into ``width`` columns, or return None when the bytes cannot be split here.

    None means that the separator is not one ASCII character other than a newline, that a
    line contains a newline, or that some line has another number of columns.
    """
    if len(separator) != 1 or not separator.isascii() or separator == "\n" or not texts:
        return None
    padding = b"\n" * _PAD_BYTES
    data = padding + ("\n".join(texts) + "\n").encode("utf-8", "surrogatepass") + padding
    buffer = np.frombuffer(data, dtype=np.uint8)
    lines = buffer[_PAD_BYTES:-_PAD_BYTES]
    separator_byte = ord(separator)

    # Every line must end after exactly width - 1 separators, so that the boundaries, in order,
    # form one row of ``width`` per line, the last of which is its newline.
    if separator_byte == _NEWLINE - 1:
        is_boundary = (lines - np.uint8(separator_byte)) < 2
    else:
        is_boundary = (lines == separator_byte) | (lines == _NEWLINE)
    positions = np.flatnonzero(is_boundary)
    if len(positions) != len(texts) * width:
        return None
    ends = positions.reshape(len(texts), width)
    if not (lines[ends[:, -1]] == _NEWLINE).all() or (lines[ends[:, :-1]] == _NEWLINE).any():
        return None
    return TsvRunBytes(data, ends + _PAD_BYTES)


class TsvRunBytes:
    """The fields of a run of TSV lines as byte ranges of the run's UTF-8 encoding.

    Parameters
    ----------
    data : bytes
        The lines, each ended by a newline, between ``_PAD_BYTES`` newlines on each side.
    ends : numpy.ndarray
        (lines, columns) positions in ``data`` of the byte after each field: its separator
        or newline.

    The arrays that :meth:`bounds` returns are cached, so callers must not change them.
    """

    def __init__(self, data: bytes, ends: np.ndarray) -> None:
        self.data = data
        self.count = len(ends)
        # Columns are read one at a time, so each column's ends are made contiguous.
        self.ends = np.ascontiguousarray(ends.T)
        self.buffer = np.frombuffer(data, dtype=np.uint8)
        # The little-endian 64-bit word that starts at each byte.
        self.words = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
        self._dots: np.ndarray | None = None
        self._bounds: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._last_words: dict[int, np.ndarray] = {}

    def bounds(self, column: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the start positions and lengths of a column's values."""
        found = self._bounds.get(column)
        if found is not None:
            return found
        ends = self.ends[column]
        if column:
            starts = self.ends[column - 1] + 1
        else:
            starts = np.empty_like(ends)
            starts[0] = _PAD_BYTES
            starts[1:] = self.ends[-1, :-1] + 1
        found = self._bounds[column] = (starts, ends - starts)
        return found

    def text(self, column: int, row: int) -> str:
        """Return one value as text."""
        starts, lengths = self.bounds(column)
        start = int(starts[row])
        return self.data[start:start + int(lengths[row])].decode("utf-8", "surrogatepass")

    def equals(self, column: int, token: str) -> np.ndarray:
        """Return whether each value of a column is ``token``."""
        lengths = self.bounds(column)[1]
        encoded = token.encode("utf-8", "surrogatepass")
        same = lengths == len(encoded)
        if not same.any():
            return same

        # Words are read only within the padding before a value's end.
        if len(encoded) > _PAD_BYTES:
            for row in np.flatnonzero(same).tolist():
                same[row] = self.text(column, row) == token
            return same
        for index in range(0, len(encoded), 8):
            # The word that ends ``index`` bytes before the value's end, with up to eight token bytes.
            part = encoded[max(0, len(encoded) - index - 8):len(encoded) - index]
            expected = np.uint64(int.from_bytes(bytes(8 - len(part)) + part, "little"))
            same &= (self._word_before_end(column, index) & _KEEP_HIGH[len(part)]) == expected
        return same

    def _word_before_end(self, column: int, offset: int) -> np.ndarray:
        """Return the word of each value that ends ``offset`` bytes before the value's end, cached for offset 0."""
        found = self._last_words.get(column) if offset == 0 else None
        if found is None:
            starts, lengths = self.bounds(column)
            found = self.words[starts + lengths - offset - 8]
            if offset == 0:
                self._last_words[column] = found
        return found

    def all_in(self, column: int, tokens: frozenset[str]) -> bool:
        """Return whether every value of a column is one of ``tokens``."""
        found = np.zeros(self.count, dtype=bool)
        for token in tokens:
            found |= self.equals(column, token)
        return bool(found.all())

    def all_digits_or(self, column: int, token: str) -> bool:
        """Return whether every value is ASCII digits (at least one) or ``token``.

        The rule of :func:`agent.zeek_conn._iter_tsv_connections` for ``count`` and ``port``
        columns: ``value == unset or (value.isdigit() and value.isascii())``.
        """
        lengths = self.bounds(column)[1]
        starts = self.bounds(column)[0]
        digits = self._read_digits(starts + lengths, lengths, convert=False)[0] & (lengths > 0)
        if digits.all():
            return True
        others = ~(digits | self.equals(column, token))
        for row in np.flatnonzero(others).tolist():
            value = self.text(column, row)
            if not (value.isdigit() and value.isascii()):
                return False
        return True

    def integers(self, column: int, token: str, token_value: int) -> np.ndarray | None:
        """Return a column of digit strings as int64, with ``token_value`` for ``token``.

        Every value must pass :meth:`all_digits_or` with ``token``. Returns None when a value
        is longer than 18 bytes and so may not fit.
        """
        starts, lengths = self.bounds(column)
        if int(lengths.max()) > _MAX_INT64_DIGITS:
            return None
        values = self._read_digits(starts + lengths, lengths, convert=True)[1].astype(np.int64)
        unset = self.equals(column, token)
        if unset.any():
            values[unset] = token_value
        return values

    def plain_decimals(self, column: int, *, max_decimals: int) -> tuple[np.ndarray, np.ndarray]:
        """Convert the values of the form ``[0-9]+(\\.[0-9]{0,max_decimals})?`` that convert exactly here.

        Returns the values as float64 and a mask of the rows converted. The other rows have
        0.0 and are left to the caller, because they are not of that form, or have more than
        18 digits, or their digits make a number above 2**53.

        Notes
        -----
        A decimal with digits N and k decimals is N / 10**k. When N <= 2**53 and k <= 22, both
        are exact doubles, and IEEE division rounds their quotient correctly. Python's ``float``
        of the text is the correctly rounded value of the same decimal, so both are equal.
        """
        starts, lengths = self.bounds(column)
        ends = starts + lengths
        dots, has_dot, one_dot = self._find_dots(starts, ends)

        # The digits before the dot and after it, each checked and converted on its own.
        whole_ends = np.where(has_dot, dots, ends)
        whole_lengths = whole_ends - starts
        decimals = np.where(has_dot, ends - dots - 1, 0)
        plain = one_dot & (whole_lengths > 0) & (decimals <= max_decimals) & \
            (whole_lengths + decimals <= _MAX_INT64_DIGITS)
        whole_digits, whole = self._read_digits(whole_ends, np.where(plain, whole_lengths, 0), convert=True)
        decimal_digits, fraction = self._read_digits(ends, np.where(plain, decimals, 0), convert=True)
        plain &= whole_digits & decimal_digits

        # Within 18 digits the number fits uint64, and up to 2**53 it is an exact double.
        decimals = np.where(plain, decimals, 0)
        numbers = whole * _POWERS_OF_TEN[decimals] + fraction
        plain &= numbers <= _MAX_EXACT_INTEGER
        values = np.where(plain, numbers, 0).astype(np.float64) / _FLOAT_POWERS_OF_TEN[decimals]
        return values, plain

    def factorize(self, columns: Sequence[int]) -> tuple[np.ndarray, list[str]]:
        """Number the distinct values of some columns together.

        Returns, for the values of each column in turn, the index of its text in the list
        of distinct texts, and that list.
        """
        bounds = [self.bounds(column) for column in columns]
        starts = np.concatenate([found[0] for found in bounds])
        lengths = np.concatenate([found[1] for found in bounds])
        longest = int(lengths.max())
        if longest > _PAD_BYTES:
            return _factorize_texts(_decode_all(self.data, starts, lengths))

        # A newline never occurs inside a field, so padding with it keeps distinct values
        # distinct. The padded words of a value are hashed into one key.
        words = []
        for index in range(max(1, -(-longest // 8))):
            kept = np.clip(lengths - 8 * index, 0, 8)
            words.append((self.words[starts + 8 * index] & _KEEP_LOW[kept]) | _NEWLINE_FILL[kept])
        keys = words[0]
        for word in words[1:]:
            keys = keys * _HASH_MULTIPLIER ^ word
        firsts, inverse = _number_keys(keys)

        # Two values with one hash would share a number, so a collision falls back to
        # comparing the words themselves.
        if len(words) > 1:
            stacked = np.column_stack(words)
            if not (stacked == stacked[firsts[inverse]]).all():
                _, firsts, inverse = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
                inverse = inverse.reshape(-1)
        return inverse, _decode_all(self.data, starts[firsts], lengths[firsts])

    def _read_digits(self, ends: np.ndarray, lengths: np.ndarray, *, convert: bool) -> tuple[np.ndarray, np.ndarray]:
        """Check that the bytes before each end are ASCII digits, and convert the first 24 of them.

        Returns whether each value is digits only (an empty one is) and, when ``convert``, its
        value as uint64, which is exact for up to 18 digits. Values longer than the padding count as not
        digits, for the caller to read as text.
        """
        longest = min(int(lengths.max()) if len(lengths) else 0, _PAD_BYTES)
        digits = lengths <= _PAD_BYTES
        values = np.zeros(len(ends), dtype=np.uint64)
        for index in range(-(-longest // 8)):
            kept = np.clip(lengths - 8 * index, 0, 8)
            word = (self.words[ends - 8 * (index + 1)] & _KEEP_HIGH[kept]) | _ZERO_FILL[kept]
            digits &= ((word & _HIGH_NIBBLES) == _ZEROS) & (((word + _SIXES) & _HIGH_NIBBLES) == _ZEROS)
            if convert and index < 3:
                values += _parse_eight_digits(word) * _POWERS_OF_TEN[8 * index]
        return digits, values

    def _find_dots(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return each value's dot (its end when none), whether it has one, and whether it has at most one.

        Only values that start with a digit, as a plain decimal does, are searched in full. The
        others count as having a dot only where a six-decimal value has it.
        """
        # Most values have their dot six bytes before the end, where it is checked first.
        guesses = np.maximum(ends - _USUAL_DECIMALS - 1, starts)
        has_dot = (self.buffer[guesses] == _DOT) & (ends - starts > _USUAL_DECIMALS)
        dots = np.where(has_dot, guesses, ends)
        # A dot there is the only one if the bytes around it are digits, which the caller checks.
        one_dot = np.ones(len(starts), dtype=bool)
        searched = np.flatnonzero(~has_dot & ((self.buffer[starts] - np.uint8(ord("0"))) < 10) & (ends > starts))
        if len(searched):
            if self._dots is None:
                self._dots = np.flatnonzero(self.buffer == _DOT)
            found = np.searchsorted(self._dots, starts[searched])
            first = self._dots[np.minimum(found, len(self._dots) - 1)] if len(self._dots) else ends[searched]
            second = self._dots[np.minimum(found + 1, len(self._dots) - 1)] if len(self._dots) else ends[searched]
            inside = (found < len(self._dots)) & (first < ends[searched])
            has_dot[searched] = inside
            dots[searched] = np.where(inside, first, ends[searched])
            one_dot[searched] = ~(inside & (found + 1 < len(self._dots)) & (second < ends[searched]))
        return dots, has_dot, one_dot


def _number_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return one row of each distinct key and, for every row, the number of its key.

    ``np.unique`` requires a stable sort when it returns first rows, which is about twice as
    slow, and any row of a key will do.
    """
    order = keys.argsort()
    ordered = keys[order]
    starts_key = np.empty(len(keys), dtype=bool)
    starts_key[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts_key[1:])
    inverse = np.empty(len(keys), dtype=np.intp)
    inverse[order] = np.cumsum(starts_key) - 1
    return order[starts_key], inverse


def _parse_eight_digits(word: np.ndarray) -> np.ndarray:
    """Return the number written by the eight ASCII digits of each little-endian word."""
    # Each step joins neighbouring lanes: bytes into two-digit, then four- and eight-digit numbers.
    word = word - _ZEROS
    word = (word * np.uint64(10) + (word >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    word = (word * np.uint64(100) + (word >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    return (word * np.uint64(10000) + (word >> np.uint64(32))) & np.uint64(0xFFFFFFFF)


def _decode_all(data: bytes, starts: np.ndarray, lengths: np.ndarray) -> list[str]:
    return [data[start:start + length].decode("utf-8", "surrogatepass")
            for start, length in zip(starts.tolist(), lengths.tolist())]


def _factorize_texts(texts: list[str]) -> tuple[np.ndarray, list[str]]:
    codes: dict[str, int] = {}
    numbers = [codes.setdefault(text, len(codes)) for text in texts]
    return np.array(numbers, dtype=np.int64), list(codes)
