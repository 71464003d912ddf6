"""What one connection can make the gateway hold when its client reads nothing, or pipelines without end:
bounded in bytes and in time, over real sockets (the attacks of tests/system/test_abuse.py are others).

- pings: each one's pong used to be written at once, read or not (tens of MiB buffered a second);
- closing: a closed connection used to stay open, with its buffer, for as long as its client read nothing;
- HTTP pipelining: uvicorn read on after each answer, queueing requests without limit, and an answer its
  client did not read held the connection forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from tests.support.harness import RunningGateway
from tests.support.non_readers import BIG, DEFAULT_PIPELINED, connections, never_reads, non_reader
from tests.support.probes import figure, wait_for
from tests.support.raw_ws import OP_CLOSE, OP_PING, OP_PONG, RawWebSocket, frame, handshake_request

MiB = 1024 * 1024
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"ws_frames_per_s": 0}], indirect=True)
async def test_pongs_for_a_client_that_reads_nothing_stay_bounded(gw: RunningGateway) -> None:
    """Pings unpaced (GATEWAY_WS_FRAMES_PER_S=0; paced, 1000 a second take minutes to fill the buffers):
    the pongs a client that reads nothing is owed stay bounded however fast the pings come."""
    ws = await non_reader(gw.port)
    await ws.send_raw(handshake_request(gw.port))
    assert await ws.read_response() == 101
    ws.writer.transport.pause_reading()
    (conn,) = [c for c in connections(gw) if isinstance(c, WebSocketsSansIOProtocol)]
    burst = frame(OP_PING, b"p" * 125) * 2000
    sent = most = 0
    began = time.monotonic()
    while sent < 32 * MiB:
        await ws.send_raw(burst)
        sent += len(burst)
        most = max(most, conn.transport.get_write_buffer_size())
    took = time.monotonic() - began
    await ws.send(OP_PING, b"latest")
    await asyncio.sleep(0.2)
    most = max(most, conn.transport.get_write_buffer_size())
    figure("pong_flood", f"{sent / MiB:.0f} MiB of pings in {took:.1f} s from a client that reads nothing: "
           f"at most {most / 1024:.0f} KiB of pongs buffered for it")  # fmt: skip
    assert most < MiB, most
    ws.writer.transport.resume_reading()  # it reads again: the latest ping is answered
    async with asyncio.timeout(10):
        while (received := await ws.recv()) is not None and received.payload != b"latest":
            assert received.opcode == OP_PONG, received
    assert received is not None and received.opcode == OP_PONG
    ws.abort()


@pytest.mark.ws
@pytest.mark.parametrize(
    "gw", [{"client_send_timeout_s": 1.0, "client_outbox_bytes": 256 * 1024, "connection_linger_s": 1.0}], indirect=True
)
async def test_a_closed_websocket_whose_client_reads_nothing_is_let_go(gw: RunningGateway) -> None:
    registry = gw.gateway.registry
    clients = await asyncio.gather(*(never_reads(gw.ws_url(), gw.port) for _ in range(3)))
    try:
        await wait_for(lambda: registry.active == 0, 15)  # ended client_too_slow, the sockets still open
        ended = time.monotonic()
        await wait_for(lambda: not connections(gw), 20)  # uvicorn's 10 s close timeout, then the linger
        let_go = time.monotonic() - ended
        figure("close_linger", f"3 closed WebSockets whose clients read nothing: let go {let_go:.1f} s after "
               "their sessions ended (were held until the client left)")  # fmt: skip
    finally:
        for ws in clients:
            ws.transport.abort()


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"connection_linger_s": 1.0, "ws_frames_per_s": 0}], indirect=True)
async def test_a_connection_closed_with_answers_its_client_never_takes_is_let_go(gw: RunningGateway) -> None:
    """A client that reads nothing fills the gateway's buffer with pongs, then sends a close: the gateway
    answers it and closes, and what is left lingers ``connection_linger_s`` (1 s here, 10 s by default)
    with nothing taken, then the connection is aborted."""
    ws = await non_reader(gw.port)
    await ws.send_raw(handshake_request(gw.port))
    assert await ws.read_response() == 101
    ws.writer.transport.pause_reading()
    (conn,) = [c for c in connections(gw) if isinstance(c, WebSocketsSansIOProtocol)]
    try:
        async with asyncio.timeout(10):
            while conn.transport.get_write_buffer_size() == 0:
                await ws.send_raw(frame(OP_PING, b"p" * 125) * 200)
        await ws.send(OP_CLOSE, b"\x03\xe8")
        began = time.monotonic()
        await wait_for(lambda: conn.transport.is_closing(), 5)
        await wait_for(lambda: not connections(gw), 5)
        held = time.monotonic() - began
        figure("close_linger_unread", f"a closed connection whose client takes nothing: aborted {held:.1f} s after its "
               "close (linger 1 s; the default is 10 s; was held until the client left)")  # fmt: skip
        assert 0.9 < held < 3, held
    finally:
        ws.abort()


@pytest.mark.parametrize("gw", [{"connection_linger_s": 1.0}], indirect=True)
async def test_a_pipelining_flood_is_bounded_and_cut(gw: RunningGateway) -> None:
    """Answered up to the bound, the last with ``connection: close``; the client, which takes nothing of
    the answers, is cut once the close has lingered a period with nothing taken."""
    conn = await non_reader(gw.port)
    conn.writer.transport.pause_reading()
    most, sent, cut = 0, 0, False

    async def sample() -> None:
        nonlocal most
        while True:
            most = max([most] + [len(getattr(c, "pipeline", ())) for c in connections(gw)])
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    began = time.monotonic()
    try:
        async with asyncio.timeout(5):
            while True:
                await conn.send_raw(HEALTHZ * 1000)
                sent += 1000
                await asyncio.sleep(0)
    except (ConnectionError, TimeoutError) as exc:
        cut = isinstance(exc, ConnectionError)
    finally:
        sampler.cancel()
    took = time.monotonic() - began
    conn.abort()
    figure("pipeline_flood", f"{sent} pipelined requests written by a client that reads nothing: at most "
           f"{most} waiting, connection {'cut' if cut else 'still open'} after {took:.2f} s")  # fmt: skip
    assert cut and most <= DEFAULT_PIPELINED
    await wait_for(lambda: not connections(gw), 5)


async def read_answers(conn: RawWebSocket) -> int:
    """Responses read (each body skipped) until the server closes the connection."""
    answered = 0
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            await conn.read_response()
            await conn.read_body()
            answered += 1
            if conn.headers.get("connection") == "close":
                assert await conn.eof(5)
                return answered
    return answered


@pytest.mark.parametrize(
    ("gw", "bound"), [({}, DEFAULT_PIPELINED), ({"http_max_pipelined_requests": 4}, 4)], indirect=["gw"]
)
async def test_pipelined_requests_are_answered_in_turn_up_to_the_bound(gw: RunningGateway, bound: int) -> None:
    conn = await RawWebSocket.open(gw.port)
    within = bound - 1
    await conn.send_raw(HEALTHZ * within)  # within the bound: all answered, the connection stays
    for _ in range(within):
        assert await conn.read_response() == 200
        await conn.read_body()
    await conn.send_raw(HEALTHZ)
    assert await conn.read_response() == 200
    await conn.aclose()
    conn = await RawWebSocket.open(gw.port)
    await conn.send_raw(HEALTHZ * 100)  # past it: the first ones answered, the last with connection: close
    assert await read_answers(conn) == 1 + bound
    await conn.aclose()


@pytest.mark.parametrize("gw", [{"http_write_stall_s": 1.0, "client_send_timeout_s": 0.5}], indirect=True)
async def test_an_answer_its_client_never_reads_ends_the_connection(gw: RunningGateway) -> None:
    conn = await non_reader(gw.port)
    conn.writer.transport.pause_reading()
    await conn.send_raw(BIG * 8)  # 11 MB of answers, far past the socket buffers
    began = time.monotonic()
    await wait_for(lambda: bool(connections(gw)), 5)
    await wait_for(lambda: not connections(gw), 10)  # the default bound (30 s) would fail here
    figure("http_write_stall", f"answers a client never reads: connection ended {time.monotonic() - began:.1f} s "
           f"after the request (write stall bound 1 s; was held forever)")  # fmt: skip
    conn.abort()


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"client_send_timeout_s": 1.0, "client_outbox_bytes": 256 * 1024}], indirect=True)
async def test_a_client_that_takes_not_even_the_close_frees_its_slot(gw: RunningGateway) -> None:
    """A client that stops reading and then stops sending too: its session ends client_too_slow, but uvicorn
    writes a close only once the transport takes writes again, so the close never went out and the
    driver's read waited for the client for ever, holding the connection and its slot (still held after
    30 s). Now a close the client does not take within the send timeout drops the connection."""
    ws = await never_reads(gw.ws_url(), gw.port)  # 6 MiB of echoed events, until the gateway stops reading
    try:
        began = time.monotonic()  # from here on nothing is sent either
        await wait_for(lambda: gw.gateway.registry.active == 0, 10)
        freed = time.monotonic() - began
        await wait_for(lambda: not connections(gw), 5)
        figure("close_not_taken", f"a client that took not even the close: slot freed {freed:.1f} s after "
               "its last message (held for ever before)")  # fmt: skip
        assert freed < 5  # the outbox's send timeout, then the close's: about 2 s
    finally:
        ws.transport.abort()
