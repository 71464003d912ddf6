"""The simulator's recogniser: energy VAD + DTMF decoder, checked against generated audio."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import numpy.typing as npt
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audio import convert as audio_formats
from gateway.simulator.recognizer import (
    SPEECH_ENDED,
    SPEECH_STARTED,
    SR_MILESTONE,
    SR_PARTIAL,
    ChannelRecognizer,
    Recognizer,
    RecognizerEvent,
)
from tests.support import signals

ALL_KEYS = "0123456789*#ABCD"
TOLERANCE_MS = 60
PRE_MS = POST_MS = 300  # Data Flow's documented pre/post speech buffers


def recognise(pcm: npt.NDArray[np.int16], rate: int, channel: int = 0) -> list[RecognizerEvent]:
    rec = ChannelRecognizer(channel, rate)
    return rec.feed(pcm) + rec.flush()


def milestones(events: list[RecognizerEvent]) -> list[str]:
    return [e.text for e in events if e.name == SR_MILESTONE]


def names(events: list[RecognizerEvent]) -> list[str]:
    return [e.name for e in events]


def group_truth(groups: list[str], lead_ms: int = 300, pause_ms: int = 900) -> list[tuple[int, int]]:
    """(first tone onset, last tone end) in ms of each group of signals.utterances()."""
    spans, t = [], lead_ms
    for group in groups:
        spans.append((t, t + len(group) * 160 - 80))
        t += len(group) * 160 + pause_ms
    return spans


def assert_well_formed(events: list[RecognizerEvent]) -> None:
    """Per utterance: Speech Started, SR Partial*, Speech Ended, SR Milestone; one group id each."""
    i = 0
    while i < len(events):
        started = events[i]
        assert started.name == SPEECH_STARTED
        assert started.end_ms == -1
        assert started.text == ""
        j = i + 1
        texts = []
        while events[j].name == SR_PARTIAL:
            texts.append(events[j].text)
            j += 1
        ended, milestone = events[j], events[j + 1]
        assert (ended.name, milestone.name) == (SPEECH_ENDED, SR_MILESTONE)
        group = events[i : j + 2]
        assert {e.group_id for e in group} == {started.group_id}
        assert {e.channel for e in group} == {started.channel}
        assert {e.start_ms for e in group} == {started.start_ms}
        assert (ended.start_ms, ended.end_ms) == (milestone.start_ms, milestone.end_ms)
        assert ended.end_ms > started.start_ms
        assert ended.text == ""
        # partials grow by one digit each and end with the milestone text
        assert texts == [milestone.text[: k + 1] for k in range(len(milestone.text))]
        assert all(started.start_ms < p.end_ms <= ended.end_ms for p in events[i + 1 : j])
        i = j + 2


@pytest.mark.parametrize("rate", [8000, 16000])
def test_every_key_is_decoded(rate: int) -> None:
    events = recognise(signals.to_int16(signals.dtmf(ALL_KEYS, rate)), rate)
    assert_well_formed(events)
    assert milestones(events) == [ALL_KEYS]
    assert [e.text for e in events if e.name == SR_PARTIAL] == [ALL_KEYS[: k + 1] for k in range(16)]


@pytest.mark.parametrize("rate", [11025, 22050, 32000, 44100, 48000])
def test_other_sample_rates(rate: int) -> None:
    audio = signals.utterances(["159", "D#0"], rate)
    assert milestones(recognise(signals.to_int16(audio), rate)) == ["159", "D#0"]


@pytest.mark.parametrize("rate", [8000, 16000])
def test_two_utterances_groups_order_and_timing(rate: int) -> None:
    groups = ["123", "456"]
    events = recognise(signals.to_int16(signals.utterances(groups, rate)), rate)
    assert_well_formed(events)
    assert names(events) == [SPEECH_STARTED, *[SR_PARTIAL] * 3, SPEECH_ENDED, SR_MILESTONE] * 2
    assert milestones(events) == groups
    started = [e for e in events if e.name == SPEECH_STARTED]
    ended = [e for e in events if e.name == SPEECH_ENDED]
    assert [e.group_id for e in started] == ["0-1", "0-2"]
    for (onset, offset), s, e in zip(group_truth(groups), started, ended, strict=True):
        assert abs(s.start_ms - (onset - PRE_MS)) <= TOLERANCE_MS
        assert abs(e.end_ms - (offset + POST_MS)) <= TOLERANCE_MS
    # each partial is decided while (or shortly after) its digit sounds
    partials = [e for e in events if e.name == SR_PARTIAL]
    for k, p in enumerate(partials):
        onset = group_truth(groups)[k // 3][0] + (k % 3) * 160
        assert onset + 40 <= p.end_ms <= onset + 80 + TOLERANCE_MS


def test_start_is_clamped_at_zero_and_end_at_the_position() -> None:
    rate = 8000
    audio = signals.dtmf("7", rate, gap_ms=0)  # tone from the first sample to the last
    rec = ChannelRecognizer(0, rate)
    events = rec.feed(signals.to_int16(audio))
    assert names(events) == [SPEECH_STARTED, SR_PARTIAL]
    assert events[0].start_ms == 0
    closing = rec.flush()
    assert names(closing) == [SPEECH_ENDED, SR_MILESTONE]
    assert closing[0].end_ms == rec.position_ms == 80
    assert closing[1].text == "7"


@pytest.mark.parametrize("rate", [8000, 16000])
def test_repeated_digits(rate: int) -> None:
    events = recognise(signals.to_int16(signals.dtmf("1100", rate)), rate)
    assert_well_formed(events)
    assert milestones(events) == ["1100"]


def test_a_dropout_inside_a_tone_is_not_a_second_digit() -> None:
    rate = 8000
    one = signals.dtmf("5", rate, gap_ms=0)
    audio = np.concatenate([one, signals.silence(10, rate), one, signals.silence(500, rate)])
    assert milestones(recognise(signals.to_int16(audio), rate)) == ["5"]


def _one_digit_run(rate: int, offset_us: int, *parts: npt.NDArray[np.float32]) -> list[str]:
    lead = np.zeros(offset_us * rate // 1_000_000, dtype=np.float32)  # shifts the audio against the 10 ms grid
    return milestones(recognise(signals.to_int16(np.concatenate([lead, *parts, signals.silence(600, rate)])), rate))


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("offset_us", range(0, 10_000, 1250))
def test_timing_guarantees_hold_at_any_alignment(rate: int, offset_us: int) -> None:
    """Tones >= 40 ms are digits, < 28 ms are not; pauses >= 30 ms split repeats, 10 ms dropouts don't."""
    for tone_ms in (40, 47):
        assert _one_digit_run(rate, offset_us, signals.dtmf("9", rate, tone_ms=tone_ms, gap_ms=0)) == ["9"]
    for tone_ms in (20, 27):
        assert _one_digit_run(rate, offset_us, signals.dtmf("9", rate, tone_ms=tone_ms, gap_ms=0)) == [""]
    assert _one_digit_run(rate, offset_us, signals.dtmf("99", rate, tone_ms=60, gap_ms=30)) == ["99"]
    assert _one_digit_run(rate, offset_us, signals.dtmf("99", rate, tone_ms=60, gap_ms=10)) == ["9"]


