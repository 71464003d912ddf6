"""Text as contact centres have it (Turkish, Chinese, emoji, text a .NET engine cut mid-pair) through the
gateway: every client gets strict JSON, memory bounds count its bytes, a header is read as the UTF-8 sent,
and a transcript is joined as its script is written. Data Flow here is a real gRPC server of the test's own
(tests/support/hostile_upstream.py)."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import httpx
import pytest

from gateway.adapters.messages import MAX_LANGUAGE_CHARS, language_tag
from gateway.dataflow.messages import DataflowEvent
from gateway.errors import BadRequest
from gateway.relay.client_json import client_json
from gateway.relay.transcript import Transcript
from gateway.upstream.contract import ContentType
from gateway.upstream.errors import printable
from tests.support.harness import running_gateway, ws_connect
from tests.support.hostile_upstream import HostileUpstream, Peer
from tests.support.native_client import start_message
from tests.support.non_readers import live_sessions, small_window_socket

MiB = 1 << 20
TURKISH = "\u00e7a\u011fr\u0131"  # a project name, "call" in Turkish (escaped: a dotless i reads as an i)
LONE = '{"Name":"SR Milestone","Channel":0,"Data":{"Text":"a\\ud800b"}}'  # JSON's escape of a lone surrogate


def wav(rate: int = 8000) -> bytes:
    data = bytes(1600)
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", len(data)) + data
    )


def strict(raw: str | bytes) -> Any:
    """``raw`` parsed as a strict parser (orjson, serde_json, jq) would: no lone surrogate in any string."""
    value = json.loads(raw)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError: "surrogates not allowed"
    return value


async def lone_surrogate(peer: Peer) -> None:
    await peer.answer_start()
    await peer.send_json(ContentType.EVENT, LONE)
    await peer.read_until_finalize()
    await peer.send_event("FinalResult")


@pytest.mark.ws
async def test_a_lone_surrogate_from_data_flow_reaches_no_client_as_invalid_json() -> None:
    """It was relayed as "\\ud800": orjson, serde_json and jq refused the frame or NDJSON line (a reader
    stopped there). It is U+FFFD now, as invalid UTF-8 bytes from Data Flow are."""
    async with HostileUpstream(lone_surrogate) as upstream, running_gateway(upstream.settings()) as gw:
        async with ws_connect(gw.ws_url()) as ws:
            await ws.send(start_message())
            frames = [await ws.recv()]
            await ws.send(bytes(3200))
            await ws.send(json.dumps({"type": "finalize"}))
            async for frame in ws:  # until the server closes (1000 after finalize)
                frames.append(frame)
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=20) as http:
            ndjson = await http.post("/v1/recognize", content=wav(), headers={"Accept": "application/x-ndjson"})
    lines = [line for line in ndjson.content.split(b"\n") if line]
    messages = [strict(raw) for raw in [*frames, *lines]]
    texts = [m.get("text") for m in messages if m.get("type") == "event" and m.get("text")]
    assert texts == ["a\ufffdb", "a\ufffdb"]  # the WebSocket's event and the upload's


@pytest.mark.ws
async def test_the_outbox_counts_an_events_bytes_not_its_characters() -> None:
    """Emoji text to a client that reads nothing: the 1 MiB outbox held 4.1 MB of it (each emoji counted
    as one), so the process's outbox budget was a quarter of what it held."""

    async def emoji(peer: Peer) -> None:
        await peer.answer_start()
        for _ in range(200):
            text = json.dumps({"Name": "SR Partial", "Channel": 0, "Data": {"Text": "😀" * 16384}}, ensure_ascii=False)
            await peer.send_json(ContentType.EVENT, text)
        await peer.read_until_finalize()

    settings = {"client_outbox_bytes": MiB, "client_event_queue": 100_000, "client_send_timeout_s": 30}
    async with HostileUpstream(emoji) as upstream, running_gateway(upstream.settings(**settings)) as gw:
        ws = await ws_connect(gw.ws_url(), max_queue=1, max_size=None, sock=small_window_socket(gw.port))
        await ws.send(start_message())
        ws.transport.pause_reading()
        await asyncio.sleep(3)
        (session,) = live_sessions(gw)
        held = [item for item, _, _ in session.outbox._items if isinstance(item, DataflowEvent)]
        utf8 = sum(len(item.data["Text"].encode()) for item in held)
        ws.transport.abort()
    assert utf8 <= MiB + 16384 * 4 + 100, f"{utf8} bytes of text held against a 1 MiB outbox"


CHINESE = "您好\uff0c请问有什么可以帮您\uff1f" * 12_000  # 144 000 characters: 432 000 bytes of UTF-8, 864 000 escaped


async def long_chinese_result(peer: Peer) -> None:
    await peer.answer_start()
    await peer.read_until_finalize()
    await peer.send_json(
        ContentType.EVENT,
        json.dumps(
            {"Name": "FinalResult", "Channel": 0, "Data": {"Text": CHINESE + "\u2028\x85end"}}, ensure_ascii=False
        ),
    )


