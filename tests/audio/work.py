"""How much work the upload parsers do, counted as the lines they run (see :mod:`tests.support.work`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gateway.audio
from tests.support.work import Lines
from tests.support.work import lines_run as lines_run_in

# Every module of gateway/audio but the decoder (which runs in its own thread, and only for compressed
# bodies): the sniffer, the push parsers and whatever they are split into.
PARSER_FILES: frozenset[str] = frozenset(
    str(p) for p in Path(gateway.audio.__file__).parent.glob("*.py") if p.name != "decoders.py"
)


@contextmanager
def lines_run() -> Iterator[Lines]:
    with lines_run_in(PARSER_FILES) as lines:
        yield lines
