"""IP address rules shared by the agent, which withholds internal addresses, and the hub, which rejects them."""

from __future__ import annotations

import ipaddress

__all__ = ["IPAddress", "NON_PUBLIC_NETWORKS", "non_public_network", "with_embedded_ipv4"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Addresses that name no host on the public Internet, so evidence must never carry them.
# IPv4: "this network", RFC 1918, RFC 6598 shared space, loopback, link-local, IETF protocol
# assignments, benchmarking, multicast, and the reserved block with the broadcast address.
# IPv6: unspecified, loopback, discard-only, the local-use NAT64 prefix, benchmarking, ORCHID
# and ORCHIDv2, SRv6 segment identifiers, unique local, link-local, the deprecated site-local block and multicast. The
# documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) stay
# allowed, because examples and tests use them.
NON_PUBLIC_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "100::/64",
        "64:ff9b:1::/48",
        "2001:2::/48",
        "2001:10::/28",
        "2001:20::/28",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)

_NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


def with_embedded_ipv4(address: IPAddress) -> list[IPAddress]:
    """Return the address and every IPv4 address that an IPv6 form of it embeds.

    The forms are IPv4-mapped (``::ffff:0:0/96``), IPv4-translated (``::ffff:0:0:0/96``),
    IPv4-compatible (``::/96`` but for ``::`` and ``::1``), 6to4 (``2002::/16``), Teredo
    (``2001::/32``, server and client) and the NAT64 prefix ``64:ff9b::/96``.
    """
    found: list[IPAddress] = [address]
    if address.version != 6:
        return found
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64_PREFIX or address in _IPV4_TRANSLATED or (address in _IPV4_COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def non_public_network(address: IPAddress) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """Return the network of :data:`NON_PUBLIC_NETWORKS` that contains the address or an IPv4 address it embeds."""
    for candidate in with_embedded_ipv4(address):
        for network in NON_PUBLIC_NETWORKS:
            if network.version == candidate.version and candidate in network:
                return network
    return None
