"""``POST /v1/tokens``: an API-key holder mints a short-lived browser token.

The caller is identified before FastAPI reads the body: an anonymous or refused caller is answered
without a byte of its body being read (the body is bounded anyway: :mod:`gateway.routes.body_limit`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import Principal
from gateway.config.bounds import Origin
from gateway.errors import BadRequest, ErrorCode, GatewayError, TokensNotConfigured
from gateway.errors.http import error_response
from gateway.security import SUBPROTOCOL
from gateway.service import service_of

_CALLER = "gateway.token_caller"  # scope key of the principal identified before the body is read


class CallerFirstRoute(APIRoute):
    """Identifies the caller, and answers a refusal, before FastAPI reads and parses the body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                request.scope[_CALLER] = service_of(request).gate.identify(request.scope, request.headers)
            except GatewayError as exc:
                return error_response(exc)
            return await handler(request)

        return route


router = APIRouter(route_class=CallerFirstRoute, tags=["authentication"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    projects: list[str] | None = Field(None, description="Projects the token may run (default: the key's).")
    origin: Origin | None = Field(
        None,
        description="The only Origin the token works from, spelled as browsers send it (https://app.example.com: "
        "lower case, no path, no default port); one the gateway allows on WebSocket handshakes.",
    )
    max_session_seconds: float | None = Field(None, alias="maxSessionSeconds", gt=0)
    ttl_seconds: float | None = Field(None, alias="ttlSeconds", gt=0, description="Time to start a session with it.")
    single_use: bool = Field(False, alias="singleUse", description="Refuse a second session (per replica).")


class TokenResponse(BaseModel):
    token: str
    expires_at: int = Field(alias="expiresAt", description="The token's exp: Unix time in whole seconds.")
    subprotocols: list[str] = Field(description="Pass as the WebSocket constructor's protocols argument.")


@router.post(
    "/v1/tokens",
    summary="Mint a browser token",
    response_model=TokenResponse,  # security and error responses: gateway.routes.openapi
)
async def mint_token(request: Request, response: Response, body: TokenRequest) -> Any:
    gateway = service_of(request)
    settings = gateway.settings
    try:
        owner: Principal | None = request.scope[_CALLER]
        if owner is None:  # pragma: no cover - identify() returns a principal when in_band is off
            raise GatewayError("no principal")
        if body.origin is not None and not gateway.gate.origin_allowed(body.origin, request.scope, request.headers):
            # A token no page could use: its handshake would get 403 origin_not_allowed, which a browser's
            # page only sees as a failed connection. Same rules as the handshake's (the Host of this request
            # stands for the handshake's when "same origin" decides).
            raise BadRequest("invalid parameters: body.origin: not an origin this gateway allows on WebSocket "
                             "handshakes (GATEWAY_ALLOWED_ORIGINS, GATEWAY_PUBLIC_HOSTS)",
                             code=ErrorCode.INVALID_PARAMETERS)  # fmt: skip
        ttl = min(body.ttl_seconds or settings.token_ttl_s, settings.token_max_ttl_s)
        if not gateway.gate.auth.can_mint:
            raise TokensNotConfigured("browser tokens are not configured on this gateway (GATEWAY_TOKEN_SIGNING_KEY)")
        token, expires = gateway.gate.auth.mint(
            owner, projects=body.projects, origin=body.origin, max_session_s=body.max_session_seconds,
            ttl_s=ttl, single_use=body.single_use,
        )  # fmt: skip
    except GatewayError as exc:
        return error_response(exc)
    # A bearer credential: no browser, proxy or CDN cache may keep it (RFC 6749 5.1).
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return {"token": token, "expiresAt": expires, "subprotocols": [SUBPROTOCOL, f"bearer.{token}"]}
