"""/v1/audiohook end to end: a Genesys AudioHook client through the real gateway to the real simulator
(stereo DTMF, results per channel, framing and sequence numbers), plus the pure pieces."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import time
import uuid
from importlib import resources

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters import audiohook, ending
from gateway.adapters.audiohook_events import transcript_entity
from gateway.adapters.audiohook_media import SampleAligner, Timeline, choose_media, duration, parse_duration
from gateway.dataflow.messages import parse_event
from gateway.simulator.faults import Fault
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from tests.support import signals
from tests.support.audiohook_client import EXTERNAL, INTERNAL, RATE, STEREO_PCMU, finals, opened_client, stereo_dtmf
from tests.support.harness import RunningGateway
from tests.support.settings import SIM_TENANT, SIM_TOKEN


@pytest.mark.ws
@pytest.mark.parametrize("fmt", ["PCMU", "L16"])
async def test_stereo_dtmf_comes_back_per_channel(gw: RunningGateway, simulator: DataflowSimulator, fmt: str) -> None:
    media = {**STEREO_PCMU, "format": fmt}
    ws, client = await opened_client(gw, [{"type": "audio", "format": "opus", "channels": ["external"], "rate": 8000},
                                         media])  # fmt: skip
    try:
        opened = await client.recv()
        assert opened["type"] == "opened" and opened["seq"] == 1 and opened["clientseq"] == 1
        assert opened["parameters"] == {"media": [media], "startPaused": False}  # the first offer it can take
        width = 1 if fmt == "PCMU" else 2
        # 321-byte frames split samples (2 or 4 bytes each): the gateway carries the rest to the next frame.
        await client.audio(stereo_dtmf(fmt), frame_bytes=321, width=width)
        await client.send("ping", {"rtt": "PT0.05S"})
        ping_seq = client.seq
        await client.send("close", {"reason": "end"})
        messages = await client.until("closed")
    finally:
        await ws.close()
    assert finals(messages) == {0: [EXTERNAL], 1: [INTERNAL]}
    pong = next(m for m in messages if m["type"] == "pong")
    assert pong["clientseq"] == ping_seq and pong["parameters"] == {}
    closed = messages[-1]
    assert closed["clientseq"] == client.seq and closed["parameters"] == {}
    # Every server message: version 2, this session's id, seq 1, 2, 3 ... in the order sent.
    everything = [opened, *messages]
    assert [m["seq"] for m in everything] == list(range(1, len(everything) + 1))
    assert {(m["version"], m["id"]) for m in everything} == {("2", client.session_id)}
    record = simulator.records[-1]
    # Every whole sample reached Data Flow as 16-bit stereo, none split, none lost; close finalized it.
    assert record.audio_bytes == client.samples * 2 * 2 and record.outcome == "finalized"


@pytest.mark.ws
async def test_transcript_entity_shape_and_offsets(gw: RunningGateway) -> None:
    ws, client = await opened_client(gw)
    try:
        await client.recv()
        await client.audio(stereo_dtmf("PCMU"))
        await client.send("close", {"reason": "end"})
        messages = await client.until("closed")
    finally:
        await ws.close()
    entities = [e for m in messages if m["type"] == "event" for e in m["parameters"]["entities"]]
    external_final = next(e["data"] for e in entities if e["data"]["isFinal"] and e["data"]["channelId"] == 0)
    assert set(external_final) == {"id", "channelId", "isFinal", "offset", "duration", "alternatives"}
    uuid.UUID(external_final["id"])
    assert external_final["alternatives"] == [{
        "confidence": 1.0, "languages": ["en-US"], "interpretations": [{"type": "display", "transcript": EXTERNAL}],
    }]  # fmt: skip
    # The utterance starts 300 ms into the audio; the simulator reports 300 ms of pre-speech before it.
    assert parse_duration(external_final["offset"]) == 0.0
    assert 0.6 <= (parse_duration(external_final["duration"]) or 0) <= 2.0
    partial_ids = {e["data"]["id"] for e in entities if not e["data"]["isFinal"] and e["data"]["channelId"] == 0}
    assert partial_ids == {external_final["id"]}  # partials and the final of one utterance share its id


@pytest.mark.ws
async def test_pause_discard_and_update(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    ws, client = await opened_client(gw, [{**STEREO_PCMU, "channels": ["external"]}])
    try:
        await client.recv()
        first = signals.g711_encode(signals.utterances(["7"], RATE, tail_ms=600), "mulaw")
        await client.audio(first, channels=1)
        await client.send("discarded", {"start": f"PT{client.samples / RATE:g}S", "discarded": "PT0.5S"})
        client.samples += RATE // 2
        await client.send("paused")
        await client.audio(signals.g711_encode(signals.dtmf("99", RATE), "mulaw"), channels=1)  # must not be heard
        await client.send("resumed", {"start": f"PT{client.samples / RATE:g}S", "discarded": "PT0S"})
        await client.send("update", {"language": "tr-TR"})
        await client.audio(signals.g711_encode(signals.utterances(["8"], RATE), "mulaw"), channels=1)
        await client.send("close", {"reason": "end"})
        messages = await client.until("closed")
    finally:
        await ws.close()
    assert finals(messages) == {0: ["7", "8"]}  # the paused "99" never reached Data Flow
    second = [e["data"] for m in messages if m["type"] == "event" for e in m["parameters"]["entities"]][-1]
    # "8" starts after the discarded half second and the paused audio (2 x 160 ms of DTMF): its offset
    # is on the call's timeline, not on the audio Data Flow heard.
    assert parse_duration(second["offset"]) == pytest.approx(len(first) / RATE + 0.5 + 0.32, abs=0.02)
    assert second["alternatives"][0]["languages"] == ["tr-TR"]
    assert "update" in simulator.records[-1].requests


@pytest.mark.ws
async def test_a_discarded_span_longer_than_a_week_is_ignored(gw: RunningGateway) -> None:
    """A ``discarded`` duration past MAX_DURATION_S (7 days) is no call's: it is ignored, so it neither
    moves the offsets of what follows by eight days nor grows the sample counts without bound."""
    ws, client = await opened_client(gw, [{**STEREO_PCMU, "channels": ["external"]}])
    try:
        await client.recv()
        first = signals.g711_encode(signals.utterances(["7"], RATE, tail_ms=600), "mulaw")
        await client.audio(first, channels=1)
        eight_days = f"PT{8 * 24 * 3600}S"
        await client.send("discarded", {"start": f"PT{client.samples / RATE:g}S", "discarded": eight_days})
        await client.audio(signals.g711_encode(signals.utterances(["8"], RATE), "mulaw"), channels=1)
        await client.send("close", {"reason": "end"})
        messages = await client.until("closed")
    finally:
        await ws.close()
    assert finals(messages) == {0: ["7", "8"]}
    second = [e["data"] for m in messages if m["type"] == "event" for e in m["parameters"]["entities"]][-1]
    offset = parse_duration(second["offset"])
    assert offset == pytest.approx(len(first) / RATE, abs=0.02), f"'8' at {second['offset']}"


@pytest.mark.ws
async def test_out_of_sequence_message_is_a_protocol_error(gw: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """After ``disconnect`` the gateway waits for the client to close (``CLIENT_CLOSE_WAIT_S``); a client
    still out of sequence gets no ``closed``, and the gateway closes the socket once the wait is over."""
    monkeypatch.setattr(ending, "CLIENT_CLOSE_WAIT_S", 0.5)
    ws, client = await opened_client(gw)
    try:
        await client.recv()
        await ws.send(client.message("ping", {}, seq=client.seq + 5))
        disconnect = await client.recv()
        sent_at = time.monotonic()
        await client.send("close", {"reason": "disconnect"})  # its seq follows the bad one's: still wrong
        await asyncio.wait_for(ws.wait_closed(), 5)
        waited = time.monotonic() - sent_at
    finally:
        await ws.close()
    assert disconnect["type"] == "disconnect" and disconnect["seq"] == 2
    assert disconnect["parameters"]["reason"] == "error" and "seq must be 2" in disconnect["parameters"]["info"]
    assert client.received[-1] is disconnect  # nothing answered the close
    assert 0.4 < waited < 2.0, waited
    assert ws.close_code == 1007  # the gateway closed: invalid message


@pytest.mark.ws
async def test_serverseq_ahead_of_the_server_is_refused(gw: RunningGateway) -> None:
    ws, client = await opened_client(gw)
    try:
        await client.recv()
        client.serverseq = 9  # the server has sent 1 message
        await client.send("ping")
        disconnect = await client.recv()
    finally:
        await ws.close()
    assert disconnect["type"] == "disconnect" and "serverseq must be 0..1" in disconnect["parameters"]["info"]


@pytest.mark.ws
async def test_a_message_with_another_sessions_id_is_refused(gw: RunningGateway) -> None:
    """Every client message carries its session's id; a ping with another session's id is a protocol
    error (disconnect, reason error, invalid_message), not answered with a pong."""
    ws, client = await opened_client(gw)
    try:
        await client.until("opened")
        client.session_id = str(uuid.uuid4())  # another session's
        await client.send("ping")
        answer = await client.recv()
    finally:
        await ws.close()
    assert answer["type"] == "disconnect", answer
    assert answer["parameters"]["reason"] == "error", answer
    assert answer["parameters"]["info"].startswith("invalid_message: the message id is not this session's id"), answer


@pytest.mark.ws
async def test_unusable_media_is_refused_in_protocol(gw: RunningGateway) -> None:
    ws, client = await opened_client(gw, [{"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 16000}])
    try:
        disconnect = await client.recv()
    finally:
        await ws.close()
    assert disconnect["type"] == "disconnect" and disconnect["parameters"]["reason"] == "error"
    assert disconnect["seq"] == 1 and disconnect["clientseq"] == 1


# --- the pure pieces ---------------------------------------------------------------------------------


def test_durations() -> None:
    assert [duration(s) for s in (0, 1.5, 2.0, 0.0125, 61.25)] == ["PT0S", "PT1.5S", "PT2S", "PT0.013S", "PT61.25S"]
    assert [parse_duration(v) for v in ("PT1.5S", "PT0S", "PT.5S", "1.5", "PT-1S", None)] == [1.5, 0, 0.5, None,
                                                                                            None, None]  # fmt: skip
    # MAX_DURATION_S, 7 days: a longer duration is no call's
    assert [parse_duration(v) for v in ("PT604800S", "PT604800.001S", "PT691200S")] == [604800.0, None, None]


def test_a_transcript_not_at_offset_0_lasts_from_its_start_to_its_end() -> None:
    """An utterance from 1.25 s to 2 s: offset PT1.25S, duration PT0.75S (end - start, not its end)."""
    item = parse_event(
        {"Name": "SR Milestone", "Channel": 0, "StartMsec": 1250, "EndMsec": 2000, "Data": {"Text": "12"}}
    )
    entity = transcript_entity(item, timeline=Timeline(), channels=1, language=None, session_id="s")
    assert entity is not None
    assert (entity["data"]["offset"], entity["data"]["duration"]) == ("PT1.25S", "PT0.75S")


def test_an_utterance_id_is_one_per_channel_and_group() -> None:
    """Data Flow numbers groups per channel: the caller's and the agent's first utterance share group 1, and
    one id for both would have Genesys replace one speaker's words with the other's."""

    def utterance(name: str, channel: int, group: str) -> str:
        event = {"Name": name, "Channel": channel, "GroupId": group, "StartMsec": 0, "Data": {"Text": "12"}}
        entity = transcript_entity(parse_event(event), timeline=Timeline(), channels=2, language=None, session_id="s")
        assert entity is not None
        return str(entity["data"]["id"])

    assert utterance("SR Partial", 0, "1") == utterance("SR Milestone", 0, "1")  # replaced in place
    assert (
        len({utterance("SR Milestone", 0, "1"), utterance("SR Milestone", 1, "1"), utterance("SR Milestone", 0, "2")})
        == 3
    )


def test_choose_media_takes_the_first_usable_offer() -> None:
    offers = [
        {"type": "audio", "format": "PCMU", "channels": ["external", "external"], "rate": 8000},
        {"type": "audio", "format": "L16", "channels": ["internal"], "rate": 8000},
        STEREO_PCMU,
    ]
    media = choose_media(offers)
    assert media is not None and media.channels == ("internal",) and media.audio.encoding == "pcm16"
    assert choose_media([{"type": "audio", "format": "PCMU", "channels": [{}], "rate": 8000}]) is None


def test_sample_aligner_carries_split_samples() -> None:
    aligner = SampleAligner(4)
    out = [aligner.feed(b"abcde"), aligner.feed(b"fg"), aligner.feed(b"h"), aligner.feed(b"ijklm")]
    assert out == [b"abcd", b"", b"efgh", b"ijkl"]


def test_timeline_adds_gaps_back() -> None:
    timeline = Timeline()
    timeline.heard(8000)
    timeline.skipped(4000)  # half a second paused
    timeline.heard(8000)
    assert timeline.position_s == 2.5
    assert timeline.stream_seconds(500) == 0.5
    assert timeline.stream_seconds(1000) == 1.5  # the moment audio resumed
    assert timeline.stream_seconds(1500) == 2.0


def test_every_audiohook_message_type_is_documented() -> None:
    """The client types the dialect compares ``kind`` with and the server types it builds are exactly
    the AsyncAPI channel's."""
    tree = ast.parse(inspect.getsource(audiohook))
    client, server = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "kind":
            client |= {c.value for c in node.comparators if isinstance(c, ast.Constant) and isinstance(c.value, str)}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_message":
            first = node.args[0]
            if isinstance(first, ast.Constant):
                server.add(first.value)
    assert {"open", "close", "ping"} <= client and {"opened", "closed", "pong", "event"} <= server  # the scan works
    doc = yaml.safe_load(resources.files("gateway").joinpath("asyncapi.yaml").read_text("utf-8"))
    documented: dict[str, set[str]] = {"receive": set(), "send": set()}
    for operation in doc["operations"].values():
        if operation["channel"]["$ref"] == "#/channels/audiohook":
            for ref in operation["messages"]:
                message = doc["channels"]["audiohook"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
                name = message["$ref"].rsplit("/", 1)[1]
                parts = doc["components"]["messages"][name]["payload"].get("allOf", [{}])
                types = [p.get("properties", {}).get("type", {}).get("const") for p in parts]
                documented[operation["action"]] |= {t for t in types if t}
    assert doc["channels"]["audiohook"]["address"] == "/v1/audiohook"
    assert documented == {"receive": client, "send": server}


@pytest.mark.parametrize("gw", [{"demo_page": True}], indirect=True)
async def test_demo_page_lists_the_endpoint(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        page = (await http.get("/")).text
    assert "<code>/v1/audiohook</code>" in page


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_FIELDS = {
    "version": st.just("2") | _JSON, "id": st.just("s") | _JSON, "seq": st.integers(0, 4) | _JSON,
    "serverseq": st.integers(0, 3) | _JSON, "position": st.just("PT1S") | _JSON,
    "type": st.sampled_from(["open", "ping", "paused", "resumed", "discarded", "update", "error", "close", "x"]),
    "parameters": st.fixed_dictionaries({}, optional={
        "media": st.just([STEREO_PCMU]) | _JSON,
        "discarded": st.sampled_from(["PT0.5S", "PT" + "9" * 30 + "S", "PT" + "9" * 400 + "S"]) | _JSON,
        "language": _JSON, "customConfig": _JSON, "organizationId": _JSON, "participant": _JSON,
    }) | _JSON,
}  # fmt: skip
_MESSAGE = st.fixed_dictionaries({}, optional=_FIELDS).map(json.dumps) | st.binary(max_size=9) | st.text(max_size=9)


@settings(max_examples=300, deadline=None)
@given(st.lists(_MESSAGE, max_size=8), st.booleans())
def test_dialect_never_raises_on_client_input(messages: list[str | bytes], streaming: bool) -> None:
    dialect = audiohook.AudioHookDialect("demo", session_id="s")
    for message in messages:
        dialect.while_starting(message)
        dialect.streaming(message) if streaming else dialect.waiting(message)


@pytest.mark.ws
class TestSlowDataFlow:
    @pytest.fixture
    def sim_config(self) -> SimulatorConfig:
        return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, fault=Fault("slow_start", 1500))

    async def test_opened_at_once_and_audio_held_until_data_flow_answers(self, gw: RunningGateway) -> None:
        began = time.monotonic()
        ws, client = await opened_client(gw)
        try:
            opened = await client.recv()
            opened_after_s = time.monotonic() - began
            await client.audio(stereo_dtmf("PCMU"))  # sent while Data Flow's StartResponse is 1.5 s away
            await client.send("close", {"reason": "end"})
            messages = await client.until("closed")
        finally:
            await ws.close()
        assert opened["type"] == "opened" and opened_after_s < 0.5, opened_after_s  # not 1.5 s
        assert finals(messages) == {0: [EXTERNAL], 1: [INTERNAL]}  # the held audio was not lost


START_S = 6.0  # longer than Genesys waits for a pong (5 s; its client pings 1 s after opened)


@pytest.mark.ws
class TestPingsWhileDataFlowStarts:
    """purecloudlabs/audiohook-reference-implementation, app/audiohook/src/client/clientsessionimpl.ts
    (sendPing): a ping left unanswered until the next one, 5 s later, fails the session. The pong
    waited for Data Flow's StartResponse."""

    @pytest.fixture
    def sim_config(self) -> SimulatorConfig:
        return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, fault=Fault("slow_start", int(START_S * 1000)))

    async def test_a_ping_is_answered_before_data_flow_has_started(self, gw: RunningGateway) -> None:
        ws, client = await opened_client(gw)
        try:
            opened = await client.recv()
            await client.audio(stereo_dtmf("PCMU"))  # held while Data Flow starts
            sent = time.monotonic()
            await client.send("ping", {})
            pong = await client.recv()
            answered_s = time.monotonic() - sent
            ping_seq = client.seq
            await client.send("close", {"reason": "end"})
            messages = await client.until("closed", timeout=START_S + 10)
        finally:
            await ws.close()
        assert (opened["seq"], pong["type"], pong["seq"], pong["clientseq"]) == (1, "pong", 2, ping_seq)
        assert answered_s < 1.0, f"pong after {answered_s:.1f} s (Genesys gives up after 5 s)"
        assert [m["seq"] for m in messages] == list(range(3, 3 + len(messages)))  # the server's seq goes on
        assert finals(messages) == {0: [EXTERNAL], 1: [INTERNAL]}  # the audio held meanwhile was not lost

    async def test_a_ping_behind_another_message_waits_its_turn(self, gw: RunningGateway) -> None:
        """Messages are checked in sequence: a ping behind one still held is answered after it."""
        ws, client = await opened_client(gw)
        try:
            await client.recv()  # opened
            sent = time.monotonic()
            await client.send("discarded", {"start": "PT0S", "discarded": "PT0.2S"})
            await client.send("ping", {})
            pong = await client.recv(timeout=START_S + 5)
            answered_s = time.monotonic() - sent
        finally:
            await ws.close()
        assert (pong["type"], pong["clientseq"]) == ("pong", client.seq)
        assert answered_s > START_S - 1, "answered only once the held message was handled"


