"""Twilio's ``X-Twilio-Signature`` on a Media Streams upgrade: base64 of HMAC-SHA1, keyed with the
account's auth token, over the full URL Twilio was given (for a WebSocket upgrade there are no POST
parameters to append). The URL is rebuilt from the configured public host names
(``GATEWAY_PUBLIC_HOSTS``), not from the Host the caller sends, and from the path and query as the
caller used them (``/t/<key>/`` included: Twilio signed it; a query added to the URL Twilio was given is
not signed). Checked only when ``GATEWAY_TWILIO_AUTH_TOKEN`` is set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr

from gateway.errors import ErrorCode, Unauthorized
from gateway.settings import Settings


def twilio_signature(auth_token: bytes, url: str) -> str:
    return base64.b64encode(hmac.new(auth_token, url.encode(), hashlib.sha1).digest()).decode("ascii")


class TwilioSignatures:
    def __init__(self, auth_token: SecretStr | None, public_hosts: Iterable[str]) -> None:
        token = auth_token.get_secret_value() if auth_token is not None else ""
        self._token = token.encode() if token else None
        self._hosts = list(public_hosts)

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioSignatures:
        return cls(settings.twilio_auth_token, settings.public_hosts)

    def verify(self, headers: Any, target: str) -> None:
        """Raise Unauthorized unless the upgrade carries Twilio's signature of ``wss://<public host><target>``."""
        if self._token is None:
            return
        signature = headers.get("x-twilio-signature")
        if not signature:
            raise Unauthorized("X-Twilio-Signature is missing", code=ErrorCode.INVALID_SIGNATURE)
        hosts = self._hosts or [headers.get("host", "")]  # without public hosts, only the Host can be used
        for host in hosts:
            expected = twilio_signature(self._token, f"wss://{host}{target}")
            if hmac.compare_digest(expected.encode(), str(signature).encode()):
                return
        raise Unauthorized("X-Twilio-Signature does not match", code=ErrorCode.INVALID_SIGNATURE)
