"""AudioHook's media and time, as pure code: the offered media (also the languages ``opened`` lists and
the call's properties for Data Flow), ISO-8601 durations, whole samples across frames, and the stream
position of Data Flow's times.

AudioHook offers media as ``{type: "audio", format: "PCMU"|"L16", channels: ["external",
"internal"], rate: 8000}``; the channels of a binary frame are interleaved in that order, so channel
``i`` of the upstream stream is ``channelId`` ``i``. L16 is 16-bit little-endian (what Genesys's
reference implementation reads). A frame may end inside a sample: :class:`SampleAligner` hands on
whole samples only and keeps the rest for the next frame.

The client's ``position`` counts every sample of the stream, also those it discarded or that arrived
while paused (none of which reach Data Flow): :class:`Timeline` maps a time in the audio Data Flow
heard back to the stream position, for the ``offset`` of results; it holds at most
:data:`MAX_GAPS` gaps, however the client alternates audio and notices.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.audio.format import AudioFormat, Encoding
from gateway.config.bounds import LANGUAGE_CODE_PATTERN, MAX_LANGUAGES
from gateway.errors import LimitReached

RATE = 8000
CHANNELS = ("external", "internal")
#: Data Flow's channel tags for AudioHook's channels: the customer is external, the agent internal.
CHANNEL_TAGS = {"external": "customer", "internal": "agent"}
_ENCODINGS: dict[str, Encoding] = {"PCMU": "mulaw", "L16": "pcm16"}
MAX_DURATION_S = 7 * 24 * 3600.0  # a longer one is nonsense, and would overflow sample counts
_DURATION = re.compile(r"^PT(\d+\.\d*|\.?\d+)S$")
#: Gap entries one session may hold: a real call pauses or loses audio a handful of times, and a client
#: alternating tiny audio with ``discarded`` must not grow the timeline for hours.
MAX_GAPS = 10_000
#: Heard audio (10 ms) after the last entry under which a new gap joins it instead of taking its own.
MERGE_SAMPLES = RATE // 100
_LANGUAGE = re.compile(LANGUAGE_CODE_PATTERN)


@dataclass(frozen=True, slots=True)
class Media:
    """The media the gateway chose from those the client offered (``opened`` echoes ``offer``)."""

    offer: dict[str, Any]
    audio: AudioFormat
    channels: tuple[str, ...]


def choose_media(offered: Any) -> Media | None:
    """The first offer the gateway takes (the client lists them in its order of preference)."""
    if not isinstance(offered, list):
        return None
    for offer in offered:
        if not isinstance(offer, dict) or offer.get("type") != "audio" or offer.get("rate") != RATE:
            continue
        encoding = _ENCODINGS.get(str(offer.get("format")))
        channels = offer.get("channels")
        if encoding is None or not isinstance(channels, list) or not 1 <= len(channels) <= 2:
            continue
        if not all(isinstance(c, str) for c in channels) or len(set(channels)) != len(channels):
            continue
        if not set(channels) <= set(CHANNELS):
            continue
        audio = AudioFormat(encoding, RATE, len(channels)).validate()
        return Media(dict(offer), audio, tuple(channels))
    return None


def supported_languages(config: Any, configured: Sequence[str] = ()) -> list[str]:
    """What ``customConfig.supportedLanguages`` names, as ``opened`` lists it; the integration's own list wins
    over the gateway's ``configured`` one (GATEWAY_AUDIOHOOK_SUPPORTED_LANGUAGES), which is used when it names none."""
    offered = config.get("supportedLanguages") if isinstance(config, dict) else None
    if not isinstance(offered, list):
        return list(configured[:MAX_LANGUAGES])
    valid = [code for code in offered[: 4 * MAX_LANGUAGES] if isinstance(code, str) and _LANGUAGE.match(code)]
    return list(dict.fromkeys(valid))[:MAX_LANGUAGES]


