"""Where the upstream connections go: the addresses a name resolves to, and a gRPC target per connection.

The pool resolves the name itself (gRPC's own resolver would give every channel the same first
address) and hands gRPC static address lists, rotated so that each connection dials its own first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable

#: Addresses for (host, port), each "ipv4:a.b.c.d:port" or "ipv6:[addr]:port".
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The name's addresses from the system resolver, IPv4 first, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found = [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in infos]
    v4 = [f"{a}:{port}" for f, a in found if f == socket.AF_INET]
    v6 = [f"[{a}]:{port}" for f, a in found if f == socket.AF_INET6]
    return list(dict.fromkeys(f"ipv4:{a}" for a in v4)) or list(dict.fromkeys(f"ipv6:{a}" for a in v6))


def split_target(target: str) -> tuple[str, int] | None:
    """(host, port) of a plain ``host:port`` name the pool resolves itself; None for IP literals and
    gRPC URIs (``dns:///``, ``ipv4:``, ``unix:``), which go to gRPC as they are."""
    if "/" in target or target.startswith(("ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")):
        return None
    host, sep, port = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not host:
        return None
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return None
    return host, int(port)


def channel_target(addresses: list[str], first: int) -> str:
    """One gRPC target listing every address of one family, starting with ``addresses[first]``."""
    rotated = addresses[first:] + addresses[:first]
    scheme = rotated[0].split(":", 1)[0]
    return f"{scheme}:" + ",".join(a.split(":", 1)[1] for a in rotated if a.startswith(scheme + ":"))


def host_port(address: str) -> tuple[str, int] | None:
    """(host, port) to open a socket to for one of the pool's addresses (``ipv4:a.b.c.d:p``,
    ``ipv6:[a::b]:p``, ``name:p``, ``a.b.c.d:p``, ``[a::b]:p``); None for what only gRPC can dial
    (``dns:///…``, ``unix:…``, lists of several addresses)."""
    for scheme in ("ipv4:", "ipv6:"):
        if address.startswith(scheme):
            address = address[len(scheme) :]
            break
    if "/" in address or "," in address or address.startswith(("unix:", "unix-abstract:", "vsock:", "dns:")):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)
