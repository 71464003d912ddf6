"""The two line formats: one JSON object per line (for log shippers) and readable text (a terminal).

Both put ``extra={...}`` fields on the line; neither emits ANSI escapes (uvicorn's ``color_message``
is dropped). Both cut a long traceback (:func:`clip_traceback`), after the handler's
:class:`~gateway.logs.filters.Redactor` has masked it whole.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from gateway.logs.redact import clip

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_DROPPED = {"color_message"}  # uvicorn's colored copy of the message
#: The ``extra`` key naming the fields a line's message shows already (text lines do not repeat them).
SHOWN_IN_MESSAGE = "_shown_in_message"
#: The ``extra`` key of the %-format that makes such a message of those fields (text lines quote them).
MESSAGE_FORMAT = "_message_format"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Characters a client may have put in a path, a project or a message type that text lines escape: a
# newline (or U+0085, U+2028, U+2029, line breaks to many readers) would start a forged line, ESC or a C1
# control (U+009B is CSI) would drive the reader's terminal, bidirectional overrides would reorder what
# the reader sees, and a lone surrogate (JSON's "\ud800") has no UTF-8.
_UNSAFE_CHARACTERS = r"\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"  # with the C0 controls below
_UNSAFE = r"\x00-\x1f" + _UNSAFE_CHARACTERS + r"\ud800-\udfff"
_CONTROL = re.compile(f"[{_UNSAFE}]")
# A field value shown bare only when it cannot be read as more than one field.
_BARE_VALUE = re.compile(f"[^\\s\"'={_UNSAFE}]*")
# JSON lines escape every character, but a lone surrogate only as "\ud800", which strict readers (jq,
# orjson, serde) refuse, and jq stops there: replaced.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# And a reader decodes the rest: ``jq -r .msg`` wrote a client's OSC (terminal title, clipboard), BEL or
# U+009B to the operator's terminal. In JSON values they are written out as text ("\x1b") too; a
# traceback keeps its line breaks and tabs (its lines are the gateway's, quoting at most a message).
_JSON_CONTROL = re.compile(r"[\x00-\x1f" + _UNSAFE_CHARACTERS + "]")
_TRACEBACK_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f" + _UNSAFE_CHARACTERS + "]")
#: A traceback longer than this is cut (a deep recursion, a long chain, a message quoting a whole body):
#: one 500 through the middleware stack is about 5 KiB, 32 frames.
MAX_TRACEBACK_CHARS = 16 * 1024
_HEAD_CHARS = MAX_TRACEBACK_CHARS // 8  # kept from the start: the first "Traceback" line, outermost frames
_LINE_CHARS = MAX_TRACEBACK_CHARS // 8  # one line of it at most (an exception message can be any size)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={...}`` fields of ``record`` (what a line shows besides its message)."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRS and key not in _DROPPED and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def clip_traceback(text: str, most: int = MAX_TRACEBACK_CHARS) -> str:
    """``text`` (a traceback) within about ``most`` characters: its start and its end (the innermost frames
    and the exception, what explains it) are kept; one line in their place says how much was cut. Lines are
    kept or cut whole, and masking came before (no secret is cut in two and left unmasked)."""
    if len(text) <= most:
        return text
    lines = text.splitlines()
    kept = [clip(line, _LINE_CHARS) for line in lines]
    head = used = 0
    while head < len(kept) and used + len(kept[head]) < _HEAD_CHARS:
        used += len(kept[head]) + 1
        head += 1
    tail = len(kept)
    while tail > head and used + len(kept[tail - 1]) < most - 100:  # 100: room for the marker
        used += len(kept[tail - 1]) + 1
        tail -= 1
    cut = lines[head:tail]
    if not cut:
        return "\n".join(kept)
    frames = sum(1 for line in cut if line.startswith('  File "'))
    chars = sum(len(line) + 1 for line in cut)
    marker = f"  [… {len(cut)} lines of this traceback cut here: {frames} frames, {chars} characters …]"
    return "\n".join([*kept[:head], marker, *kept[tail:]])


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return clip_traceback(record.exc_text) if record.exc_text else None


def _valid_unicode(value: Any, controls: re.Pattern[str] = _JSON_CONTROL) -> Any:
    """``value`` with every lone surrogate in its strings replaced by U+FFFD, and every control written out."""
    if isinstance(value, str):
        return _escaped(_SURROGATE.sub("\ufffd", value), controls)
    if isinstance(value, dict):
        return {key: _valid_unicode(item, controls) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_unicode(item, controls) for item in value]
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
        entry = _valid_unicode(entry)
        if exc := _exception_text(self, record):
            entry["exc"] = _valid_unicode(exc, _TRACEBACK_CONTROL)
        if record.stack_info:
            entry["stack"] = _valid_unicode(clip_traceback(record.stack_info), _TRACEBACK_CONTROL)
        return json.dumps(entry, default=lambda other: _valid_unicode(str(other)))


def _escaped(text: str, controls: re.Pattern[str] = _CONTROL) -> str:
    return controls.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


def _field_value(value: Any) -> str:
    text = str(value)
    return text if _BARE_VALUE.fullmatch(text) else json.dumps(text)  # quoted, with every control escaped


def _shown_message(record: logging.LogRecord, shown: tuple[str, ...]) -> str:
    """The message of a line that shows some of its fields in it (the access line's method, path, status):
    made again from its ``MESSAGE_FORMAT`` and those fields, each string quoted unless one bare word, as any
    field value is. A path with spaces and ``=`` (``/x 200 0.4 ms  client=10.9.8.7:4444``) read as a
    status, a duration and fields ahead of the line's own."""
    template = getattr(record, MESSAGE_FORMAT, None)
    values = [getattr(record, name, None) for name in shown]
    if not isinstance(template, str) or any(value is None for value in values):
        return record.getMessage()
    try:
        return template % tuple(_field_value(value) if isinstance(value, str) else value for value in values)
    except (TypeError, ValueError):
        return record.getMessage()


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``, for a person at a terminal: one line per record
    (whatever a client put in the message or a field), then the traceback, if any, its lines marked ``  | ``."""

    def format(self, record: logging.LogRecord) -> str:
        # Fields the message already shows (the access line's method, path, status) are not repeated: named
        # by the line (a client could put a field's value, its own address, in a path to hide that field).
        shown = getattr(record, SHOWN_IN_MESSAGE, ())
        message = _escaped(_ANSI.sub("", _shown_message(record, shown) if shown else record.getMessage()))
        fields = " ".join(f"{k}={_field_value(v)}" for k, v in extra_fields(record).items() if k not in shown)
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {message}"
        line = f"{line}  {fields}" if fields else line
        if exc := _exception_text(self, record):
            line = f"{line}\n{_continued(exc)}"
        if record.stack_info:
            line = f"{line}\n{_continued(clip_traceback(record.stack_info))}"
        return line


def _continued(text: str) -> str:
    """A traceback under a text line: each of its lines escaped and marked ``  | ``, so an exception message
    quoting a client's newline cannot start what reads as a log line of its own."""
    return "\n".join(f"  | {_escaped(part)}" for part in text.split("\n"))
