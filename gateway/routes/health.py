"""Liveness and readiness probes.

Readiness answers one question: can this replica take new sessions (not draining, below its
session cap)? Data Flow's state is deliberately not part of it: an upstream outage hits every
replica at once, so failing readiness would empty the Service and clients would get the load
balancer's bare 503 instead of the gateway's retryable ``upstream_unavailable``. The upstream's
state is reported in ``/healthz`` (and in ``/readyz``) as information instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.service import Gateway, service_of

router = APIRouter(tags=["operations"])


def upstream_status(gateway: Gateway) -> dict[str, Any]:
    """Whether new Data Flow streams can open now: a usable channel and a token."""
    channel, token = gateway.upstream.ready(), gateway.tokens.available
    return {"status": "ok" if channel and token else "unavailable", "channel": channel, "token": token}


@router.get("/healthz", summary="Process is alive")
async def healthz(request: Request) -> dict[str, Any]:
    # Always 200 while the process serves: liveness must not restart pods over a Data Flow outage.
    return {"status": "ok", "upstream": upstream_status(service_of(request))}


@router.get("/readyz", summary="Ready for new sessions")
async def readyz(request: Request) -> JSONResponse:
    gateway = service_of(request)
    checks = {"not_draining": not gateway.registry.draining, "below_capacity": not gateway.registry.full}
    ready = all(checks.values())
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": checks,
        "sessions": gateway.registry.active,
        "waiting": gateway.registry.occupied - gateway.registry.active,  # accepted, no slot yet: a drain serves them
        "upstream": upstream_status(gateway),
    }
    return JSONResponse(body, status_code=200 if ready else 503)
