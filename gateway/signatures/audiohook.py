"""AudioHook's signed WebSocket upgrade: an HTTP message signature (RFC 9421) over the request target,
the authority and four headers, hmac-sha256 keyed with the base64-decoded client secret.

Genesys signs ``@request-target``, ``@authority``, ``audiohook-organization-id``,
``audiohook-session-id``, ``audiohook-correlation-id`` and ``x-api-key``, with ``keyid`` = the API key,
``alg="hmac-sha256"``, ``created``, ``expires`` and a ``nonce``. The maintained
``http-message-signatures`` package parses the structured fields and builds the signature base; this
module adds AudioHook's policy: the components that must be covered, ``keyid`` equal to the key sent,
a nonce used once (remembered for the signature's lifetime), a bounded age, and ``@authority``
taken from the configured public host names (``GATEWAY_PUBLIC_HOSTS``), not from the caller's Host.

Which secret: the API key's own (``api_keys[].audiohook_client_secret``), else
``GATEWAY_AUDIOHOOK_CLIENT_SECRET``. With a secret the upgrade must be signed; without one it must
not be (nothing could verify it). No secret and no signature is never logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from http_message_signatures import HTTPMessageVerifier, HTTPSignatureKeyResolver, InvalidSignature, algorithms
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from pydantic import SecretStr

from gateway.errors import ErrorCode, RateLimited, Unauthorized
from gateway.settings import Settings
from gateway.signatures.nonces import NonceMemory

REQUIRED_COMPONENTS = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
CLOCK_SKEW_S = 5  # the tolerance the library applies to created/expires, and so to a nonce's life
MIN_NONCE_CHARS = 16
MAX_NONCE_CHARS = 256  # Genesys sends ~32; each one is kept for the signature's life
MAX_NONCES = 100_000  # ~10 MB typical (~40 MB at MAX_NONCE_CHARS); far above one handshake a second


def client_secret(secret: SecretStr | None, where: str) -> bytes | None:
    """A configured client secret as the HMAC key (base64-decoded); None when unset or empty."""
    if secret is None or not secret.get_secret_value():
        return None
    try:
        return base64.b64decode(secret.get_secret_value(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: not base64 (paste the client secret as Genesys shows it)") from None


@dataclass(frozen=True, slots=True)
class _Upgrade:
    """The upgrade request as the library reads it: method, absolute URL (for the authority), headers."""

    method: str
    url: str
    headers: Any
    request_target: str


class _OneKey(HTTPSignatureKeyResolver):
    """Resolves exactly the API key the caller sent (``keyid`` must be that key) to its secret."""

    def __init__(self, api_key: str, secret: bytes) -> None:
        self._api_key, self._secret = api_key, secret

    def resolve_public_key(self, key_id: str) -> bytes | None:
        return self._secret if hmac.compare_digest(key_id.encode(), self._api_key.encode()) else None


def _refused(message: str) -> Unauthorized:
    return Unauthorized(message, code=ErrorCode.INVALID_SIGNATURE)


class AudioHookSignatures:
    def __init__(
        self, *, default_secret: bytes | None, key_secrets: Mapping[str, bytes | None], public_hosts: list[str],
        max_age_s: float, max_nonces: int = MAX_NONCES,
    ) -> None:  # fmt: skip
        self.default_secret = default_secret
        self.key_secrets = dict(key_secrets)
        self.public_hosts = [h.strip().lower() for h in public_hosts if h.strip()]
        self.max_age_s = max_age_s
        self.nonces = NonceMemory(max_nonces)

    @classmethod
    def from_settings(cls, settings: Settings) -> AudioHookSignatures:
        keys = {
            spec.name: client_secret(
                spec.audiohook_client_secret, f"GATEWAY_API_KEYS[{spec.name}].audiohook_client_secret"
            )
            for spec in settings.api_keys
        }
        return cls(
            default_secret=client_secret(settings.audiohook_client_secret, "GATEWAY_AUDIOHOOK_CLIENT_SECRET"),
            key_secrets=keys, public_hosts=settings.public_hosts, max_age_s=settings.audiohook_signature_max_age_s,
        )  # fmt: skip

    def secret_for(self, key_name: str | None) -> bytes | None:
        own = self.key_secrets.get(key_name) if key_name is not None else None
        return own if own is not None else self.default_secret

    def verify(self, *, key_name: str | None, api_key: str | None, headers: Any, target: str, host: str) -> None:
        """Accept the upgrade or raise Unauthorized (RateLimited when the nonce memory is full)."""
        secret = self.secret_for(key_name)
        signed = "signature" in headers or "signature-input" in headers
        if secret is None:
            if signed:
                raise _refused("the upgrade is signed but no AudioHook client secret is configured for this key")
            return
        if not signed:
            raise _refused("this key has an AudioHook client secret: the upgrade must be signed")
        if not api_key:
            raise _refused("a signed upgrade needs X-API-KEY (the signature's keyid)")
        verifier = HTTPMessageVerifier(
            signature_algorithm=algorithms.HMAC_SHA256, key_resolver=_OneKey(api_key, secret)
        )
        error = "the signature does not verify"
        for authority in self.public_hosts or [host.strip().lower()]:
            upgrade = _Upgrade("GET", f"https://{authority}{target}", headers, target)
            try:
                results = verifier.verify(
                    upgrade, max_age=datetime.timedelta(seconds=self.max_age_s), require_components=REQUIRED_COMPONENTS
                )
            except InvalidSignature as exc:
                error = _why(str(exc), error)
                continue
            except (HTTPMessageSignaturesException, ValueError):
                continue  # an authority the URL parser rejects: the next one may fit
            self._use_nonce(key_name or api_key, results[0].parameters)
            return
        raise _refused(error)

    def _use_nonce(self, owner: str, parameters: dict[str, Any]) -> None:
        nonce = parameters.get("nonce")
        if not isinstance(nonce, str) or not MIN_NONCE_CHARS <= len(nonce) <= MAX_NONCE_CHARS:
            raise _refused(f"the signature needs a nonce of {MIN_NONCE_CHARS} to {MAX_NONCE_CHARS} characters")
        created = parameters.get("created")
        until = (created if isinstance(created, int) else time.time()) + self.max_age_s
        expires = parameters.get("expires")
        if isinstance(expires, int):
            until = min(until, expires)
        now = time.time()
        if self.nonces.full(now):
            raise RateLimited("too many signed upgrades at once; retry shortly", code=ErrorCode.RATE_LIMITED)
        if not self.nonces.add(f"{owner}\n{nonce}", until + CLOCK_SKEW_S, now):
            raise _refused("the signature's nonce was already used (a replayed upgrade)")


def _why(detail: str, fallback: str) -> str:
    """The refusal in words that name no secret (the library's messages name parameters only)."""
    lowered = detail.lower()
    if "expire" in lowered or "allowable age" in lowered or "future" in lowered:
        return "the signature has expired (or is dated in the future)"
    if "required component" in lowered or "not covered" in lowered:
        return "the signature must cover " + ", ".join(REQUIRED_COMPONENTS)
    if "resolve" in lowered:
        return "the signature's keyid is not the X-API-KEY sent"
    if "malformed" in lowered or "expected" in lowered or "no signatures" in lowered:
        return "Signature-Input or Signature is malformed"
    return fallback
