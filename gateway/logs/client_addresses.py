"""A client address as the per-address limits count it and their log lines name it.

Here, beside the logs, because the connections layer (the connection cap's shares), the access gate
(the failed-credential throttle, the waiting places) and the logs (the refused lines' bound) all group
addresses the same way, and the logs import nothing of the others.
"""

from __future__ import annotations

import ipaddress

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: every IPv4 host behind a NAT64 gateway


def address_group(address: str) -> str:
    """What a per-address limit counts: an IPv4 address as it is, an IPv6 one as its /64 (one host
    holds a whole /64), an IPv4 client seen through IPv6 (mapped, NAT64) as its IPv4 address;
    anything that is not an address as it is."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.split("%")[0])
    except ValueError:
        return address
    if (mapped := ip.ipv4_mapped) is not None or ip in _NAT64:
        return str(mapped or ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return str(ipaddress.IPv6Network((ip, 64), strict=False))
