"""Deterministic recogniser of the simulator: an energy VAD plus a DTMF (Goertzel) decoder.

Pure code, no I/O: the simulator decodes audio to int16 per channel and feeds it here; the events
that come back are what the simulator sends. Same audio -> same events, bit for bit, however it is
chunked: all sums that decisions rest on are exact integers (see ``_Engine.__init__``).

Timeline: each channel is cut into 10 ms blocks at fixed sample positions (block ``k`` ends at
sample ``(k+1)*rate//100``, so rates that are not multiples of 100 work too). Samples of an
incomplete block wait for the next feed(); a trailing incomplete block is never analysed. Times are
ms from the channel's first sample; every event is decided at a block end.

VAD (Data Flow's documented defaults):
- a block is speech when the RMS of its last ``rate//100`` samples exceeds ``VAD_THRESHOLD_DBFS``
  = -35 dBFS (full scale 32768; noise at -40 dBFS RMS stays well below);
- Speech Started on the first speech block: ``start_ms = block start - 300`` (pre-speech buffer,
  clamped at 0);
- Speech Ended once 400 ms passed without a speech block: ``end_ms = last speech block end + 300``
  (post-speech buffer), clamped to the current position (only matters for flush());
- then SR Milestone with the utterance's start/end, group id and all its digits (maybe "").

DTMF: at every block end the Goertzel power of the 8 DTMF frequencies is taken over the last
``WINDOW_MS`` = 30 ms (one matrix product per batch of blocks: |sum x[n] e^(-i w n)|^2, the
quantity the Goertzel recursion computes, without a per-sample Python loop). A window holds a digit
when
- the strongest row tone is >= ``DOMINANCE_DB`` = 8 dB above the second row tone, same for columns;
- the two tones hold >= ``TONE_FRACTION`` = 80 % of the window energy (this also rejects windows
  less than 80 % filled by a tone, and noise, speech or single tones);
- twist (row vs column power) is within +/- ``MAX_TWIST_DB`` = 8 dB;
- the two tones' mean power is above the VAD threshold.
A digit is accepted once ``_DIGIT_MIN_BLOCKS`` = 2 consecutive windows hold it (at any alignment
every tone >= 40 ms is accepted, none < 28 ms), the same digit again only after ``_DIGIT_GAP_BLOCKS``
= 4 windows without it (pauses >= 30 ms always separate two digits, dropouts <= 10 ms never do).
Digits count only inside an utterance; each one emits an SR Partial whose text is the utterance's digits
so far (start_ms = utterance start, end_ms = the block end where it was accepted). Group ids are
``f"{channel}-{n}"``, n counting that channel's utterances from 1.
Per utterance: Speech Started, SR Partial*, Speech Ended, SR Milestone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

BLOCK_MS = 10
WINDOW_MS = 30
VAD_THRESHOLD_DBFS = -35.0
PRE_SPEECH_MS = 300
POST_SPEECH_MS = 300
SILENCE_TRIGGER_MS = 400
DOMINANCE_DB = 8.0
TONE_FRACTION = 0.8
MAX_TWIST_DB = 8.0

DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYS = "123A456B789C*0#D"  # index = row * 4 + column

SPEECH_STARTED = "Speech Started"
SPEECH_ENDED = "Speech Ended"
SR_PARTIAL = "SR Partial"
SR_MILESTONE = "SR Milestone"

_VAD_MEAN_SQUARE = (32768.0 * 10 ** (VAD_THRESHOLD_DBFS / 20)) ** 2  # mean square, int16 units
_DOMINANCE = 10 ** (DOMINANCE_DB / 10)
_TWIST = 10 ** (MAX_TWIST_DB / 10)
# A window holds a tone when >= 80 % (24 ms) of it is tone. At any alignment to the 10 ms grid, a
# tone of >= 40 ms fills two consecutive windows and one of < 28 ms never does; a pause of >= 30 ms
# leaves >= 4 consecutive windows without the tone, a dropout of <= 10 ms at most 3.
_DIGIT_MIN_BLOCKS = 2
_DIGIT_GAP_BLOCKS = 4
_BASIS_SCALE = 32767.0
_ROW_COL = np.array([4, 1])  # (row, column) -> index into DTMF_KEYS


@dataclass(frozen=True, slots=True)
class RecognizerEvent:
    name: str  # SPEECH_STARTED | SPEECH_ENDED | SR_PARTIAL | SR_MILESTONE
    channel: int
    start_ms: int  # ms from this channel's first sample
    end_ms: int  # -1 for Speech Started
    group_id: str  # f"{channel}-{n}", one per utterance
    text: str  # digits so far (partial) / of the utterance (milestone); "" for VAD events


_Timed = tuple[int, RecognizerEvent]  # (ms at which the event was decided, event)


class _Utterances:
    """The per-channel state machine: VAD hangover, digit runs, group ids."""

    def __init__(self, channel: int) -> None:
        self.channel = channel
        self.count = 0
        self.open = False
        self.start = 0
        self.last_speech_end = 0
        self.digits = ""
        self._reset_digit_state()

    def run(self, first: int, speech: list[bool], digits: list[int], out: list[_Timed]) -> None:
        """Blocks first, first+1, ... with their speech flags and digit indices (-1 none)."""
        i = 0
        while i < len(speech):
            if not self.open:  # skip ahead to the next speech block
                if True not in speech[i:]:
                    return
                i = speech.index(True, i)
                self._open(first + i, out)
            self._step(first + i, speech[i], digits[i], out)
            i += 1

    def _reset_digit_state(self) -> None:
        self._cand = -1  # digit seen in the current run of blocks (-1 none)
        self._run = 0  # length of that run in blocks
        self._run_gap = 0  # blocks without the last accepted digit before the run began
        self._last = -1  # last accepted digit of the utterance
        self._last_seen = -(10**9)  # last block in which _last was present

    def _event(self, name: str, end: int, text: str = "") -> RecognizerEvent:
        return RecognizerEvent(name, self.channel, self.start, end, f"{self.channel}-{self.count}", text)

    def _open(self, block: int, out: list[_Timed]) -> None:
        self.count += 1
        self.open = True
        self.start = max(0, block * BLOCK_MS - PRE_SPEECH_MS)
        self.digits = ""
        self._reset_digit_state()
        out.append(((block + 1) * BLOCK_MS, self._event(SPEECH_STARTED, -1)))

    def _step(self, block: int, speech: bool, digit: int, out: list[_Timed]) -> None:
        now = (block + 1) * BLOCK_MS
        if speech:
            self.last_speech_end = now
        if digit != self._cand:
            self._cand, self._run, self._run_gap = digit, 0, block - self._last_seen - 1
        if digit >= 0:
            self._run += 1
            if digit == self._last:
                self._last_seen = block
            if self._run == _DIGIT_MIN_BLOCKS and (digit != self._last or self._run_gap >= _DIGIT_GAP_BLOCKS):
                self._last, self._last_seen = digit, block
                self.digits += DTMF_KEYS[digit]
                out.append((now, self._event(SR_PARTIAL, now, self.digits)))
        if not speech and now - self.last_speech_end >= SILENCE_TRIGGER_MS:
            self.close(self.last_speech_end + POST_SPEECH_MS, now, out)

    def close(self, end: int, now: int, out: list[_Timed]) -> None:
        out.append((now, self._event(SPEECH_ENDED, end)))
        out.append((now, self._event(SR_MILESTONE, end, self.digits)))
        self.open = False


class _Engine:
    """Buffers int16 frames of one or more channels and analyses every complete block of all of them
    in one numpy pass (per-call overhead is what costs at 20 ms chunks)."""

    def __init__(self, sample_rate: int, channel_ids: list[int]) -> None:
        if not 8000 <= sample_rate <= 48000:
            raise ValueError(f"sample rate {sample_rate} outside 8000..48000")
        self.sample_rate = sample_rate
        self._window = w = WINDOW_MS * sample_rate // 1000
        phases = np.outer(np.arange(w) * (2 * np.pi / sample_rate), DTMF_ROWS + DTMF_COLS)
        # Goertzel power |sum x[n] e^(-i w n)|^2 as one matrix product. The basis is rounded to
        # integers, so every product and sum is an exact integer in float64 (< 2^53) whatever order
        # BLAS adds in: results never depend on how the audio was chunked into batches.
        self._basis = np.round(np.hstack([np.cos(phases), np.sin(phases)]) * _BASIS_SCALE)  # (w, 16)
        # A full-window tone of amplitude A reads as power (A * w * _BASIS_SCALE / 2)^2, i.e. as
        # its window energy w * A^2 / 2 times this factor:
        tone_scale = w * _BASIS_SCALE**2 / 2
        self._offsets = np.arange(w) - w  # window = these offsets from its end
        self._block_len = sample_rate // 100  # VAD energy: the last 10 ms of each window
        self._energy_cols = np.zeros((w, 2))
        self._energy_cols[:, 0] = 1.0
        self._energy_cols[-self._block_len :, 1] = 1.0
        self._block_threshold = _VAD_MEAN_SQUARE * self._block_len
        self._tone_threshold = _VAD_MEAN_SQUARE * w * tone_scale
        self._fraction_scale = TONE_FRACTION * tone_scale
        # Small products stay below OpenBLAS's threading threshold: threads only cost at this size.
        self._batch = max(1, 200_000 // (16 * w * len(channel_ids)))
        self._steps = np.arange(self._batch) * self._block_len if sample_rate % 100 == 0 else None
        self._tracks = [_Utterances(c) for c in channel_ids]
        self._hist = np.zeros((len(channel_ids), w), dtype=np.int16)  # [channel, sample - _hist_start]
        self._hist_start = -w  # zeros stand in for audio before the first sample
        self._samples = 0  # frames fed so far
        self._block = 0  # next block to analyse

    @property
    def position_ms(self) -> int:
        return self._samples * 1000 // self.sample_rate

    def _feed(self, frames: npt.NDArray[Any]) -> list[RecognizerEvent]:
        if not len(frames):
            return []
        self._hist = np.concatenate([self._hist, frames.T.astype(np.int16, casting="same_kind")], axis=1)
        self._samples += len(frames)
        out: list[_Timed] = []
        complete = (100 * (self._samples + 1) - 1) // self.sample_rate  # blocks fully available
        while self._block < complete:
            stop = min(complete, self._block + self._batch)
            self._analyse(self._block, stop, out)
            self._block = stop
        keep_from = self._block * self.sample_rate // 100 - self._window
        self._hist = self._hist[:, keep_from - self._hist_start :]
        self._hist_start = keep_from
        return _ordered(out, len(self._tracks))

    def flush(self) -> list[RecognizerEvent]:
        """End of audio (Finalize): close open utterances (Speech Ended end clamped to the position)."""
        out: list[_Timed] = []
        now = self.position_ms
        for track in self._tracks:
            if track.open:
                track.close(min(track.last_speech_end + POST_SPEECH_MS, now), now, out)
        return _ordered(out, len(self._tracks))

    def _analyse(self, first: int, stop: int, out: list[_Timed]) -> None:
        n = stop - first
        base = (first + 1) * self.sample_rate // 100 - self._hist_start  # end of the first block
        if self._steps is not None:
            ends = self._steps[:n] + base
        else:
            ends = np.arange(first + 1, stop + 1) * self.sample_rate // 100 - self._hist_start
        windows = self._hist[:, ends[:, None] + self._offsets].reshape(-1, self._window).astype(np.float64)
        # Integers summed in float64 are exact in any order: chunking cannot change a bit.
        energy = (windows * windows) @ self._energy_cols  # [:, 0] window, [:, 1] its last 10 ms
        speech = (energy[:, 1] > self._block_threshold).tolist()  # channel-major: n per channel
        if True not in speech and not any(track.open for track in self._tracks):
            return  # silence outside utterances: digits would be ignored anyway
        digits = self._classify(windows @ self._basis, energy[:, 0])
        for c, track in enumerate(self._tracks):
            track.run(first, speech[c * n : (c + 1) * n], digits[c * n : (c + 1) * n], out)

    def _classify(self, proj: npt.NDArray[np.float64], energy: npt.NDArray[np.float64]) -> list[int]:
        """Digit index (into DTMF_KEYS) per window, -1 where the window holds no valid digit."""
        power = (proj * proj).reshape(-1, 2, 8).sum(axis=1).reshape(-1, 2, 4)  # [window, row|col, tone]
        top = power.max(axis=2)  # energy of the strongest row and column tone
        tones = top.sum(axis=1)
        ok = tones >= np.maximum(self._fraction_scale * energy, self._tone_threshold)
        if not ok.any():  # cheap exit for speech, noise and silence
            return [-1] * len(ok)
        ok &= (top >= _DOMINANCE * np.sort(power, axis=2)[:, :, 2]).all(axis=1)
        ok &= top.max(axis=1) <= _TWIST * top.min(axis=1)
        return np.where(ok, power.argmax(axis=2) @ _ROW_COL, -1).tolist()  # type: ignore[no-any-return]


def _ordered(timed: list[_Timed], channels: int) -> list[RecognizerEvent]:
    """Events by the time they were decided, then channel (stable: keeps each channel's order)."""
    if channels > 1:
        timed.sort(key=lambda item: (item[0], item[1].channel))
    return [event for _, event in timed]


class ChannelRecognizer(_Engine):
    """One channel: feed int16 samples of any length (1-D), flush() at end of audio."""

    def __init__(self, channel: int, sample_rate: int) -> None:
        super().__init__(sample_rate, [channel])
        self.channel = channel

    def feed(self, samples: npt.ArrayLike) -> list[RecognizerEvent]:
        x = np.asarray(samples)
        if x.ndim != 1:
            raise ValueError(f"expected 1-D samples, got shape {x.shape}")
        return self._feed(x.reshape(-1, 1))


class Recognizer(_Engine):
    """All channels of a session, analysed together. Events of different channels come back ordered by
    the time they were decided (then by channel), so the merged list does not depend on chunking."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        if channels < 1:
            raise ValueError(f"channel count {channels} < 1")
        super().__init__(sample_rate, list(range(channels)))
        self.channels = channels

    def feed(self, frames: npt.ArrayLike) -> list[RecognizerEvent]:
        """``frames``: int16 of shape (n, channels); a 1-D array is accepted for one channel."""
        x = np.asarray(frames)
        if x.ndim == 1 and self.channels == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected frames of shape (n, {self.channels}), got {x.shape}")
        return self._feed(x)
