"""JSON text for clients: characters other than ASCII written as UTF-8, not as six-byte ``\\u`` escapes.

Escaped, a Chinese character cost 6 bytes instead of 3 and an emoji 12 instead of 4, so a long
transcript reached a client as a frame twice Data Flow's size or more, and one that fitted Data Flow's
message went over a client's own message limit (1 MiB in websockets: close 1009, the result lost).
Three kinds of character are still escaped, where the JSON is written: a lone surrogate (JSON can
spell it, UTF-8 cannot carry it: a text frame holding one is invalid) and U+0085, U+2028 and U+2029,
which line readers other than JSON's own take as line breaks (Python's ``str.splitlines``), so an
NDJSON or server-sent-events line holding one would read as two broken lines.
"""

from __future__ import annotations

import json
import re
from typing import Any

_ESCAPED = re.compile("[\x85\u2028\u2029\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def client_json(value: Any) -> str:
    """``value`` as compact JSON, UTF-8 safe and one line whatever its strings hold."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if text.isascii() or _ESCAPED.search(text) is None:
        return text
    return _ESCAPED.sub(_escape, text)  # outside strings JSON is ASCII: each match is inside a string
