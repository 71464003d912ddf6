"""gateway.audio: formats, G.711, sample codecs, the streaming converter and rechunk."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audio import convert as audio
from gateway.audio.convert import AudioConverter, decode, encode, rechunk
from gateway.audio.format import DATAFLOW_ENCODINGS, AudioFormat, Encoding, parse_encoding, to_dataflow_encoding
from gateway.errors import AudioFormatError

ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int64)


def law_to_int(data: bytes, encoding: Encoding) -> npt.NDArray[np.int64]:
    """G.711 bytes -> int16 values through the public decoder (exact: values are k / 32768)."""
    return np.rint(decode(data, AudioFormat(encoding, 8000, 1))[:, 0] * 32768).astype(np.int64)


def int_to_law(values: npt.NDArray[np.int64], encoding: Encoding) -> bytes:
    return encode(values.astype(np.float32) / 32768, encoding)


# --- G.711 ----------------------------------------------------------------------------------------


def ulaw_reference(code: int) -> int:
    """G.711 Table 2 (μ-law): 14-bit magnitude (2m + 33)·2^e - 33, scaled x4 to 16 bits; codes are sent inverted."""
    c = ~code & 0xFF
    e, m = (c >> 4) & 7, c & 15
    mag = 4 * (((2 * m + 33) << e) - 33)
    return -mag if c & 0x80 else mag


def alaw_reference(code: int) -> int:
    """G.711 Table 1 (A-law): 13-bit magnitude 2m + 1 (segment 0) or (2m + 33)·2^(e-1), x8; even bits inverted."""
    c = code ^ 0x55
    e, m = (c >> 4) & 7, c & 15
    mag = 8 * ((2 * m + 1) if e == 0 else (2 * m + 33) << (e - 1))
    return mag if c & 0x80 else -mag


@pytest.mark.parametrize(
    ("encoding", "code", "value"),
    [
        ("mulaw", 0xFF, 0),
        ("mulaw", 0x7F, 0),  # negative zero
        ("mulaw", 0x00, -32124),
        ("mulaw", 0x80, 32124),
        ("mulaw", 0xFE, 8),
        ("mulaw", 0x7E, -8),
        ("mulaw", 0xEF, 132),
        ("alaw", 0xD5, 8),
        ("alaw", 0x55, -8),
        ("alaw", 0xAA, 32256),
        ("alaw", 0x2A, -32256),
        ("alaw", 0xC5, 264),
    ],
)
def test_g711_decode_known_values(encoding: Encoding, code: int, value: int) -> None:
    assert law_to_int(bytes([code]), encoding)[0] == value


@pytest.mark.parametrize(("encoding", "reference"), [("mulaw", ulaw_reference), ("alaw", alaw_reference)])
def test_g711_decode_matches_standard_formula_for_all_codes(
    encoding: Encoding, reference: Callable[[int], int]
) -> None:
    assert law_to_int(ALL_CODES, encoding).tolist() == [reference(c) for c in range(256)]


@pytest.mark.parametrize(
    ("encoding", "value", "code"),
    [
        ("mulaw", 0, 0xFF),
        ("mulaw", -1, 0x7F),  # ITU G.191 reference: one's complement, so -1 is negative zero
        ("mulaw", 8, 0xFE),
        ("mulaw", 32767, 0x80),
        ("mulaw", -32768, 0x00),
        ("alaw", 0, 0xD5),
        ("alaw", -1, 0x55),
        ("alaw", 15, 0xD5),
        ("alaw", 16, 0xD4),
        ("alaw", 32767, 0xAA),
        ("alaw", -32768, 0x2A),
    ],
)
def test_g711_encode_known_values(encoding: Encoding, value: int, code: int) -> None:
    assert int_to_law(np.array([value]), encoding) == bytes([code])


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
def test_g711_encode_inverts_decode_for_every_code(encoding: Encoding) -> None:
    values = law_to_int(ALL_CODES, encoding)
    expected = bytes(0xFF if (encoding == "mulaw" and c == 0x7F) else c for c in range(256))
    assert int_to_law(values, encoding) == expected


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
def test_g711_round_trip_error_within_half_a_quantisation_step(encoding: Encoding) -> None:
    codes = int_to_law(ALL_INT16, encoding)
    back = law_to_int(codes, encoding)
    c = np.frombuffer(codes, np.uint8).astype(np.int64)
    if encoding == "mulaw":
        step = 8 << ((~c >> 4) & 7)
        in_range = (ALL_INT16 >= -32636) & (ALL_INT16 <= 32635)  # beyond: the codec clips at ±32124
    else:
        step = 16 << np.maximum(((c ^ 0x55) >> 4 & 7) - 1, 0)
        in_range = np.ones_like(ALL_INT16, dtype=bool)
    err = np.abs(back - ALL_INT16)
    assert (err[in_range] <= step[in_range] // 2).all()
    assert np.all(np.diff(back) >= 0)  # the quantiser is monotonic
    assert len(set(codes)) == 256  # every code is used, μ-law negative zero (0x7F) included


# --- sample codecs --------------------------------------------------------------------------------


def test_pcm16_round_trip_is_exact() -> None:
    data = np.random.default_rng(1).integers(-32768, 32768, 4000).astype("<i2").tobytes()
    fmt = AudioFormat("pcm16", 16000, 2)
    samples = decode(data, fmt)
    assert samples.dtype == np.float32
    assert samples.shape == (2000, 2)
    assert samples.min() >= -1.0
    assert samples.max() < 1.0
    assert encode(samples, "pcm16") == data


def test_f32_round_trip_is_exact_and_decode_sanitises() -> None:
    values = np.random.default_rng(2).uniform(-1, 1, 3000).astype("<f4")
    fmt = AudioFormat("f32", 48000, 1)
    assert encode(decode(values.tobytes(), fmt), "f32") == values.tobytes()
    dirty = np.array([2.0, -3.0, np.nan, np.inf, -np.inf, 0.25], dtype="<f4").tobytes()
    assert decode(dirty, fmt)[:, 0].tolist() == [1.0, -1.0, 0.0, 1.0, -1.0, 0.25]


def test_encode_clips() -> None:
    samples = np.array([[1.5], [1.0], [-1.0], [-7.0], [0.5]], dtype=np.float32)
    assert np.frombuffer(encode(samples, "pcm16"), "<i2").tolist() == [32767, 32767, -32768, -32768, 16384]
    assert np.frombuffer(encode(samples, "f32"), "<f4").tolist() == [1.0, 1.0, -1.0, -1.0, 0.5]
    assert encode(samples, "mulaw")[:2] == b"\x80\x80"


def test_decode_interleaving_and_alignment() -> None:
    data = np.array([1, 2, 3, 4, 5, 6], dtype="<i2").tobytes()
    samples = decode(data, AudioFormat("pcm16", 8000, 2))
    assert (samples * 32768).tolist() == [[1, 2], [3, 4], [5, 6]]
    with pytest.raises(AudioFormatError):
        decode(data[:-2], AudioFormat("pcm16", 8000, 2))
    with pytest.raises(AudioFormatError):
        decode(b"\x00\x00\x00", AudioFormat("f32", 8000, 1))


# --- formats and names ----------------------------------------------------------------------------


def test_audio_format_sizes() -> None:
    fmt = AudioFormat("pcm16", 16000, 1)
    assert (fmt.sample_width, fmt.frame_bytes, fmt.bytes_per_second) == (2, 2, 32000)
    assert fmt.ms_to_bytes(20) == 640
    assert fmt.bytes_to_ms(640) == 20.0
    stereo = AudioFormat("f32", 44100, 2)
    assert (stereo.sample_width, stereo.frame_bytes) == (4, 8)
    assert stereo.ms_to_bytes(1) == 44 * 8  # 44.1 frames, rounded down to whole frames
    assert stereo.ms_to_bytes(-5) == 0
    assert AudioFormat("mulaw", 8000, 1).frame_bytes == 1
    assert AudioFormat("alaw", 8000, 2).bytes_per_second == 16000


@given(
    encoding=st.sampled_from(["pcm16", "f32", "mulaw", "alaw"]),
    rate=st.integers(8000, 48000),
    channels=st.sampled_from([1, 2]),
    frames=st.integers(0, 10**6),
)
def test_ms_bytes_round_trip(encoding: Encoding, rate: int, channels: int, frames: int) -> None:
    fmt = AudioFormat(encoding, rate, channels)
    n = frames * fmt.frame_bytes
    assert fmt.ms_to_bytes(fmt.bytes_to_ms(n)) == n


@pytest.mark.parametrize(
    "fmt",
    [
        AudioFormat("pcm16", 7999, 1),
        AudioFormat("pcm16", 48001, 1),
        AudioFormat("pcm16", 0, 1),
        AudioFormat("mulaw", 8000, 0),
        AudioFormat("mulaw", 8000, 3),
        AudioFormat("opus", 8000, 1),  # type: ignore[arg-type]
        AudioFormat("pcm16", 16000.0, 1),  # type: ignore[arg-type]
        AudioFormat("pcm16", 16000, True),
    ],
)
def test_validate_rejects(fmt: AudioFormat) -> None:
    with pytest.raises(AudioFormatError):
        fmt.validate()


def test_validate_returns_self_and_bounds_are_inclusive() -> None:
    for fmt in (AudioFormat("pcm16", 8000, 1), AudioFormat("f32", 48000, 2), AudioFormat("alaw", 22050, 1)):
        assert fmt.validate() is fmt


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        *[(n, "pcm16") for n in ("pcm16", "pcm", "LINEAR16", "s16le", "L16", "Pcm16")],
        *[(n, "f32") for n in ("f32", "FLOAT32", "f32le")],
        *[(n, "mulaw") for n in ("mulaw", "ulaw", "u-law", "PCMU", "g711u", " MuLaw ", "audio/x-mulaw")],
        *[(n, "alaw") for n in ("alaw", "A-law", "pcma", "G711A", "audio/PCMA")],
    ],
)
def test_parse_encoding_spellings(name: str, expected: Encoding) -> None:
    assert parse_encoding(name) == expected


@pytest.mark.parametrize("name", ["", "opus", "pcm8", "g722", "mp3", "u law"])
def test_parse_encoding_rejects(name: str) -> None:
    with pytest.raises(AudioFormatError):
        parse_encoding(name)


def test_dataflow_encoding_names() -> None:
    assert DATAFLOW_ENCODINGS == {"pcm": "pcm16", "ulaw": "mulaw", "alaw": "alaw"}
    for theirs, ours in DATAFLOW_ENCODINGS.items():
        assert to_dataflow_encoding(ours) == theirs
    with pytest.raises(AudioFormatError):
        to_dataflow_encoding("f32")


# --- streaming conversion -------------------------------------------------------------------------


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> npt.NDArray[np.float64]:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def random_chunks(data: bytes, seed: int, max_size: int = 3000) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(data):
        n = int(rng.integers(1, max_size))
        out.append(data[i : i + n])
        i += n
    return out


def run(conv: AudioConverter, chunks: list[bytes]) -> bytes:
    pieces = [conv.convert(c) for c in chunks]
    assert all(len(p) % conv.dst.frame_bytes == 0 for p in pieces)
    return b"".join(pieces) + conv.flush()


def dominant_hz(x: npt.NDArray[np.floating], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(
    ("src", "dst", "tolerance"),
    [
        (AudioFormat("f32", 48000, 1), AudioFormat("pcm16", 16000, 1), 1e-3),
        (AudioFormat("pcm16", 44100, 1), AudioFormat("mulaw", 8000, 1), 0.02),  # μ-law top segment: ±0.0156
        (AudioFormat("mulaw", 8000, 1), AudioFormat("pcm16", 16000, 1), 0.02),
    ],
)
def test_resampled_sine_in_random_chunks(src: AudioFormat, dst: AudioFormat, tolerance: float) -> None:
    seconds = 1.5
    data = encode(tone(1000, src.sample_rate, seconds), src.encoding)
    chunks = random_chunks(data, seed=src.sample_rate)
    assert src.frame_bytes == 1 or any(len(c) % src.frame_bytes for c in chunks)  # samples are split

    chunked = run(AudioConverter(src, dst), chunks)
    conv = AudioConverter(src, dst)
    whole = conv.convert(data) + conv.flush()

    out = decode(chunked, dst)[:, 0]
    assert abs(dst.bytes_to_ms(len(chunked)) - seconds * 1000) <= 3
    assert dominant_hz(out, dst.sample_rate) == pytest.approx(1000, abs=2)
    # Chunk edges leave no trace: same output as one call, and the output is the ideal sine.
    assert np.abs(decode(whole, dst)[:, 0] - out).max() <= 1 / 32768
    ideal = tone(1000, dst.sample_rate, len(out) / dst.sample_rate)
    margin = dst.sample_rate // 50  # the filter's start/end transients
    assert np.abs(out - ideal)[margin:-margin].max() < tolerance


def test_stereo_to_mono_averages() -> None:
    left, right = np.full(100, 1000), np.arange(100) * 30
    data = np.column_stack([left, right]).astype("<i2").tobytes()
    out = AudioConverter(AudioFormat("pcm16", 16000, 2), AudioFormat("pcm16", 16000, 1)).convert(data)
    assert np.abs(np.frombuffer(out, "<i2") - (left + right) / 2).max() <= 0.5

    src, dst = AudioFormat("f32", 48000, 2), AudioFormat("pcm16", 16000, 1)
    stereo = np.column_stack([tone(1000, 48000, 1, 0.4), tone(2500, 48000, 1, 0.4)])
    mono = decode(run(AudioConverter(src, dst), random_chunks(encode(stereo, "f32"), 7)), dst)[:, 0]
    spectrum = np.abs(np.fft.rfft(mono)) * 2 / len(mono)
    assert spectrum[1000] == pytest.approx(0.2, abs=0.01)
    assert spectrum[2500] == pytest.approx(0.2, abs=0.01)


def test_mono_to_stereo_duplicates() -> None:
    src = AudioFormat("pcm16", 8000, 1)
    data = encode(tone(440, 8000, 0.5), "pcm16")
    stereo = decode(run(AudioConverter(src, AudioFormat("pcm16", 16000, 2)), random_chunks(data, 3)), src)
    stereo = stereo.reshape(-1, 2)
    assert len(stereo) == 8000
    assert np.array_equal(stereo[:, 0], stereo[:, 1])
    mono = run(AudioConverter(src, AudioFormat("pcm16", 16000, 1)), [data])
    assert np.array_equal(stereo[:, 0], decode(mono, src)[:, 0])
    same_rate = AudioConverter(src, AudioFormat("alaw", 8000, 2)).convert(data)
    assert same_rate[0::2] == same_rate[1::2] == encode(decode(data, src), "alaw")


def test_stereo_to_stereo_keeps_channel_order() -> None:
    src, dst = AudioFormat("f32", 48000, 2), AudioFormat("pcm16", 16000, 2)
    stereo = np.column_stack([tone(1000, 48000, 1), tone(3000, 48000, 1)])
    out = decode(run(AudioConverter(src, dst), random_chunks(encode(stereo, "f32"), 11)), dst)
    assert dominant_hz(out[:, 0], 16000) == pytest.approx(1000, abs=2)
    assert dominant_hz(out[:, 1], 16000) == pytest.approx(3000, abs=2)


@pytest.mark.parametrize(
    ("src", "dst"),
    [("mulaw", "pcm16"), ("alaw", "pcm16"), ("pcm16", "mulaw"), ("pcm16", "alaw"), ("mulaw", "alaw")],
)
def test_same_rate_table_path_equals_float_path(src: Encoding, dst: Encoding) -> None:
    width = 2 if src == "pcm16" else 1
    data = np.random.default_rng(5).integers(0, 256, 2000 * width, dtype=np.uint8).tobytes()
    fsrc = AudioFormat(src, 8000, 1)
    out = run(AudioConverter(fsrc, AudioFormat(dst, 8000, 1)), random_chunks(data, 9, 300))
    assert out == encode(decode(data, fsrc), dst)


def test_pending_bytes_and_alignment() -> None:
    conv = AudioConverter(AudioFormat("pcm16", 16000, 2), AudioFormat("pcm16", 8000, 1))
    assert not conv.passthrough
    assert conv.convert(b"\x01\x02\x03") == b""
    assert conv.pending_bytes == 3
    conv.convert(b"\x04\x05")
    assert conv.pending_bytes == 1
    conv.convert(bytes(4003))
    assert conv.pending_bytes == 0
    conv.convert(b"\x00")
    conv.flush()
    assert conv.pending_bytes == 0  # the incomplete tail is dropped at end of stream


def test_passthrough_realigns_bytes_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    fmt = AudioFormat("pcm16", 16000, 2)
    conv = AudioConverter(fmt, fmt)
    assert conv.passthrough
    data = np.random.default_rng(4).integers(0, 256, 40_001, dtype=np.uint8).tobytes()

    def no_numpy(*_: object, **__: object) -> None:
        raise AssertionError("numpy used on the passthrough path")

    monkeypatch.setattr(audio, "decode", no_numpy)
    monkeypatch.setattr(np, "frombuffer", no_numpy)
    pieces = [conv.convert(c) for c in random_chunks(data, 8, 1000)]
    assert all(len(p) % 4 == 0 for p in pieces)
    assert b"".join(pieces) == data[:40_000]
    assert conv.pending_bytes == 1
    assert conv.flush() == b""
    aligned = bytes(640)
    assert conv.convert(aligned) is aligned  # aligned input is handed on, not copied


def test_flush_resets_for_a_new_stream() -> None:
    src, dst = AudioFormat("f32", 48000, 1), AudioFormat("pcm16", 16000, 1)
    data = encode(tone(1000, 48000, 0.3), "f32")
    conv = AudioConverter(src, dst)
    first = run(conv, random_chunks(data, 1))
    assert run(conv, random_chunks(data, 2)) == first
    assert conv.flush() == b""  # nothing left after a drained stream


def test_converter_rejects_invalid_formats() -> None:
    with pytest.raises(AudioFormatError):
        AudioConverter(AudioFormat("pcm16", 96000, 1), AudioFormat("pcm16", 16000, 1))
    with pytest.raises(AudioFormatError):
        AudioConverter(AudioFormat("pcm16", 16000, 1), AudioFormat("pcm16", 16000, 6))


# --- rechunk --------------------------------------------------------------------------------------


@given(
    frame_bytes=st.sampled_from([1, 2, 4, 8]),
    frames=st.integers(0, 600),
    max_bytes=st.integers(-3, 2000),
    mutable=st.booleans(),
)
def test_rechunk_properties(frame_bytes: int, frames: int, max_bytes: int, mutable: bool) -> None:
    raw = bytes(np.random.default_rng(frames).integers(0, 256, frames * frame_bytes, dtype=np.uint8))
    data = bytearray(raw) if mutable else raw
    pieces = rechunk(data, frame_bytes, max_bytes)
    limit = max(frame_bytes, max_bytes - max_bytes % frame_bytes)
    assert b"".join(pieces) == raw
    assert all(isinstance(p, bytes) for p in pieces)
    assert all(0 < len(p) <= limit and len(p) % frame_bytes == 0 for p in pieces)
    assert all(len(p) == limit for p in pieces[:-1])  # as few pieces as possible


def test_rechunk_rejects_misaligned_data() -> None:
    with pytest.raises(ValueError, match="whole number"):
        rechunk(b"\x00\x00\x00", 2, 100)
    with pytest.raises(ValueError, match="positive"):
        rechunk(b"", 0, 100)