@pytest.mark.ws
async def test_a_long_chinese_result_reaches_a_client_with_the_default_message_limit() -> None:
    """Written as ``\\u`` escapes, a 432 KB Chinese result (its text twice in a native event) was a
    1.7 MB frame, and a websockets client with its default 1 MiB limit closed with 1009: the call's
    result lost. As UTF-8 the frame is about the bytes Data Flow sent, twice."""
    async with (
        HostileUpstream(long_chinese_result) as upstream,
        running_gateway(upstream.settings()) as gw,
        ws_connect(gw.ws_url()) as ws,  # max_size: websockets' default, 1 MiB
    ):
        assert ws.protocol.max_message_size == MiB
        await ws.send(start_message())
        await ws.recv()
        await ws.send(bytes(3200))
        await ws.send(json.dumps({"type": "finalize"}))
        frames = [frame async for frame in ws]
        assert ws.close_code == 1000, (ws.close_code, ws.close_reason)
    (final,) = [strict(frame) for frame in frames if '"FinalResult"' in frame]
    assert final["text"] == CHINESE + "\u2028\x85end"
    text_bytes = len(CHINESE.encode())
    assert len(next(f for f in frames if '"FinalResult"' in f).encode()) < 2 * text_bytes + 1024


async def test_ndjson_and_sse_lines_are_utf8_and_stay_one_line_each() -> None:
    """NDJSON and server-sent events carried Chinese as escapes (twice the bytes); as UTF-8, U+2028, U+2029
    and U+0085 are still escaped: line readers other than JSON's (``str.splitlines``) break lines there."""
    async with (
        HostileUpstream(long_chinese_result) as upstream,
        running_gateway(upstream.settings()) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=20) as http,
    ):
        ndjson = await http.post("/v1/recognize", content=wav(), headers={"Accept": "application/x-ndjson"})
        sse = await http.post("/v1/recognize", content=wav(), headers={"Accept": "text/event-stream"})
    assert ndjson.status_code == 200 and sse.status_code == 200
    lines = ndjson.text.splitlines()  # splits at U+2028, U+2029 and U+0085 too
    (final,) = [strict(line) for line in lines if '"FinalResult"' in line]
    assert final["text"] == CHINESE + "\u2028\x85end"
    assert len(ndjson.content) < 2 * len(CHINESE.encode()) + 4096  # escaped: over 3.4 times
    data = [line.removeprefix("data: ") for line in sse.text.splitlines() if line.startswith("data: ")]
    assert any(strict(line).get("text") == CHINESE + "\u2028\x85end" for line in data)


def test_client_json_is_valid_utf8_on_one_line() -> None:
    """What no UTF-8 or line reader takes is escaped; everything else is written as it is."""
    value = {"a": TURKISH + " 您好 😀", "b": "x\ud800y", "c": "1\u20282\u20293\x854"}
    text = client_json(value)
    assert json.loads(text) == value and len(text.splitlines()) == 1
    text.encode()  # no lone surrogate left to refuse
    assert TURKISH + " 您好 😀" in text and "\\ud800" in text and "\\u2028" in text and "\\u0085" in text


async def test_a_project_name_header_is_read_as_the_utf8_sent() -> None:
    starts: list[dict[str, Any]] = []

    async def record(peer: Peer) -> None:
        starts.append(await peer.read_start())
        await peer.answer_start(read=False)
        await peer.read_until_finalize()
        await peer.send_event("FinalResult")

    async with (
        HostileUpstream(record) as upstream,
        running_gateway(upstream.settings()) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=20) as http,
    ):
        answer = await http.post("/v1/recognize", content=wav(), headers={"ProjectName": TURKISH.encode()})
        latin1 = await http.post("/v1/recognize", content=wav(), headers={"ProjectName": b"\xe7a\xf0r\xfd"})
    assert answer.status_code == 200, answer.text
    assert starts[0]["ProjectName"] == TURKISH  # mojibake before (its UTF-8 bytes read as latin-1)
    assert latin1.status_code == 422 and latin1.json()["error"]["code"] == "invalid_parameters", latin1.text
    assert len(starts) == 1  # the one that is not UTF-8 never reached Data Flow


def test_data_flows_words_quoted_to_a_client_hold_no_line_separator_or_lone_surrogate() -> None:
    """A refusal text or session id with U+2028/U+2029 (a line break to JavaScript) or a lone surrogate
    was quoted as it was: strict parsers refused the client's message."""
    assert printable("no project\u2028FORGED\u2029x \ud800 \u202e") == "no project\ufffdFORGED\ufffdx \ufffd \ufffd"


def test_a_language_tag_is_bounded() -> None:
    """AudioHook kept any ``language`` (30 000 characters made each transcript message 180 KB)."""
    assert language_tag("tr-TR") == "tr-TR" and language_tag("") is None and language_tag(7) is None
    with pytest.raises(BadRequest):
        language_tag("x" * (MAX_LANGUAGE_CHARS + 1))


@pytest.mark.parametrize(
    ("results", "joined"),
    [
        (["您好\uff0c", "请问有什么可以帮您\uff1f"], "您好\uff0c请问有什么可以帮您\uff1f"),
        (["こんにちは。", "お元気ですか。"], "こんにちは。お元気ですか。"),
        (["Hello.", "How are you?"], "Hello. How are you?"),
        (["Hello. ", "How are you?"], "Hello. How are you?"),
        (["สวัสดี", "ครับ"], "สวัสดี ครับ"),
        (["123", "456"], "123 456"),
    ],
    ids=["chinese", "japanese", "english", "own-space", "thai", "digits"],
)
def test_results_are_joined_as_their_script_is_written(results: list[str], joined: str) -> None:
    """A space went between every two results: in the middle of Chinese and Japanese text, and twice after
    a result that ended with one."""
    transcript = Transcript(MiB)
    for text in results:
        transcript.add(0, text)
    assert transcript.by_channel() == {0: joined}
    assert transcript._bytes == len(joined.encode())  # the bound counts the text as joined