@pytest.mark.ws
class TestDataFlowRefusesTheSession:
    @pytest.fixture
    def sim_config(self) -> SimulatorConfig:
        return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, fault=Fault("reject_start"))

    async def test_opened_then_disconnect_close_closed(self, gw: RunningGateway) -> None:
        """The client always ends an AudioHook session: after the server's ``disconnect`` it sends
        ``close``, gets ``closed`` and closes the socket itself (Genesys's reference client calls a
        server that closes first "closed unexpectedly"). purecloudlabs/audiohook-reference-implementation,
        app/audiohook/src/client/clientsessionimpl.ts (onDisconnectMessage, onClosedMessage)."""
        ws, client = await opened_client(gw)
        try:
            opened, disconnect = await client.recv(), await client.recv()
            await asyncio.sleep(0.3)  # the gateway leaves the socket open for the client's close
            await client.send("close", {"reason": "disconnect"})
            closed = await client.recv()
            await ws.close()
        finally:
            await ws.close()
        assert (opened["type"], opened["seq"], disconnect["type"], disconnect["seq"]) == ("opened", 1, "disconnect", 2)
        assert disconnect["parameters"]["reason"] == "error"
        assert disconnect["parameters"]["info"].startswith("upstream_rejected: ")
        assert (closed["type"], closed["seq"], closed["clientseq"]) == ("closed", 3, client.seq)
        assert ws.close_code == 1000  # the client's own close


