"""Settings of clients: authentication, AudioHook and telephony signatures, webhooks, simulator, demo page."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from gateway.auth import ApiKeySpec
from gateway.config import bounds


class ClientSettings(BaseModel):
    # --- client authentication ------------------------------------------------------------------------
    auth: Literal["required", "none"] | None = Field(
        None, description="required: every session needs an API key or browser token; unset: none in simulator mode."
    )
    allow_insecure_no_auth: bool = Field(False, description="Permit auth=none with a real upstream (logs a warning).")
    api_keys: list[ApiKeySpec] = Field(
        default_factory=list, description='JSON list: [{"name","sha256","projects","max_sessions",...}].'
    )

    @field_validator("api_keys")
    @classmethod
    def _distinct_keys(cls, keys: list[ApiKeySpec]) -> list[ApiKeySpec]:
        # Sessions, budgets and webhooks are kept by a key's name: two keys of one name shared them
        # (one tenant's results went to the other's receiver); one digest twice is a copy-paste slip.
        for field in ("name", "sha256"):
            seen: set[str] = set()
            for key in keys:
                value = getattr(key, field)
                if value in seen:
                    shown = repr(value) if field == "name" else "a sha256"
                    raise ValueError(f"two entries have the same {field} ({shown}): each key needs its own")
                seen.add(value)
        return keys

    token_signing_key: bounds.SigningKey = Field(
        None, description="HS256 key for browser tokens (same on all replicas)."
    )
    token_verify_keys: list[bounds.EarlierSigningKey] = Field(
        default_factory=list,
        description="JSON list of earlier signing keys: tokens they signed still verify; none is minted with them.",
    )
    token_ttl_s: float = Field(60.0, gt=0, description="Default life of a browser token (to start a session).")
    token_max_ttl_s: float = Field(900.0, gt=0, description="Longest life a browser token may ask for.")
    allowed_origins: list[bounds.Origin] = Field(
        default_factory=list, description="Exact Origins allowed on WebSocket handshakes (pages on public_hosts are)."
    )
    public_hosts: list[bounds.PublicHost] = Field(
        default_factory=list,
        description="Host names clients use (host or host:port); others get 400. Empty: any with auth, else loopback.",
    )
    trusted_proxies: list[bounds.TrustedProxy] = Field(
        default_factory=list, description="Proxy addresses or CIDRs whose X-Forwarded-For is believed (empty: none)."
    )
    auth_failures_per_minute: int = Field(20, ge=0, description="Failed credentials per client address before 429.")

    # --- Genesys AudioHook (/v1/audiohook) ---------------------------------------------------------------
    audiohook_client_secret: SecretStr | None = Field(
        None,
        description="Base64 client secret of the AudioHook integration (per key: api_keys[].audiohook_client_secret)"
        "; set, upgrades must carry a valid signature.",
    )
    audiohook_signature_max_age_s: float = Field(
        30.0, gt=0, le=300, description="Oldest AudioHook upgrade signature accepted (from its created time)."
    )
    audiohook_supported_languages: list[bounds.LanguageCode] = Field(
        default_factory=list,
        max_length=bounds.MAX_LANGUAGES,
        description='JSON list of language codes (["en-US","de-DE"]) an AudioHook opened lists when the open asks '
        "(Transcription Connector) and the integration's customConfig.supportedLanguages names none.",
    )

    # --- Twilio, Vonage, jambonz, and result webhooks -----------------------------------------------------
    twilio_auth_token: SecretStr | None = Field(
        None, description="Twilio auth token; set, /v1/twilio upgrades must carry a valid X-Twilio-Signature."
    )
    vonage_call_header: str = Field(
        "", description="A custom header of Vonage's first frame also sent as the call's id in webhooks (callId)."
    )
    webhook_url: str = Field(
        "", description="Where Twilio/Vonage results are POSTed (per key: api_keys[].webhook_url); empty: nowhere."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Standard Webhooks secret whsec_<base64> that signs each POST (per key: api_keys[])."
    )
    webhook_timeout_s: float = Field(5.0, gt=0, description="Bound on one webhook POST (connect, send, answer).")
    webhook_attempts: int = Field(5, ge=1, le=20, description="Attempts per webhook before it is dropped.")
    webhook_retry_window_s: float = Field(
        60.0, gt=0, description="No attempt of a webhook starts later than this after it was queued."
    )
    webhook_backoff_s: float = Field(0.5, gt=0, description="Wait before a webhook's first retry; doubles each time.")
    webhook_concurrency: int = Field(32, ge=1, description="Webhook POSTs in flight at once, all calls together.")

    @model_validator(mode="after")
    def _ttl_within_the_maximum(self) -> Self:
        # Minted tokens silently got the maximum's life instead. The default (60 s) just follows a lower
        # maximum (GATEWAY_TOKEN_MAX_TTL_S=30 alone is a fine choice), as routes/tokens clamps it.
        if "token_ttl_s" in self.model_fields_set and self.token_ttl_s > self.token_max_ttl_s:
            raise ValueError(
                "GATEWAY_TOKEN_TTL_S: longer than GATEWAY_TOKEN_MAX_TTL_S (a token may not live longer than the"
                " maximum): lower it or raise the maximum"
            )
        return self

    # --- embedded simulator --------------------------------------------------------------------------
    simulator_port: int = Field(0, ge=0, le=65535, description="Port of the embedded simulator (0: any free).")

    # --- demo page ---------------------------------------------------------------------------------------
    demo_page: bool | None = Field(
        None, description="Serve the demo page at / and its files at /static/; unset: only in simulator mode."
    )
