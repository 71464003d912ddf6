"""The process's logging configuration: one handler on stderr, for the gateway's and uvicorn's lines.

The format is JSON or text as configured; ``auto`` is text when stderr is a terminal (a person reads
it) and JSON otherwise (a log shipper does). uvicorn's loggers run at the gateway's level, debug
included: their handshake lines are masked where they are made (:class:`HandshakeLines`) and every
line passes the :class:`Redactor` backstop.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from gateway.logs.filters import ClientMistakeFilter, HandshakeLines, Redactor
from gateway.logs.formats import JsonFormatter, TextFormatter


def resolve_format(fmt: str, stream: TextIO | None = None) -> str:
    """``json`` or ``text``; ``auto`` picks text for a terminal."""
    if fmt != "auto":
        return fmt
    stream = stream or sys.stderr
    return "text" if stream.isatty() else "json"


def logging_config(level: str, fmt: str, secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A dictConfig for the gateway's and uvicorn's loggers; ``secrets`` (the process's own) are masked
    wherever they appear."""
    formatter = JsonFormatter if resolve_format(fmt) == "json" else TextFormatter
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
        "filters": ["redact"],
    }
    server = {"handlers": [], "level": level.upper(), "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "filters": {
            "client_mistakes": {"()": ClientMistakeFilter},
            "handshake_lines": {"()": HandshakeLines},
            "redact": {"()": Redactor, "secrets": list(secrets)},
        },
        "handlers": {"default": handler},
        # One handler on the root logger; everything propagates to it (and to test log capture). Other
        # libraries log WARNING and above, or only what the configured level lets through ("error" is
        # error for every library).
        "root": {"handlers": ["default"], "level": max(logging.getLevelName(level.upper()), logging.WARNING)},
        "loggers": {
            "gateway": {"level": level.upper()},
            "uvicorn": server,
            "uvicorn.error": {**server, "filters": ["client_mistakes", "handshake_lines"]},
            # The gateway's access log (gateway.access) has these lines with fields and redacted paths.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            # The multipart parser warns before each error it raises: a client's malformed body, which
            # its 422 (invalid_multipart) names already; a line per request at the client's rate.
            "python_multipart": {"level": "ERROR"},
        },
    }


def configure_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Apply :func:`logging_config`; Python's warnings (a library's DeprecationWarning) become log lines
    too, instead of raw text on stderr."""
    logging.config.dictConfig(logging_config(level, fmt, secrets))
    logging.captureWarnings(True)
