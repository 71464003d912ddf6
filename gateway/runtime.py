"""Process-level tuning for the long-running servers (the gateway and the simulator).

Garbage collection: at startup the process holds a few hundred thousand objects from its imports
(FastAPI, pydantic, grpc, numpy, prometheus) that live as long as it does, and CPython's default
thresholds (700, 10, 10) make the collector walk them again and again. Under a few hundred
sessions that cost 3 % of the loop's time in a 10 s run, and each full collection stopped the
loop for 50-100 ms: every event in flight waited that long. ``tune_gc`` freezes what exists after
startup (the collector never walks it again) and collects the young generation less often; a
full collection of what sessions leave behind then takes a fraction of that time.

The price is that full collections are rare, so nothing a session owns may depend on one: a
finished session is freed by reference counting alone. The cycles that used to keep sessions alive
(a connection and its registry lease; a cancelled task whose traceback holds the frame of the
object that owns the task; uvicorn's HTTP protocol and its parser after a WebSocket upgrade) are
broken where they form, and ``tests/system/test_memory.py`` checks with the collector off that no
gateway object is left for it.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: Young-generation allocations between collections, and the two older generations' ratios.
GC_THRESHOLDS = (10_000, 50, 100)


def tune_gc() -> None:
    """Call once, after the imports and the app are built and before serving."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed (it comes with uvicorn[standard]), as the gateway runs."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