@pytest.mark.parametrize(("twist_db", "expected"), [(-12, ""), (-6, "6"), (0, "6"), (6, "6"), (12, "")])
def test_twist_limit(twist_db: float, expected: str) -> None:
    rate = 8000
    low, high = signals.DTMF_FREQS["6"]
    pair = signals.tone(low, 100, rate, 0.2) + signals.tone(high, 100, rate, 0.2 * 10 ** (twist_db / 20))
    assert milestones(recognise(signals.to_int16(np.concatenate([pair, signals.silence(600, rate)])), rate)) == [
        expected
    ]


def test_short_tone_is_not_a_digit() -> None:
    rate = 8000
    audio = np.concatenate([signals.dtmf("3", rate, tone_ms=30), signals.silence(500, rate)])
    events = recognise(signals.to_int16(audio), rate)
    assert names(events) == [SPEECH_STARTED, SPEECH_ENDED, SR_MILESTONE]
    assert milestones(events) == [""]


def test_space_in_dtmf_is_an_utterance_break() -> None:
    rate = 8000
    events = recognise(signals.to_int16(signals.dtmf("12 34", rate)), rate)
    assert_well_formed(events)
    assert milestones(events) == ["12", "34"]
    assert [e.group_id for e in events if e.name == SR_MILESTONE] == ["0-1", "0-2"]


