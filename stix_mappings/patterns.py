"""Turn an observable value into a STIX 2.1 pattern that is right in syntax and in meaning.

Building a pattern by string formatting fails in two ways. In syntax, a ``'``
inside a value ends the string literal early and a ``\\`` escapes the character
after it, unless they are written as ``\\'`` and ``\\\\`` (STIX 2.1 section 9.5).
In meaning, a value of the wrong kind sits in a pattern that still parses:
stix2-patterns 2.1 accepts ``[ipv4-addr:value = 'http://198.51.100.7/login']`` and
``[ipv4-addr:value = '2001:db8::1']``, and such a pattern matches nothing.

So every value is first checked against its kind (IPv4/IPv6 address or CIDR,
domain syntax, URL shape, hash length and alphabet, file names). It is then
written in one canonical form, so the same value always gives the same pattern
and therefore the same indicator id. Finally the pattern is run through the
stix2-patterns validator.

A value that does not fit the kind it was given is rejected, never re-typed,
because a mislabelled value points to a bug upstream. Callers that want the kind
inferred use :func:`observable_type_of`.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from stix2patterns.v21.pattern import Pattern
from stix2patterns.validator import run_validator

from stix_mappings.errors import PatternRejected

# The four network observable types that summaries carry.
NETWORK_OBSERVABLE_TYPES = ("ipv4-addr", "ipv6-addr", "domain-name", "url")

# Hash kinds: (pattern property path, hex digits, name used in messages).
_HASH_KINDS = {
    "md5": ("file:hashes.MD5", 32, "MD5"),
    "sha1": ("file:hashes.'SHA-1'", 40, "SHA-1"),
    "sha256": ("file:hashes.'SHA-256'", 64, "SHA-256"),
    "sha512": ("file:hashes.'SHA-512'", 128, "SHA-512"),
}

# Fingerprint kinds outside file hashes: (pattern property path, hex digits, name in messages).
# X.509 certificates are the standard x509-certificate object, hashed over the DER encoding
# as Zeek's x509.log ``fingerprint`` and ssl.log ``cert_chain_fps`` are. STIX 2.1 has no
# property for a TLS client or server fingerprint, so JA3 and JA3S (MD5 digests of the TLS
# ClientHello and ServerHello parameters) use the custom object type x-fti-tls-fingerprint.
_FINGERPRINT_KINDS = {
    "x509-sha1": ("x509-certificate:hashes.'SHA-1'", 40, "X.509 SHA-1 fingerprint"),
    "x509-sha256": ("x509-certificate:hashes.'SHA-256'", 64, "X.509 SHA-256 fingerprint"),
    "ja3": ("x-fti-tls-fingerprint:ja3", 32, "JA3 fingerprint"),
    "ja3s": ("x-fti-tls-fingerprint:ja3s", 32, "JA3S fingerprint"),
}
_HASH_KINDS.update(_FINGERPRINT_KINDS)

OBSERVABLE_KINDS = NETWORK_OBSERVABLE_TYPES + ("file_name", "file_path") + tuple(_HASH_KINDS)

# Short names that evidence fusion uses for the same kinds.
KIND_ALIASES = {"ipv4": "ipv4-addr", "ipv6": "ipv6-addr", "domain": "domain-name"}

# RFC 7230 puts no limit on URLs; 2048 is what common browsers and proxies accept.
MAX_URL_CHARS = 2048
# RFC 1035 section 2.3.4: 253 characters in text form, 63 per label.
MAX_DOMAIN_CHARS = 253
MAX_LABEL_CHARS = 63
# Most file systems (ext4, NTFS) limit one name to 255 characters.
MAX_FILE_NAME_CHARS = 255
MAX_FILE_PATH_CHARS = 4096

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Underscores are not valid in host names but do occur in DNS names (_dmarc, SRV).
_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:$")
_ESCAPED_CHAR_RE = re.compile(r"\\(.)", re.DOTALL)


def canonical_kind(kind: str) -> str:
    """Return the canonical name of observable kind ``kind`` ("ipv4" -> "ipv4-addr").

    Raises
    ------
    PatternRejected
        If ``kind`` is not a supported kind; the value field is empty then.
    """
    canonical = KIND_ALIASES.get(kind, kind)
    if canonical not in OBSERVABLE_KINDS:
        expected = ", ".join(OBSERVABLE_KINDS)
        raise PatternRejected("", kind, f"unknown observable kind; expected one of {expected}")
    return canonical


def escape_string_literal(value: str) -> str:
    """Escape ``value`` for a single-quoted STIX pattern string literal.

    Backslashes are doubled before quotes are escaped, so an escaped quote is never
    escaped twice.
    """
    return value.replace("\\", "\\\\").replace("'", "\\'")


def unescape_string_literal(literal: str) -> str:
    """Return the value of a quoted STIX pattern string literal such as ``'o\\'brien.exe'``."""
    inner = literal[1:-1] if len(literal) >= 2 and literal[0] == literal[-1] == "'" else literal
    return _ESCAPED_CHAR_RE.sub(r"\1", inner)


