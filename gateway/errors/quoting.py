"""Client text as an error message quotes it: cut short, whatever its size or nesting. An error must
not send a client's megabyte back, nor hold it for a client that does not read."""

from __future__ import annotations

import reprlib
from typing import Any

#: Client text quoted in an error is cut to this many characters.
QUOTE_CHARS = 64

_BOUNDED = reprlib.Repr()  # bounded work on any size or nesting (repr() of a client's array is not)
_BOUNDED.maxlevel, _BOUNDED.maxdict, _BOUNDED.maxlist = 2, 4, 4
_BOUNDED.maxstring = _BOUNDED.maxlong = _BOUNDED.maxother = QUOTE_CHARS


def clip(text: str) -> str:
    """``text`` cut to QUOTE_CHARS characters, an ellipsis marking the cut."""
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…"


def quote(value: Any) -> str:
    """A client's value as an error message quotes it: its repr, cut short."""
    if isinstance(value, str):
        return repr(value) if len(value) <= QUOTE_CHARS else repr(value[:QUOTE_CHARS]) + "…"
    return clip(_BOUNDED.repr(value))
