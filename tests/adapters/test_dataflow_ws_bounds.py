"""/project-runner: what a crafted Start costs. Its keys are read tolerantly (any case, ``-`` and ``_``),
and a Start of thousands of junk keys in the legacy spelling made every field's lookup normalise all
of them again: a 900 KB Start held the event loop (every session of the replica) for about half a
second. A Start is now bounded like any control message (GATEWAY_MAX_CONTROL_MESSAGE_BYTES) and its
keys are normalised once."""

from __future__ import annotations

import json

import pytest

import gateway.adapters.dataflow_ws
import gateway.dataflow.lenient
import gateway.dataflow.messages
from tests.support.harness import RunningGateway, read_all, ws_connect
from tests.support.work import lines_run

PARSER_FILES = frozenset(
    {gateway.adapters.dataflow_ws.__file__, gateway.dataflow.lenient.__file__, gateway.dataflow.messages.__file__}
)


def junk_start(keys: int) -> str:
    """A legacy Start (lower-case, kebab keys: no lookup finds its key spelled exactly) with ``keys``
    junk keys, each in the spelling that normalises the slowest."""
    junk = {f"Junk-Key_{i}": 0 for i in range(keys)}
    return json.dumps({**junk, "message-name": "start", "audio": {"sample-rate": "8000", "channel-count": "1"}})


@pytest.mark.ws
async def test_an_oversized_start_is_refused_unread(gw: RunningGateway) -> None:
    start = junk_start(5000)
    assert 64 * 1024 < len(start) < 1024 * 1024  # under the WebSocket message cap, over the control one
    async with ws_connect(gw.ws_url("/project-runner/demo")) as ws:
        with lines_run(PARSER_FILES) as lines:
            await ws.send(start)
            answer = json.loads(await ws.recv())
        assert answer == {
            "message-name": "start-response", "operation-result": "the Start message is over 65536 bytes",
            "error-code": "message_too_big",
        }  # fmt: skip
        result = await read_all(ws, timeout=5)
    assert result.messages == []
    assert result.close_code == 1009
    assert lines.run < 1000, lines.run  # refused unread; was ~260 000 lines (0.45 s of the event loop at 900 KB)


@pytest.mark.ws
async def test_a_start_of_many_keys_costs_work_linear_in_its_keys(gw: RunningGateway) -> None:
    keys = 3000
    start = junk_start(keys)
    assert len(start) < 64 * 1024
    async with ws_connect(gw.ws_url("/project-runner/demo")) as ws:
        with lines_run(PARSER_FILES) as lines:
            await ws.send(start)
            answer = json.loads(await ws.recv())
    assert answer["OperationResult"] == "Success"
    assert lines.run < 20 * keys, lines.run  # a few passes over its keys; was one per field looked up (36 lines a key)


@pytest.mark.ws
async def test_a_refused_audio_format_quotes_the_clients_values_cut_short(gw: RunningGateway) -> None:
    huge, long_encoding = int("9" * 4000), "x" * 50_000  # JSON numbers of up to 4300 digits parse
    for audio in ({"sample-rate": huge}, {"sample-rate": 8000, "channel-count": huge}):
        async with ws_connect(gw.ws_url("/project-runner/demo")) as ws:
            await ws.send(json.dumps({"message-name": "start", "audio": audio}))
            answer = json.loads(await ws.recv())
        assert answer["error-code"] == "unsupported_audio_format", answer
        assert len(answer["operation-result"]) < 200, len(answer["operation-result"])
    async with ws_connect(gw.ws_url("/v1/stream")) as ws:
        await ws.send(json.dumps({"type": "start", "project": "demo", "audio": {"encoding": long_encoding}}))
        error = json.loads(await ws.recv())
    assert error["type"] == "error", error
    assert len(error["message"]) < 200, len(error["message"])