def _reject_control_characters(value: str, kind: str) -> None:
    if _CONTROL_RE.search(value):
        raise PatternRejected(value, kind, "contains control characters")


def _normalize_ip(value: str, kind: str, version: int, *, allow_cidr: bool) -> str:
    label = f"IPv{version} address/CIDR" if allow_cidr else f"IPv{version} address"
    reason = f"not an {label}"
    network_type = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    address_type = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address

    if "/" not in value:
        try:
            address = address_type(value)
        except ValueError:
            raise PatternRejected(value, kind, reason) from None
        return _format_address(address)

    if not allow_cidr:
        raise PatternRejected(value, kind, reason)
    try:
        network = network_type(value, strict=True)
    except ValueError as err:
        # Show the library's detail (such as "has host bits set") only when the value
        # at least looks like an address of the right version.
        looks_right = "." in value if version == 4 else ":" in value
        if looks_right and "://" not in value:
            raise PatternRejected(value, kind, f"{reason}: {err}") from None
        raise PatternRejected(value, kind, reason) from None
    # A /32 (or /128) is a single address; writing it bare keeps one pattern per address.
    if network.prefixlen == network.max_prefixlen:
        return _format_address(network.network_address)
    return str(network)


def _format_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    # RFC 5952 section 5 writes IPv4-mapped IPv6 addresses with a dotted tail. Python
    # 3.11 writes "::ffff:102:304" and 3.13 "::ffff:1.2.3.4", so fix one form here to
    # keep indicator ids independent of the Python version.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _normalize_domain(value: str, kind: str) -> str:
    if not value.isascii():
        raise PatternRejected(
            value,
            kind,
            "not an ASCII domain name; convert internationalized names to their xn-- form",
        )
    domain = value.lower()
    if domain.endswith("."):
        domain = domain[:-1]
    if _is_ip_address(domain) or _is_ip_address(domain.strip("[]")):
        raise PatternRejected(value, kind, "is an IP address, not a domain name")
    if not domain or len(domain) > MAX_DOMAIN_CHARS:
        raise PatternRejected(value, kind, f"a domain name must have 1 to {MAX_DOMAIN_CHARS} characters")
    labels = domain.split(".")
    if len(labels) < 2:
        raise PatternRejected(value, kind, "a domain name needs at least two labels, like example.org")
    for label in labels:
        if len(label) > MAX_LABEL_CHARS or not _LABEL_RE.match(label):
            raise PatternRejected(
                value,
                kind,
                f"label {label!r} must have 1 to {MAX_LABEL_CHARS} letters, digits, '-' or '_' "
                "and must not start or end with '-'",
            )
    if labels[-1].isdigit():
        raise PatternRejected(value, kind, "the top-level label of a domain name cannot be numeric")
    return domain


def _check_url(value: str, kind: str) -> str:
    if len(value) > MAX_URL_CHARS:
        raise PatternRejected(value, kind, f"a URL must have at most {MAX_URL_CHARS} characters")
    if any(char.isspace() for char in value):
        raise PatternRejected(value, kind, "a URL must not contain white space")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port outside 0-65535
    except ValueError as err:
        raise PatternRejected(value, kind, f"not a valid URL: {err}") from None
    if not _SCHEME_RE.match(parts.scheme.lower()) or "://" not in value:
        raise PatternRejected(value, kind, "a URL must start with a scheme and '://', like https://")
    if not host:
        raise PatternRejected(value, kind, "a URL must name a host")
    if not _is_ip_address(host):
        try:
            _normalize_domain(host, kind)
        except PatternRejected as err:
            raise PatternRejected(value, kind, f"host {host!r}: {err.reason}") from None
    # URLs are case-sensitive after the host, so the value is kept exactly as given.
    return value