def test_flush_closes_an_open_utterance() -> None:
    rate = 8000
    audio = signals.dtmf("42", rate)  # ends 80 ms after the last tone: utterance still open
    rec = ChannelRecognizer(0, rate)
    events = rec.feed(signals.to_int16(audio))
    assert names(events) == [SPEECH_STARTED, SR_PARTIAL, SR_PARTIAL]
    assert rec.position_ms == 320
    closing = rec.flush()
    assert names(closing) == [SPEECH_ENDED, SR_MILESTONE]
    assert closing[1].text == "42"
    assert closing[0].end_ms == 320  # offset 240 + post buffer 300, clamped to the position
    assert {e.group_id for e in events + closing} == {"0-1"}
    assert rec.flush() == []
    # the timeline goes on after a flush; the next utterance is a new group
    later = rec.feed(signals.to_int16(signals.dtmf("9", rate))) + rec.flush()
    assert milestones(later) == ["9"]
    assert later[0].group_id == "0-2"
    assert later[0].start_ms == 320 - PRE_MS


def test_flush_without_speech_is_empty() -> None:
    rec = ChannelRecognizer(0, 8000)
    assert rec.flush() == []
    assert rec.feed(np.zeros(0, dtype=np.int16)) == []
    assert rec.position_ms == 0


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_alone_gives_no_events(rate: int, seed: int) -> None:
    audio = signals.noise(10_000, rate, level=0.01, seed=seed)
    assert recognise(signals.to_int16(audio), rate) == []


@pytest.mark.parametrize("rate", [8000, 16000])
def test_silence_alone_gives_no_events(rate: int) -> None:
    rec = ChannelRecognizer(0, rate)
    assert rec.feed(signals.to_int16(signals.silence(5000, rate))) + rec.flush() == []
    assert rec.position_ms == 5000


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("freq", [1000.0, 697.0, 1633.0])
def test_plain_tone_is_speech_without_digits(rate: int, freq: float) -> None:
    audio = np.concatenate([signals.silence(500, rate), signals.tone(freq, 1000, rate), signals.silence(800, rate)])
    events = recognise(signals.to_int16(audio), rate)
    assert names(events) == [SPEECH_STARTED, SPEECH_ENDED, SR_MILESTONE]
    assert milestones(events) == [""]
    assert abs(events[0].start_ms - (500 - PRE_MS)) <= TOLERANCE_MS
    assert abs(events[1].end_ms - (1500 + POST_MS)) <= TOLERANCE_MS


@pytest.mark.parametrize("rate", [8000, 16000])
def test_stereo_channels_are_recognised_separately(rate: int) -> None:
    left = signals.utterances(["123"], rate)
    right = np.concatenate([signals.silence(700, rate), signals.utterances(["789", "0"], rate)])
    rec = Recognizer(rate, 2)
    events = rec.feed(signals.to_int16(signals.interleave(left, right))) + rec.flush()
    by_channel = {c: [e for e in events if e.channel == c] for c in (0, 1)}
    for channel_events in by_channel.values():
        assert_well_formed(channel_events)
    assert milestones(by_channel[0]) == ["123"]
    assert milestones(by_channel[1]) == ["789", "0"]
    assert [e.group_id for e in by_channel[1] if e.name == SR_MILESTONE] == ["1-1", "1-2"]
    assert by_channel[1][0].start_ms == pytest.approx(700 + 300 - PRE_MS, abs=TOLERANCE_MS)
    # the merged list is in decision order: the right channel starts speaking before the left one ends
    order = [(e.channel, e.name) for e in events]
    assert order.index((1, SPEECH_STARTED)) < order.index((0, SPEECH_ENDED))


