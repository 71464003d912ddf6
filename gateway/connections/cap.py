"""The per-process cap on open client connections (``GATEWAY_MAX_CONNECTIONS``).

Everything before a session is bounded in time (a head has ``http_header_timeout_s``, a handshake
without a credential ``start_timeout_s``), but not in number: without a cap a client could open
connections until the process runs out of file descriptors (EMFILE), and then the upstream connections,
webhook POSTs and upload spool files it needs fail too. Past the cap a new connection is answered 503
``capacity_exceeded`` with ``Retry-After`` once its request head is in (WebSocket handshakes before the
upgrade), then closed; connections already open, live sessions among them, are not touched. Under a
flood, connections far past the cap are answered as they come (:data:`WAITING_REFUSALS`).

Unset, the cap is the lower of two figures:

- ``2 x max_sessions + 256``: every session holds one connection, browsers waiting for their credential
  may hold as many again (their own cap, gateway.relay.registry), and 256 are left for plain HTTP
  (probes, metrics scrapes, token mints, a load balancer's kept-alive connections);
- the soft open-file limit (RLIMIT_NOFILE) less a quarter of it or 64, whichever is more, and never below
  16: what is not a client connection needs descriptors too (listening socket, event loop, gRPC's
  connections and its own, webhook connections, upload spool files, logs). With 1024 that is 768, with
  128 it is 64, with 100 it is 36, with 64 it is 16.
"""

from __future__ import annotations

import json
import logging
import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import CapacityExceeded
from gateway.logs.bursts import BurstLog

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger(__name__)

#: The label of ``dataflow_gateway_denials_total`` for a connection refused by the cap.
DENIAL_REASON = "connection_limit"
#: An HTTP path still served (once, then the connection closes) past the cap: the liveness probe.
#: Failing it under a flood of connections would have the replica restarted, live sessions and all.
EXEMPT_PATHS = frozenset({"/healthz"})
#: How long a connection past the cap may take to send its request head before it is answered anyway:
#: it is refused either way, and it holds a descriptor while it waits.
REFUSAL_HEAD_S = 1.0
#: Connections past the cap that may wait for their request head at once. Past these, a new one is answered
#: and closed as it comes, its request unread (a client that had sent one may see a reset instead of
#: the 503): under a flood, the process holds at most the cap and these many client connections.
WAITING_REFUSALS = 32
#: The refusal is logged at most this often (a flood would otherwise write a line per connection).
_LOG_EVERY_S = 60.0
#: The label of ``dataflow_gateway_denials_total`` for a connection refused by its address's share
#: (gateway.connections.address_share).
SHARE_DENIAL_REASON = "address_connection_limit"
_CAP_REACHED = "the cap of %d open connections is reached (GATEWAY_MAX_CONNECTIONS)"
_SHARE_REACHED = "an address has its share of %d open connections (GATEWAY_MAX_CONNECTIONS_PER_ADDRESS)"


