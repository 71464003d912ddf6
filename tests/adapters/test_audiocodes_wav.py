"""/v1/audiocodes ``format: wav`` headers and error replies under abuse: a header of many tiny chunks
dribbled in costs work linear in its size (the audit's attack: 64 KiB of empty JUNK chunks in 8-byte
frames cost 15 s of event-loop CPU), skipped chunks are not held, the 64 KiB limit counts every header
byte however it is cut, and an error quotes client text cut short.

Work is counted as lines run in gateway/adapters/audiocodes.py and memory with tracemalloc: both are
deterministic, so the bounds hold on any machine. End to end: the real gateway on port 0, the
simulator as a real gRPC server, a real ``websockets`` client."""

from __future__ import annotations

import json
import struct
from contextlib import AbstractContextManager
from typing import Any

import pytest

import gateway.adapters.audiocodes
from gateway.adapters.audiocodes import WavHeaderSkipper
from gateway.errors import AudioFormatError
from tests.support import signals
from tests.support.audiocodes_client import send_frames, start, until
from tests.support.harness import RunningGateway, read_all, ws_connect
from tests.support.work import Lines, peak_while
from tests.support.work import lines_run as lines_run_in

LIMIT = 64 * 1024
LIMIT_MESSAGE = "no WAV data chunk in the first 64 KiB of audio"
JUNK = b"JUNK\0\0\0\0"  # an empty chunk: the cheapest way to make a header long
PREAMBLE = b"RIFF\0\0\0\0WAVE"
PAYLOAD = bytes(range(256)) * 4
SKIPPER_FILES = frozenset({gateway.adapters.audiocodes.__file__})


def lines_run() -> AbstractContextManager[Lines]:
    return lines_run_in(SKIPPER_FILES)


