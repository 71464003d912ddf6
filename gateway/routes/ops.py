"""Operator endpoints: Prometheus metrics and the drain trigger for Kubernetes preStop hooks."""

from __future__ import annotations

import hmac
import ipaddress
import math

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.errors import BadRequest, GatewayError, Unauthorized
from gateway.errors.http import error_response
from gateway.service import service_of

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(service_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _admin_allowed(request: Request) -> bool:
    token = service_of(request).settings.admin_token
    if token is not None:
        sent = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        return hmac.compare_digest(sent.encode(), expected.encode())
    if "origin" in request.headers:
        # A browser's request (a page on any site can POST here from its visitor's machine, no preflight
        # needed): the loopback rule is for the preStop hook and operators' tools, which send no Origin.
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.post(
    "/internal/drain",
    summary="Start draining this replica",
    description="Readiness fails at once, new sessions are refused, live sessions get GATEWAY_DRAIN_BUDGET_S "
    "(or ?budget_s=, 0 to GATEWAY_MAX_SESSION_S) to finish, then close with 1001. Needs "
    "`Authorization: Bearer <GATEWAY_ADMIN_TOKEN>`, or, when no admin token is set, a loopback caller that is not "
    "a browser (no `Origin` header).",
    status_code=202,
)
async def drain(request: Request, budget_s: float | None = None) -> Response:
    gateway = service_of(request)
    guessed = gateway.settings.admin_token is not None and "authorization" in request.headers
    # From an address past GATEWAY_AUTH_FAILURES_PER_MINUTE the admin token is not even compared: a 429 for a
    # wrong guess and a 202 for the right one let guessing go on at line rate, the throttle its oracle.
    error: GatewayError | None = gateway.gate.throttled(request.scope) if guessed else None
    if error is None and not _admin_allowed(request):
        error = Unauthorized("admin credential required")
        if guessed:  # a wrong guess counts against its address like any credential
            error = gateway.gate.failed_attempt(request.scope) or error
    if error is not None:
        gateway.registry.deny("admin_unauthorized" if isinstance(error, Unauthorized) else error.error_code)
        return error_response(error)
    # inf would keep sessions (and a later SIGTERM, which joins this drain) waiting for ever; nan would
    # close them all at once: a budget is a finite span no longer than a session may last.
    longest = gateway.settings.max_session_s
    if budget_s is not None and not (math.isfinite(budget_s) and 0 <= budget_s <= longest):
        return error_response(BadRequest(f"budget_s must be a number from 0 to {longest:g} (GATEWAY_MAX_SESSION_S)"))
    gateway.drain(budget_s)
    waiting = gateway.registry.occupied - gateway.registry.active  # accepted, no slot yet: the drain serves them too
    return JSONResponse({"draining": True, "sessions": gateway.registry.active, "waiting": waiting}, status_code=202)
