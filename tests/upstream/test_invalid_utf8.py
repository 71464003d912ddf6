"""A Data Flow message whose text is not valid UTF-8 (a transcript cut mid-character) costs its bad bytes,
not the session: it is read with U+FFFD in their place and relayed, between the events around it, to a
native WebSocket client and to an upload. A message that is not protobuf still ends the session."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.upstream.contract import ContentType, WireContract
from gateway.upstream.repair_log import RepairLog
from tests.support import signals
from tests.support.harness import running_gateway
from tests.support.hostile_upstream import HostileUpstream, Peer, native_session

ROOT = Path(__file__).resolve().parents[2]
SECRET_WORD = "Zyxwvutsrq"  # stands for transcript text: it must reach the client, never the log
CUT = b'{"Name":"SR Milestone","Channel":0,"Data":{"Text":"' + SECRET_WORD.encode() + b' caf\xc3"}}'  # é cut
BROKEN = b'{"Name":"SR Milestone","Channel":0,"Data":{"Text":"' + SECRET_WORD.encode() + b'"}\xff}'  # not JSON
REPAIRED = "an upstream EVENT message of"


async def milestone(peer: Peer, text: str) -> None:
    await peer.send_event("SR Milestone", Text=text)


async def end(peer: Peer) -> None:
    await peer.send_json(ContentType.RESPONSE, {"MessageName": "FinalizeResponse", "operation-result": "success"})
    await peer.send_event("FinalResult", Node="SR")


class Script:
    """Answer Start, take the audio, then: a valid event, ``bad`` as raw text, a valid event, the end."""

    def __init__(self, *bad: bytes) -> None:
        self.bad = bad
        self.sizes: list[int] = []  # of the bad messages, as sent

    async def __call__(self, peer: Peer) -> None:
        await peer.answer_start()
        await peer.read_until_finalize()
        await milestone(peer, "before")
        for content in self.bad:
            self.sizes.append(await peer.send_raw_text(ContentType.EVENT, content))
        await milestone(peer, "after")
        await end(peer)


def repair_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "invalid UTF-8" in r.getMessage()]


def assert_no_content_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records  # the logs were captured
    served = [r for r in caplog.records if r.name != "websockets.client"]  # the test's own client logs its frames
    leaks = [r.getMessage() for r in served if SECRET_WORD in r.getMessage() or "caf\ufffd" in r.getMessage()]
    assert leaks == []


@pytest.mark.ws
async def test_a_cut_character_is_relayed_as_u_fffd_and_the_session_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    # Before: protobuf refused the message (DecodeError), the session ended upstream_protocol_error, and
    # "after" and FinalResult never came.
    caplog.set_level(logging.DEBUG)
    script = Script(CUT)
    async with HostileUpstream(script) as upstream:
        first, transcript, _ = await native_session(upstream)
    assert first["type"] == "started"
    assert transcript.errors() == [] and transcript.close_code == 1000, transcript.messages
    assert transcript.milestones() == ["before", f"{SECRET_WORD} caf\ufffd", "after"]
    assert len(transcript.events("FinalResult")) == 1 and len(upstream.peers) == 1
    [line] = repair_lines(caplog)
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        f"{REPAIRED} {script.sizes[0]} bytes had 1 invalid UTF-8 bytes in its text: read with them replaced by U+FFFD"
    )
    assert_no_content_logged(caplog)


@pytest.mark.ws
async def test_bad_bytes_that_break_the_json_are_skipped_like_any_other_non_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before: the session ended at the bad byte. Now: read, repaired, and then not JSON: skipped with the
    # non-JSON skip's own warning, and the session goes on.
    caplog.set_level(logging.DEBUG)
    async with HostileUpstream(Script(BROKEN)) as upstream:
        _, transcript, _ = await native_session(upstream)
    assert transcript.errors() == [] and transcript.close_code == 1000, transcript.messages
    assert transcript.milestones() == ["before", "after"]
    assert len(repair_lines(caplog)) == 1
    skips = [r for r in caplog.records if "not a JSON object" in r.getMessage()]
    assert [r.getMessage() for r in skips] == ["skipped an upstream EVENT message that is not a JSON object"]
    assert_no_content_logged(caplog)


@pytest.mark.ws
async def test_a_burst_of_them_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with HostileUpstream(Script(*[CUT] * 50)) as upstream:
        _, transcript, _ = await native_session(upstream)
    assert transcript.milestones() == ["before", *[f"{SECRET_WORD} caf\ufffd"] * 50, "after"]
    # The other 49 are told in one line when the 10 s window ends, or when the gateway stops before that.
    said = [r.getMessage() for r in repair_lines(caplog)]
    assert len(said) == 2 and said[1].startswith("49 more upstream messages had invalid UTF-8"), said


@pytest.mark.ws
async def test_a_burst_of_messages_that_are_not_json_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    # Before: one WARNING per message (an upstream or proxy answering with something else flooded the log).
    caplog.set_level(logging.DEBUG)
    async with HostileUpstream(Script(*[b"<html>busy</html>"] * 50)) as upstream:
        _, transcript, _ = await native_session(upstream)
    assert transcript.errors() == [] and transcript.milestones() == ["before", "after"], transcript.messages
    skips = [r.getMessage() for r in caplog.records if "not a JSON object" in r.getMessage()]
    assert skips == ["skipped an upstream EVENT message that is not a JSON object"], skips
    told = [r.getMessage() for r in caplog.records if "not JSON objects were skipped" in r.getMessage()]
    assert len(told) == 1 and told[0].startswith("49 more upstream messages"), told  # when the gateway stopped


async def test_skips_after_the_first_are_summed_when_the_window_ends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    odd = RepairLog(logging.getLogger("test.repairs"), window_s=0.2)
    for _ in range(7):
        odd.skipped("EVENT")
    odd.repaired("EVENT", 100, 2)  # a window of its own: logged at once
    async with asyncio.timeout(5):
        while len(caplog.records) < 3:
            await asyncio.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "skipped an upstream EVENT message that is not a JSON object"
    assert lines[1].startswith("an upstream EVENT message of 100 bytes had 2 invalid UTF-8 bytes")
    assert lines[2].startswith("6 more upstream messages that are not JSON objects were skipped in the last 0.")


async def test_an_upload_answers_with_the_repaired_transcript(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wav = signals.wav_bytes(signals.utterances(["12"], 8000), 8000)
    async with (
        HostileUpstream(Script(CUT)) as upstream,
        running_gateway(upstream.settings()) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http,
    ):
        response = await http.post("/v1/recognize", content=wav, headers={"content-type": "audio/wav"})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["transcript"] == {"0": f"before {SECRET_WORD} caf\ufffd after"}
    texts = [e["text"] for e in answer["events"] if e["name"] == "SR Milestone"]
    assert texts == ["before", f"{SECRET_WORD} caf\ufffd", "after"]
    assert len(repair_lines(caplog)) == 1
    assert_no_content_logged(caplog)


@pytest.mark.ws
async def test_a_truncated_message_still_ends_the_session_as_undecodable() -> None:
    async def truncated(peer: Peer) -> None:
        await peer.answer_start()
        await peer.read_until_finalize()
        await milestone(peer, "before")
        data = peer.contract.encode_response(ContentType.EVENT, text=CUT.decode("utf-8", "replace"))
        await peer.context.write(data[:-5])  # the length prefix promises 5 bytes more than come
        await milestone(peer, "after")
        await end(peer)

    async with HostileUpstream(truncated) as upstream:
        _, transcript, _ = await native_session(upstream)
    error = transcript.of_type("error")[-1]
    assert (error["code"], error["retryable"]) == ("upstream_protocol_error", False), error
    assert "undecodable" in error["message"]
    assert transcript.milestones() == ["before"] and transcript.close_code == 1011
    assert len(upstream.peers) == 1


async def test_the_repair_log_tells_a_burst_in_one_line_per_window(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    repairs = RepairLog(logging.getLogger("test.repairs"), window_s=0.2)
    for _ in range(5):
        repairs.repaired("EVENT", 100, 2)
    async with asyncio.timeout(5):  # the window's timer tells the four (late, on a loaded machine)
        while len(caplog.records) < 2:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # the window opened by that line ended, with nothing to tell
    repairs.repaired("RESPONSE", 50, 1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("an upstream EVENT message of 100 bytes had 2 invalid UTF-8 bytes")
    assert lines[1].startswith("4 more upstream messages had invalid UTF-8 in their text in the last 0.")
    assert lines[1].endswith("(8 bytes, replaced by U+FFFD)")
    assert lines[2].startswith("an upstream RESPONSE message of 50 bytes had 1 invalid UTF-8 bytes")


# Lenient twins are built from whatever proto is configured: other field numbers, a package, maps and
# imports of other files included, with nothing hard-coded.
SWAPPED_PROTO = """
syntax = "proto3";
package sestek.utf8test.v9;
import "utf8_common.proto";
enum CONTENT_TYPE { EVENT = 0; AUDIO = 4; RESPONSE = 6; REQUEST = 9; }
message Payload { CONTENT_TYPE content_type = 11; bytes binary_content = 7; string content = 3; }
message DataFlowRequest { string trace = 1; Payload message = 4; }
message DataFlowResponse {
  Payload message = 2; map<string, string> labels = 5; utf8common.Stamp at = 6; string note = 9;
}
service DataFlowService { rpc Stream(stream DataFlowRequest) returns (stream DataFlowResponse); }
"""
COMMON_PROTO = 'syntax = "proto3"; package utf8common; message Stamp { string zone = 1; map<string, Stamp> near = 2; }'


def test_a_swapped_contract_reads_invalid_utf8_in_its_own_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.upstream.contract")  # whatever level "gateway" was left at
    for name, text in [("utf8_common", COMMON_PROTO), ("utf8_swapped_dataflow", SWAPPED_PROTO)]:
        proto = tmp_path / f"{name}.proto"
        proto.write_text(text)
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--proto", str(proto), "--out", str(tmp_path)],
            check=True,
        )
    sys.path.insert(0, str(tmp_path))
    try:
        contract = WireContract("utf8_swapped_dataflow_pb2", "/sestek.utf8test.v9.DataFlowService/Stream")
    finally:
        sys.path.remove(str(tmp_path))
    good = contract.encode_response(ContentType.EVENT, text="\x7f" * 4)
    frame = contract.decode_response(good.replace(b"\x7f" * 4, b"ok\xe2\x82"))  # € cut after two bytes
    assert (frame.content_type, frame.text) == (ContentType.EVENT, "ok\ufffd")
    assert len(repair_lines(caplog)) == 1 and "had 2 invalid UTF-8 bytes in its text" in caplog.text
    # Invalid UTF-8 in a map key, another string field and an imported message's field: nothing the
    # gateway reads, so nothing replaced.
    label = b"\x0a\x02k\xff\x12\x01v"  # entry {key: "k\xff", value: "v"}
    stamp = b"\x0a\x01\xfd"  # zone = "\xfd"
    extra = b"\x2a" + bytes([len(label)]) + label + b"\x4a\x01\xfe" + b"\x32\x03" + stamp  # labels, note, at
    frame = contract.decode_response(contract.encode_response(ContentType.RESPONSE, text='{"a":1}') + extra)
    assert (frame.content_type, frame.text) == (ContentType.RESPONSE, '{"a":1}')
    assert "an upstream RESPONSE message had invalid UTF-8 outside its text" in caplog.text
    with pytest.raises(Exception, match="undecodable"):
        contract.decode_response(good[:-1])
    assert json.loads(contract.decode_response(contract.encode_response(ContentType.EVENT, text="{}")).text) == {}


def test_without_an_event_loop_a_burst_is_told_by_the_first_repair_after_the_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    repairs = RepairLog(logging.getLogger("test.repairs"), window_s=0.2)
    for _ in range(1000):
        repairs.repaired("EVENT", 100, 1)
    time.sleep(0.3)
    repairs.repaired("EVENT", 100, 1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[1].startswith("999 more upstream messages") and lines[1].endswith("(999 bytes, replaced by U+FFFD)")


@settings(max_examples=300, deadline=None)
@given(content=st.binary(max_size=60))
def test_any_bytes_in_the_text_read_as_python_decodes_them_with_replacement(content: bytes) -> None:
    contract = _default_contract()
    placeholder = b"\x7f" * len(content)
    data = contract.encode_response(ContentType.EVENT, text=placeholder.decode()).replace(placeholder, content)
    frame = contract.decode_response(data)
    assert (frame.content_type, frame.text) == (ContentType.EVENT, content.decode("utf-8", "replace"))


_contracts: list[WireContract] = []


def _default_contract() -> WireContract:
    if not _contracts:
        _contracts.append(WireContract("gateway.upstream._proto.dataflow_pb2", "/dataflow/Stream"))
    return _contracts[0]
