"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.service import service_of

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Process is alive")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/readyz", summary="Ready for new sessions")
async def readyz(request: Request) -> JSONResponse:
    gateway = service_of(request)
    checks = {
        "upstream_channel": gateway.upstream.ready(),
        "token": gateway.tokens.available,
        "not_draining": not gateway.registry.draining,
        "below_capacity": not gateway.registry.full,
    }
    ready = all(checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks, "sessions": gateway.registry.active}
    return JSONResponse(body, status_code=200 if ready else 503)
