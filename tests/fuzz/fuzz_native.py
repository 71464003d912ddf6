"""Native ``/v1/stream`` control messages: text frame -> JSON object -> start message or control dispatch.

Declared errors: ``BadRequest`` and its subclasses (``InvalidMessage``, ``AudioFormatError``): each is
answered with an ``error`` message on the socket. A parsed start must be a valid format and project
and must encode for Data Flow.
"""

from __future__ import annotations

import contextlib
import json

from gateway.adapters.native import NativeConnection
from gateway.dataflow_json import build_start, loads_object
from gateway.errors import BadRequest
from gateway.settings import Settings
from tests.fuzz.common import StubSession, encodable, run, text_of

_settings: Settings | None = None


def _connection() -> NativeConnection:
    global _settings
    if _settings is None:
        _settings = Settings(_env_file=None, default_project="demo", auth="none")  # type: ignore[call-arg]
    conn = NativeConnection.__new__(NativeConnection)
    conn.settings = _settings
    conn.interim, conn.raw = True, False
    return conn


def one_input(data: bytes) -> None:
    text = text_of(data)
    if text is None:
        return
    try:
        obj = loads_object(text)
    except BadRequest:
        return
    conn = _connection()
    try:
        request, client_format, _token = conn._parse_start(obj)
    except BadRequest:
        pass
    else:
        client_format.validate()
        assert request.project
        encodable(build_start(request, token="t", tenant=""))
    with contextlib.suppress(BadRequest):
        run(conn._control(StubSession(), obj))  # type: ignore[arg-type]


def seeds() -> list[bytes]:
    audio = {"encoding": "mulaw", "sampleRate": 8000, "channels": 2}
    messages = [
        {"type": "start", "project": "demo", "audio": audio, "language": "en-US", "interim": False, "raw": True,
         "settings": {"ChannelTags": ["a"]}, "channelTags": ["customer", "agent"], "callProperties": {"x": 1}},
        {"type": "start"}, {"type": "finalize"}, {"type": "stop"}, {"type": "ping", "id": 7},
        {"type": "update", "settings": {"Language": "en-GB"}}, {"type": "event", "event": {"Name": "TTS", "Data": {}}},
    ]  # fmt: skip
    return [json.dumps(m).encode() for m in messages]
