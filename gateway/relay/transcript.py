"""The text of a session's final results, by channel, as its summary gives it: an upload's ``transcript``,
a call's webhook ``summary``. The events carry every result; this is the copy held to the session's end,
so it is bounded in bytes (``GATEWAY_MAX_TRANSCRIPT_BYTES``, UTF-8, all channels): a Data Flow sending many
or large results grew it without limit (160 results of 256 KiB held 40 MiB for one upload, five times
that at its answer). Past the bound the rest of the session's text is left out (what is kept stays one
piece from the start) and counted, and the summary says so."""

from __future__ import annotations

from typing import Any

#: Scripts written without spaces between words or sentences: CJK punctuation, kana, CJK ideographs
#: (and extension A), fullwidth forms. Hangul and Thai are not among them (they put spaces there).
_UNSPACED = ((0x3000, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF))


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _unspaced(char: str) -> bool:
    return any(low <= ord(char) <= high for low, high in _UNSPACED)


def separator(before: str, after: str) -> str:
    """What joins two results of one channel: a space, but none where one side has one already, nor
    between two characters of a script written without them (Chinese and Japanese results were joined
    with a space in the middle of the text)."""
    if not before or not after or before[-1].isspace() or after[0].isspace():
        return ""
    return "" if _unspaced(before[-1]) and _unspaced(after[0]) else " "


class Transcript:
    """Final text by channel, at most ``max_bytes`` of it (with the spaces that join it: :func:`separator`)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._texts: dict[int, list[str]] = {}
        self._bytes = 0
        self.truncated = False  # from then on every text is left out: what is kept is one piece
        self.dropped_bytes = 0  # text left out, UTF-8 bytes

    def add(self, channel: int, text: str) -> None:
        size, held = _utf8_size(text), self._texts.get(channel)
        joined = separator(held[-1], text) + text if held else text
        if self.truncated or self._bytes + size + len(joined) - len(text) > self.max_bytes:
            self.truncated = True
            self.dropped_bytes += size
            return
        self._bytes += size + len(joined) - len(text)  # the separator is ASCII: one byte or none
        self._texts.setdefault(channel, []).append(joined)

    def by_channel(self, channels: int = 0) -> dict[int, str]:
        """The text of each channel with any, and of each of the first ``channels`` (empty if none)."""
        held = {channel: "".join(texts) for channel, texts in sorted(self._texts.items())}
        return {channel: "" for channel in range(channels)} | held

    def as_json(self, channels: int) -> dict[str, str]:
        """:meth:`by_channel` keyed by the channel as text, as a JSON object's keys are."""
        return {str(channel): text for channel, text in self.by_channel(channels).items()}

    def cut(self) -> dict[str, Any]:
        """What a summary adds when text was left out (nothing when the transcript is whole)."""
        return {"transcriptTruncated": True, "transcriptDroppedBytes": self.dropped_bytes} if self.truncated else {}
