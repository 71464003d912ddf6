"""Twilio's two tracks as one stereo stream: a ``<Start><Stream track="both_tracks">`` sends the caller
(``inbound``) and what the call plays to them (``outbound``) as separate ``media`` messages, each stamped
with its offset from the stream's start. Data Flow takes one interleaved stream: channel 0 inbound,
channel 1 outbound.

Each track's bytes (μ-law, one byte a sample) are placed at their timestamp: a gap is filled with
silence and audio for a position already passed (late or repeated) is dropped, so neither channel
drifts (a stamp within ``JITTER_BYTES`` of its track's end is the next frame: no gap, no cut; a gap
opens at most ``MAX_SKEW_BYTES`` past the further track: a hostile timestamp cannot make gigabytes of
silence). Whatever both tracks have goes out at once; a track that falls more than
``MAX_SKEW_BYTES`` behind is padded with silence, so one silent track cannot hold the other's results
back. When the stream ends, :meth:`TwoTracks.flush` pads the shorter track and returns the rest. Pure: no I/O.
"""

from __future__ import annotations

import numpy as np

ULAW_SILENCE = 0xFF
SAMPLES_PER_MS = 8
MAX_SKEW_BYTES = 8000  # 1 s at 8 kHz: also how far past the further track a timestamp may open a gap
#: A timestamp this close to its track's end stamps the next frame: stamps taken from packet arrival run a
#: few ms off 20 ms steps, and each was a gap of silence or a cut of audio (5.6 % of a caller's samples
#: replaced with stamps 1-3 ms off).
JITTER_BYTES = 10 * SAMPLES_PER_MS


class TwoTracks:
    def __init__(self) -> None:
        self._pending = (bytearray(), bytearray())
        self._sent = 0  # samples per channel already interleaved

    def feed(self, channel: int, timestamp_ms: int | None, data: bytes) -> bytes:
        """Add one track's audio; returns the interleaved stereo bytes now complete (maybe none)."""
        pending = self._pending[channel]
        if timestamp_ms is not None:
            at, end = timestamp_ms * SAMPLES_PER_MS, self._sent + len(pending)
            # A gap opens at most MAX_SKEW_BYTES past the further track: a track padded while it was
            # silent (kept a second behind the other) is placed back at its timestamp when it resumes.
            furthest = self._sent + max(len(track) for track in self._pending)
            if abs(at - end) <= JITTER_BYTES:
                at = end  # the next frame, a few ms off: contiguous (no gap, no cut)
            if end < at <= furthest + MAX_SKEW_BYTES:
                pending.extend(bytes([ULAW_SILENCE]) * (at - end))  # a gap in this track: silence
            elif at < end:
                data = data[end - at :]  # already placed (or passed): keep only what is new
        pending.extend(data)
        return self._take()

    def _take(self) -> bytes:
        first, second = self._pending
        ready = min(len(first), len(second))
        behind = max(len(first), len(second)) - MAX_SKEW_BYTES
        if behind > ready:  # one track is silent or stalled: do not hold the other back
            for track in (first, second):
                track.extend(bytes([ULAW_SILENCE]) * max(0, behind - len(track)))
            ready = behind
        return self._interleave(ready)

    def flush(self) -> bytes:
        """The stream ends: everything still held, the shorter track padded with silence, interleaved."""
        longest = max(len(track) for track in self._pending)
        for track in self._pending:
            track.extend(bytes([ULAW_SILENCE]) * (longest - len(track)))
        return self._interleave(longest)

    def _interleave(self, ready: int) -> bytes:
        first, second = self._pending
        if not ready:
            return b""
        out = np.empty(2 * ready, np.uint8)
        out[0::2] = np.frombuffer(first, np.uint8, ready)
        out[1::2] = np.frombuffer(second, np.uint8, ready)
        del first[:ready], second[:ready]
        self._sent += ready
        return out.tobytes()