def reserved_descriptors(soft_limit: int) -> int:
    return max(64, soft_limit // 4)


@dataclass(frozen=True)
class CapInForce:
    """The cap a process would run with, and why (what ``dataflow-gateway settings`` shows)."""

    value: int | None  # None: no cap
    reason: str


def cap_in_force(max_connections: int | None, max_sessions: int, soft_limit: int | None = None) -> CapInForce:
    """The cap in force: ``max_connections`` as set (0: none), or the default described above (with the
    process's soft open-file limit unless ``soft_limit`` is given)."""
    if max_connections is not None:
        return CapInForce(max_connections or None, "as set" if max_connections else "0: no cap")
    by_sessions = 2 * max_sessions + 256
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if soft_limit is None else soft_limit
    if soft == resource.RLIM_INFINITY:
        return CapInForce(by_sessions, "derived: 2 x GATEWAY_MAX_SESSIONS + 256; open-file limit unlimited")
    by_descriptors = max(16, soft - reserved_descriptors(soft))
    if by_sessions <= by_descriptors:
        why = f"derived: 2 x GATEWAY_MAX_SESSIONS + 256; open-file limit {soft} would allow {by_descriptors}"
        return CapInForce(by_sessions, why)
    kept = soft - by_descriptors
    why = f"derived: open-file limit {soft} less {kept} kept back; 2 x GATEWAY_MAX_SESSIONS + 256 would be "
    why += str(by_sessions)
    return CapInForce(by_descriptors, why)


def connection_cap(max_connections: int | None, max_sessions: int, soft_limit: int | None = None) -> int | None:
    """The cap in force (:func:`cap_in_force`), as the server applies it."""
    return cap_in_force(max_connections, max_sessions, soft_limit).value


def beyond_descriptors(max_connections: int | None) -> str | None:
    """Why a cap set by the operator can never act (the process runs out of descriptors first), or None."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if not max_connections or soft == resource.RLIM_INFINITY:
        return None
    room = soft - reserved_descriptors(soft)
    if max_connections <= room:
        return None
    return (
        f"{max_connections} is more than the open-file limit ({soft}) leaves for client connections ({room}): "
        "the process would run out of descriptors first; raise the limit (ulimit -n, nofile) or unset it"
    )


def app_gateway(app: Any) -> Gateway | None:
    """The gateway behind uvicorn's app (under its middleware wrappers), once the app is built."""
    owner = _stateful(app)
    return getattr(owner.state, "gateway", None) if owner is not None else None


def refusal_body(limit: int, *, share: bool = False) -> bytes:
    """The 503's body: the cap of ``limit`` connections reached, or (``share``) the address's share."""
    if share:
        told = f"this client address has its share of {limit} open connections to this gateway replica; retry later"
    else:
        told = f"this gateway replica has its maximum of {limit} connections open; retry later"
    error = CapacityExceeded(told)
    return json.dumps({"error": error.to_json()}, separators=(",", ":")).encode()


def retry_after_s() -> int:
    return CapacityExceeded.retry_after_s


class RefusalLog:
    """One limit's refusals, logged a burst at a time: the first at once, the rest of each minute in one line
    when it ends (before, they waited for a refusal after the minute: a storm's tail was never logged, or
    lumped with the next storm's). One per app (so per server), not per process, so a second gateway in the
    same process (tests, an app built twice) logs its own first refusal. ``what`` names the limit reached,
    a %-format of its figure."""

    def __init__(self, window_s: float = _LOG_EVERY_S, what: str = _CAP_REACHED) -> None:
        self.window_s, self.what = window_s, what
        self._bursts: BurstLog | None = None

    def refused(self, limit: int, who: str = "") -> None:
        """``who``: named in the first line only (the client address a share counts)."""
        reached = self.what % limit
        if self._bursts is None:
            more = "%(count)d more connection(s) refused in the last %(seconds).1f s: " + reached.replace("%", "%%")
            self._bursts = BurstLog(log, more, self.window_s)
        self._bursts.warn("1 connection(s) refused%s: %s", f" (from {who})" if who else "", reached)

    def close(self) -> None:
        """Tells what the open window counted (at shutdown)."""
        if self._bursts is not None:
            self._bursts.close()


def _stateful(app: Any) -> Any:
    while app is not None and not hasattr(app, "state"):
        app = getattr(app, "app", None)
    return app


def refusal_log(app: Any, kind: str = "connection_refusals", what: str = _CAP_REACHED) -> RefusalLog:
    """The refusal log of ``kind`` of the server behind uvicorn's ``app``."""
    owner = _stateful(app)
    if owner is None:  # not an app this module can tell apart: a log of its own
        return RefusalLog(what=what)
    refusals: RefusalLog | None = getattr(owner.state, kind, None)
    if refusals is None:  # kept on the app it belongs to: it goes when the app goes
        refusals = RefusalLog(what=what)
        setattr(owner.state, kind, refusals)
    return refusals


def count_refusal(app: Any, limit: int, *, share: bool = False, who: str = "") -> None:
    """A connection refused by the cap (or, ``share``, by its address's share): counted in the denials (and
    the refused answers), logged rarely."""
    gateway = app_gateway(app)
    if gateway is not None:
        gateway.registry.deny(SHARE_DENIAL_REASON if share else DENIAL_REASON)
        gateway.metrics.refused(503, CapacityExceeded.code.value)
    if share:
        refusal_log(app, "address_refusals", _SHARE_REACHED).refused(limit, who)
    else:
        refusal_log(app).refused(limit)


def close_refusal_logs(app: Any) -> None:
    """Tells what the open windows of the server's refusal logs counted (at shutdown)."""
    owner = _stateful(app)
    for kind in ("connection_refusals", "address_refusals"):
        refusals: RefusalLog | None = getattr(owner.state, kind, None) if owner is not None else None
        if refusals is not None:
            refusals.close()
