"""AudioCodes VoiceAI Connect messages: ``start`` (and its ``format: wav`` header skipper), and the
``hypothesis``/``recognition`` rendering of Data Flow events.

The first byte picks what the rest is: 0 a text message, 1 a binary stream for the WAV header skipper
(cut into chunks), 2 an event from Data Flow. Declared errors: ``BadRequest`` and subclasses
(``InvalidMessage`` 1007, ``AudioFormatError`` 1003): answered with ``error`` and a close.
"""

from __future__ import annotations

import json
import struct

from gateway.adapters.audiocodes import WavHeaderSkipper, parse_start, render
from gateway.dataflow.lenient import loads_object
from gateway.dataflow.messages import build_start, parse_event
from gateway.errors import AudioFormatError, BadRequest, InvalidMessage
from tests.fuzz.common import encodable, split_points, text_of


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 3, data[1:]
    if mode == 1:
        _wav_stream(body)
        return
    text = text_of(body)
    if text is None:
        return
    try:
        obj = loads_object(text)
    except InvalidMessage:
        return
    if mode == 0:
        if obj.get("type") != "start":
            return
        try:
            request, skipper = parse_start(obj, project="demo")
        except BadRequest:
            return
        request.audio.validate()
        assert request.audio.encoding == "pcm16" and request.audio.channels == 1
        assert (skipper is not None) == (obj.get("format") == "wav")
        encodable(build_start(request, token="t", tenant=""))
    else:
        message = render(parse_event(obj))
        if message is not None:
            encodable(message)
            assert message["type"] in ("hypothesis", "recognition")
            assert isinstance(message["alternatives"][0]["text"], str)


def _wav_stream(body: bytes) -> None:
    _, chunks = split_points(body)
    skipper, out = WavHeaderSkipper(), b""
    try:
        for chunk in chunks:
            out += skipper.feed(chunk)
    except AudioFormatError:
        return
    assert len(out) <= len(body) - min(len(body), 1)  # never invents audio


def seeds() -> list[bytes]:
    start = {"type": "start", "language": "en-US", "format": "wav", "encoding": "LINEAR16", "sampleRateHz": 8000,
             "conversationId": "c-1", "sttContextId": "x", "sttSpeechContexts": [{"phrases": ["a"]}]}  # fmt: skip
    event = {"Name": "SR Milestone", "Channel": 0, "Data": {"Text": "12", "Confidence": "0.9"}}
    wav = b"RIFF" + struct.pack("<I", 100) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    wav += b"LIST" + struct.pack("<I", 3) + b"abc\x00" + b"data" + struct.pack("<I", 8) + bytes(8)
    return [b"\x00" + json.dumps(start).encode(), b"\x01\x05" + wav, b"\x02" + json.dumps(event).encode()]