@pytest.mark.ws
async def test_connection_probe_is_answered_without_a_data_flow_session(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    sessions_before = len(simulator.records)
    ws, client = await opened_client(gw, conversationId=audiohook.PROBE_CONVERSATION)
    try:
        opened = await client.recv()
        await client.audio(bytes(320))  # a probe may stream a little: ignored
        await client.send("ping")
        await client.send("close", {"reason": "end"})
        rest = await client.until("closed")
    finally:
        await ws.close()
    assert opened["type"] == "opened" and [m["type"] for m in rest] == ["pong", "closed"]
    assert [m["seq"] for m in [opened, *rest]] == [1, 2, 3]
    assert len(simulator.records) == sessions_before


@pytest.mark.ws
async def test_a_language_longer_than_a_tag_is_refused_at_open(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    """It was kept, sent to Data Flow and repeated in every transcript entity (30 000 characters: 180 KB a
    message); 64 characters is jambonz's bound too."""
    before = len(simulator.records)
    ws, client = await opened_client(gw, language="x" * 30_000)
    try:
        answer = await client.recv()
    finally:
        await ws.close()
    assert answer["type"] == "disconnect", answer
    assert "at most 64 characters" in answer["parameters"]["info"] and len(answer["parameters"]["info"]) < 300
    assert len(simulator.records) == before  # no Data Flow session for it
