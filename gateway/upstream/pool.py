"""Upstream connections: sessions spread over several grpc.aio channels, each one HTTP/2 connection.

Proxies and Data Flow cap concurrent streams per connection (nginx 128, many gRPC servers 100) and
retire connections (GOAWAY after a request count or a maximum age). One shared channel made the
101st session wait for a stream slot, so the pool:

- gives a stream to the least loaded open connection below its limit (``max_streams``, or fewer where
  the peer's HTTP/2 SETTINGS allow fewer: :mod:`gateway.upstream.stream_caps`), and opens a new
  connection when none has room, plus a spare as soon as the last slot is taken, so a session never
  waits for another to end or for a handshake;
- spreads connections over the addresses the name resolves to (re-resolved periodically): the
  n-th connection tries address n first (gRPC's pick_first falls back to the others if it is down);
- retires a connection that leaves READY (GOAWAY, maximum age, reset): its streams finish on it,
  new ones go elsewhere, and it is closed once empty (so does one past the pool's own maximum age);
  idle connections beyond one per address (or ``min_connections``) close.

Each channel gets a local subchannel pool and its own id argument: gRPC otherwise shares one TCP
connection between channels with the same target and arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from gateway.upstream.addresses import Resolver, channel_target, split_target, system_resolver
from gateway.upstream.stream_caps import StreamCaps

log = logging.getLogger(__name__)

#: Opens one channel to ``target`` with ``options``.
ChannelFactory = Callable[[str, list[tuple[str, Any]]], grpc.aio.Channel]

_RESOLVE_TIMEOUT_S = 5.0
_USABLE = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING)


@dataclass(eq=False)
class Connection:
    """One channel: one HTTP/2 connection at a time."""

    id: int
    address: str  # the address it tries first (or the configured target before resolution)
    channel: grpc.aio.Channel
    limit: int  # most streams it takes
    streams: int = 0
    retiring: bool = False
    was_ready: bool = False  # has been READY: any other state now means it was retired or lost
    opened_at: float = field(default_factory=time.monotonic)
    idle_since: float = field(default_factory=time.monotonic)
    watcher: asyncio.Task[None] | None = None


@dataclass
class PoolStats:
    """What the metrics read (no addresses: their number is unbounded)."""

    opened: int = 0
    retired: Counter[str] = field(default_factory=Counter)  # by reason: RETIRE_REASONS (pool_metrics)


class ConnectionPool:
    def __init__(
        self,
        target: str,
        factory: ChannelFactory,
        *,
        max_streams: int,
        resolve_interval_s: float,
        idle_close_s: float,
        min_connections: int = 1,
        max_age_s: float | None = None,
        resolver: Resolver | None = None,
        caps: StreamCaps | None = None,
        resolve_name: bool = True,
    ) -> None:
        self.target = target
        self.max_streams = max_streams
        self.caps = caps or StreamCaps(max_streams)
        self.stats = PoolStats()
        self._factory = factory
        self._resolve_interval_s = resolve_interval_s
        self._idle_close_s = idle_close_s
        self._min_connections = min_connections
        self._max_age_s = max_age_s
        self._resolver = resolver or system_resolver
        self._name = split_target(target) if resolve_name else None  # None: gRPC (or its proxy) resolves it
        self._addresses: list[str] = [target]  # until the name is resolved, gRPC resolves it
        self._resolved_at: float | None = None
        self._connections: list[Connection] = []
        self._ids = itertools.count(1)
        self._maintainer: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()  # channel closes under way (a task needs a reference)
        self._closed = False

    # --- what the client asks --------------------------------------------------------------------------

    @property
    def connections(self) -> list[Connection]:
        return list(self._connections)

    @property
    def addresses(self) -> list[str]:
        return list(self._addresses)

    def stream_limit(self) -> int:
        """The smallest limit of the open connections (the configured one when none is open)."""
        return min((c.limit for c in self._open()), default=self.max_streams)

    def open_call(self, method_path: str, deadline_s: float) -> grpc.aio.StreamStreamCall[bytes, bytes]:
        """Open the RPC on the least loaded connection with room; it counts there until it ends."""
        self._maintain()
        connection = self._pick()
        call = connection.channel.stream_stream(method_path, None, None)(None, timeout=deadline_s)
        connection.streams += 1
        call.add_done_callback(lambda _: self._released(connection))
        if not any(c.streams < c.limit for c in self._open()):
            self._connect()  # the last slot is taken: the next session finds a connection ready
        return call

    def ready(self) -> bool:
        """A connection is connected or able to connect on demand (not in a failure back-off)."""
        self._maintain()
        open_ = self._open() or [self._connect()]
        # A first connect is not an outage: TRANSIENT_FAILURE stays until READY.
        return any(c.channel.get_state(try_to_connect=True) in _USABLE for c in open_)

    async def resolve(self) -> list[str]:
        """Look the name up now; connections to addresses no longer listed retire."""
        if self._name is not None:
            try:
                async with asyncio.timeout(_RESOLVE_TIMEOUT_S):
                    found = await self._resolver(*self._name)
            except (OSError, TimeoutError) as exc:
                log.warning("upstream name did not resolve (%s); keeping %d addresses", exc, len(self._addresses))
                found = []
            if found:
                gone = set(self._addresses) - set(found) - {self.target}  # dialled by name: still good
                self._addresses = found
                for connection in self._open():
                    if connection.address in gone:
                        self._retire(connection, "address_gone")
        self._resolved_at = time.monotonic()
        if await self.caps.refresh(self._addresses):
            for connection in self._connections:
                connection.limit = self.caps.limit(connection.address)
        return list(self._addresses)

    def retire_all(self, reason: str) -> None:
        """No new stream goes to a connection open now (they were opened with options since changed)."""
        for connection in self._open():
            self._retire(connection, reason)

    async def aclose(self) -> None:
        self._closed = True
        if self._maintainer is not None:
            self._maintainer.cancel()
            await asyncio.gather(self._maintainer, return_exceptions=True)
        for connection in self._connections:
            if connection.watcher is not None:
                connection.watcher.cancel()
            await connection.channel.close(grace=None)
        self._connections.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)

    # --- choosing and opening --------------------------------------------------------------------------

    def _open(self) -> list[Connection]:
        return [c for c in self._connections if not c.retiring]

    def _keep(self) -> int:
        """Connections kept open: one per address, or more (behind an L4 balancer each reaches a backend)."""
        return max(self._min_connections, len(self._addresses))

    def _pick(self) -> Connection:
        now = time.monotonic()
        for connection in self._open():
            state = connection.channel.get_state()
            if connection.was_ready and state is not grpc.ChannelConnectivity.READY:
                self._retire(connection, "disconnected")  # before its watcher runs: a GOAWAY just came in
            elif state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                # In gRPC's reconnect back-off (up to GATEWAY_UPSTREAM_RECONNECT_BACKOFF_MAX_S) a channel
                # fails each new stream at once without dialling: every attempt of a recovery failed on
                # it, and new sessions kept failing for seconds after Data Flow was back. A new
                # connection dials now; streams opened meanwhile share it.
                self._retire(connection, "unreachable")
            elif self._max_age_s is not None and now - connection.opened_at >= self._max_age_s:
                self._retire(connection, "age")  # so long-lived replicas follow a changed backend set
        open_ = self._open()
        with_room = [c for c in open_ if c.streams < c.limit]
        # Fewer connections than kept: a busy one makes the next session reach another backend.
        spread = len(open_) < self._keep() and all(c.streams for c in with_room)
        if not with_room or spread:
            return self._connect()
        return min(with_room, key=lambda c: c.streams)

    def _connect(self) -> Connection:
        per_address = Counter(c.address for c in self._open())
        first = min(range(len(self._addresses)), key=lambda i: per_address[self._addresses[i]])
        address = self._addresses[first]
        target = self.target if address == self.target else channel_target(self._addresses, first)
        number = next(self._ids)
        # A local subchannel pool and a distinct argument: a connection of its own, not a shared one.
        options = [("grpc.use_local_subchannel_pool", 1), ("gateway.upstream_connection", number)]
        channel = self._factory(target, options)
        channel.get_state(try_to_connect=True)
        connection = Connection(number, address, channel, self.caps.limit(address))
        connection.watcher = asyncio.get_running_loop().create_task(self._watch(connection), name="upstream-conn")
        self._connections.append(connection)
        self.stats.opened += 1
        return connection

    # --- retiring and closing --------------------------------------------------------------------------

    async def _watch(self, connection: Connection) -> None:
        """Retire the connection once it leaves READY: GOAWAY, maximum age, reset, keepalive failure."""
        channel = connection.channel
        with contextlib.suppress(asyncio.CancelledError):
            state = channel.get_state()
            while state is not grpc.ChannelConnectivity.READY:
                if state is grpc.ChannelConnectivity.SHUTDOWN:
                    return
                await channel.wait_for_state_change(state)
                state = channel.get_state()
            connection.was_ready = True
            # Any change away from READY counts, even if it is READY again by the time we look.
            await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
            self._retire(connection, "disconnected")

    def _retire(self, connection: Connection, reason: str) -> None:
        if connection.retiring:
            return
        connection.retiring = True
        self.stats.retired[reason] += 1
        # One line per attempt while Data Flow is down is a flood: those are counted (pool metrics), not logged.
        log.log(
            logging.DEBUG if reason == "unreachable" else logging.INFO,
            "upstream connection %d retires (%s) with %d streams", connection.id, reason, connection.streams,
        )  # fmt: skip
        if connection.streams == 0:
            self._close(connection)

    def _released(self, connection: Connection) -> None:
        connection.streams -= 1
        if connection.streams == 0:
            connection.idle_since = time.monotonic()
            if connection.retiring:
                self._close(connection)

    def _close(self, connection: Connection) -> None:
        if connection in self._connections:
            self._connections.remove(connection)
        if connection.watcher is not None and connection.watcher is not asyncio.current_task():
            connection.watcher.cancel()
        if not self._closed:
            task = asyncio.get_running_loop().create_task(connection.channel.close(grace=None), name="upstream-close")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # --- upkeep ----------------------------------------------------------------------------------------

    def _maintain(self) -> None:
        if self._maintainer is None and not self._closed:
            self._maintainer = asyncio.get_running_loop().create_task(self._maintain_loop(), name="upstream-pool")

    async def _maintain_loop(self) -> None:
        period = max(0.05, min(self._resolve_interval_s, self._idle_close_s) / 2)
        while True:
            try:
                if self._resolved_at is None or time.monotonic() - self._resolved_at >= self._resolve_interval_s:
                    await self.resolve()
                self._close_idle_surplus()
            except Exception:  # the upkeep must outlive a bad resolver answer
                log.exception("upstream connection pool upkeep failed")
            await asyncio.sleep(period)

    def _close_idle_surplus(self) -> None:
        keep = self._keep()
        now = time.monotonic()
        idle = [c for c in self._open() if c.streams == 0 and now - c.idle_since >= self._idle_close_s]
        for connection in idle[: max(0, len(self._open()) - keep)]:
            self._retire(connection, "idle")
