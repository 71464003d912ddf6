"""Native ``/v1/stream`` control messages through the pure dialect: waiting (start) and streaming.

The dialect never raises: every client mistake becomes a ``Reply`` with an ``error`` message. A
parsed start must be a valid format and project and must encode for Data Flow; every reply must
encode as JSON.
"""

from __future__ import annotations

import json

from gateway.adapters.commands import Begin, Reply, SendEvent, Update
from gateway.adapters.native import NativeDialect
from gateway.dataflow.messages import build_start
from tests.fuzz.common import encodable, text_of


def one_input(data: bytes) -> None:
    text = text_of(data)
    if text is None:
        return
    dialect = NativeDialect(default_project="demo")
    waiting = dialect.waiting(text)
    if isinstance(waiting, Begin):
        waiting.request.audio.validate()
        assert waiting.request.project
        encodable(build_start(waiting.request, token="t", tenant=""))
    streaming = dialect.streaming(text)
    for command in (waiting, streaming):
        if isinstance(command, Reply):
            for frame in command.frames:
                encodable(frame)
        elif isinstance(command, Update):
            encodable(command.settings)
        elif isinstance(command, SendEvent):
            encodable(command.event)


def seeds() -> list[bytes]:
    audio = {"encoding": "mulaw", "sampleRate": 8000, "channels": 2}
    messages = [
        {"type": "start", "project": "demo", "audio": audio, "language": "en-US", "interim": False, "raw": True,
         "settings": {"ChannelTags": ["a"]}, "channelTags": ["customer", "agent"], "callProperties": {"x": 1}},
        {"type": "start"}, {"type": "finalize"}, {"type": "stop"}, {"type": "ping", "id": 7},
        {"type": "update", "settings": {"Language": "en-GB"}}, {"type": "event", "event": {"Name": "TTS", "Data": {}}},
    ]  # fmt: skip
    return [json.dumps(m).encode() for m in messages]
