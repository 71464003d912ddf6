"""The WebSocket endpoints: each path is one dialect on the one driver."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from gateway.adapters.audiocodes import AudioCodesDialect
from gateway.adapters.audiohook import AudioHookDialect
from gateway.adapters.dataflow_ws import DataflowDialect
from gateway.adapters.native import NativeDialect
from gateway.adapters.ws import Connection
from gateway.errors import GatewayError
from gateway.service import service_of

router = APIRouter()


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    service = service_of(ws)
    await Connection(ws, NativeDialect(service.settings.default_project), service).run()


@router.websocket("/project-runner")
async def project_runner(ws: WebSocket) -> None:
    service = service_of(ws)
    await Connection(ws, DataflowDialect("", service.settings.default_project), service).run()


@router.websocket("/project-runner/{project}")
async def project_runner_for(ws: WebSocket, project: str) -> None:
    service = service_of(ws)
    await Connection(ws, DataflowDialect(project, service.settings.default_project), service).run()


@router.websocket("/v1/audiocodes")
async def audiocodes(ws: WebSocket) -> None:
    service = service_of(ws)
    project = ws.query_params.get("project") or service.settings.default_project
    await Connection(ws, AudioCodesDialect(project), service).run()


@router.websocket("/v1/audiohook")
async def audiohook(ws: WebSocket) -> None:
    """Genesys AudioHook: the signature is checked here, before the driver admits and accepts."""
    service = service_of(ws)
    gate = service.gate
    try:
        principal = gate.identify(ws.scope, ws.headers)
        if principal is not None:
            gate.verify_audiohook(principal, ws.scope, ws.headers)
    except GatewayError as exc:
        await ws.send_denial_response(gate.denial(exc))
        return
    project = ws.query_params.get("project") or service.settings.default_project
    session_id = ws.headers.get("audiohook-session-id", "")
    organization_id = ws.headers.get("audiohook-organization-id", "")
    dialect = AudioHookDialect(project, session_id=session_id, organization_id=organization_id)
    await Connection(ws, dialect, service).run()
