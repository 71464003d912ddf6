"""Decoded frames -> packed 16-bit PCM in one output format for the whole file, whatever changes in it.

The output's rate and channel count are the first frame's (within the gateway's rates; more than two
channels are one). A file may change its format part-way: two MP3s joined (a recorder restarted, a
playlist saved as one file) put frames of another rate or channel count after the first part's, and
FFmpeg's resampler refuses frames unlike its first ("Invalid argument"): the upload ended 415 with the
first part's last decoded audio never sent. Here the resampler in use is flushed and a new one made
from the new frames to the same output, so nothing is lost and Data Flow sees one format.
"""

from __future__ import annotations

import av
import numpy as np

from gateway.audio import ffmpeg_policy, mixdown
from gateway.audio.format import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioFormat


class Pcm16Output:
    def __init__(self) -> None:
        self.format: AudioFormat | None = None  # known from the first frame
        self._source: tuple[int, int, str] | None = None  # rate, channels, sample format of the frames
        self._mix: mixdown.MonoMix | None = None  # more channels than the output: their mean
        self._resampler: av.AudioResampler | None = None

    def convert(self, frame: av.AudioFrame) -> bytes:
        channels = frame.layout.nb_channels
        source = (frame.sample_rate, channels, frame.format.name)
        head = b""
        if source != self._source:
            ffmpeg_policy.check(frame.sample_rate, channels)
            head = self.flush()
            if self.format is None:
                rate = min(max(frame.sample_rate, MIN_SAMPLE_RATE), MAX_SAMPLE_RATE)
                self.format = AudioFormat("pcm16", rate, channels if channels in (1, 2) else 1)
            self._source = source
            out = self.format
            # The mean of every channel (mixdown), not FFmpeg's mix by position.
            self._mix = mixdown.MonoMix(frame) if channels > out.channels else None
            self._resampler = av.AudioResampler("s16", "mono" if out.channels == 1 else "stereo", out.sample_rate)
        pieces = self._mix.mix(frame) if self._mix is not None else [mixdown.as_plain(frame)]
        return head + b"".join(self._pcm16(piece) for piece in pieces)

    def flush(self) -> bytes:
        """What the mix and the resampler still hold (the resampler's delay line); the next frame starts anew."""
        if self._resampler is None:
            return b""
        held = b"".join(self._pcm16(piece) for piece in (self._mix.mix(None) if self._mix is not None else []))
        held += self._pcm16(None)
        self._source = self._mix = self._resampler = None
        return held

    def _pcm16(self, frame: av.AudioFrame | None) -> bytes:
        assert self._resampler is not None
        resampled = self._resampler.resample(frame)
        return b"".join(np.asarray(piece.to_ndarray(), dtype="<i2").tobytes() for piece in resampled)
