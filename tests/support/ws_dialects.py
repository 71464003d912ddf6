"""The WebSocket dialects the one driver serves (native, Data Flow's own, AudioCodes), each as a test
sees it: its path, its start message, how its start is answered, and how a refusal or an error names
its code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WsDialect:
    name: str
    path: str
    start: dict[str, Any]
    is_started: Callable[[dict[str, Any]], bool]
    #: The code a refusal or an error carries in this dialect's own words.
    code_of: Callable[[dict[str, Any]], str | None]


NATIVE = WsDialect(
    "native", "/v1/stream",
    {"type": "start", "project": "demo", "audio": {"encoding": "pcm16", "sampleRate": 16000, "channels": 1}},
    lambda m: m.get("type") == "started",
    lambda m: m.get("code") if m.get("type") == "error" else None,
)  # fmt: skip
DATAFLOW = WsDialect(
    "dataflow_ws", "/project-runner/demo",
    {"MessageName": "Start", "Audio": {"Encoding": "pcm", "SampleRate": 16000, "ChannelCount": 1}},
    lambda m: m.get("MessageName") == "StartResponse" and "ErrorCode" not in m,
    lambda m: m.get("ErrorCode"),
)  # fmt: skip
AUDIOCODES = WsDialect(
    "audiocodes", "/v1/audiocodes?project=demo",
    {"type": "start", "language": "en-US", "format": "raw", "encoding": "LINEAR16", "sampleRateHz": 16000},
    lambda m: m.get("type") == "started",
    lambda m: str(m["reason"]).partition(":")[0] if m.get("type") == "error" else None,
)  # fmt: skip
