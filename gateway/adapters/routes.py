"""The WebSocket endpoints: each path is one dialect on the one driver."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from gateway.adapters.audiocodes import AudioCodesDialect
from gateway.adapters.dataflow_ws import DataflowDialect
from gateway.adapters.native import NativeDialect
from gateway.adapters.ws import Connection
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
