"""Standard Webhooks signatures: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
(``v1,<base64 hmac-sha256 over "{id}.{timestamp}.{body}">``), keyed with the base64 part of a
``whsec_`` secret. The maintained ``standardwebhooks`` package computes the signature; this module
only checks the secret strictly at startup (the package would accept a mistyped one) and builds headers.
Like the package, it takes the base64 with or without its ``=`` padding.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from pydantic import SecretStr
from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


class WebhookSigner:
    """Signs bodies with one secret; its repr never shows the secret."""

    def __init__(self, key: bytes) -> None:
        self._webhook = Webhook(key)

    def __repr__(self) -> str:
        return "WebhookSigner(…)"

    def headers(self, msg_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
        """The three signature headers for one attempt (the timestamp is the attempt's own)."""
        at = (now or datetime.now(UTC)).replace(microsecond=0)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": self._webhook.sign(msg_id, at, body),
        }


def signer_from(secret: SecretStr | None, where: str) -> WebhookSigner | None:
    """A configured ``whsec_<base64>`` secret as a signer; None when unset. Raises ValueError naming
    ``where`` (never the value) when it is not a Standard Webhooks secret."""
    if secret is None or not secret.get_secret_value():
        return None
    value = secret.get_secret_value()
    if not value.startswith(SECRET_PREFIX):
        raise ValueError(f"{where} must start with {SECRET_PREFIX} (a Standard Webhooks secret)")
    encoded = value[len(SECRET_PREFIX) :]
    encoded += "=" * (-len(encoded) % 4)  # unpadded base64 is accepted, as the standardwebhooks library does
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where} is not {SECRET_PREFIX} followed by base64") from None
    if len(key) < 16:
        raise ValueError(f"{where} is too short: use at least 16 random bytes (24 to 64 recommended)")
    return WebhookSigner(key)