def _check_file_name(value: str, kind: str) -> str:
    if not value or len(value) > MAX_FILE_NAME_CHARS:
        raise PatternRejected(value, kind, f"a file name must have 1 to {MAX_FILE_NAME_CHARS} characters")
    if "/" in value or "\\" in value:
        raise PatternRejected(value, kind, "a file name must not contain a path separator; use file_path")
    if value in (".", ".."):
        raise PatternRejected(value, kind, "'.' and '..' are directories, not file names")
    return value


def split_file_path(value: str, kind: str = "file_path") -> tuple[str, str]:
    """Split a file path into (directory, name), keeping a root directory's separator.

    Raises
    ------
    PatternRejected
        If the path has no directory part, ends with a separator or is too long.
    """
    if len(value) > MAX_FILE_PATH_CHARS:
        raise PatternRejected(value, kind, f"a file path must have at most {MAX_FILE_PATH_CHARS} characters")
    cut = max(value.rfind("\\"), value.rfind("/"))
    if cut < 0:
        raise PatternRejected(value, kind, "a file path needs a directory part; use file_name for a bare name")
    directory, name = value[:cut], value[cut + 1 :]
    # Keep the separator of a root directory: "/" or "C:\", never the empty string or "C:".
    if not directory or _DRIVE_RE.match(directory):
        directory = value[: cut + 1]
    if not name:
        raise PatternRejected(value, kind, "the path ends with a separator, so it names a directory")
    return directory, _check_file_name(name, kind)


def _check_hash(value: str, kind: str) -> str:
    _, digits, label = _HASH_KINDS[kind]
    digest = value.lower()
    article = "an" if label == "MD5" else "a"
    if len(digest) != digits or not _HEX_RE.match(digest):
        raise PatternRejected(
            value, kind, f"{article} {label} must be {digits} hex digits; got {len(value)} characters"
        )
    return digest


def normalize_value(kind: str, value: str, *, allow_cidr: bool = True) -> str:
    """Check ``value`` against observable kind ``kind`` and return its canonical form.

    Parameters
    ----------
    kind : str
        One of OBSERVABLE_KINDS or an alias from KIND_ALIASES.
    value : str
        The observable value.
    allow_cidr : bool, default True
        Whether an IPv4/IPv6 network such as 198.51.100.0/24 is allowed. Summaries
        report single addresses and pass False.

    Returns
    -------
    str
        IP addresses in their compressed, lower-case form (a /32 or /128 written
        bare), domain names in lower case without a trailing dot, hashes in lower
        case, and URLs and file names unchanged.

    Raises
    ------
    PatternRejected
        If the value does not fit the kind.
    """
    if not isinstance(value, str):
        raise PatternRejected(repr(value), kind, "the value must be a string")
    canonical = canonical_kind(kind)
    _reject_control_characters(value, kind)
    if not value:
        raise PatternRejected(value, kind, "the value is empty")

    if canonical == "ipv4-addr":
        return _normalize_ip(value, kind, 4, allow_cidr=allow_cidr)
    if canonical == "ipv6-addr":
        return _normalize_ip(value, kind, 6, allow_cidr=allow_cidr)
    if canonical == "domain-name":
        return _normalize_domain(value, kind)
    if canonical == "url":
        return _check_url(value, kind)
    if canonical == "file_name":
        return _check_file_name(value, kind)
    if canonical == "file_path":
        split_file_path(value, kind)
        return value
    return _check_hash(value, canonical)


def _compose_pattern(canonical: str, value: str, kind: str) -> str:
    if canonical in NETWORK_OBSERVABLE_TYPES:
        return f"[{canonical}:value = '{escape_string_literal(value)}']"
    if canonical == "file_name":
        return f"[file:name = '{escape_string_literal(value)}']"
    if canonical == "file_path":
        directory, name = split_file_path(value, kind)
        return (
            f"[file:name = '{escape_string_literal(name)}' AND "
            f"file:parent_directory_ref.path = '{escape_string_literal(directory)}']"
        )
    path, _, _ = _HASH_KINDS[canonical]
    return f"[{path} = '{value}']"


