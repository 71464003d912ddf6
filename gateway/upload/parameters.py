"""The Start JSON of an upload (``X-Dataflow-Parameters`` or the multipart ``Parameters`` part) and the
media types of its body and parts."""

from __future__ import annotations

import json
from typing import Any, Final

from python_multipart.multipart import parse_options_header

from gateway.audio.format import AudioFormat
from gateway.dataflow.lenient import MAX_JSON_DEPTH, as_dict, get, norm_key, too_deep
from gateway.dataflow.messages import StartRequest, parse_start
from gateway.errors import BadRequest, ErrorCode

PARAMETERS_LIMIT: Final = 64 * 1024


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``audio/L16; rate=8000`` -> (``audio/l16``, {"rate": "8000"})."""
    ctype, options = parse_options_header(content_type or "")
    # Media types are case-insensitive (RFC 9110 8.3.1); python-multipart lowercased them only from 0.0.33.
    return ctype.decode("latin-1").lower(), {
        k.decode("latin-1").lower(): v.decode("latin-1") for k, v in options.items()
    }


def header_parameters(value: str, where: str = "X-Dataflow-Parameters") -> dict[str, Any]:
    """Start-style JSON from a header. The ASGI server hands header values over as latin-1, one char
    per byte; the bytes as sent are read as UTF-8 (what curl and every HTTP client send), strictly:
    anything else is a 422 that never echoes the value (it was mojibake in Data Flow before)."""
    try:
        text = value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise BadRequest(
            f"{where} is not UTF-8 text: send the JSON as UTF-8, or as ASCII with \\u escapes",
            code=ErrorCode.INVALID_PARAMETERS,
        ) from None
    return parse_parameters(text, where)


def header_text(value: str | None, where: str) -> str | None:
    """A header's text as the client sent its bytes, UTF-8 (the ASGI server hands it over as latin-1: a
    Turkish ``ProjectName`` reached Data Flow as mojibake); anything else is a 422."""
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise BadRequest(f"{where} is not UTF-8 text", code=ErrorCode.INVALID_PARAMETERS) from None


def parse_parameters(text: bytes | str, where: str) -> dict[str, Any]:
    """Start-style JSON (header or multipart part); anything but a JSON object is a 422."""
    try:
        value = json.loads(text) if text.strip() else {}
    except (ValueError, RecursionError):
        raise BadRequest(f"{where} is not valid JSON", code=ErrorCode.INVALID_PARAMETERS) from None
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be a JSON object", code=ErrorCode.INVALID_PARAMETERS)
    if too_deep(value):
        raise BadRequest(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels", code=ErrorCode.INVALID_PARAMETERS)
    return value


def start_request(parameters: dict[str, Any] | None) -> StartRequest:
    """The Start an upload's Parameters ask for. Token and Tenant in them are ignored: the gateway injects
    its own. Their Audio block is only a declaration (:func:`gateway.upload.source.declared_audio`): the
    audio's own header, or the declaration, makes the format; only its Output is kept."""
    start = {k: v for k, v in (parameters or {}).items() if norm_key(k) != "audio"}
    output = get(as_dict(get(parameters or {}, "Audio")), "Output")
    if output is not None:
        start["Audio"] = {"Output": output}
    request, _, _ = parse_start(start, default_audio=AudioFormat("pcm16", 16000, 1))
    return request