def test_recognizer_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        Recognizer(8000, 2).feed(np.zeros(10, dtype=np.int16))
    with pytest.raises(ValueError, match="shape"):
        Recognizer(8000, 2).feed(np.zeros((10, 3), dtype=np.int16))
    with pytest.raises(ValueError, match="rate"):
        ChannelRecognizer(0, 4000)
    mono = Recognizer(8000, 1)
    assert milestones(mono.feed(signals.to_int16(signals.dtmf("8", 8000))) + mono.flush()) == ["8"]


def _chunked(rec: Recognizer, frames: npt.NDArray[np.int16], sizes: list[int]) -> list[RecognizerEvent]:
    events: list[RecognizerEvent] = []
    pos, k = 0, 0
    while pos < len(frames):
        events += rec.feed(frames[pos : pos + sizes[k % len(sizes)]])
        pos += sizes[k % len(sizes)]
        k += 1
    return events + rec.flush()


_RATE = 8000
_LEFT = signals.utterances(["12", "3"], _RATE, lead_ms=130, pause_ms=500, tail_ms=300)
_RIGHT = np.concatenate([signals.silence(255, _RATE), signals.dtmf("1 A#", _RATE, amplitude=0.2)])
_STEREO = signals.to_int16(
    signals.interleave(_LEFT, _RIGHT)
    + signals.noise(4000, _RATE, level=0.003, seed=7)[: max(len(_LEFT), len(_RIGHT))][:, None]
)


def _reference() -> list[RecognizerEvent]:
    rec = Recognizer(_RATE, 2)
    return rec.feed(_STEREO) + rec.flush()


def test_chunking_reference_is_meaningful() -> None:
    events = _reference()
    assert milestones([e for e in events if e.channel == 0]) == ["12", "3"]
    assert milestones([e for e in events if e.channel == 1]) == ["1", "A#"]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=2500), min_size=1, max_size=12).filter(any))
def test_chunking_never_changes_the_events(sizes: list[int]) -> None:
    assert _chunked(Recognizer(_RATE, 2), _STEREO, sizes) == _reference()


def test_sample_by_sample_equals_one_feed() -> None:
    mono = _STEREO[:, 1]
    rec = ChannelRecognizer(1, _RATE)
    one_by_one = [e for x in mono for e in rec.feed(np.array([x], dtype=np.int16))] + rec.flush()
    assert one_by_one == recognise(mono, _RATE, channel=1)


def _codec_round_trip(audio: npt.NDArray[np.float32], encoding: str, rate: int, codec: str) -> npt.NDArray[np.int16]:
    """Encode and decode again, with the test's reference G.711 or with gateway.audio (as the simulator does)."""
    if codec == "gateway":
        fmt = audio_formats.AudioFormat(encoding, rate, 1)  # type: ignore[arg-type]
        decoded = audio_formats.decode(audio_formats.encode(audio, fmt.encoding), fmt)[:, 0]
        return signals.to_int16(decoded * (32768.0 / 32767.0))  # the simulator's scale: 32768
    if encoding == "pcm16":
        return np.frombuffer(signals.to_pcm16(audio), dtype="<i2").astype(np.int16)
    return signals.g711_decode(signals.g711_encode(audio, encoding), encoding)


