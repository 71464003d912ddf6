"""Mono from frames of more than two channels: the mean of the channels, in float; and one or two
channels read as they are, whatever positions the file names for them.

FFmpeg's resampler mixed the channel counts it has a default layout for (1..8, 10, 12, 14, 16 and 24
with FFmpeg 8) by their positions, and a WAV, AU or FLAC names none: it guessed one (3 channels as 2.1,
6 as 5.1, 8 as 7.1) and its mix dropped the channel it took for LFE and weighted the others by their
place. A multi-party recording (customer, agent, IVR) lost one party, answered 200 with no warning.
Every channel counts the same here; other counts failed in FFmpeg with "Invalid argument". Frames are
averaged one at a time, and the mono frame goes through the usual resampler. A packed frame is read in
place; a planar one is first made packed float by FFmpeg (which converts formats whatever the layout):
PyAV finds planes by walking to a null pointer, which is not safe past 8 planes.
"""

from __future__ import annotations

from typing import Final

import av
import numpy as np

#: packed sample format -> (dtype, offset, full scale): (x - offset) / scale is in [-1, 1]
_PACKED: Final[dict[str, tuple[str, float, float]]] = {
    "u8": ("u1", 128.0, 128.0),
    "s16": ("i2", 0.0, 2.0**15),
    "s32": ("i4", 0.0, 2.0**31),
    "s64": ("i8", 0.0, 2.0**63),
    "flt": ("f4", 0.0, 1.0),
    "dbl": ("f8", 0.0, 1.0),
}


class MonoMix:
    """Frames of one stream -> mono float frames at the same rate (the mean of the channels)."""

    def __init__(self, frame: av.AudioFrame) -> None:
        # Format only, same rate and layout: FFmpeg keeps no delay line.
        planar = frame.format.is_planar
        self._packed = av.AudioResampler("flt", frame.layout, frame.sample_rate) if planar else None

    def mix(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        """``frame`` mixed to mono; None flushes."""
        if self._packed is not None:
            return [_mono(packed) for packed in self._packed.resample(frame)]
        return [] if frame is None else [_mono(frame)]


def _mono(frame: av.AudioFrame) -> av.AudioFrame:
    channels = frame.layout.nb_channels
    dtype, offset, scale = _PACKED[frame.format.name]
    # One plane, read in place (to_ndarray would copy it); the mean casts in small buffers.
    plane = memoryview(frame.planes[0])
    interleaved = np.frombuffer(plane, dtype, count=frame.samples * channels).reshape(-1, channels)
    mono = (interleaved.mean(axis=1, dtype=np.float64) - offset) / scale
    out = av.AudioFrame.from_ndarray(mono.astype(np.float32).reshape(1, -1), format="flt", layout="mono")
    out.sample_rate = frame.sample_rate
    return out


#: The layouts FFmpeg's resampler passes through unmixed, by channel count.
_PLAIN: Final[dict[int, str]] = {1: "mono", 2: "stereo"}


def as_plain(frame: av.AudioFrame) -> av.AudioFrame:
    """``frame`` with its one or two channels in the layout the resampler keeps apart.

    A channel mask (WAVE_FORMAT_EXTENSIBLE, FLAC's, a container's) names where each microphone stood, and
    FFmpeg's resampler mixed by it into stereo: front centre + LFE became the centre in both channels with
    the second party dropped, back left + right had no mix at all ("Invalid argument"). Each channel is
    a party here, wherever it stood. Only such a frame is copied (to_ndarray keeps its sample format)."""
    plain = _PLAIN.get(frame.layout.nb_channels)
    if plain is None or frame.layout.name == plain:  # more channels mid-file: the resampler refuses the change
        return frame
    out = av.AudioFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name, layout=plain)
    out.sample_rate = frame.sample_rate
    return out
