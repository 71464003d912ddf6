"""Deterministic recogniser of the simulator: an energy VAD plus a DTMF (Goertzel) decoder.

Pure code, no I/O: the simulator decodes audio to int16 per channel and feeds it here; the events
that come back are what the simulator sends. Same audio -> same events, bit for bit, however it is
chunked: all sums that decisions rest on are exact integers (see ``ChannelRecognizer.__init__``).

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
A digit is accepted once its tone has sounded for ``DIGIT_MIN_MS`` = 40 ms (2 consecutive digit
windows; at any alignment every tone >= 40 ms is accepted, none < 28 ms), the same digit again only
after ``DIGIT_GAP_MS`` = 30 ms of absence (4 windows without it: pauses >= 30 ms always separate two
digits, dropouts <= 10 ms never do). Digits
count only inside an utterance; each one emits an SR Partial whose text is the utterance's digits
so far (start_ms = utterance start, end_ms = the block end where it was accepted). Group ids are
``f"{channel}-{n}"``, n counting that channel's utterances from 1.
Per utterance: Speech Started, SR Partial*, Speech Ended, SR Milestone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BLOCK_MS = 10
WINDOW_MS = 30
VAD_THRESHOLD_DBFS = -35.0
PRE_SPEECH_MS = 300
POST_SPEECH_MS = 300
SILENCE_TRIGGER_MS = 400
DIGIT_MIN_MS = 40
DIGIT_GAP_MS = 30
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

_THRESHOLD_MS = (32768.0 * 10 ** (VAD_THRESHOLD_DBFS / 20)) ** 2  # mean square, int16 units
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


class ChannelRecognizer:
    """VAD + DTMF state of one channel; feed int16 samples of any length, flush() at end of audio."""

    def __init__(self, channel: int, sample_rate: int) -> None:
        if not 8000 <= sample_rate <= 48000:
            raise ValueError(f"sample rate {sample_rate} outside 8000..48000")
        self.channel = channel
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
        self._block_threshold = _THRESHOLD_MS * self._block_len
        self._tone_threshold = _THRESHOLD_MS * w * tone_scale
        self._fraction_scale = TONE_FRACTION * tone_scale
        # Small products stay below OpenBLAS's threading threshold: threads only cost at this size.
        self._batch = max(1, 200_000 // (16 * w))
        self._steps = np.arange(self._batch) * self._block_len if sample_rate % 100 == 0 else None
        self._hist = np.zeros(self._window, dtype=np.int16)  # samples from absolute index _hist_start
        self._hist_start = -self._window  # zeros stand in for audio before the first sample
        self._samples = 0  # samples fed so far
        self._block = 0  # next block to analyse
        self._utterances = 0
        self._in_utt = False
        self._utt_start = 0
        self._last_speech_end = 0
        self._digits = ""
        self._reset_digit_state()

    @property
    def position_ms(self) -> int:
        return self._samples * 1000 // self.sample_rate

    def feed(self, samples: npt.ArrayLike) -> list[RecognizerEvent]:
        return [event for _, event in self.feed_timed(samples)]

    def flush(self) -> list[RecognizerEvent]:
        return [event for _, event in self.flush_timed()]

    def feed_timed(self, samples: npt.ArrayLike) -> list[_Timed]:
        """feed(), each event paired with the ms at which it was decided (for merging channels)."""
        x = np.asarray(samples)
        if x.ndim != 1:
            raise ValueError(f"expected 1-D samples, got shape {x.shape}")
        if x.size == 0:
            return []
        self._hist = np.concatenate([self._hist, x.astype(np.int16, casting="same_kind")])
        self._samples += x.size
        out: list[_Timed] = []
        complete = (100 * (self._samples + 1) - 1) // self.sample_rate  # blocks fully available
        while self._block < complete:
            stop = min(complete, self._block + self._batch)
            self._analyse(self._block, stop, out)
            self._block = stop
        keep_from = self._block * self.sample_rate // 100 - self._window
        self._hist = self._hist[keep_from - self._hist_start :]
        self._hist_start = keep_from
        return out

    def flush_timed(self) -> list[_Timed]:
        out: list[_Timed] = []
        if self._in_utt:
            self._close(min(self._last_speech_end + POST_SPEECH_MS, self.position_ms), self.position_ms, out)
        return out

    def _analyse(self, first: int, stop: int, out: list[_Timed]) -> None:
        base = (first + 1) * self.sample_rate // 100 - self._hist_start  # end of the first block
        if self._steps is not None:
            ends = self._steps[: stop - first] + base
        else:
            ends = np.arange(first + 1, stop + 1) * self.sample_rate // 100 - self._hist_start
        windows = self._hist[ends[:, None] + self._offsets].astype(np.float64)
        # Integers summed in float64 are exact in any order: chunking cannot change a bit.
        energy = (windows * windows) @ self._energy_cols  # [:, 0] window, [:, 1] its last 10 ms
        speech = (energy[:, 1] > self._block_threshold).tolist()
        if not self._in_utt and True not in speech:
            return  # silence outside an utterance: digits would be ignored anyway
        digits = self._classify(windows @ self._basis, energy[:, 0])
        i = 0
        while i < stop - first:
            if not self._in_utt:  # skip ahead to the next speech block
                if True not in speech[i:]:
                    return
                i = speech.index(True, i)
                self._open(first + i, out)
            self._step(first + i, speech[i], digits[i], out)
            i += 1

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

    def _reset_digit_state(self) -> None:
        self._cand = -1  # digit seen in the current run of blocks (-1 none)
        self._run = 0  # length of that run in blocks
        self._run_gap = 0  # blocks without the last accepted digit before the run began
        self._last = -1  # last accepted digit of the utterance
        self._last_seen = -(10**9)  # last block in which _last was present

    def _group(self) -> str:
        return f"{self.channel}-{self._utterances}"

    def _open(self, block: int, out: list[_Timed]) -> None:
        self._utterances += 1
        self._in_utt = True
        self._utt_start = max(0, block * BLOCK_MS - PRE_SPEECH_MS)
        self._digits = ""
        self._reset_digit_state()
        out.append(
            (
                (block + 1) * BLOCK_MS,
                RecognizerEvent(SPEECH_STARTED, self.channel, self._utt_start, -1, self._group(), ""),
            )
        )

    def _step(self, block: int, speech: bool, digit: int, out: list[_Timed]) -> None:
        now = (block + 1) * BLOCK_MS
        if speech:
            self._last_speech_end = now
        if digit != self._cand:
            self._cand, self._run, self._run_gap = digit, 0, block - self._last_seen - 1
        if digit >= 0:
            self._run += 1
            if digit == self._last:
                self._last_seen = block
            if self._run == _DIGIT_MIN_BLOCKS and (digit != self._last or self._run_gap >= _DIGIT_GAP_BLOCKS):
                self._last, self._last_seen = digit, block
                self._digits += DTMF_KEYS[digit]
                out.append(
                    (now, RecognizerEvent(SR_PARTIAL, self.channel, self._utt_start, now, self._group(), self._digits))
                )
        if not speech and now - self._last_speech_end >= SILENCE_TRIGGER_MS:
            self._close(self._last_speech_end + POST_SPEECH_MS, now, out)

    def _close(self, end: int, now: int, out: list[_Timed]) -> None:
        group, start = self._group(), self._utt_start
        out.append((now, RecognizerEvent(SPEECH_ENDED, self.channel, start, end, group, "")))
        out.append((now, RecognizerEvent(SR_MILESTONE, self.channel, start, end, group, self._digits)))
        self._in_utt = False


class Recognizer:
    """All channels of a session. Events of different channels come back ordered by the time they
    were decided (then by channel), so the merged list does not depend on chunking either."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        if channels < 1:
            raise ValueError(f"channel count {channels} < 1")
        self.sample_rate = sample_rate
        self.channels = [ChannelRecognizer(c, sample_rate) for c in range(channels)]

    @property
    def position_ms(self) -> int:
        return self.channels[0].position_ms

    def feed(self, frames: npt.ArrayLike) -> list[RecognizerEvent]:
        """``frames``: int16 of shape (n, channels); a 1-D array is accepted for one channel."""
        x = np.asarray(frames)
        if x.ndim == 1 and len(self.channels) == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2 or x.shape[1] != len(self.channels):
            raise ValueError(f"expected frames of shape (n, {len(self.channels)}), got {x.shape}")
        return _merge([ch.feed_timed(x[:, i]) for i, ch in enumerate(self.channels)])

    def flush(self) -> list[RecognizerEvent]:
        return _merge([ch.flush_timed() for ch in self.channels])


def _merge(per_channel: list[list[_Timed]]) -> list[RecognizerEvent]:
    timed = [item for items in per_channel for item in items]
    timed.sort(key=lambda item: (item[0], item[1].channel))  # stable: keeps each channel's order
    return [event for _, event in timed]
