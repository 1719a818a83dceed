"""Who a client is, for limits counted per client address.

``request.remote_addr`` is one address; a client may hold many. An IPv6 subscriber is given a
/64 network at least and picks any of its addresses at will (privacy addresses), so a limit
per address would be one per request for a client that rotates them.
"""

from __future__ import annotations

import ipaddress

#: The IPv6 prefix one client is taken to hold: a subscriber is given a /64 at least, and
#: picks any of its 2**64 addresses at will (privacy addresses), so per-address limits
#: count a /64 as one address.
IPV6_CLIENT_PREFIX = 64


def client_network(address: str) -> str:
    """What limits per client address count ``address`` (``request.remote_addr``) as: an
    IPv4 address as it is (also written IPv4-mapped, ``::ffff:192.0.2.1``); an IPv6
    address's /64 network, which one client can change addresses within at no cost;
    anything that is not an address as given."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)