@pytest.mark.parametrize(
    ("source_rate", "rate", "encoding"), [(48000, 16000, "pcm16"), (16000, 8000, "mulaw"), (48000, 8000, "alaw")]
)
@pytest.mark.parametrize("amplitude", [0.5, 0.1])
@pytest.mark.parametrize("codec", ["reference", "gateway"])
def test_digits_survive_resampling_and_g711(
    source_rate: int, rate: int, encoding: str, amplitude: float, codec: str
) -> None:
    groups = ["0123456789", "*#ABCD", "1100"]
    audio = signals.utterances(groups, source_rate, amplitude=amplitude)
    audio = soxr.resample(audio, source_rate, rate).astype(np.float32)
    audio = audio + signals.noise(len(audio) * 1000 // rate + 1, rate, level=0.005, seed=3)[: len(audio)]
    events = recognise(_codec_round_trip(audio, encoding, rate, codec), rate)
    assert_well_formed(events)
    assert milestones(events) == groups
    started = [e.start_ms for e in events if e.name == SPEECH_STARTED]
    ended = [e.end_ms for e in events if e.name == SPEECH_ENDED]
    for (onset, offset), s, e in zip(group_truth(groups), started, ended, strict=True):
        assert abs(s - (onset - PRE_MS)) <= TOLERANCE_MS
        assert abs(e - (offset + POST_MS)) <= TOLERANCE_MS


# --- the shared test-signal helpers themselves -------------------------------------------------


def test_dtmf_grid_and_levels() -> None:
    assert signals.DTMF_FREQS["1"] == (697.0, 1209.0)
    assert signals.DTMF_FREQS["0"] == (941.0, 1336.0)
    assert signals.DTMF_FREQS["D"] == (941.0, 1633.0)
    assert len(signals.DTMF_FREQS) == 16
    x = signals.dtmf("5", 8000, tone_ms=100, gap_ms=50)
    assert len(x) == 1200
    assert x.dtype == np.float32
    assert 0.45 < np.abs(x).max() <= 0.5
    assert not x[800:].any()
    assert len(signals.dtmf(" ", 8000)) == 6400
    assert np.sqrt(np.mean(signals.noise(1000, 8000, level=0.01) ** 2)) == pytest.approx(0.01, rel=0.05)
    assert np.array_equal(signals.noise(100, 8000, seed=4), signals.noise(100, 8000, seed=4))


def test_g711_codecs() -> None:
    assert signals.g711_encode(np.zeros(1), "mulaw") == b"\xff"
    assert signals.g711_encode(np.zeros(1), "alaw") == b"\xd5"
    x = signals.tone(440.0, 100, 8000, amplitude=0.8)
    ref = signals.to_int16(x).astype(np.float64)
    for law in ("mulaw", "alaw"):
        back = signals.g711_decode(signals.g711_encode(x, law), law).astype(np.float64)
        snr = 10 * np.log10(np.sum(ref**2) / np.sum((back - ref) ** 2))
        assert snr > 30, law
        # decode -> encode is the identity, except mu-law's "negative zero" 0x7F, which is 0 (0xFF)
        codes = np.arange(256, dtype=np.uint8)
        back = np.frombuffer(signals.g711_encode(signals.g711_decode(codes.tobytes(), law) / 32767.0, law), np.uint8)
        expected = np.where(codes == 0x7F, 0xFF, codes) if law == "mulaw" else codes
        assert np.array_equal(back, expected), law


def test_wav_bytes() -> None:
    stereo = signals.interleave(signals.tone(500.0, 100, 8000), signals.tone(900.0, 50, 8000))
    with wave.open(io.BytesIO(signals.wav_bytes(stereo, 8000))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, 8000, 800)
        assert w.readframes(800) == signals.to_pcm16(stereo)
    for encoding, tag in (("mulaw", 7), ("alaw", 6)):
        blob = signals.wav_bytes(stereo, 8000, encoding)
        assert blob[:4] == b"RIFF"
        assert blob[8:12] == b"WAVE"
        assert struct.unpack("<I", blob[4:8])[0] == len(blob) - 8
        fmt_size, fmt_tag, channels, rate, byte_rate, align, bits = struct.unpack("<IHHIIHH", blob[16:36])
        assert (fmt_size, fmt_tag, channels, rate, byte_rate, align, bits) == (18, tag, 2, 8000, 16000, 2, 8)
        data_at = blob.index(b"data")
        assert struct.unpack("<I", blob[data_at + 4 : data_at + 8])[0] == 1600
        assert blob[data_at + 8 :] == signals.g711_encode(stereo, encoding)
