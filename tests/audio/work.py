"""How much work the upload parsers do, counted as the lines they run: deterministic, unlike a timer."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import gateway.audio

# Every module of gateway/audio but the decoder (which runs in its own thread, and only for compressed
# bodies): the sniffer, the push parsers and whatever they are split into.
PARSER_FILES: frozenset[str] = frozenset(
    str(p) for p in Path(gateway.audio.__file__).parent.glob("*.py") if p.name != "decoders.py"
)


@dataclass
class Lines:
    run: int = 0


@contextmanager
def lines_run() -> Iterator[Lines]:
    """Count the lines of :data:`PARSER_FILES` this thread runs inside the block (the gateway under test
    runs in-process, on the test's event loop)."""
    count = Lines()

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            count.run += 1
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename in PARSER_FILES else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        yield count
    finally:
        sys.settrace(previous)
