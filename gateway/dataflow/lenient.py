"""Reading Data Flow's JSON tolerantly: keys matched without regard to case, ``-`` and ``_``, numbers
given as strings accepted, nesting bounded. Shared by every reader of client or Data Flow JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidMessage


def norm_key(key: str) -> str:
    return key.replace("-", "").replace("_", "").lower()


def get(obj: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """The value of the first key of ``obj`` matching one of ``names`` (normalised).

    A key spelled exactly as the first of ``names`` (Data Flow's own spelling) is found without
    normalising the others: this runs several times for every event."""
    if names and names[0] in obj:
        return obj[names[0]]
    wanted = [norm_key(n) for n in names]
    normalised = {norm_key(k): v for k, v in obj.items()}
    for name in wanted:
        if name in normalised:
            return normalised[name]
    return default


def as_int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value.strip()))
        except (ValueError, OverflowError):  # "abc", "nan"; "inf" and "1e999" overflow
            return default
    return default


def as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


#: Deepest JSON nesting accepted. Anything deeper would reach Python's recursion limit when it is
#: encoded again (upstream, or back to the client) and end the session with an untyped failure.
MAX_JSON_DEPTH = 100


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if ``value`` nests lists/objects more than ``limit`` levels deep (iterative, no recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                pending.append((child, depth + 1))
    return False


def _openings(text: str | bytes) -> int:
    """How many ``[`` and ``{`` ``text`` holds: nesting can be no deeper, so this C-speed count spares
    the walk for every ordinary message (an event has a handful)."""
    if isinstance(text, str):
        return text.count("[") + text.count("{")
    return text.count(b"[") + text.count(b"{")


def loads_object(text: str | bytes) -> dict[str, Any]:
    """Parse a JSON object; anything else (or nested deeper than MAX_JSON_DEPTH) is an InvalidMessage."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidMessage("message is not valid JSON") from exc
    if not isinstance(value, dict):
        raise InvalidMessage("message must be a JSON object")
    if _openings(text) > MAX_JSON_DEPTH and too_deep(value):
        raise InvalidMessage(f"message is nested deeper than {MAX_JSON_DEPTH} levels")
    return value
