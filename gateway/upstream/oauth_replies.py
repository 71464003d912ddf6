"""What an identity service's answer says: its JSON, its RFC 6749 error code, the token's life."""

from __future__ import annotations

import contextlib
import json
import logging
import math

log = logging.getLogger("gateway.upstream.token")

DEFAULT_EXPIRES_IN_S = 300.0  # no usable expires_in: assume a short life so we refresh early
# RFC 6749 error codes are a fixed vocabulary and safe to quote; the rest of a body is not.
_OAUTH_ERRORS = {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "invalid_scope"}


def parse_json(raw: bytes) -> object:
    """``raw`` parsed; ValueError for anything unparseable, nesting past the parser's recursion included."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


def oauth_error(raw: bytes) -> str:
    try:
        body = parse_json(raw)
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    return f" ({error})" if error in _OAUTH_ERRORS else ""


def lifetime(raw: object) -> float:
    value = math.nan
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        with contextlib.suppress(ValueError):
            value = float(raw.strip())
    if not math.isfinite(value) or value <= 0:
        if raw is not None:
            log.warning("identity service sent an unusable expires_in; assuming %.0fs", DEFAULT_EXPIRES_IN_S)
        return DEFAULT_EXPIRES_IN_S
    return value
