"""Each client address's share of the connection cap (``GATEWAY_MAX_CONNECTIONS_PER_ADDRESS``).

The cap (gateway.connections.cap) bounds the process; without a share one address could fill it with
idle connections (each lives its head timeout, then is opened again) and every other client got 503.
A share counts a connection from its arrival until it becomes a WebSocket: an open session is bounded
elsewhere (its key's ``max_sessions``, the waiting places per address for credentials still to come),
while HTTP connections (idle, waiting for a head, kept alive, uploads) were bounded by nothing but the
cap. Past the share a new connection is refused as one past the cap is (503 ``capacity_exceeded``
once its head is in, ``/healthz`` still answered); past it by more than
:data:`~gateway.connections.cap.WAITING_REFUSALS`, at once, so one address holds at most its share
and these. Connections from ``GATEWAY_TRUSTED_PROXIES`` are not counted: a proxy carries everyone's;
nor, from its first request on, one whose requests name the client they forward (:func:`proxied`).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gateway.logs.client_addresses import address_group

if TYPE_CHECKING:
    from gateway.settings import Settings

#: The share when unset: this part of the connection cap, and never fewer connections than the floor.
DEFAULT_PART = 2
DEFAULT_FLOOR = 16

_PROXY_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"x-real-ip"})


def proxied(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request came through a proxy (it names the client it forwards). Such a connection stops
    counting against its address's share: a proxy not listed in GATEWAY_TRUSTED_PROXIES (the compose file's
    nginx, an ingress) carries every client's requests, and its kept-alive connections were refused 503 at
    half the cap, the replica then marked failed by the proxy for all. A client that sends the header to be
    let off is held by the cap, as before; idle connections, which never send a head, stay counted."""
    return any(name.lower() in _PROXY_HEADERS for name, _ in headers)


def share_in_force(per_address: int | None, cap: int | None) -> int | None:
    """The share as set (0: none), or unset: half the cap in force, at least 16 (none without a cap): one
    address never takes more than half a replica's connections, and a proxy not listed as trusted (its
    kept-alive connections count) rarely meets it."""
    if per_address is not None:
        return per_address or None
    return None if cap is None else max(DEFAULT_FLOOR, cap // DEFAULT_PART)


class AddressShares:
    """The open connections of each address still counted (one per server)."""

    @classmethod
    def from_settings(cls, settings: Settings, cap: int | None) -> AddressShares:
        """The shares of a server whose connection cap in force is ``cap``."""
        return cls(share_in_force(settings.max_connections_per_address, cap), settings.trusted_proxies)

    def __init__(self, share: int | None, trusted_proxies: list[str]) -> None:
        self.share = share
        self._trusted = [ipaddress.ip_network(proxy) for proxy in trusted_proxies]
        self._open: Counter[str] = Counter()

    def take(self, peername: Any) -> str | None:
        """Counts a new connection from ``peername`` (a transport's): its address's key, or None when
        not counted (no share, a trusted proxy, a Unix socket)."""
        if self.share is None or not isinstance(peername, tuple) or not peername:
            return None
        address = str(peername[0])
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self._trusted):
            return None
        key = address_group(address)
        self._open[key] += 1
        return key

    def past(self, key: str | None) -> int:
        """How many of ``key``'s open connections are past its share (0: within it)."""
        if key is None or self.share is None:
            return 0
        return max(0, self._open[key] - self.share)

    def release(self, key: str | None) -> None:
        if key is None:
            return
        left = self._open[key] - 1
        if left > 0:
            self._open[key] = left
        else:  # gone with the last one: the map holds only addresses with connections open
            del self._open[key]

    def __len__(self) -> int:
        return len(self._open)
