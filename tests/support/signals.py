"""Generated test audio: DTMF, tones, noise, silence, and the byte/WAV encodings the gateway accepts.

Every generator returns a mono 1-D ``float32`` array in [-1, 1]. Durations are in milliseconds and
become ``ms * rate // 1000`` samples. Everything is deterministic (noise takes a seed).
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float32]

DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYS = ("123A", "456B", "789C", "*0#D")
DTMF_FREQS: dict[str, tuple[float, float]] = {
    key: (DTMF_ROWS[r], DTMF_COLS[c]) for r, row in enumerate(DTMF_KEYS) for c, key in enumerate(row)
}
UTTERANCE_BREAK_MS = 800  # what a ' ' in dtmf() digits stands for


def _n(ms: int, rate: int) -> int:
    return ms * rate // 1000


def silence(ms: int, rate: int) -> Samples:
    return np.zeros(_n(ms, rate), dtype=np.float32)


def tone(freq: float, ms: int, rate: int, amplitude: float = 0.5) -> Samples:
    t = np.arange(_n(ms, rate), dtype=np.float64) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(ms: int, rate: int, level: float = 0.01, seed: int = 0) -> Samples:
    """Gaussian white noise whose RMS is ``level`` (0.01 = -40 dBFS), clipped to [-1, 1]."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0.0, level, _n(ms, rate)), -1.0, 1.0).astype(np.float32)


def dtmf(digits: str, rate: int, tone_ms: int = 80, gap_ms: int = 80, amplitude: float = 0.5) -> Samples:
    """Each digit is two sines (``amplitude / 2`` each) for ``tone_ms`` then ``gap_ms`` of silence.

    A space stands for an utterance break: 800 ms of silence.
    """
    parts: list[Samples] = []
    for ch in digits:
        if ch == " ":
            parts.append(silence(UTTERANCE_BREAK_MS, rate))
            continue
        low, high = DTMF_FREQS[ch.upper()]
        parts.append(tone(low, tone_ms, rate, amplitude / 2) + tone(high, tone_ms, rate, amplitude / 2))
        parts.append(silence(gap_ms, rate))
    return np.concatenate(parts) if parts else silence(0, rate)


def utterances(
    groups: list[str],
    rate: int,
    lead_ms: int = 300,
    pause_ms: int = 900,
    tail_ms: int = 900,
    amplitude: float = 0.5,
) -> Samples:
    """``lead_ms`` of silence, then each group's DTMF digits separated by ``pause_ms``, then ``tail_ms``.

    dtmf() timing applies, so each group lasts ``len(group) * 160`` ms (its last 80 ms silent).
    """
    parts: list[Samples] = [silence(lead_ms, rate)]
    for i, group in enumerate(groups):
        if i:
            parts.append(silence(pause_ms, rate))
        parts.append(dtmf(group, rate, amplitude=amplitude))
    parts.append(silence(tail_ms, rate))
    return np.concatenate(parts)


