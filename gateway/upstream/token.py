"""Data Flow access tokens: the provider contract, a configured static token, and the choice between
it and OAuth2 client credentials (:mod:`gateway.upstream.oauth`).

Secrets (client secret, tokens) live only in ``SecretStr`` values and the request body: no log line,
exception text or repr contains them. Messages name the identity host, never the full URL (it could
carry userinfo) and never the identity service's response body.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from gateway.settings import Settings, SettingsError
from gateway.upstream.oauth import ClientCredentialsTokenProvider

__all__ = ["ClientCredentialsTokenProvider", "StaticTokenProvider", "TokenProvider", "token_provider_from_settings"]

log = logging.getLogger(__name__)


@runtime_checkable
class TokenProvider(Protocol):
    async def get(self) -> SecretStr: ...  # a currently valid Data Flow token

    # Data Flow refused ``token``: drop it only if still cached (a late report must not drop a new one)
    def invalidate(self, token: SecretStr) -> None: ...

    @property
    def available(self) -> bool: ...  # a valid token is cached or static (readiness probe)

    # Keep a valid token cached from now on, sessions or none (the first session does not wait for a
    # fetch, and the health probes report the identity service's state, not whether a session came).
    def keep_fresh(self) -> None: ...

    async def aclose(self) -> None: ...


class StaticTokenProvider:
    """A configured token. It cannot be renewed, so a refusal is only reported (once)."""

    def __init__(self, token: SecretStr) -> None:
        if not token.get_secret_value():
            raise ValueError("static upstream token is empty")
        self._token, self._refused = token, False

    def __repr__(self) -> str:
        return "StaticTokenProvider(token=**********)"

    async def get(self) -> SecretStr:
        return self._token

    def invalidate(self, token: SecretStr) -> None:
        if not self._refused and token == self._token:  # SecretStr compares the values
            self._refused = True
            log.error("Data Flow refused the static upstream token; it cannot be renewed, replace it")

    @property
    def available(self) -> bool:
        return True

    def keep_fresh(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def token_provider_from_settings(settings: Settings) -> TokenProvider:
    """Static token if configured, else client credentials. Errors name fields, never values."""
    # Blank is unset (the settings strip it too): a token of spaces was sent, and every session refused.
    if settings.upstream_token is not None and (token := settings.upstream_token.get_secret_value().strip()):
        return StaticTokenProvider(SecretStr(token))
    secret = settings.upstream_client_secret
    present = {
        "upstream_identity_url": bool(settings.upstream_identity_url.strip()),
        "upstream_client_id": bool(settings.upstream_client_id.strip()),
        "upstream_client_secret": secret is not None and bool(secret.get_secret_value().strip()),
    }
    if not any(present.values()):
        raise SettingsError(
            "no Data Flow credential configured: set GATEWAY_UPSTREAM_TOKEN, or GATEWAY_UPSTREAM_IDENTITY_URL,"
            " GATEWAY_UPSTREAM_CLIENT_ID and GATEWAY_UPSTREAM_CLIENT_SECRET"
        )
    missing = [f"GATEWAY_{name.upper()}" for name, ok in present.items() if not ok]
    if missing or secret is None:
        raise SettingsError("incomplete Data Flow client credentials, missing: " + ", ".join(missing))
    try:
        return ClientCredentialsTokenProvider(
            url=settings.upstream_identity_url.strip(),
            client_id=settings.upstream_client_id.strip(),
            client_secret=secret,
            scope=settings.upstream_token_scope,
            refresh_margin_s=settings.upstream_token_refresh_margin_s,
            fetch_timeout_s=settings.upstream_token_fetch_timeout_s,
            attempts=settings.upstream_token_fetch_attempts,
        )
    except ValueError as exc:
        raise SettingsError(f"GATEWAY_UPSTREAM_IDENTITY_URL: {exc}") from None
