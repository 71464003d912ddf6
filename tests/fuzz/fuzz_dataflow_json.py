"""Data Flow's JSON in both dialects, as ``/project-runner`` clients send it and as Data Flow answers.

Client side: Start (``parse_start``), then the pure dialect's waiting and streaming parses, which
never raise (errors become a ``Refuse`` or a ``Reply`` in the client's spelling). Declared errors:
``InvalidMessage`` (not a JSON object) and ``AudioFormatError`` (an Audio block the gateway cannot
take). Server side: ``parse_event`` and ``parse_response`` are tolerant and never raise; what the
adapter relays back (token keys scrubbed) must encode as JSON.
"""

from __future__ import annotations

import json

from gateway.adapters.commands import Reply
from gateway.adapters.dataflow_ws import DEFAULT_AUDIO, DataflowDialect, scrub
from gateway.dataflow.lenient import loads_object, norm_key
from gateway.dataflow.messages import build_start, message_name, parse_event, parse_response, parse_start
from gateway.errors import AudioFormatError, InvalidMessage
from tests.fuzz.common import encodable, text_of


def one_input(data: bytes) -> None:
    text = text_of(data)
    if text is None:
        return
    try:
        obj = loads_object(text)
    except InvalidMessage:
        return
    message_name(obj)
    try:
        request, _token, _tenant = parse_start(obj, default_audio=DEFAULT_AUDIO, project="from-path")
    except AudioFormatError:
        pass
    else:
        request.audio.validate()
        start = build_start(request, token="gateway-token", tenant="gateway-tenant")
        encodable(start)
        assert start["Token"] == "gateway-token"  # the client's token never goes upstream
        assert sum(1 for k in start if norm_key(k) == "token") == 1
    dialect = DataflowDialect(path_project="from-path")
    dialect.waiting(text)  # learns the client's spelling; a bad Start is a Refuse, never an exception
    answer = dialect.streaming(text)
    if isinstance(answer, Reply):
        for frame in answer.frames:
            encodable(frame)
    event, response = parse_event(obj), parse_response(obj)
    assert isinstance(event.text, str | None) and isinstance(event.final, bool)
    assert isinstance(response.ok, bool)
    relayed = scrub(obj)
    encodable(relayed)
    assert_no_token_keys(relayed)


def assert_no_token_keys(value: object) -> None:
    """No key reading as a token is left at any depth (the word may still appear in values)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            assert all(norm_key(str(k)) != "token" for k in item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def seeds() -> list[bytes]:
    messages = [
        {"MessageName": "Start", "ProjectName": "p", "Token": "x", "Tenant": "y",
         "Audio": {"Encoding": "pcm", "SampleRate": 16000, "ChannelCount": 1}, "Settings": {"A": 1}},
        {"message-name": "start", "project-name": "p", "token": "x", "audio": {"encoding": "ulaw",
         "sample-rate": "8000", "channel-count": "2"}, "ca": {"k": "v"}},
        {"MessageName": "Update", "Settings": {"Language": "tr-TR"}}, {"MessageName": "Finalize"},
        {"message-name": "stop"}, {"Event": {"Name": "TTS Request", "Data": {"Text": "hi"}}},
        {"Name": "SR Milestone", "Channel": 0, "StartMsec": 1, "EndMsec": 2, "Data": {"Text": "12"}},
        {"event": {"name": "sr milestone", "channel": "1", "start-msec": "10",
                   "data": {"text_attributes": "recognized"}}},
        {"MessageName": "StartResponse", "OperationResult": "Success", "SessionId": "s"},
        {"message-name": "start-response", "operation-result": "invalid token"},
    ]  # fmt: skip
    return [json.dumps(m).encode() for m in messages]
