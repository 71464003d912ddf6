"""What Twilio, Vonage and jambonz send, built from test signals: each platform's own framing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from tests.support import signals

CALL_SID = "CA0123456789abcdef0123456789abcdef"
STREAM_SID = "MZ0123456789abcdef0123456789abcdef"
ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
VONAGE_UUID = "63f61863-4a51-4f6b-86e1-46edebcf9356"
VONAGE_CONVERSATION = "CON-f972836a-550f-45fa-956c-12a2ab5b7d22"


def twilio_signature(auth_token: str, url: str) -> str:
    """X-Twilio-Signature of a WebSocket upgrade: base64 HMAC-SHA1 of the URL (no POST parameters)."""
    return base64.b64encode(hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()).decode()


def twilio_connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def twilio_start(tracks: list[str] | None = None, **custom: str) -> str:
    return json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID,
        "start": {
            "streamSid": STREAM_SID, "accountSid": ACCOUNT_SID, "callSid": CALL_SID,
            "tracks": tracks or ["inbound"], "customParameters": custom,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    })  # fmt: skip


def twilio_media(*utterances: str, track: str = "inbound", lead_ms: int = 300) -> list[str]:
    """DTMF utterances (digits each) in Twilio's ``media`` messages: 20 ms of base64 μ-law each."""
    audio = signals.g711_encode(signals.utterances(list(utterances), 8000, lead_ms=lead_ms), "mulaw")
    frames = []
    for n, offset in enumerate(range(0, len(audio), 160)):
        frames.append(json.dumps({
            "event": "media", "sequenceNumber": str(n + 2), "streamSid": STREAM_SID,
            "media": {"track": track, "chunk": str(n + 1), "timestamp": str(n * 20),
                      "payload": base64.b64encode(audio[offset : offset + 160]).decode()},
        }))  # fmt: skip
    return frames


def twilio_dtmf(digit: str) -> str:
    return json.dumps({"event": "dtmf", "streamSid": STREAM_SID, "dtmf": {"track": "inbound_track", "digit": digit}})


def twilio_stop() -> str:
    return json.dumps({
        "event": "stop", "streamSid": STREAM_SID, "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
    })  # fmt: skip


def vonage_connected(rate: int = 16000, **headers: Any) -> str:
    fields = {"uuid": VONAGE_UUID, "conversation_uuid": VONAGE_CONVERSATION, **headers}
    return json.dumps({"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}", **fields})


def l16_frames(digits: str, rate: int) -> list[bytes]:
    """``digits`` as DTMF in 20 ms 16-bit little-endian frames (640 bytes at 16 kHz)."""
    audio = signals.to_pcm16(signals.utterances([digits], rate))
    step = rate // 50 * 2
    return [audio[i : i + step] for i in range(0, len(audio), step)]


def arbitrary_messages(kinds: list[str], key: str) -> Any:
    """A hypothesis strategy: client messages of one platform, well-formed or not (``key`` names the kind)."""
    from hypothesis import strategies as st

    anything = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )
    fields = {
        key: st.sampled_from(kinds) | anything,
        "start": st.fixed_dictionaries({}, optional={
            "mediaFormat": st.just({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}) | anything,
            "tracks": st.just(["inbound", "outbound"]) | anything, "customParameters": anything,
            "callSid": anything, "streamSid": anything,
        }) | anything,
        "media": st.fixed_dictionaries({}, optional={
            "track": st.sampled_from(["inbound", "outbound"]) | anything,
            "payload": st.sampled_from(["AAAA", "////", "A", "é"]) | anything,
        }) | anything,
        "content-type": st.sampled_from(["audio/l16;rate=16000", "audio/l16;rate=8000", "audio/l16"]) | anything,
        "sampleRateHz": st.sampled_from([8000, 16000, 7, 10**9]) | anything,
        "encoding": st.sampled_from(["LINEAR16", "MULAW"]) | anything,
        "format": st.sampled_from(["raw", "wav"]) | anything,
        "interimResults": anything, "language": anything, "uuid": anything,
    }  # fmt: skip
    objects = st.fixed_dictionaries({}, optional=fields).map(json.dumps)
    return objects | st.binary(max_size=9) | st.text(max_size=9) | st.just("[" * 5000)
