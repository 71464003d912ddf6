"""A small asyncio TCP proxy that breaks the network on purpose (tests only, nothing that ships).

Put it between the gateway and the simulator (``upstream_target=proxy.target``) or between a client
and the gateway (connect to ``proxy.port``), then:

- ``latency_s``          delay every chunk by this long in both directions (order kept)
- ``accept_delay_s``     hold a new connection this long before dialling the target (slow to accept)
- ``cut()``              reset every live connection on both sides (RST, as a crash or a firewall would)
- ``stall("up"|"down")`` stop reading one direction: bytes wait in the kernel, TCP flow control pushes back
- ``blackhole()``        read and discard both directions, sockets stay open (a half-open peer)
- ``heal()``             undo stall/blackhole for live and new connections

"up" is client -> target, "down" is target -> client. Modes apply to live and new connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["up", "down"]
Mode = Literal["forward", "stall", "blackhole"]


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    target: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0

    def abort(self) -> None:
        for writer in (self.client, self.target):
            if writer is not None:
                writer.transport.abort()

    def close(self) -> None:
        for writer in (self.client, self.target):
            if writer is not None:
                writer.close()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.latency_s = 0.0
        self.accept_delay_s = 0.0
        self.links: set[_Link] = set()
        self.accepted = 0
        self.discarded = 0  # bytes swallowed by the blackhole
        self._modes: dict[Direction, Mode] = {"up": "forward", "down": "forward"}
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @classmethod
    def to(cls, target: str) -> FaultProxy:
        host, _, port = target.rpartition(":")
        return cls(host, int(port))

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- faults --------------------------------------------------------------------------------------

    def cut(self) -> int:
        """Reset every live connection (both sides get RST); new connections are still accepted."""
        links = list(self.links)
        for link in links:
            link.abort()
        return len(links)

    def stall(self, direction: Direction) -> None:
        self._set(direction, "stall")

    def blackhole(self) -> None:
        self._set("up", "blackhole")
        self._set("down", "blackhole")

    def heal(self) -> None:
        self._set("up", "forward")
        self._set("down", "forward")

    def mode(self, direction: Direction) -> Mode:
        return self._modes[direction]

    def _set(self, direction: Direction, mode: Mode) -> None:
        self._modes[direction] = mode
        self._changed.set()
        self._changed = asyncio.Event()

    # --- plumbing ------------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        link = _Link(writer)
        self.links.add(link)
        self.accepted += 1
        try:
            if self.accept_delay_s:
                await asyncio.sleep(self.accept_delay_s)
            try:
                target_reader, target_writer = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                link.abort()
                return
            link.target = target_writer
            link.tasks = [
                asyncio.create_task(self._pump(link, "up", reader, target_writer)),
                asyncio.create_task(self._pump(link, "down", target_reader, writer)),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            for pump in link.tasks:
                pump.cancel()
            await asyncio.gather(*link.tasks, return_exceptions=True)
            link.close()
            self.links.discard(link)
            self._handlers.discard(task)

    async def _pump(
        self, link: _Link, direction: Direction, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Copy one direction, applying the current mode and latency; EOF is passed on, a reset resets both."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        deliver = asyncio.create_task(self._deliver(queue, writer))
        try:
            while True:
                while self._modes[direction] == "stall":
                    await self._changed.wait()
                try:
                    data = await reader.read(65536)
                except OSError:
                    link.abort()
                    return
                if not data:
                    await queue.put((0.0, b""))  # EOF, after what is still queued
                    await deliver
                    return
                while self._modes[direction] == "stall":  # stalled while this read was in flight: hold it
                    await self._changed.wait()
                if self._modes[direction] == "blackhole":
                    self.discarded += len(data)
                    continue
                if direction == "up":
                    link.bytes_up += len(data)
                else:
                    link.bytes_down += len(data)
                await queue.put((time.monotonic() + self.latency_s, data))
        finally:
            if not deliver.done():
                deliver.cancel()
            await asyncio.gather(deliver, return_exceptions=True)

    @staticmethod
    async def _deliver(queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                writer.write(data)
                await writer.drain()
            except OSError:
                writer.transport.abort()
                return
