"""An HTTP CONNECT proxy on 127.0.0.1 that records what it was asked, like an egress proxy in a closed
network; with ``names_only`` it refuses destinations given as IP addresses (403), as proxies that allow
destinations by domain name do."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class ConnectProxy:
    names_only: bool = False
    asked: list[str] = field(default_factory=list)  # CONNECT authorities, in order
    port: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, authority, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            self.asked.append(authority)
            host, _, port = authority.rpartition(":")
            if method != "CONNECT" or (self.names_only and _is_address(host)):
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, ValueError):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handle(reader, writer)
        finally:
            writer.close()
            self._tasks.discard(task)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.close()


@contextlib.asynccontextmanager
async def connect_proxy(names_only: bool = False) -> AsyncIterator[ConnectProxy]:
    proxy = ConnectProxy(names_only)
    server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        for task in list(proxy._tasks):
            task.cancel()
        await asyncio.gather(*proxy._tasks, return_exceptions=True)
        await server.wait_closed()
