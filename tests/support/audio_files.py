"""Audio files in the containers uploads accept, built from tests.support.signals samples.

Compressed formats are encoded with PyAV (the library the gateway decodes them with is FFmpeg too,
but the encoders are independent code paths from the decoders). WAV/AU variants are built by hand
to exercise the gateway's own parsers: extra chunks, unknown sizes, WAVE_FORMAT_EXTENSIBLE.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from tests.support import signals


def encoded(
    samples: npt.ArrayLike, rate: int, container: str, codec: str, codec_rate: int | None = None, **options: str
) -> bytes:
    """``samples`` (mono 1-D or (frames, 2)) encoded with ``codec`` in ``container`` by FFmpeg (``options``:
    muxer options such as movflags)."""
    a = np.asarray(samples, dtype=np.float32)
    a = a.reshape(-1, 1) if a.ndim == 1 else a
    layout = "mono" if a.shape[1] == 1 else "stereo"
    with tempfile.TemporaryDirectory() as tmp:  # a file, not BytesIO: +faststart rewrites it by name
        path = Path(tmp) / f"audio.{container}"
        with av.open(str(path), "w", format=container, options=options) as box:
            stream = box.add_stream(codec, rate=codec_rate or rate, layout=layout)
            ctx = stream.codec_context
            frame = av.AudioFrame.from_ndarray(signals.to_int16(a).reshape(1, -1), format="s16", layout=layout)
            frame.sample_rate = rate
            resampler = av.AudioResampler(
                ctx.format.name, layout, codec_rate or rate, frame_size=ctx.frame_size or None
            )
            for piece in [*resampler.resample(frame), *resampler.resample(None), None]:
                for packet in stream.encode(piece):
                    box.mux(packet)
        return path.read_bytes()


def wav_with_chunks(samples: npt.ArrayLike, rate: int, *, streaming_sizes: bool = False) -> bytes:
    """A PCM16 WAV with a LIST chunk before ``data`` and another after it (which is not audio).

    ``streaming_sizes`` writes 0xFFFFFFFF as RIFF and data sizes, as recorders that stream do; the
    trailing chunk is then left out (a reader has to take everything to the end as audio).
    """
    data = signals.to_pcm16(samples)
    info = b"INFOISFT" + struct.pack("<I", 6) + b"tests\0"
    chunks = b"LIST" + struct.pack("<I", len(info)) + info
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    head = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + chunks
    if streaming_sizes:
        return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + head + b"data" + struct.pack("<I", 0xFFFFFFFF) + data
    trailer = b"LIST" + struct.pack("<I", 4000) + b"\x55" * 4000  # loud if misread as audio
    body = head + b"data" + struct.pack("<I", len(data)) + data + trailer
    return b"RIFF" + struct.pack("<I", len(body)) + body


def wav_extensible(samples: npt.ArrayLike, rate: int) -> bytes:
    """WAVE_FORMAT_EXTENSIBLE with the PCM sub-format GUID, as many tools write 16-bit files."""
    data = signals.to_pcm16(samples)
    guid = struct.pack("<HHHH", 1, 0x0000, 0x0010, 0x8000) + bytes.fromhex("00aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, rate, rate * 2, 2, 16, 22, 16, 4) + guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def au_mulaw(samples: npt.ArrayLike, rate: int) -> bytes:
    """Sun AU with mu-law payload (what ``audio/basic`` files usually are)."""
    data = signals.g711_encode(samples, "mulaw")
    return b".snd" + struct.pack(">IIIII", 24, len(data), 1, rate, 1) + data


def chained_ogg() -> bytes:
    """Ogg Opus mono then stereo, chained: FFmpeg decodes the first and fails on the second."""
    mono = encoded(signals.utterances(["1"], 16000), 16000, "ogg", "libopus", 48000)
    stereo = signals.interleave(signals.utterances(["2"], 16000), signals.utterances(["3"], 16000))
    return mono + encoded(stereo, 16000, "ogg", "libopus", 48000)
