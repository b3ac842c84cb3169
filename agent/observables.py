"""External observables as the agent keeps them: one string key per observable, typed when needed.

Windows count the observables each entity contacted under a string key. Addresses, domain
names and URLs are their own key, because :func:`stix_mappings.patterns.observable_type_of`
distinguishes them. Fingerprints and hashes are hex strings that read as domain names, so their
key carries the kind: ``"ja3:6734f374…"``, ``"x509-sha256:b2da…"``, ``"sha256:…"``. String keys
keep the contact table, the local alert matcher and the summariser's ordering as they are.

Every constructor here returns None for a value that must stay on the site. Such values are
addresses that are not shareable (see :meth:`agent.network.InternalNetworks.is_shareable`),
names under the site's internal domains or a suffix reserved for local use, host names without
a dot (NetBIOS or mDNS names), reverse-lookup names under ``.arpa``, and URLs on such hosts.
"""

from __future__ import annotations

import ipaddress
import re

from agent.network import InternalNetworks
from stix_mappings.errors import PatternRejected
from stix_mappings.patterns import normalize_value, observable_type_of

__all__ = [
    "FINGERPRINT_KINDS",
    "ObservableFilter",
    "observable_key",
    "split_observable_key",
]

# Kinds whose key is "<kind>:<hex digest>". The patterns module checks the digest's length.
FINGERPRINT_KINDS = frozenset({"ja3", "ja3s", "x509-sha1", "x509-sha256", "md5", "sha1", "sha256"})

# Suffixes reserved for names that resolve only inside a network (RFC 6761, RFC 6762,
# RFC 8375, and the .internal TLD ICANN reserved in 2024), plus reverse-lookup names,
# whose labels spell an address.
LOCAL_DOMAIN_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".lan", ".arpa")

_HEX = re.compile(r"^[0-9a-f]+$")


def observable_key(kind: str, value: str) -> str:
    """Return the key of a fingerprint or hash observable, such as ``"ja3:<32 hex digits>"``."""
    return f"{kind}:{value}"


def split_observable_key(key: str) -> tuple[str, str]:
    """Return (STIX observable type, value) of a key made by this module or a plain address/name/URL.

    Raises
    ------
    PatternRejected
        If the key is neither a fingerprint key nor an address, domain name or URL.
    """
    kind, separator, value = key.partition(":")
    if separator and kind in FINGERPRINT_KINDS and _HEX.match(value):
        return kind, value
    return observable_type_of(key), key


class ObservableFilter:
    """Build observable keys from raw values, dropping the ones that must stay on the site.

    Parameters
    ----------
    internal : InternalNetworks
        The site's own address ranges.
    internal_domains : tuple of str, default ()
        The site's own DNS zones (``corp.example.com``). Names under them are never shared.
    """

    def __init__(self, internal: InternalNetworks, internal_domains: tuple[str, ...] = ()) -> None:
        self.internal = internal
        self.internal_domains = tuple(d.lower().strip(".") for d in internal_domains if d.strip("."))

    def address(self, value: object) -> str | None:
        """Return the canonical address when it may be shared, else None."""
        classified = self.internal.classify(value)
        if classified is None or not classified[2]:
            return None
        return classified[0]

    def domain(self, value: object) -> str | None:
        """Return the lower-case domain name when it may be shared, else None.

        An address written as a name is returned as an address key when shareable.
        """
        if not isinstance(value, str) or not value:
            return None
        name = value.strip().lower().rstrip(".")
        if _is_address(name):
            return self.address(name)
        if "." not in name or self.is_internal_name(name):
            return None
        try:
            return normalize_value("domain-name", name)
        except PatternRejected:
            return None

    def url(self, host: object, uri: object, *, port: object = None, scheme: str = "http") -> str | None:
        """Return ``scheme://host[:port]uri`` when its host may be shared, else None."""
        if not isinstance(host, str) or not isinstance(uri, str) or not uri.startswith("/"):
            return None
        host = host.strip().lower().rstrip(".")
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        if self.domain(hostname) is None:
            return None
        default_port = 80 if scheme == "http" else 443
        authority = host if ":" in host or port in (None, default_port) else f"{host}:{port}"
        try:
            return normalize_value("url", f"{scheme}://{authority}{uri}")
        except PatternRejected:
            return None

    def fingerprint(self, kind: str, value: object) -> str | None:
        """Return the key of a hex fingerprint (``aa:bb:..`` separators allowed), or None if malformed."""
        if not isinstance(value, str) or not value:
            return None
        digest = value.replace(":", "").strip().lower()
        try:
            return observable_key(kind, normalize_value(kind, digest))
        except PatternRejected:
            return None

    def is_internal_name(self, name: str) -> bool:
        """Return whether a lower-case name belongs to the site or to local-only namespaces."""
        if name == "localhost" or name.endswith(LOCAL_DOMAIN_SUFFIXES):
            return True
        return any(name == zone or name.endswith("." + zone) for zone in self.internal_domains)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
