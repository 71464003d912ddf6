"""Reading Data Flow's JSON tolerantly: keys matched without regard to case, ``-`` and ``_``, numbers
given as strings accepted, nesting bounded. Shared by every reader of client or Data Flow JSON.

Tolerance stops where a guess would change what audio means: a number a client declares (a sample
rate, a channel count) that is no number is refused (:func:`declared_int`), never read as the default."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from gateway.errors import AudioFormatError, InvalidMessage
from gateway.errors.quoting import quote


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
    """Data Flow's own numbers (an event's Channel, StartMsec): whatever is no number is ``default``."""
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


#: A number sent as a string is read up to this many characters; a longer one is refused unread
#: (float() makes inf of 400 digits, and no sample rate needs more than a handful).
MAX_NUMBER_CHARS = 32


def _whole(value: Any) -> int | None:
    """``value`` as a whole number: a JSON number or a string of one (spaces around allowed); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and len(value) <= MAX_NUMBER_CHARS:
        try:
            return int(value)  # "16000", " 16000 "
        except ValueError:
            pass
        try:
            value = float(value)  # "16000.0", "1.6e4"
        except ValueError:
            return None
    if isinstance(value, float) and value.is_integer():  # not inf, nan nor 16000.5
        return int(value)
    return None


def declared_int(value: Any, default: int, *, name: str) -> int:
    """A whole number a client declares about its audio: absent or null is ``default``; a number, or a
    string of one (legacy clients quote numbers), is read. Anything else ("abc", "16k", 16000.5, true,
    400 digits) is an AudioFormatError naming ``name`` and quoting the value cut short: read as the
    default, it would silently garble every transcript. The range is the caller's to check."""
    if value is None:
        return default
    number = _whole(value)
    if number is None:
        longest = f" of at most {MAX_NUMBER_CHARS} characters" if isinstance(value, str) else ""
        raise AudioFormatError(f"{name} must be a whole number{longest}, got {quote(value)}")
    return number


def longer_than(text: str, limit: int) -> bool:
    """Is ``text`` over ``limit`` bytes of UTF-8? (Encoded only when its length leaves a doubt.)"""
    return len(text) > limit or (4 * len(text) > limit and len(text.encode("utf-8", "surrogatepass")) > limit)


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


#: Past this many ``[``/``{`` in a text, its nesting is measured on the text (C speed) instead of walking
#: the parsed value: a walk costs ~0.5 µs a container, and 1 MiB of ``[{},{},…]`` is 350 000 of them
#: (185 ms of the event loop for one message, any client could send it).
WALK_MAX_OPENINGS = 2000
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_STEPS = np.zeros(256, np.int8)
_STEPS[[ord("["), ord("{")]] = 1
_STEPS[[ord("]"), ord("}")]] = -1


def nesting_depth(text: str | bytes) -> int:
    """How deep valid JSON ``text`` nests lists and objects: its brackets outside strings, summed in order."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text  # a lone surrogate: bytes too
    codes = np.frombuffer(_STRING.sub(b"", raw), np.uint8)
    return int(np.cumsum(_STEPS[codes], dtype=np.int32).max()) if codes.size else 0


def _openings(text: str | bytes) -> int:
    """How many ``[`` and ``{`` ``text`` holds: nesting can be no deeper, so this C-speed count spares
    the walk for every ordinary message (an event has a handful)."""
    if isinstance(text, str):
        return text.count("[") + text.count("{")
    return text.count(b"[") + text.count(b"{")


#: What Python's json reads as a number JSON has not: the bare constants, and a literal that overflows
#: to inf (``1e999``). From Data Flow, relayed, one made an answer no strict parser takes (a browser's
#: JSON.parse, a webhook receiver's), or none at all (an upload's JSON answer refuses them: a 500).
_NON_FINITE = re.compile(r"NaN|Infinity|\d[eE][+-]?\d{3}")
_NON_FINITE_BYTES = re.compile(rb"NaN|Infinity|\d[eE][+-]?\d{3}")


def _finite_or_none(literal: str) -> float | None:
    value = float(literal)
    return value if math.isfinite(value) else None


def _parsed(text: str | bytes, non_finite_as_null: bool) -> Any:
    """``json.loads``; with ``non_finite_as_null``, NaN, Infinity and numbers past a float's range read as
    null. Only text that may hold one pays for the hooks (a word such as "Infinity" costs a slower parse)."""
    pattern = _NON_FINITE if isinstance(text, str) else _NON_FINITE_BYTES
    if not non_finite_as_null or pattern.search(text) is None:  # type: ignore[arg-type]
        return json.loads(text)
    return json.loads(text, parse_constant=lambda _: None, parse_float=_finite_or_none)


def loads_object(text: str | bytes, *, non_finite_as_null: bool = False) -> dict[str, Any]:
    """Parse a JSON object; anything else (or nested deeper than MAX_JSON_DEPTH) is an InvalidMessage.
    A client's NaN or Infinity is refused where the gateway writes it on (``messages.to_json``, in the
    client's words); Data Flow's are read as null (``non_finite_as_null``): its events are relayed, not judged."""
    try:
        value = _parsed(text, non_finite_as_null)
    except (ValueError, RecursionError) as exc:
        raise InvalidMessage("message is not valid JSON") from exc
    if not isinstance(value, dict):
        raise InvalidMessage("message must be a JSON object")
    openings = _openings(text)
    if openings > MAX_JSON_DEPTH and (
        nesting_depth(text) > MAX_JSON_DEPTH if openings > WALK_MAX_OPENINGS else too_deep(value)
    ):
        raise InvalidMessage(f"message is nested deeper than {MAX_JSON_DEPTH} levels")
    return value
