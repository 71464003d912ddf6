"""Numbers JSON cannot carry (NaN, Infinity, -Infinity, 1e999: Python's json reads them, strict parsers
do not) in a Data Flow event are read as null. Before, one such value made an upload's JSON answer a 500
(every result lost) and reached a browser or an NDJSON reader as a bare ``NaN`` its parser refuses. (A
client's own are refused in its words: tests/security/test_start_bounds.py.)

Over real sockets: a hostile Data Flow (tests/support/hostile_upstream.py) behind the real gateway."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gateway.upstream.contract import ContentType
from tests.support import signals
from tests.support.harness import running_gateway, ws_connect
from tests.support.hostile_upstream import HostileUpstream, Peer
from tests.support.native_client import start_message

#: One event as a Data Flow that writes what Python's json (or .NET's with named floating-point
#: literals allowed) writes for its numbers.
ODD_EVENT = (
    b'{"Name":"SR Milestone","Channel":0,"StartMsec":0,"EndMsec":400,'
    b'"Data":{"Text":"Infinity and NaN","Confidence":NaN,"Energy":-Infinity,"Scale":1e999,"Rate":2.5e3}}'
)


def strict(text: str | bytes) -> Any:
    """JSON as a browser's JSON.parse takes it: no NaN, no Infinity."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    value = json.loads(text, parse_constant=refuse)
    assert "inf" not in json.dumps(value).lower().replace('"infinity and nan"', ""), value
    return value


async def odd_numbers(peer: Peer) -> None:
    """Answer Start, take the audio, then the odd event and the end."""
    await peer.answer_start()
    await peer.read_until_finalize()
    await peer.send_raw_text(ContentType.EVENT, ODD_EVENT)
    await peer.send_json(ContentType.RESPONSE, {"MessageName": "FinalizeResponse", "operation-result": "success"})
    await peer.send_json(ContentType.EVENT, {"Name": "FinalResult", "Channel": 0, "Data": {}})


def assert_read_as_null(data: dict[str, Any]) -> None:
    assert data["Text"] == "Infinity and NaN"  # words are words
    assert (data["Confidence"], data["Energy"], data["Scale"], data["Rate"]) == (None, None, None, 2500.0), data


@pytest.mark.ws
async def test_a_websocket_client_gets_null() -> None:
    async with (
        HostileUpstream(odd_numbers) as upstream,
        running_gateway(upstream.settings()) as gw,
        ws_connect(gw.ws_url()) as ws,
    ):
        await ws.send(start_message())
        assert strict(await ws.recv())["type"] == "started"
        await ws.send(bytes(3200))
        await ws.send(json.dumps({"type": "finalize"}))
        frames = [frame async for frame in ws]
    messages = [strict(frame) for frame in frames]  # every frame parses strictly
    [milestone] = [m for m in messages if m["type"] == "event" and m["name"] == "SR Milestone"]
    assert_read_as_null(milestone["data"])
    assert [m for m in messages if m["type"] == "error"] == [], messages
    assert ws.close_code == 1000


async def test_an_upload_answers_200_with_null() -> None:
    wav = signals.wav_bytes(signals.utterances(["12"], 8000), 8000)
    async with (
        HostileUpstream(odd_numbers) as upstream,
        running_gateway(upstream.settings()) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http,
    ):
        answer = await http.post("/v1/recognize", content=wav, headers={"content-type": "audio/wav"})
        lines = await http.post(
            "/v1/recognize", content=wav, headers={"content-type": "audio/wav", "accept": "application/x-ndjson"}
        )
    assert answer.status_code == 200, answer.text  # before: 500 internal_error, the transcript lost
    [milestone] = [e for e in strict(answer.content)["events"] if e["name"] == "SR Milestone"]
    assert_read_as_null(milestone["data"])
    assert lines.status_code == 200
    streamed = [strict(line) for line in lines.text.splitlines() if line]  # before: a bare NaN in a line
    assert any(m.get("name") == "SR Milestone" for m in streamed), streamed
