"""A Data Flow that is up but has stopped reading, over real sockets: the client is paused (its socket
is not read, so its keepalive pings go unanswered), and the typed error must reach it before its own
keepalive gives up on a gateway that looks dead. Data Flow here is a real gRPC server of the test's own
with BDP probing off, so its 64 KiB window fills in a second, not after two minutes of audio."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from gateway.settings import Settings
from tests.support.harness import running_gateway, ws_connect
from tests.support.hostile_upstream import HostileUpstream, Peer, forever
from tests.support.native_client import start_message

#: websockets' default keepalive timeout, as browsers' client libraries have about.
CLIENT_PING_TIMEOUT_S = 20.0


async def stops_reading(peer: Peer) -> None:
    await peer.answer_start()
    await forever()


@pytest.mark.ws
async def test_a_stall_is_reported_before_the_clients_keepalive_gives_up() -> None:
    """The stall bound was 30 s: a client whose first unanswered ping came soon after the pause closed
    itself with "keepalive ping timeout" (1011) at 20 s, never told `upstream_timeout`, and the gateway
    counted a client that left. The default is below websockets' 20 s now."""
    options = [("grpc.http2.bdp_probe", 0)]
    async with (
        HostileUpstream(stops_reading, options) as upstream,
        running_gateway(upstream.settings(upstream_buffer_ms=500)) as gw,
        ws_connect(gw.ws_url(), ping_interval=1, ping_timeout=CLIENT_PING_TIMEOUT_S) as ws,
    ):
        await ws.send(start_message())
        assert json.loads(await ws.recv())["type"] == "started"
        began = time.monotonic()

        async def stream() -> None:
            while True:
                await ws.send(bytes(3200))  # 100 ms of 16 kHz pcm16, ten a second
                await asyncio.sleep(0.1)

        streaming = asyncio.create_task(stream())
        messages = []
        with contextlib.suppress(ConnectionClosedError):  # 1011: the gateway's, or the client's own keepalive
            async for message in ws:
                messages.append(json.loads(message))
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):  # its send may have met the close
            await streaming
        took = time.monotonic() - began
    errors = [m for m in messages if m["type"] == "error"]
    assert ws.close_code == 1011, (ws.close_code, ws.close_reason, took)
    assert [e["code"] for e in errors] == ["upstream_timeout"] and took < CLIENT_PING_TIMEOUT_S, (errors, took)
    assert Settings(_env_file=None).upstream_response_timeout_s < CLIENT_PING_TIMEOUT_S  # type: ignore[call-arg]
