"""What writing client JSON as UTF-8 costs per event, against the escaped JSON it replaced.

``python -m tests.perf.client_json`` pins itself to one core (the first it may use) and times, for an
English partial result and a Chinese one as the gateway relays them, the old encoder
(``json.dumps`` with ``\\u`` escapes) and :func:`gateway.relay.client_json.client_json`, each
followed by the UTF-8 encoding the WebSocket library does. Prints one JSON document: microseconds per
event (best of the rounds), the ratio to the old encoder in the same run, and each frame's bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import timeit
from collections.abc import Callable
from typing import Any

from gateway.relay.client_json import client_json

ENGLISH = "hello there this is a partial result"
CHINESE = "您好\uff0c请问有什么可以帮您\uff1f" * 3


def event(text: str) -> dict[str, Any]:
    return {
        "type": "event", "name": "SR Partial", "channel": 0, "startMs": 1200, "endMs": 2340, "groupId": "0-1",
        "final": False, "text": text, "data": {"Text": text, "Confidence": 0.93},
    }  # fmt: skip


def escaped(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def per_event_us(encode: Callable[[Any], str], value: Any, number: int, rounds: int) -> float:
    return min(timeit.repeat(lambda: encode(value).encode(), number=number, repeat=rounds)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    report: dict[str, Any] = {"pinned_core": core, "number": args.number, "rounds": args.rounds, "texts": {}}
    for name, text in (("english", ENGLISH), ("chinese", CHINESE)):
        value = event(text)
        old = per_event_us(escaped, value, args.number, args.rounds)
        new = per_event_us(client_json, value, args.number, args.rounds)
        report["texts"][name] = {
            "escaped_us": round(old, 3),
            "utf8_us": round(new, 3),
            "ratio": round(new / old, 3),
            "escaped_bytes": len(escaped(value).encode()),
            "utf8_bytes": len(client_json(value).encode()),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
