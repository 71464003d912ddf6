"""The audio a WAV or AU header declares against what the body holds (see :class:`DeclaredSize`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SizeMismatch:
    """A container header whose audio size disagrees with the audio the body holds (all of it was sent)."""

    container: str
    declared_bytes: int
    actual_bytes: int


class DeclaredSize:
    """The audio a header declares against what the body holds. Past the declared size, a RIFF chunk
    (``LIST``, ``id3 `` …) is metadata and ignored; anything else is audio the header undercounted (a
    writer that never patched its sizes), and goes on being read — never dropped silently."""

    def __init__(self, declared: int, *, chunks_may_follow: bool) -> None:
        self.declared = declared
        self._remaining = declared
        self._chunks_may_follow = chunks_may_follow
        self._after = b""  # the first bytes past the declared size, until they show what follows
        self._beyond: str | None = None  # "chunk" (ignored) or "audio" (read on)
        self.actual = 0

    def take(self, data: bytes) -> bytes:
        if self._beyond == "audio":
            self.actual += len(data)
            return data
        if self._beyond == "chunk":
            return b""
        keep = data[: self._remaining]
        self._remaining -= len(keep)
        self.actual += len(keep)
        if self._remaining or len(keep) == len(data):
            return keep
        self._after += data[len(keep) :]
        if len(self._after) >= 8 and chunk_name(self._after[:4]):
            return keep + self._decide(self._after[:4])
        if len(self._after) < (self.declared & 1) + 8:
            return keep
        return keep + self._decide(*self._names())

    def _names(self) -> tuple[bytes, bytes]:
        """What would be the next chunk's id, without and with the pad byte RIFF puts after an odd size
        (some writers leave it out)."""
        pad = self.declared & 1
        return self._after[:4], self._after[pad : pad + 4]

    def _decide(self, *names: bytes) -> bytes:
        if self._chunks_may_follow and any(chunk_name(name) for name in names):
            self._beyond, self._after = "chunk", b""
            return b""
        self._beyond = "audio"
        rest, self._after = self._after, b""
        self.actual += len(rest)
        return rest

    def finish(self) -> bytes:
        """At the end of the body: what is left undecided is audio unless it is a lone pad byte."""
        if self._beyond is None and len(self._after) > (self.declared & 1):
            return self._decide(*self._names())
        return b""

    @property
    def mismatch(self) -> bool:
        return self.actual != self.declared


#: Chunks writers put after the audio. Any four letters is too weak a test: audio past an undercounted size
#: reads like one about once in 300 boundaries (loud pcm16, G.711), and all of it was then dropped unsaid.
TRAILING_CHUNKS = frozenset(
    {
        b"LIST",
        b"id3 ",
        b"ID3 ",
        b"JUNK",
        b"junk",
        b"PAD ",
        b"FLLR",
        b"bext",
        b"iXML",
        b"axml",
        b"cue ",
        b"smpl",
        b"inst",
        b"fact",
        b"plst",
        b"labl",
        b"ltxt",
        b"note",
        b"acid",
        b"cart",
        b"DISP",
        b"_PMX",
        b"afsp",
        b"umid",
    }
)


def chunk_name(name: bytes) -> bool:
    """Four bytes that name a RIFF chunk writers put after the audio (``LIST``, ``id3 ``, ``cue `` …), not audio."""
    return name in TRAILING_CHUNKS
