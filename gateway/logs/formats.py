"""The two line formats: one JSON object per line (for log shippers) and readable text (a terminal).

Both put ``extra={...}`` fields on the line; neither emits ANSI escapes (uvicorn's ``color_message``
is dropped).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_DROPPED = {"color_message"}  # uvicorn's colored copy of the message
#: The ``extra`` key naming the fields a line's message shows already (text lines do not repeat them).
SHOWN_IN_MESSAGE = "_shown_in_message"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Characters a client may have put in a path, a project or a message type that text lines escape: a
# newline (or U+0085, U+2028, U+2029, line breaks to many readers) would start a forged line, ESC or a C1
# control (U+009B is CSI) would drive the reader's terminal, bidirectional overrides would reorder what
# the reader sees, and a lone surrogate (JSON's "\ud800") has no UTF-8.
_UNSAFE = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_CONTROL = re.compile(f"[{_UNSAFE}]")
# A field value shown bare only when it cannot be read as more than one field.
_BARE_VALUE = re.compile(f"[^\\s\"'={_UNSAFE}]*")
# JSON lines escape every character, but a lone surrogate only as "\ud800", which strict readers (jq,
# orjson, serde) refuse, and jq stops there: replaced.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={...}`` fields of ``record`` (what a line shows besides its message)."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRS and key not in _DROPPED and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or None


def _valid_unicode(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {key: _valid_unicode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_unicode(item) for item in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={...}`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _ANSI.sub("", record.getMessage()),
        }
        entry.update(extra_fields(record))
        if exc := _exception_text(self, record):
            entry["exc"] = exc
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(_valid_unicode(entry), default=lambda other: _valid_unicode(str(other)))


def _escaped(text: str) -> str:
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


def _field_value(value: Any) -> str:
    text = str(value)
    return text if _BARE_VALUE.fullmatch(text) else json.dumps(text)  # quoted, with every control escaped


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``, for a person at a terminal: one line per record
    (whatever a client put in the message or a field), then the traceback, if any."""

    def format(self, record: logging.LogRecord) -> str:
        raw = _ANSI.sub("", record.getMessage())
        message = _escaped(raw)
        # Fields the message already shows (the access line's method, path, status) are not repeated: named
        # by the line (a client could put a field's value, its own address, in a path to hide that field).
        shown = getattr(record, SHOWN_IN_MESSAGE, ())
        fields = " ".join(f"{k}={_field_value(v)}" for k, v in extra_fields(record).items() if k not in shown)
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {message}"
        line = f"{line}  {fields}" if fields else line
        if exc := _exception_text(self, record):
            line = f"{line}\n{exc}"
        return line
