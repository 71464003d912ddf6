"""Run the real gateway in-process on a free port (uvicorn), and a small WebSocket client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.server import DrainingServer, uvicorn_config
from gateway.service import Gateway
from gateway.settings import Settings
from gateway.simulator.server import DataflowSimulator
from tests.support.settings import settings_for


@dataclass
class RunningGateway:
    server: DrainingServer
    port: int

    @property
    def gateway(self) -> Gateway:
        app: Any = self.server.config.loaded_app
        while not hasattr(app, "state"):  # unwrap uvicorn's middleware wrappers
            app = app.app
        gateway: Gateway = app.state.gateway
        return gateway

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/v1/stream") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[RunningGateway]:
    config = uvicorn_config(settings.model_copy(update={"host": "127.0.0.1", "port": 0, "log_level": "info"}))
    server = DrainingServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("gateway did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningGateway(server, port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


#: ``factory(**setting_overrides)``: a gateway in front of one simulator, as an async context manager.
GatewayFactory = Callable[..., AbstractAsyncContextManager[RunningGateway]]


def gateway_factory_for(simulator: DataflowSimulator) -> GatewayFactory:
    """What the ``gateway_factory`` fixture returns, for a test that brings its own simulator."""

    def factory(**overrides: Any) -> AbstractAsyncContextManager[RunningGateway]:
        return running_gateway(settings_for(simulator, **overrides))

    return factory


@dataclass
class Transcript:
    """Everything a client received on one connection."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)
    close_code: int | None = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def events(self, name: str, channel: int | None = None) -> list[dict[str, Any]]:
        return [m for m in self.of_type("event") if m["name"] == name and (channel is None or m["channel"] == channel)]

    def milestones(self, channel: int = 0) -> list[str]:
        return [m["text"] for m in self.events("SR Milestone", channel)]

    def errors(self) -> list[str]:
        return [m["code"] for m in self.of_type("error")]


async def read_all(ws: ClientConnection, transcript: Transcript | None = None, timeout: float = 20) -> Transcript:
    """Read until the server closes the connection."""
    result = transcript or Transcript()
    try:
        async with asyncio.timeout(timeout):
            async for frame in ws:
                if isinstance(frame, bytes):
                    result.audio.append(frame)
                else:
                    result.messages.append(json.loads(frame))
    except ConnectionClosed:
        pass
    await ws.wait_closed()
    result.close_code = ws.close_code
    return result


async def next_message(
    ws: ClientConnection, kind: str, timeout: float = 10, skipped: Transcript | None = None
) -> dict[str, Any]:
    """The next message of type ``kind``; messages before it are dropped or kept in ``skipped``."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.recv()
            if isinstance(frame, str):
                message: dict[str, Any] = json.loads(frame)
                if message.get("type") == kind:
                    return message
                if skipped is not None:
                    skipped.messages.append(message)


def ws_connect(url: str, **kwargs: Any) -> connect:
    return connect(url, compression=None, open_timeout=5, close_timeout=5, **kwargs)


async def vanish_and_expect_upstream_cancelled(ws: ClientConnection, record: Any, gw: RunningGateway) -> None:
    """Drop the client's TCP connection without a close frame; Data Flow must see the stream cancelled
    within a second and the gateway must hold no session or upstream stream afterwards."""
    assert record.ended_at is None
    closed_at = time.monotonic()
    ws.transport.abort()
    async with asyncio.timeout(1.0):
        while record.ended_at is None:
            await asyncio.sleep(0.01)
    assert record.outcome == "cancelled"
    assert record.ended_at - closed_at < 1.0
    async with asyncio.timeout(2):
        while gw.gateway.registry.active or gw.gateway.upstream.active_streams:
            await asyncio.sleep(0.01)
