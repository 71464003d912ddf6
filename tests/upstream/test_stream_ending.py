"""How an upstream stream ends and starts when Data Flow behaves like an ordinary gRPC server rather than
like our simulator (``dataflow.md`` guesses both):

- the usual bidirectional server ends its RPC once the client's requests end (its half-close), not at
  FinalResult: the gateway never half-closed, so every finalized call, ``/project-runner`` session and
  upload waited ``GATEWAY_FINALIZE_TIMEOUT_S`` (31 s at the default) after its last result, holding its
  slot and its stream;
- a StartResponse whose name key is not ``MessageName`` (or that has none) answers the only request
  outstanding: it was not taken for one, and every start timed out as ``upstream_timeout``;
- a message the contract's codec cannot take ends the session with ``upstream_protocol_error``: the
  writer task died with it, unretrieved, and the session waited for Data Flow's buffer until
  ``upstream_timeout``.

Over real sockets: the simulator with ``ends_on_half_close``, or a scripted Data Flow
(tests/support/hostile_upstream.py), behind the real gateway."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import numpy as np
import pytest

from gateway.errors import UpstreamProtocolError
from gateway.relay.finalize_wait import WHOLE_WAIT_TIMEOUTS
from gateway.simulator.records import SimulatorConfig
from gateway.simulator.server import DataflowSimulator
from gateway.upstream.contract import ContentType, WireContract
from tests.support import signals
from tests.support.harness import GatewayFactory, read_all, running_gateway, ws_connect
from tests.support.hostile_upstream import Behaviour, HostileUpstream, Peer, native_session
from tests.support.native_client import start_message
from tests.support.settings import SIM_TENANT, SIM_TOKEN
from tests.support.upload_client import URL

FINALIZE_TIMEOUT_S = 8.0


@pytest.fixture
def sim_config() -> SimulatorConfig:
    return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, ends_on_half_close=True)


@pytest.mark.ws
async def test_a_finalized_session_ends_at_once_with_a_server_that_waits_for_the_half_close(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator
) -> None:
    async with gateway_factory(finalize_timeout_s=FINALIZE_TIMEOUT_S) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        assert json.loads(await ws.recv())["type"] == "started"
        await ws.send(signals.to_pcm16(signals.utterances(["42"], 16000)))
        finalized = time.monotonic()
        await ws.send(json.dumps({"type": "finalize"}))
        transcript = await read_all(ws, timeout=2 * FINALIZE_TIMEOUT_S)
        took = time.monotonic() - finalized
    assert transcript.milestones() == ["42"]
    closed = transcript.messages[-1]
    assert (closed["type"], closed["reason"], transcript.close_code) == ("closed", "finalized", 1000), closed
    assert took < 2.0, f"{took:.1f} s: the session waited for the finalize timeout ({FINALIZE_TIMEOUT_S:g} s)"
    [record] = simulator.records
    assert record.half_closed and record.outcome == "finalized"


async def test_an_upload_is_answered_at_once_with_a_server_that_waits_for_the_half_close(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator
) -> None:
    wav = signals.wav_bytes(signals.utterances(["7", "8"], 8000), 8000)
    async with (
        gateway_factory(finalize_timeout_s=FINALIZE_TIMEOUT_S) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=3 * FINALIZE_TIMEOUT_S) as http,
    ):
        began = time.monotonic()
        response = await http.post(URL, content=wav)
        took = time.monotonic() - began
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "7 8"}
    assert took < 3.0, f"{took:.1f} s: the upload waited for the finalize timeout ({FINALIZE_TIMEOUT_S:g} s)"
    assert [r.half_closed for r in simulator.records] == [True]


def answering_start_with(response: dict[str, object]) -> HostileUpstream:
    async def behaviour(peer: Peer) -> None:
        await peer.read_start()
        await peer.send_json(ContentType.RESPONSE, response)
        await peer.read_until_finalize()
        await peer.send_event("SR Milestone", Text="hello")
        await peer.send_event("FinalResult")

    return HostileUpstream(behaviour)


@pytest.mark.ws
@pytest.mark.parametrize(
    "answer",
    [{"Name": "StartResponse", "OperationResult": "Success", "SessionId": "vendor-7"},
     {"OperationResult": "Success", "SessionId": "vendor-7"}],
    ids=["name-key", "no-name"],
)  # fmt: skip
async def test_a_start_response_named_otherwise_or_not_at_all_answers_the_start(answer: dict[str, object]) -> None:
    async with answering_start_with(answer) as upstream:
        first, transcript, took = await native_session(upstream, upstream_start_timeout_s=5)
    assert first["type"] == "started", first
    assert transcript.milestones() == ["hello"]
    assert transcript.close_code == 1000 and took < 3


@pytest.mark.ws
async def test_an_unnamed_refusal_of_the_start_is_the_start_refused_in_its_own_words() -> None:
    answer = {"OperationResult": "project 'demo' not found"}
    async with answering_start_with(answer) as upstream:
        first, _, took = await native_session(upstream, upstream_start_timeout_s=5)
    assert (first["type"], first["code"]) == ("error", "upstream_rejected"), first
    assert "project 'demo' not found" in first["message"] and took < 3


@pytest.mark.ws
async def test_a_message_the_codec_cannot_take_ends_the_session_typed(
    gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode = WireContract.encode_request

    def failing_audio(self: WireContract, kind: ContentType, *, text: str = "", binary: bytes = b"") -> bytes:
        if kind is ContentType.AUDIO:
            raise UpstreamProtocolError("cannot encode the AUDIO message: a shape startup did not foresee")
        return encode(self, kind, text=text, binary=binary)

    monkeypatch.setattr(WireContract, "encode_request", failing_audio)
    async with gateway_factory(upstream_response_timeout_s=5) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        assert json.loads(await ws.recv())["type"] == "started"
        began = time.monotonic()
        for _ in range(50):  # a second of audio: the writer meets the error with the first
            await ws.send(bytes(640))
        transcript = await read_all(ws, timeout=10)
        took = time.monotonic() - began
    assert transcript.errors() == ["upstream_protocol_error"], transcript.messages
    assert transcript.close_code == 1011 and took < 3, took


async def upload_to(behaviour: Behaviour, wav: bytes, *, finalize_timeout_s: float) -> tuple[httpx.Response, float]:
    """An upload through a real gateway to a scripted Data Flow: its answer and how long it took."""
    async with (
        HostileUpstream(behaviour) as upstream,
        running_gateway(upstream.settings(finalize_timeout_s=finalize_timeout_s)) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http,
    ):
        began = time.monotonic()
        response = await http.post(URL, content=wav)
        return response, time.monotonic() - began


async def test_the_finalize_wait_starts_again_with_each_message_from_data_flow() -> None:
    """An engine behind real time still works through audio its HTTP/2 window took long before (a 2-minute
    upload to an engine at 3x real time): the finalize wait counted from the client's end of input, so
    the upload was 504 while results were still coming, all of them lost. Only silence ends it now."""

    async def behind(peer: Peer) -> None:
        await peer.answer_start()
        await peer.read_until_finalize()
        for digit in "1234":  # a result every 0.4 s for 1.6 s, past a 1 s wait
            await asyncio.sleep(0.4)
            await peer.send_event("SR Milestone", Text=digit)
        await peer.send_event("FinalResult")
        await asyncio.sleep(30)

    async def silent(peer: Peer) -> None:  # two results, then nothing
        await peer.answer_start()
        await peer.read_until_finalize()
        for digit in "12":
            await peer.send_event("SR Milestone", Text=digit)
        await asyncio.sleep(30)

    wav = signals.wav_bytes(signals.utterances(["7"], 8000), 8000)
    for behaviour, expected in ((behind, 200), (silent, 504)):
        response, took = await upload_to(behaviour, wav, finalize_timeout_s=1.0)
        assert response.status_code == expected, response.text
        if expected == 200:
            assert [e["text"] for e in response.json()["events"] if e["name"] == "SR Milestone"] == list("1234")
        else:  # a Data Flow that says nothing is still given up on after the wait, its results kept (they were
            # dropped: the 504 held only the error)
            body = response.json()
            assert body["error"]["code"] == "upstream_timeout" and took < 3.5, (took, response.text)
            assert [e["text"] for e in body["events"] if e["name"] == "SR Milestone"] == ["1", "2"], body
            assert body["transcript"] == {"0": "1 2"} and body["sessionId"], body


async def test_silence_data_flow_has_yet_to_work_through_does_not_end_the_wait() -> None:
    """An engine at real time that took the whole upload into its buffer at once still works through it
    after the input ended, and says nothing in its silence: the wait was the finalize timeout after the
    end of input, so a recording ending in hold (6 s here, the timeout 2 s) was 504 and its last result
    lost. The first wait now covers the audio it may not have reached at real time; a silent engine is
    still given up on, after that and the timeout."""
    audio_s = 6.0

    async def at_real_time(peer: Peer) -> None:
        await peer.answer_start()
        began = time.monotonic()
        await peer.read_until_finalize()  # all of it at once, into the engine's own buffer
        await asyncio.sleep(audio_s - (time.monotonic() - began))  # worked through at real time, in silence
        await peer.send_event("SR Milestone", Text="7")
        await peer.send_event("FinalResult")
        await asyncio.sleep(30)

    async def silent(peer: Peer) -> None:
        await peer.answer_start()
        await peer.read_until_finalize()
        await asyncio.sleep(30)

    samples = signals.utterances(["7"], 16000)
    samples = np.concatenate([samples, signals.silence(round(audio_s * 1000) - len(samples) // 16, 16000)])
    wav = signals.wav_bytes(samples, 16000)
    for behaviour, expected in ((at_real_time, 200), (silent, 504)):
        response, took = await upload_to(behaviour, wav, finalize_timeout_s=2.0)
        assert response.status_code == expected, (took, response.text)
        if expected == 200:
            assert [e["text"] for e in response.json()["events"] if e["name"] == "SR Milestone"] == ["7"]
            assert took >= audio_s - 0.5, took
        else:  # the audio's 6 s and the 2 s timeout, not the stream's deadline
            error = response.json()["error"]
            assert error["code"] == "upstream_timeout" and audio_s + 1.5 < took < audio_s + 4, (took, error)
            assert re.fullmatch(r"Data Flow sent no final result, nor anything for [78]\.\d s", error["message"])


async def test_a_data_flow_that_keeps_sending_and_never_finalizes_is_given_up_on() -> None:
    """Partial results every 0.2 s after Finalize, never the final one: each started the wait again, so
    the upload waited for the stream's deadline (GATEWAY_MAX_SESSION_S later; here past the client's 30 s).
    Now the whole wait ends WHOLE_WAIT_TIMEOUTS timeouts (5.5 s at 0.5 s) after the input ended: 504
    ``upstream_timeout`` naming it, with the answer's session."""
    timeout_s = 0.5

    async def chatty(peer: Peer) -> None:
        await peer.answer_start()
        await peer.read_until_finalize()
        for _ in range(500):  # 100 s of partials, well past the whole wait
            await peer.send_event("SR Partial", Text="7")
            await asyncio.sleep(0.2)

    wav = signals.wav_bytes(signals.utterances(["7"], 8000), 8000)
    response, took = await upload_to(chatty, wav, finalize_timeout_s=timeout_s)
    body = response.json()
    assert response.status_code == 504 and body["error"]["code"] == "upstream_timeout", (took, response.text)
    whole_s = WHOLE_WAIT_TIMEOUTS * timeout_s
    assert whole_s - 0.2 < took < whole_s + 3, took
    assert re.fullmatch(r"Data Flow sent no final result within [56]\.\d s of the end of input, though it kept sending",
                        body["error"]["message"]), body["error"]  # fmt: skip
    assert body["sessionId"] and body["audioMs"] > 1000, body