def build_pattern(observable_type: str, value: str) -> str:
    """Build the STIX 2.1 pattern that matches one observable.

    Parameters
    ----------
    observable_type : str
        "ipv4-addr", "ipv6-addr", "domain-name", "url", "file_name", "file_path",
        "md5", "sha1", "sha256" or "sha512"; "ipv4", "ipv6" and "domain" are
        accepted as aliases.
    value : str
        The observable value. IPv4/IPv6 networks (CIDR) are allowed.

    Returns
    -------
    str
        For example ``[ipv4-addr:value = '203.0.113.5']``. The same kind and value
        always give the same pattern.

    Raises
    ------
    PatternRejected
        If the value does not fit the kind, or the stix2-patterns validator rejects
        the finished pattern.
    """
    canonical = canonical_kind(observable_type)
    normalized = normalize_value(observable_type, value)
    pattern = _compose_pattern(canonical, normalized, observable_type)

    problems = run_validator(pattern, "2.1")
    if problems:
        raise PatternRejected(
            value, observable_type, f"stix2-patterns rejected {pattern}: {'; '.join(problems)}"
        )
    return pattern


def observable_type_of(value: str) -> str:
    """Return the STIX observable type of a network observable value.

    Returns
    -------
    str
        "ipv4-addr" or "ipv6-addr" for an address or CIDR network, "url" for a value
        with a scheme and "://", otherwise "domain-name".

    Raises
    ------
    PatternRejected
        If the value fits none of these kinds. Its kind field is "observable".
    """
    for kind in ("ipv4-addr", "ipv6-addr"):
        try:
            normalize_value(kind, value)
        except PatternRejected:
            continue
        return kind
    kind = "url" if isinstance(value, str) and "://" in value else "domain-name"
    try:
        normalize_value(kind, value)
    except PatternRejected as err:
        raise PatternRejected(
            err.value, "observable", "not an IPv4/IPv6 address or network, URL or domain name"
        ) from err
    return kind


def _join_file_path(directory: str, name: str) -> str:
    if directory.endswith(("/", "\\")):
        return directory + name
    separator = "\\" if "\\" in directory or _DRIVE_RE.match(directory[:2]) else "/"
    return directory + separator + name


def pattern_observable(pattern: str) -> tuple[str, str]:
    """Return (kind, value) of a pattern in the forms :func:`build_pattern` writes.

    Parameters
    ----------
    pattern : str
        A STIX pattern with one observation on one observable.

    Returns
    -------
    tuple of (str, str)
        The canonical kind (see OBSERVABLE_KINDS) and the unescaped value; for a
        file path the directory and name joined again.

    Raises
    ------
    PatternRejected
        If the pattern does not parse or has another shape; its kind field is "pattern".
    """
    try:
        inspection = Pattern(pattern).inspect()
    except Exception as err:  # stix2patterns raises its own ParseException and ANTLR errors
        raise PatternRejected(pattern, "pattern", f"does not parse: {err}") from err
    comparisons = inspection.comparisons
    if inspection.observation_ops or inspection.qualifiers or len(comparisons) != 1:
        raise PatternRejected(pattern, "pattern", "must compare exactly one observable with '='")

    object_type, expressions = next(iter(comparisons.items()))
    found: dict[tuple[str, ...], str] = {}
    for path, operator, literal in expressions:
        if operator != "=" or not literal.startswith("'"):
            raise PatternRejected(pattern, "pattern", "must compare exactly one observable with '='")
        found[tuple(str(part) for part in path)] = unescape_string_literal(literal)

    if object_type in NETWORK_OBSERVABLE_TYPES and set(found) == {("value",)}:
        return object_type, found[("value",)]
    if object_type == "file":
        if set(found) == {("name",)}:
            return "file_name", found[("name",)]
        if set(found) == {("name",), ("parent_directory_ref", "path")}:
            return "file_path", _join_file_path(found[("parent_directory_ref", "path")], found[("name",)])
        for kind, (path, _, _) in _HASH_KINDS.items():
            algorithm = path.split(".", 1)[1].strip("'")
            if path.startswith("file:") and set(found) == {("hashes", algorithm)}:
                return kind, found[("hashes", algorithm)]
    for kind, (path, _, _) in _FINGERPRINT_KINDS.items():
        path_type, _, prop = path.partition(":")
        key = tuple(part.strip("'") for part in prop.split(".", 1))
        if object_type == path_type and set(found) == {key}:
            return kind, found[key]
    raise PatternRejected(pattern, "pattern", f"no supported observable in {object_type!r} comparisons")
