"""The effective settings as an operator may see them: secrets masked, every other value shown.

Masked: ``SecretStr`` values (also inside API key entries), API key hashes (shown as a prefix, enough
to tell keys apart) and credential shapes inside strings (a token in a webhook URL's query, a URL's password).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, SecretStr

from gateway.config.environment import variable_name
from gateway.logs.redact import MASK, redact_text, url_origin

_HASH_SHOWN = 8


def _shown(value: Any, key: str = "") -> Any:
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, BaseModel):
        return _shown({name: getattr(value, name) for name in type(value).model_fields})
    if isinstance(value, dict):
        return {k: _shown(v, str(k)) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple | set | frozenset):
        return [_shown(v) for v in value]
    if isinstance(value, str):
        if key == "sha256" and value:
            return value[:_HASH_SHOWN] + "…"
        if key == "webhook_url" and value:
            return url_origin(value)  # a receiver's credential may be its path
        return redact_text(value)  # a URL's password too (https://user:password@host/…)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


def effective_settings(settings: BaseModel) -> dict[str, Any]:
    """``{GATEWAY_NAME: shown value}`` in the settings' field order."""
    return {variable_name(name): _shown(getattr(settings, name), name) for name in type(settings).model_fields}


def settings_lines(settings: BaseModel, notes: dict[str, str] | None = None) -> list[str]:
    """``GATEWAY_NAME=value`` lines (JSON for lists and objects); ``# default`` marks values not set,
    ``notes`` (by variable) add what a value amounts to, after a ``#`` too."""
    lines = []
    explicit = {variable_name(name) for name in settings.model_fields_set}
    for name, value in effective_settings(settings).items():
        text = "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        comments = ([] if name in explicit else ["default"]) + ([notes[name]] if notes and name in notes else [])
        lines.append(f"{name}={text}" + (f"  # {'; '.join(comments)}" if comments else ""))
    return lines


def secret_values(settings: BaseModel) -> list[str]:
    """Every secret the settings hold (for the log backstop to mask wherever it appears)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(settings)
    return [s for s in found if s]