def duration(seconds: float) -> str:
    """``PT1.5S``: seconds as an ISO-8601 duration, to the millisecond."""
    text = f"{max(seconds, 0.0):.3f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


def parse_duration(value: Any) -> float | None:
    """Seconds of a ``PT<n>S`` duration; None when it is not one (or longer than any call)."""
    match = _DURATION.match(value) if isinstance(value, str) and len(value) <= 32 else None
    seconds = float(match.group(1)) if match else None
    return seconds if seconds is not None and seconds <= MAX_DURATION_S else None


class SampleAligner:
    """Whole samples (all channels) out of frames that may split one."""

    def __init__(self, frame_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._tail + data if self._tail else data
        cut = len(buf) - len(buf) % self.frame_bytes
        self._tail = buf[cut:]
        return buf[:cut]


class Timeline:
    """Samples received, samples Data Flow got, and the gaps between the two (pause, discard).

    Each gap is an entry (where it began in the audio Data Flow heard, the running total of gaps), so
    Data Flow's times map back by bisection. A gap less than :data:`MERGE_SAMPLES` of heard audio after
    the last entry joins it: only times inside those 10 ms may be placed after the later gaps, and a
    client alternating tiny audio and notices gets one entry per 10 ms heard, not one per notice. Past
    :data:`MAX_GAPS` entries :meth:`skipped` refuses (the dialect ends the session) rather than grow.
    """

    def __init__(self, rate: int = RATE) -> None:
        self.rate = rate
        self.received = 0  # samples per channel of the stream, the client's position
        self.forwarded = 0  # samples per channel Data Flow got
        self._gap_at: list[int] = []  # forwarded samples when a gap began (ascending)
        self._gap_total: list[int] = []  # the gaps' running total in samples

    @property
    def position_s(self) -> float:
        return self.received / self.rate

    @property
    def gaps(self) -> int:
        """Gap entries held (at most :data:`MAX_GAPS`)."""
        return len(self._gap_at)

    def heard(self, samples: int) -> None:
        self.received += samples
        self.forwarded += samples

    def paused(self) -> None:
        """A pause begins: its entry is made now, so audio while paused only ever joins it (never refused)."""
        self._gap(0)

    def skipped(self, samples: int) -> None:
        """Stream time Data Flow will not hear (audio while paused, or discarded by the client).
        Raises ``LimitReached``, the timeline unchanged, when the gap would need one entry too many."""
        if samples > 0:
            self._gap(samples)

    def _gap(self, samples: int) -> None:
        if self._gap_at and self.forwarded - self._gap_at[-1] < MERGE_SAMPLES:
            self._gap_total[-1] += samples
        elif len(self._gap_at) >= MAX_GAPS:
            raise LimitReached(f"more than {MAX_GAPS} paused or discarded spans in one session")
        else:
            self._gap_at.append(self.forwarded)
            self._gap_total.append((self._gap_total[-1] if self._gap_total else 0) + samples)
        self.received += samples

    def stream_seconds(self, upstream_ms: float) -> float:
        """The stream position of a time in the audio Data Flow heard (gaps before it added back)."""
        at = upstream_ms * self.rate / 1000.0
        index = bisect_right(self._gap_at, at)
        return (at + (self._gap_total[index - 1] if index else 0)) / self.rate


def call_properties(parameters: dict[str, Any]) -> dict[str, Any] | None:
    """What Data Flow is told about the call: its conversation id and the caller's and called numbers."""
    properties: dict[str, Any] = {}
    conversation = parameters.get("conversationId")
    if isinstance(conversation, str) and conversation:
        properties["ExternalId"] = conversation
    participant = parameters.get("participant")
    if isinstance(participant, dict):
        for ours, theirs in (("CallerNumber", "ani"), ("CalledNumber", "dnis")):
            value = participant.get(theirs)
            if isinstance(value, str) and value:
                properties[ours] = value
    return properties or None