def junk_wav(payload_start: int) -> bytes:
    """A WAV header whose data chunk's header ends at ``payload_start``: RIFF/WAVE, then JUNK chunks."""
    total = payload_start - 12 - 8  # even: RIFF chunks are
    junk = JUNK * (total // 8 - 1) + b"JUNK" + struct.pack("<I", total % 8) + bytes(total % 8)
    return PREAMBLE + junk + b"data" + struct.pack("<I", len(PAYLOAD))


def feed_pieces(skipper: WavHeaderSkipper, data: bytes, piece: int) -> bytes:
    return b"".join(skipper.feed(data[i : i + piece]) for i in range(0, len(data), piece))


# --- the skipper on its own ---------------------------------------------------------------------------------


def header_lines(payload_start: int) -> int:
    skipper = WavHeaderSkipper()
    with lines_run() as lines:
        out = feed_pieces(skipper, junk_wav(payload_start) + PAYLOAD, 8)
    assert out == PAYLOAD
    return lines.run


def test_header_work_grows_linearly_with_its_size() -> None:
    small, large = header_lines(4096), header_lines(4 * 4096)
    assert large < 5 * small, (small, large)  # linear: 4x; re-walking the held header on every frame: 16x


def test_a_chunk_dribbled_in_late_in_a_long_header_costs_little() -> None:
    skipper = WavHeaderSkipper()
    assert skipper.feed(junk_wav(60 * 1024)[:-8]) == b""  # all but the data chunk
    with lines_run() as lines:
        for _ in range(10):
            assert skipper.feed(JUNK) == b""  # the audit's attack: one more empty chunk per frame
    assert lines.run < 10 * 60, lines.run  # a few dozen lines per frame; was the whole header's 7500 chunks
    assert skipper.feed(b"data" + struct.pack("<I", len(PAYLOAD)) + PAYLOAD) == PAYLOAD


def test_skipped_chunks_are_not_held() -> None:
    data, piece = junk_wav(60 * 1024) + PAYLOAD, 1024
    skipper = WavHeaderSkipper()
    out, peak = peak_while(lambda: feed_pieces(skipper, data, piece))
    assert out == PAYLOAD
    assert peak - piece < 8 * 1024, peak  # was the whole header, and a copy of it on every frame


@pytest.mark.parametrize("piece", [7, 8, 4096, 1 << 17])
def test_the_limit_counts_every_header_byte_however_it_is_cut(piece: int) -> None:
    # The audio starts exactly at the limit: accepted, whatever the frames.
    assert feed_pieces(WavHeaderSkipper(), junk_wav(LIMIT) + PAYLOAD, piece) == PAYLOAD
    # Two bytes later: the documented error, in one frame as dribbled in (skipped bytes count).
    with pytest.raises(AudioFormatError, match=LIMIT_MESSAGE):
        feed_pieces(WavHeaderSkipper(), junk_wav(LIMIT + 2) + PAYLOAD, piece)
    with pytest.raises(AudioFormatError, match=LIMIT_MESSAGE):  # one chunk declared larger than the limit
        feed_pieces(WavHeaderSkipper(), PREAMBLE + b"JUNK\xf0\xff\xff\xff" + bytes(LIMIT), piece)


def test_a_header_cut_inside_its_preamble_and_chunk_headers_still_yields_the_audio() -> None:
    wav = PREAMBLE + b"LIST\3\0\0\0abc\0" + JUNK + b"data\4\0\0\0" + PAYLOAD
    for cut in range(1, len(wav) - len(PAYLOAD) + 1):  # every cut of the header, then byte by byte
        skipper = WavHeaderSkipper()
        out = skipper.feed(wav[:cut]) + b"".join(skipper.feed(wav[i : i + 1]) for i in range(cut, len(wav)))
        assert out == PAYLOAD, cut
    raw = WavHeaderSkipper()  # not RIFF/WAVE: raw audio, passed whole once 12 bytes tell
    assert [raw.feed(PAYLOAD[:5]), raw.feed(PAYLOAD[5:20]), raw.feed(PAYLOAD[20:])] == [b"", PAYLOAD[:20], PAYLOAD[20:]]


# --- end to end ----------------------------------------------------------------------------------------------


@pytest.mark.ws
async def test_a_header_of_empty_chunks_dribbled_in_costs_work_linear_in_its_frames(gw: RunningGateway) -> None:
    frames = 3000  # 24 KB of header in 8-byte frames: 1.9 s of CPU before, quadratic in the frames
    wav = signals.wav_bytes(signals.utterances(["4#"], 8000), 8000)
    async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
        await ws.send(start(8000, "wav"))
        assert await until(ws, "started") == [{"type": "started"}]
        with lines_run() as lines:
            await ws.send(wav[:36])  # RIFF/WAVE and fmt
            for _ in range(frames):
                await ws.send(JUNK)
            await send_frames(ws, wav[36:], 8000)  # the data chunk and the audio
            await ws.send(json.dumps({"type": "stop"}))
            messages = await until(ws, "end")
    assert messages[-2:] == [
        {"type": "recognition", "alternatives": [{"text": "4#", "confidence": 1.0}]},
        {"type": "end", "reason": "stop requested"},
    ]
    assert lines.run < 60 * frames, lines.run  # some 37 lines a frame; was 6000 on average (18 million)


@pytest.mark.ws
async def test_a_header_over_the_limit_answers_the_documented_error(gw: RunningGateway) -> None:
    async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
        await ws.send(start(16000, "wav"))
        assert await until(ws, "started") == [{"type": "started"}]
        await ws.send(PREAMBLE)
        for _ in range(LIMIT // 1024):  # 64 KiB of 1 KiB JUNK chunks, one a frame
            await ws.send(b"JUNK" + struct.pack("<I", 1016) + bytes(1016))
        result = await read_all(ws)
    assert result.messages[-1] == {"type": "error", "reason": f"unsupported_audio_format: {LIMIT_MESSAGE}"}
    assert result.close_code == 1003
    assert gw.gateway.registry.active == 0


BIG = "\x7f" * 200_000  # each one a 5-character escape in a reply's JSON: 1 MB echoed before
CUT = repr("\x7f" * 64) + "…"


@pytest.mark.ws
@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("encoding", BIG, f"encoding {CUT} is not supported; use LINEAR16"),
        ("encoding", ["LINEAR16"] * 20_000, "encoding ['LINEAR16', 'LINEAR16', 'LINEAR16', 'LINEAR16', ...] "
                                            "is not supported; use LINEAR16"),
        ("format", BIG, f"format {CUT} is not supported; use raw or wav"),
        ("sampleRateHz", int("9" * 4000), f"sample rate must be 8000..48000 Hz, got {'9' * 30}...{'9' * 31}"),
        ("sampleRateHz", 96000, "sample rate must be 8000..48000 Hz, got 96000"),
    ],
    ids=["encoding", "encoding_array", "format", "huge_rate", "rate"],
)  # fmt: skip
async def test_errors_quote_client_text_cut_short(gw: RunningGateway, field: str, value: Any, reason: str) -> None:
    frame = json.dumps({"type": "start", field: value}, ensure_ascii=False)
    async with ws_connect(gw.ws_url("/v1/audiocodes"), max_size=None) as ws:
        await ws.send(frame)
        result = await read_all(ws)
    assert result.messages == [{"type": "error", "reason": f"unsupported_audio_format: {reason}"}]
    assert result.close_code == 1003
