"""Hostile clients against one gateway process while a well-behaved canary session keeps running.

Each attack must get its documented answer (close code, error code or HTTP status), its upstream
stream (if any) must be gone, and the canary's digits must still come back with bounded latency.
Raw frames come from tests/support/raw_ws.py, so the attacks are what a broken or malicious client sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.dataflow.lenient import MAX_JSON_DEPTH
from gateway.relay.intake import AUDIO_FLOOR_MS, MESSAGE_FLOOR_MS
from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import RunningGateway, running_gateway
from tests.support.probes import LoopLag, dtmf_round_trip, figure, start_json, wait_for
from tests.support.raw_ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    RawWebSocket,
    frame,
    handshake_request,
)
from tests.support.settings import settings_for

HEADER_TIMEOUT_S = 1.0
START_TIMEOUT_S = 2.0
MAX_MESSAGE = 256 * 1024
CANARY_LATENCY_S = 3.0  # finalize -> closed of the canary while attacked (typically tens of ms)


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    return {
        "http_header_timeout_s": HEADER_TIMEOUT_S, "start_timeout_s": START_TIMEOUT_S,
        "max_ws_message_bytes": MAX_MESSAGE, "idle_timeout_s": 5,
    }  # fmt: skip


@dataclass
class Canary:
    """Back-to-back native DTMF sessions at real-time pace while an attack runs."""

    gw: RunningGateway
    latencies: list[float] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        digits = ["147", "2580", "369"]
        while not self._stop.is_set() or not self.latencies:
            self.latencies.append(await dtmf_round_trip(self.gw, digits[len(self.latencies) % 3], pace_s=0.1))

    def report(self) -> str:
        worst = max(self.latencies)
        assert worst < CANARY_LATENCY_S, self.latencies
        return f"canary: {len(self.latencies)} sessions, digits intact, worst finalize->closed {worst * 1000:.0f} ms"


@contextlib.asynccontextmanager
async def canary(gw: RunningGateway) -> AsyncIterator[Canary]:
    bird = Canary(gw)
    task = asyncio.create_task(bird.run())
    await asyncio.sleep(0.2)
    try:
        yield bird
    finally:
        bird._stop.set()
        await asyncio.wait_for(task, 30)  # raises if a canary session failed


async def settled(gw: RunningGateway, simulator: DataflowSimulator, expect: int = 0) -> None:
    """Only the canary (at most one session) may still be live; every attacked stream is gone."""
    registry, upstream = gw.gateway.registry, gw.gateway.upstream
    await wait_for(lambda: registry.active <= expect and upstream.active_streams <= expect, 5)


# --- dialects -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    name: str
    path: str
    start: bytes
    started: Callable[[dict[str, Any]], bool]

    async def open(self, gw: RunningGateway) -> RawWebSocket:
        """A raw connection with a started session."""
        ws = await RawWebSocket.connect(gw.port, self.path)
        await ws.send(OP_TEXT, self.start)
        async with asyncio.timeout(10):
            while True:
                received = await ws.recv()
                assert received is not None and received.opcode == OP_TEXT, received
                if self.started(json.loads(received.payload)):
                    return ws


NATIVE = Dialect("native", "/v1/stream", start_json().encode(), lambda m: m.get("type") == "started")
DATAFLOW = Dialect(
    "dataflow_ws", "/project-runner/demo", b'{"MessageName":"Start","ProjectName":"demo"}',
    lambda m: m.get("MessageName") == "StartResponse",
)  # fmt: skip
AUDIOCODES = Dialect(
    "audiocodes", "/v1/audiocodes",
    json.dumps({"type": "start", "language": "en-US", "format": "raw", "encoding": "LINEAR16", "sampleRateHz": 16000})
    .encode(), lambda m: m.get("type") == "started",
)  # fmt: skip
DIALECTS = [NATIVE, DATAFLOW, AUDIOCODES]


def by_name(dialects: list[Dialect]) -> Any:
    return pytest.mark.parametrize("dialect", dialects, ids=[d.name for d in dialects])


# --- slow clients ---------------------------------------------------------------------------------------


@pytest.mark.ws
async def test_slowloris_handshakes_are_cut_at_the_header_deadline(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    baseline = len(gw.server.server_state.connections)
    request = handshake_request(gw.port)
    async with canary(gw) as bird:
        trickling = [await RawWebSocket.open(gw.port) for _ in range(40)]
        silent = [await RawWebSocket.open(gw.port) for _ in range(40)]
        opened = time.monotonic()

        async def trickle(ws: RawWebSocket) -> None:
            with contextlib.suppress(ConnectionError):
                for i in range(len(request) - 2):  # never completes the handshake
                    await ws.send_raw(request[i : i + 1])
                    await asyncio.sleep(0.1)

        senders = [asyncio.create_task(trickle(ws)) for ws in trickling]
        answers = await asyncio.gather(*(ws.read_response(timeout=HEADER_TIMEOUT_S + 5) for ws in trickling + silent))
        cut_after = time.monotonic() - opened
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        assert set(answers) == {408}
        assert all([await ws.eof(timeout=2) for ws in trickling + silent])
        for ws in trickling + silent:
            await ws.aclose()
    await wait_for(lambda: len(gw.server.server_state.connections) <= baseline, 5)
    figure(
        "abuse_slowloris_handshake",
        f"80 slowloris/silent handshakes: all 408 and closed {cut_after:.2f} s after connecting "
        f"(http_header_timeout_s {HEADER_TIMEOUT_S:g}); {bird.report()}",
    )
    assert cut_after < HEADER_TIMEOUT_S + 2.0


@pytest.mark.ws
async def test_header_deadline_spares_kept_alive_and_long_connections(gw: RunningGateway) -> None:
    """The deadline covers headers only: an idle kept-alive connection's next request and a WebSocket
    session longer than the deadline (the canary's, 1.7 s) are not cut."""
    conn = await RawWebSocket.open(gw.port)
    for _ in range(2):
        await conn.send_raw(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert await conn.read_response() == 200
        assert json.loads(await conn.read_body())["status"] == "ok"
        await asyncio.sleep(HEADER_TIMEOUT_S * 1.5)  # idle longer than the header deadline
    await conn.aclose()
    async with canary(gw) as bird:
        pass
    assert bird.latencies  # a full session of about 1.7 s went through


@pytest.mark.ws
async def test_unrenderable_message_ends_the_session_typed(gw: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should a message from Data Flow not be writable as JSON, the client hears why (1011), not silence."""
    from gateway.adapters import messages

    real = messages.event

    def render(event: Any, *, raw: bool) -> dict[str, Any]:
        if event.name == "Unrenderable":
            raise ValueError("Out of range float values are not JSON compliant")
        return real(event, raw=raw)

    monkeypatch.setattr(messages, "event", render)
    ws = await NATIVE.open(gw)
    await ws.send(OP_TEXT, b'{"type":"event","event":{"Name":"Unrenderable"}}')
    code, frames = await ws.close_code()
    await ws.aclose()
    errors = [json.loads(f.payload) for f in frames if f.opcode == OP_TEXT and b'"error"' in f.payload]
    assert [e["code"] for e in errors] == ["internal_error"]
    assert code == 1011
    await wait_for(lambda: gw.gateway.registry.active == 0 and gw.gateway.upstream.active_streams == 0, 5)


async def post_slowly(port: int, body: bytes, *, dribble_s: float, pause_after: int | None = None) -> tuple[int, Any]:
    """POST a WAV body a byte every ``dribble_s`` (or all of it up to ``pause_after``, then nothing);
    returns the status and JSON body the gateway answers meanwhile."""
    conn = await RawWebSocket.open(port)
    head = (
        f"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    await conn.send_raw(head.encode())

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            if pause_after is not None:
                await conn.send_raw(body[:pause_after])
                await asyncio.sleep(3600)
            for i in range(len(body)):
                await conn.send_raw(body[i : i + 1])
                await asyncio.sleep(dribble_s)

    sender = asyncio.create_task(send())
    try:
        status = await conn.read_response(timeout=15)
        return status, json.loads(await conn.read_body())
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await conn.aclose()


@pytest.mark.ws
async def test_slowloris_upload_body_gets_408(gw: RunningGateway) -> None:
    """The WAV header dribbles in a byte at a time: 408 start_timeout after GATEWAY_START_TIMEOUT_S."""
    wav = signals.wav_bytes(signals.utterances(["12"], 8000), 8000, "pcm16")
    async with canary(gw) as bird:
        began = time.monotonic()
        answers = await asyncio.gather(*(post_slowly(gw.port, wav, dribble_s=0.1) for _ in range(10)))
        took = time.monotonic() - began
    assert {(status, body["error"]["code"]) for status, body in answers} == {(408, "start_timeout")}
    figure(
        "abuse_slowloris_upload",
        f"10 uploads dribbling their WAV header: 408 start_timeout after {took:.2f} s "
        f"(start_timeout_s {START_TIMEOUT_S:g}); {bird.report()}",
    )
    assert took < START_TIMEOUT_S + 2.0
    await wait_for(lambda: gw.gateway.registry.active == 0, 5)


async def test_upload_body_that_stalls_mid_audio_ends_with_idle_timeout(simulator: DataflowSimulator) -> None:
    wav = signals.wav_bytes(signals.utterances(["12"], 8000), 8000, "pcm16")
    settings = settings_for(simulator, idle_timeout_s=1.0, ack_interval_ms=100)
    async with running_gateway(settings) as gw:
        began = time.monotonic()
        status, body = await post_slowly(gw.port, wav, dribble_s=0, pause_after=4000)
        took = time.monotonic() - began
        await wait_for(lambda: gw.gateway.registry.active == 0 and gw.gateway.upstream.active_streams == 0, 5)
    assert (status, body["error"]["code"]) == (408, "idle_timeout")
    figure("abuse_upload_stall", f"upload stalled mid-audio: 408 idle_timeout after {took:.2f} s (idle_timeout_s 1)")
    assert took < 1.0 + 2.0


HOSTILE_IDS = "superscript_rate superscript_channels rate_out_of_range nested_150 nested_5000 not_utf8 long_boundary"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (b"Content-Type: audio/L16; rate=\xb2", "invalid_parameters"),  # isdigit() but not a number (was a 500)
        (b"Content-Type: audio/L16; rate=8000; channels=\xb9", "invalid_parameters"),
        (b"Content-Type: audio/L16; rate=96000", "invalid_parameters"),
        (b"X-Dataflow-Parameters: " + b'{"Settings":{"x":' + b"[" * 150 + b"]" * 150 + b"}}", "invalid_parameters"),
        (b"X-Dataflow-Parameters: " + b"[" * 5000 + b"]" * 5000, "invalid_parameters"),
        (b"X-Dataflow-Parameters: \xff\xfe", "invalid_parameters"),
        (b"Content-Type: multipart/form-data; boundary=" + b"b" * 300, "invalid_multipart"),
    ],
    ids=HOSTILE_IDS.split(),
)
async def test_hostile_upload_headers_get_4xx(gw: RunningGateway, header: bytes, code: str) -> None:
    body = bytes(3200)
    conn = await RawWebSocket.open(gw.port)
    content_type = b"" if header.startswith(b"Content-Type") else b"Content-Type: audio/L16; rate=8000\r\n"
    head = b"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\n" + content_type + header + b"\r\n"
    await conn.send_raw(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    status = await conn.read_response()
    answer = json.loads(await conn.read_body())
    await conn.aclose()
    assert status // 100 == 4 and answer.get("error", {}).get("code") == code, (status, answer)
    await wait_for(lambda: gw.gateway.registry.active == 0, 5)


# --- floods and sizes ------------------------------------------------------------------------------------


@pytest.mark.ws
async def test_flood_of_tiny_frames(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    """30 000 one-byte audio frames and 500 pings in one burst: all handled, the loop keeps turning. Each
    costs time on the rate limit's clock (a frame of audio at least AUDIO_FLOOR_MS, a ping MESSAGE_FLOOR_MS):
    40 s of audio time, less the 10 s burst, at 3x real time is 10 s (it was taken in about 2 s)."""
    frames, pings = 30_000, 500
    async with canary(gw) as bird, LoopLag() as lag:
        ws = await NATIVE.open(gw)
        record = simulator.records[-1]
        began = time.monotonic()
        burst = b"".join([frame(OP_BINARY, b"\x01")] * frames)
        burst += b"".join(frame(OP_TEXT, b'{"type":"ping","id":%d}' % i) for i in range(pings))
        await ws.send_raw(burst + frame(OP_TEXT, b'{"type":"finalize"}'))
        pongs, errors, code = [], [], None
        async with asyncio.timeout(60):
            while (received := await ws.recv()) is not None:
                if received.opcode == OP_CLOSE:
                    code = received.close_code
                    break
                if received.opcode != OP_TEXT:
                    continue  # uvicorn's keepalive ping
                message = json.loads(received.payload)
                if message["type"] == "pong":
                    pongs.append(message["id"])
                elif message["type"] == "error":
                    errors.append(message["code"])
        took = time.monotonic() - began
        await ws.aclose()
    assert (code, errors) == (1000, []), (code, errors, len(pongs))
    assert pongs == list(range(pings))  # every ping answered, in order (not closed as a slow client)
    assert record.audio_bytes == frames  # one-byte frames re-framed into whole samples, nothing lost
    figure(
        "abuse_tiny_frames",
        f"{frames} one-byte frames + {pings} pings in one burst: handled in {took:.2f} s "
        f"({(frames + pings) / took:.0f} frames/s), all audio delivered, pongs in order; worst event-loop stall "
        f"{lag.worst * 1000:.0f} ms; {bird.report()}",
    )
    assert lag.worst < 2.0
    s = gw.gateway.settings
    paced = (frames * AUDIO_FLOOR_MS + pings * MESSAGE_FLOOR_MS - s.audio_rate_burst_ms) / 1000 / s.max_audio_rate_x
    assert took > paced * 0.9, (took, paced)


@pytest.mark.ws
async def test_flood_of_bad_messages_is_answered_in_order(gw: RunningGateway) -> None:
    """Data Flow WS dialect: 3 000 unknown messages in one burst, each answered, then a normal finish."""
    count = 3000
    ws = await DATAFLOW.open(gw)
    bogus = b"".join(frame(OP_TEXT, b'{"MessageName":"Bogus%d"}' % i) for i in range(count))
    await ws.send_raw(bogus + frame(OP_TEXT, b'{"MessageName":"Finalize"}'))
    answers, code = [], None
    async with asyncio.timeout(30):
        while (received := await ws.recv()) is not None:
            if received.opcode == OP_CLOSE:
                code = received.close_code
                break
            answers.append(json.loads(received.payload))
    await ws.aclose()
    errors = [a for a in answers if a.get("MessageName") == "ErrorResponse"]
    assert [e["ErrorCode"] for e in errors] == ["unknown_message_type"] * count
    assert answers[-1].get("Name") == "FinalResult"
    assert code == 1000


@pytest.mark.ws
@by_name(DIALECTS)
async def test_huge_frame_closes_1009(gw: RunningGateway, simulator: DataflowSimulator, dialect: Dialect) -> None:
    async with canary(gw) as bird:
        announced = await dialect.open(gw)
        announced_record = simulator.records[-1]
        began = time.monotonic()
        # A header announcing a 1 TiB payload: refused from the header, nothing is buffered.
        await announced.send_raw(bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 40) + b"mask")
        code, _ = await announced.close_code()
        took = time.monotonic() - began
        real = await dialect.open(gw)
        real_record = simulator.records[-1]
        await real.send(OP_BINARY, bytes(MAX_MESSAGE + 1))
        real_code, _ = await real.close_code()
        await settled(gw, simulator, expect=1)
        for ws in (announced, real):
            await ws.aclose()
    assert (code, real_code) == (1009, 1009)
    assert (announced_record.outcome, real_record.outcome) == ("cancelled", "cancelled")
    figure(f"abuse_huge_frame_{dialect.name}", f"1 TiB frame header: 1009 in {took * 1000:.0f} ms; "
           f"{MAX_MESSAGE + 1}-byte frame: 1009; {bird.report()}")  # fmt: skip


# --- malformed content -------------------------------------------------------------------------------------


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.ws
@by_name(DIALECTS)
async def test_deeply_nested_json(gw: RunningGateway, simulator: DataflowSimulator, dialect: Dialect) -> None:
    """Too deep for Python's recursion (100 000) or just over the gateway's limit: invalid_message."""
    async with canary(gw) as bird:
        ws = await dialect.open(gw)
        await ws.send(OP_TEXT, b"[" * 100_000 + b"]" * 100_000)
        first = await _answer(ws)
        if dialect is AUDIOCODES:  # AudioCodes: every failure answers error and closes the socket
            assert first["type"] == "error" and first["reason"].startswith("invalid_message"), first
            assert (await ws.close_code())[0] == 1007
            await ws.aclose()
            ws = await dialect.open(gw)
            await ws.send(OP_TEXT, ('{"type":"stop","x":' + nested(MAX_JSON_DEPTH) + "}").encode())  # 1 too deep
            assert (await _answer(ws))["type"] == "error"
            assert (await ws.close_code())[0] == 1007
        else:
            over = f'{{"type":"event","event":{{"Name":"x","Data":{nested(MAX_JSON_DEPTH - 1)}}}}}'  # 1 too deep
            await ws.send(OP_TEXT, over.encode())
            second = await _answer(ws)
            assert [_code(first), _code(second)] == ["invalid_message", "invalid_message"]
            # At the limit it is accepted (and echoed by the simulator): the session is still fine.
            at_limit = f'{{"type":"event","event":{{"Name":"deep","Data":{{"x":{nested(MAX_JSON_DEPTH - 3)}}}}}}}'
            await ws.send(OP_TEXT, at_limit.encode())
            echoed = await _answer(ws)
            assert echoed.get("name", echoed.get("Name")) == "deep", echoed
        await ws.aclose()
        await settled(gw, simulator, expect=1)
    figure(f"abuse_deep_json_{dialect.name}", f"100000-deep and {MAX_JSON_DEPTH + 1}-deep JSON: invalid_message"
           f"{' + close 1007' if dialect is AUDIOCODES else ', session goes on'}; {bird.report()}")  # fmt: skip


async def _answer(ws: RawWebSocket) -> dict[str, Any]:
    """The next JSON text message that is not a flow report."""
    while True:
        received = await ws.recv()
        assert received is not None and received.opcode == OP_TEXT, received
        message: dict[str, Any] = json.loads(received.payload)
        if message.get("type") != "ack":
            return message


def _code(message: dict[str, Any]) -> str:
    return str(message.get("code") or message.get("ErrorCode"))


@pytest.mark.ws
@by_name(DIALECTS)
async def test_invalid_utf8_text_closes_1007(
    gw: RunningGateway, simulator: DataflowSimulator, dialect: Dialect
) -> None:
    async with canary(gw) as bird:
        ws = await dialect.open(gw)
        record = simulator.records[-1]
        await ws.send(OP_TEXT, b'{"type":"ping","id":"\xff\xfe"}')
        code, _ = await ws.close_code()
        await ws.aclose()
        await settled(gw, simulator, expect=1)
    assert code == 1007
    assert record.outcome == "cancelled"
    figure(f"abuse_invalid_utf8_{dialect.name}", f"invalid UTF-8 text frame: 1007, upstream cancelled; "
           f"{bird.report()}")  # fmt: skip


PROTOCOL_VIOLATIONS: dict[str, Callable[[RawWebSocket], Awaitable[None]]] = {
    "ping_over_125_bytes": lambda ws: ws.send(OP_PING, bytes(200)),
    "fragmented_ping": lambda ws: ws.send(OP_PING, b"x", fin=False),
    "close_code_999": lambda ws: ws.send(OP_CLOSE, struct.pack("!H", 999)),
    "close_one_byte": lambda ws: ws.send(OP_CLOSE, b"\x03"),
    "reserved_opcode": lambda ws: ws.send(0x3, b"??"),
    "unmasked_frame": lambda ws: ws.send_raw(bytes([0x82, 2]) + b"\x00\x00"),
    "text_interrupted_by_binary": lambda ws: _interleave(ws),
    "continuation_without_start": lambda ws: ws.send(OP_CONT, bytes(640)),
}


async def _interleave(ws: RawWebSocket) -> None:
    await ws.send(OP_TEXT, b'{"type":', fin=False)
    await ws.send(OP_BINARY, bytes(640))


@pytest.mark.ws
@by_name(DIALECTS)
async def test_protocol_violations_close_1002(
    gw: RunningGateway, simulator: DataflowSimulator, dialect: Dialect
) -> None:
    """Broken control frames and interleaved text/binary fragments: 1002 and the upstream is cancelled."""
    async with canary(gw) as bird:
        for name, violate in PROTOCOL_VIOLATIONS.items():
            ws = await dialect.open(gw)
            record = simulator.records[-1]
            await violate(ws)
            code, _ = await ws.close_code()
            await ws.aclose()
            assert code == 1002, name
            await wait_for(lambda r=record: r.ended_at is not None, 5)  # type: ignore[misc]
            assert record.outcome == "cancelled", name
        await settled(gw, simulator, expect=1)
    figure(f"abuse_protocol_{dialect.name}", f"{len(PROTOCOL_VIOLATIONS)} RFC 6455 violations (oversized/fragmented "
           f"ping, bad close frames, reserved opcode, unmasked, interleaved fragments): each 1002, upstream cancelled; "
           f"{bird.report()}")  # fmt: skip


@pytest.mark.ws
async def test_text_binary_misuse_native(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    """Audio in text frames is refused; a control message in a binary frame is audio. Nothing else breaks."""
    ws = await NATIVE.open(gw)
    record = simulator.records[-1]
    pcm = signals.to_pcm16(signals.utterances(["73"], 16000))
    await ws.send(OP_TEXT, pcm[:640].hex().encode())  # audio as text: not JSON
    finalize_as_binary = b'{"type":"finalize"}\n'  # 20 bytes: ten samples of "audio"
    await ws.send(OP_BINARY, finalize_as_binary)
    for offset in range(0, len(pcm), 3200):
        await ws.send(OP_BINARY, pcm[offset : offset + 3200])
    await ws.send(OP_TEXT, b'{"type":"finalize"}')
    messages, code = [], None
    async with asyncio.timeout(15):
        while (received := await ws.recv()) is not None:
            if received.opcode == OP_CLOSE:
                code = received.close_code
                break
            messages.append(json.loads(received.payload))
    await ws.aclose()
    assert [m["code"] for m in messages if m["type"] == "error"] == ["invalid_message"]
    assert [m["text"] for m in messages if m["type"] == "event" and m["name"] == "SR Milestone"] == ["73"]
    assert record.audio_bytes == len(pcm) + len(finalize_as_binary)
    assert code == 1000
    figure("abuse_text_binary_misuse", "audio in a text frame: invalid_message; a finalize in a binary frame: "
           "treated as 20 bytes of audio; session finishes 1000 with its digits")  # fmt: skip
