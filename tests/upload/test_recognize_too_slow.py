"""The end of an NDJSON upload whose client stops reading: past GATEWAY_CLIENT_SEND_TIMEOUT_S with no
byte taken, the session ends as ``client_too_slow`` and its upstream stream is released. A client
that comes back within a second of that still gets the ``error`` line as the answer's last and a
well-ended response; one that never comes back has its connection closed with the answer unfinished."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from gateway.logs.filters import ClientMistakeFilter
from gateway.simulator.server import DataflowSimulator
from tests.support.harness import RunningGateway, gateway_factory_for
from tests.support.upload_client import FAST, ndjson_lines, read_answer, send_body

SEND_TIMEOUT_S = 1.5
MINUTES = 60  # an answer larger than the kernel's buffers (~5 MiB for 45 min), so sending it stalls


def too_slow_count(gw: RunningGateway) -> float:
    samples = gw.gateway.metrics.sessions_ended.collect()[0].samples
    return sum(s.value for s in samples if s.name.endswith("_total") and s.labels["outcome"] == "client_too_slow")


@asynccontextmanager
async def stalled_upload(simulator: DataflowSimulator) -> AsyncIterator[tuple[RunningGateway, socket.socket, float]]:
    """An upload whose client has read nothing until the gateway gave up on it; yields the time it did."""
    async with gateway_factory_for(simulator)(client_send_timeout_s=SEND_TIMEOUT_S, **FAST) as gw:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
        sender = asyncio.create_task(send_body(sock, MINUTES, [time.monotonic()]))
        try:
            async with asyncio.timeout(90):
                while too_slow_count(gw) == 0:
                    assert not sender.done() or sender.exception() is None, sender.exception()
                    await asyncio.sleep(0.02)
            yield gw, sock, time.monotonic()
        finally:
            sender.cancel()
            sock.close()


async def test_a_client_back_within_a_second_of_client_too_slow_gets_the_error_line_last(
    simulator: DataflowSimulator,
) -> None:
    async with stalled_upload(simulator) as (_gw, sock, _gave_up):
        async with asyncio.timeout(30):
            answer = await read_answer(sock)
    assert answer.endswith(b"\r\n0\r\n\r\n"), "the response is ended, not cut"
    messages = ndjson_lines(answer)
    assert messages[-1]["type"] == "error", messages[-1]
    assert messages[-1]["code"] == "client_too_slow", messages[-1]
    assert [m["type"] for m in messages].count("error") == 1
    assert "result" not in [m["type"] for m in messages], "no result after the session was ended"
    finals = [m for m in messages if m["type"] == "event" and m["final"]]
    assert finals, "what was sent before the stall is in the answer"
    assert [m["startMs"] for m in finals] == sorted(m["startMs"] for m in finals), "in order"
    assert len(finals) < MINUTES * 60, "the answer really was cut short"


@pytest.fixture
def served_log_filters() -> Iterator[None]:
    """The filter ``serve()``'s logging config puts on uvicorn's logger (tests keep their own config)."""
    server_log, mistakes = logging.getLogger("uvicorn.error"), ClientMistakeFilter()
    server_log.addFilter(mistakes)
    yield
    server_log.removeFilter(mistakes)


@pytest.mark.usefixtures("served_log_filters")
async def test_a_client_that_never_reads_again_is_cut_off_and_its_stream_released(
    simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    async with stalled_upload(simulator) as (gw, sock, gave_up):
        async with asyncio.timeout(5):
            while simulator.active or gw.gateway.registry.active:
                await asyncio.sleep(0.02)
        released_after = time.monotonic() - gave_up
        await asyncio.sleep(1.5)  # past the second the error line is offered for; the client still reads nothing
        async with asyncio.timeout(30):
            answer = await read_answer(sock)
    assert released_after < 1.5, f"the upstream stream was held {released_after:.2f} s after client_too_slow"
    assert not answer.endswith(b"\r\n0\r\n\r\n"), "an unfinished response: the client can tell it was cut"
    head, _, _ = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b'"type":"result"' not in answer
    assert b'"type":"event"' in answer, "what was sent before the stall is still delivered"
    server_lines = [r for r in caplog.records if r.name == "uvicorn.error"]
    assert not [r.getMessage() for r in server_lines if r.levelno >= logging.ERROR], "the client's doing, no ERROR"
    cut = [r for r in server_lines if "unfinished" in r.getMessage()]
    assert len(cut) == 1 and "client_too_slow" in cut[0].getMessage() and cut[0].levelno == logging.INFO
