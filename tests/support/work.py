"""How much work a piece of the gateway does, counted as the lines it runs, and the memory it takes
meanwhile: deterministic, unlike a timer, so a bound on either holds on any machine."""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Lines:
    run: int = 0


@contextmanager
def lines_run(files: frozenset[str]) -> Iterator[Lines]:
    """Count the lines of ``files`` this thread runs inside the block (the gateway under test runs
    in-process, on the test's event loop)."""
    count = Lines()

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            count.run += 1
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename in files else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        yield count
    finally:
        sys.settrace(previous)


def peak_while(work: Callable[[], T]) -> tuple[T, int]:
    """``work()``'s result and the most memory Python allocated meanwhile beyond what it started with."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = work()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return result, peak