def to_int16(x: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Float in [-1, 1] -> int16 (scale 32767, rounded, clipped)."""
    a = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    return np.round(a * 32767.0).astype(np.int16)


def to_pcm16(x: npt.ArrayLike) -> bytes:
    """16-bit little-endian PCM bytes (interleaved if ``x`` is (frames, channels))."""
    return to_int16(x).astype("<i2").tobytes()


def to_f32(x: npt.ArrayLike) -> bytes:
    """32-bit little-endian float bytes (interleaved if ``x`` is (frames, channels))."""
    return np.asarray(x, dtype="<f4").tobytes()


def interleave(left: npt.ArrayLike, right: npt.ArrayLike) -> Samples:
    """Stack two mono signals into (frames, 2), padding the shorter one with zeros."""
    a = np.asarray(left, dtype=np.float32)
    b = np.asarray(right, dtype=np.float32)
    n = max(len(a), len(b))
    out = np.zeros((n, 2), dtype=np.float32)
    out[: len(a), 0] = a
    out[: len(b), 1] = b
    return out


# --- G.711 (ITU-T G.711, the classic Sun/CCITT reference algorithms, vectorised) -----------------

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _ulaw_encode(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    x = pcm.astype(np.int64) >> 2  # 14-bit
    mask = np.where(x < 0, 0x7F, 0xFF)
    x = np.minimum(np.abs(x), _ULAW_CLIP) + 0x21
    seg = np.searchsorted(_ULAW_SEG_END, x)
    uval = (np.minimum(seg, 7) << 4) | ((x >> (seg + 1)) & 0x0F)
    uval = np.where(seg >= 8, 0x7F, uval)
    return ((uval ^ mask) & 0xFF).astype(np.uint8)


def _ulaw_decode(data: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    u = ~data.astype(np.int64) & 0xFF
    exponent = (u >> 4) & 0x07
    mag = ((((u & 0x0F) << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(u & 0x80, -mag, mag).astype(np.int16)


def _alaw_encode(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    x = pcm.astype(np.int64) >> 3  # 13-bit
    mask = np.where(x >= 0, 0xD5, 0x55)
    x = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_ALAW_SEG_END, x)  # first segment whose end >= x
    shift = np.where(seg < 2, 1, seg)
    aval = (np.minimum(seg, 7) << 4) | ((x >> shift) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


def _alaw_decode(data: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    a = data.astype(np.int64) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def g711_encode(x: npt.ArrayLike, law: str) -> bytes:
    """Float samples in [-1, 1] -> G.711 bytes; ``law`` is "mulaw" or "alaw"."""
    pcm = to_int16(x).reshape(-1)
    if law == "mulaw":
        return _ulaw_encode(pcm).tobytes()
    if law == "alaw":
        return _alaw_encode(pcm).tobytes()
    raise ValueError(f"unknown G.711 law {law!r}")


def g711_decode(data: bytes, law: str) -> npt.NDArray[np.int16]:
    """G.711 bytes -> int16 samples (flat; reshape for interleaved channels)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if law == "mulaw":
        return _ulaw_decode(raw)
    if law == "alaw":
        return _alaw_decode(raw)
    raise ValueError(f"unknown G.711 law {law!r}")


_WAV_FORMATS = {"pcm16": (1, 16), "u8": (1, 8), "alaw": (6, 8), "mulaw": (7, 8)}


def wav_bytes(samples: npt.ArrayLike, rate: int, encoding: str = "pcm16") -> bytes:
    """A RIFF/WAVE file. ``samples`` is mono 1-D or (frames, channels) float in [-1, 1].

    pcm16, u8 (unsigned, 128 is silence) -> format 1 (16-byte fmt chunk); mulaw -> format 7, alaw -> format 6
    (18-byte fmt chunk with cbSize 0 plus a ``fact`` chunk, as the WAVE spec asks for non-PCM formats).
    """
    if encoding not in _WAV_FORMATS:
        raise ValueError(f"unknown WAV encoding {encoding!r}")
    a = np.asarray(samples, dtype=np.float32)
    a = a.reshape(-1, 1) if a.ndim == 1 else a
    frames, channels = a.shape
    fmt_tag, bits = _WAV_FORMATS[encoding]
    if encoding == "u8":
        data = (np.clip(np.round(a * 127.0), -127, 127) + 128).astype(np.uint8).tobytes()
    else:
        data = to_pcm16(a) if encoding == "pcm16" else g711_encode(a, encoding)
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block_align, block_align, bits)
    chunks = [b"fmt ", struct.pack("<I", len(fmt) + (fmt_tag != 1) * 2), fmt]
    if fmt_tag != 1:
        chunks += [struct.pack("<H", 0), b"fact", struct.pack("<II", 4, frames)]
    chunks += [b"data", struct.pack("<I", len(data)), data, b"\0" * (len(data) % 2)]
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body
