"""What an upload's client is told about its audio while the upload goes on (its ``warnings``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class AudioWarning:
    """Something about the audio the client should know; the upload goes on (its ``warnings``)."""

    code: ErrorCode
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "retryable": False, **self.details}
