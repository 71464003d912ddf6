"""A Start whose write races the end of its RPC (grpc/grpc#36066), provoked on a real gRPC call.

A server that answers a stream without reading it (UNIMPLEMENTED for a method path it does not serve; a
proxy or interceptor refusing on headers) can end the RPC while the Start's write is on its way; grpc.aio
then reports its own INTERNAL "Internal error from Core" and the server's status is lost: 1 start in 400
against the in-process simulator with a core busy, 1 in 9 against a server answering from its own
threads, as a remote one does (2 in 5 on a loaded CI machine), and a plain retry raced as often. The
gateway opens a second RPC that waits for the server's answer before it writes, so the error a session
ends with says why (here: the method path), not a retryable outage that is none.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import grpc
import pytest
from pydantic import SecretStr

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import StartRequest, build_start
from gateway.errors import UpstreamProtocolError
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.contract import ContentType
from gateway.upstream.start_race import START_RACE_WAIT_S, ends_unread, status_lost_to_a_write_race
from gateway.upstream.token import StaticTokenProvider
from tests.support.settings import SIM_TENANT, SIM_TOKEN, offline_settings

STARTS = 120


@pytest.fixture
def serves_nothing() -> Iterator[str]:
    """A real gRPC server with no methods, answering from its own threads (as a remote one does, while the
    gateway's event loop is busy): every stream ends UNIMPLEMENTED without its first message read."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


class HeldWrite:
    """A real call whose first write goes out only after the event loop was held for 5 ms, a few turns
    (1 to 6: where the race falls differs) after the RPC opened: the server's answer reaches gRPC core
    while grpc.aio cannot see it yet, which is the race a busy core makes."""

    def __init__(self, call: grpc.aio.StreamStreamCall[bytes, bytes], turns: int, seen: dict[str, int]) -> None:
        self._call, self._turns, self._seen = call, turns, seen
        self._held = False

    async def write(self, message: bytes) -> None:
        if not self._held:
            self._held = True
            for _ in range(self._turns):
                await asyncio.sleep(0)
            time.sleep(0.005)
            if self._call.done():
                self._seen["ended before the write"] += 1
        try:
            await self._call.write(message)
        except grpc.aio.AioRpcError as exc:
            if status_lost_to_a_write_race(exc.code(), exc.details()):
                self._seen["raced"] += 1
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class RacingClient(UpstreamClient):
    """Holds the first write of the first RPC each start opens (a retry's RPC runs unheld)."""

    def __init__(self, target: str) -> None:
        settings = offline_settings(upstream_target=target, upstream_tenant=SIM_TENANT, default_project="demo")
        super().__init__(settings, StaticTokenProvider(SecretStr(SIM_TOKEN)))
        self.hold_turns: int | None = None
        self.seen = {"raced": 0, "ended before the write": 0}
        self.opened = 0

    def open_call(self, deadline_s: float) -> grpc.aio.StreamStreamCall[bytes, bytes]:
        call = super().open_call(deadline_s)
        self.opened += 1
        if self.hold_turns is None:
            return call
        held = HeldWrite(call, self.hold_turns, self.seen)
        self.hold_turns = None
        return cast("grpc.aio.StreamStreamCall[bytes, bytes]", held)


async def test_a_start_that_raced_its_rpcs_end_reports_the_servers_status(serves_nothing: str) -> None:
    client = RacingClient(serves_nothing)
    fmt = AudioFormat("pcm16", 8000, 1)
    failures: list[BaseException] = []
    try:
        for n in range(STARTS):
            client.hold_turns = 1 + n % 6
            try:
                await client.stream(fmt, deadline_s=5).start(StartRequest(project="demo", audio=fmt))
            except Exception as exc:
                failures.append(exc)
    finally:
        await client.aclose()
    errors = sorted({f"{type(f).__name__}: {f}" for f in failures})
    raced = client.seen["raced"]
    print(f"figure: {STARTS} starts on a server without the method: {client.seen}; "
          f"{client.opened} RPCs opened; errors: {errors}")  # fmt: skip
    assert len(failures) == STARTS  # no start succeeds on a method the server does not serve
    assert raced, "the race was not provoked: the test proves nothing"
    assert client.opened == STARTS + raced  # one more RPC for each race, and no more
    assert all(isinstance(f, UpstreamProtocolError) and "METHOD_PATH" in f.message for f in failures), errors
    assert client.active_streams == 0  # each RPC, the retried one too, counted out


async def test_the_second_rpc_learns_which_server_it_has(serves_nothing: str, upstream: UpstreamClient) -> None:
    """What the second RPC waits for, on real calls: a server that answers without reading ends it at once
    (its status is read, nothing is written); Data Flow (the simulator) waits for the Start, so the wait
    runs out and the Start is written on the same RPC, which then works."""
    refusing = RacingClient(serves_nothing)
    try:
        call = refusing.open_call(5)
        began = time.monotonic()
        assert await ends_unread(call, 5.0)
        took = time.monotonic() - began
        assert await call.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        refusing.call_ended()
        await refusing.aclose()
    fmt = AudioFormat("pcm16", 8000, 1)
    waiting = upstream.open_call(5)
    began = time.monotonic()
    assert not await ends_unread(waiting, 0.3)
    waited = time.monotonic() - began
    start = build_start(StartRequest(project="demo", audio=fmt), token=SIM_TOKEN, tenant=SIM_TENANT)
    await waiting.write(upstream.contract.encode_request(ContentType.REQUEST, text=json.dumps(start)))
    answer = upstream.contract.decode_response(await waiting.read())
    waiting.cancel()
    upstream.call_ended()
    print(f"figure: a refusing server ended the RPC in {took * 1000:.0f} ms; the simulator waited {waited:.2f} s")
    assert took < START_RACE_WAIT_S and 0.3 <= waited < 2.0  # the answer comes within the wait
    assert '"StartResponse"' in answer.text and '"OperationResult": "Success"' in answer.text, answer.text
