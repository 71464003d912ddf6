"""What a finished session leaves on the Python heap: objects only the cycle collector would free.

The gateway tunes the collector so that full collections are rare (gateway/runtime.py): whatever a
session leaves in a reference cycle stays until one, so tests check with the collector off.
"""

from __future__ import annotations

import collections
import contextlib
import gc
from collections.abc import Iterator

#: The embedded Data Flow simulator is test and demo equipment, not the gateway's own memory.
NOT_THE_GATEWAY = ("gateway.simulator.",)


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def gateway_objects_in_cycles() -> dict[str, int]:
    """Types from gateway/ that only a cycle collection would free (collected here, with SAVEALL)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        names = {id(o): f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage}
        simulator = {key for key, name in names.items() if name.startswith(NOT_THE_GATEWAY)}
        found = collections.Counter(
            name
            for o in gc.garbage
            if (name := names[id(o)]).startswith("gateway.")
            and id(o) not in simulator
            and not any(id(r) in simulator for r in gc.get_referrers(o))  # e.g. an AudioFormat the simulator holds
        )
        return dict(found)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
