"""The WebSocket endpoints: each path is one dialect on the one driver."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from gateway.adapters.audiocodes import AudioCodesDialect
from gateway.adapters.audiohook import AudioHookDialect
from gateway.adapters.call_results import IdentifiedCall, WebhookResults
from gateway.adapters.dataflow_ws import DataflowDialect
from gateway.adapters.jambonz import JambonzDialect
from gateway.adapters.jambonz_listen import JambonzListenDialect
from gateway.adapters.native import NativeDialect
from gateway.adapters.twilio import TwilioDialect
from gateway.adapters.vonage import VonageDialect
from gateway.adapters.ws import Connection
from gateway.auth import Principal, key_of
from gateway.errors import GatewayError
from gateway.service import Gateway, service_of

router = APIRouter()


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    service = service_of(ws)
    s = service.settings
    await Connection(ws, NativeDialect(s.default_project, max_start_bytes=s.max_control_message_bytes), service).run()


@router.websocket("/project-runner")
async def project_runner(ws: WebSocket) -> None:
    service = service_of(ws)
    await Connection(ws, _dataflow_dialect(service, ""), service).run()


@router.websocket("/project-runner/{project}")
async def project_runner_for(ws: WebSocket, project: str) -> None:
    service = service_of(ws)
    await Connection(ws, _dataflow_dialect(service, project), service).run()


def _dataflow_dialect(service: Gateway, path_project: str) -> DataflowDialect:
    s = service.settings
    return DataflowDialect(path_project, s.default_project, max_start_bytes=s.max_control_message_bytes)


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
    languages = service.settings.audiohook_supported_languages
    dialect = AudioHookDialect(project, session_id=session_id, organization_id=organization_id, languages=languages)
    await Connection(ws, dialect, service).run()


# --- telephony platforms: results of Twilio, Vonage and jambonz listen calls go to the result webhook -----


def _results(service: Gateway, principal: Principal | None, call: IdentifiedCall) -> WebhookResults:
    target = service.webhook_targets.for_key(key_of(principal))
    return WebhookResults(call, service.webhooks, target, service.settings.max_transcript_bytes)


@router.websocket("/v1/twilio")
async def twilio(ws: WebSocket) -> None:
    """Twilio Media Streams (also at /t/<key>/v1/twilio: Twilio forbids query strings). The signature is
    checked here, before the driver admits and accepts."""
    service = service_of(ws)
    gate = service.gate
    try:
        principal = gate.identify(ws.scope, ws.headers)
        gate.verify_twilio(ws.scope, ws.headers)
    except GatewayError as exc:
        await ws.send_denial_response(gate.denial(exc))
        return
    named = ws.query_params.get("project")
    dialect = TwilioDialect(named or service.settings.default_project, project_from_url=bool(named))
    await Connection(ws, dialect, service, _results(service, principal, dialect)).run()


@router.websocket("/v1/vonage")
async def vonage(ws: WebSocket) -> None:
    service = service_of(ws)
    named = ws.query_params.get("project")
    dialect = VonageDialect(
        named or service.settings.default_project, project_from_url=bool(named),
        call_header=service.settings.vonage_call_header,
    )  # fmt: skip
    await _webhook_call(ws, service, dialect)


@router.websocket("/v1/jambonz")
async def jambonz(ws: WebSocket) -> None:
    service = service_of(ws)
    project = ws.query_params.get("project") or service.settings.default_project
    await Connection(ws, JambonzDialect(project), service).run()


@router.websocket("/v1/jambonz/listen")
async def jambonz_listen(ws: WebSocket) -> None:
    """jambonz's listen verb: its wsAuth arrives as Basic authorization (the password is the key)."""
    service = service_of(ws)
    named = ws.query_params.get("project")
    dialect = JambonzListenDialect(named or service.settings.default_project, project_from_url=bool(named))
    await _webhook_call(ws, service, dialect)


async def _webhook_call(ws: WebSocket, service: Gateway, dialect: VonageDialect | JambonzListenDialect) -> None:
    """A call whose credential comes with the handshake and whose results go to the webhook."""
    try:
        principal = service.gate.identify(ws.scope, ws.headers)
    except GatewayError as exc:
        await ws.send_denial_response(service.gate.denial(exc))
        return
    await Connection(ws, dialect, service, _results(service, principal, dialect)).run()
