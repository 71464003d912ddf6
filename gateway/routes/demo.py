"""The demo page at ``/`` and its files (the JavaScript client among them) at ``/static/``.

On by default in simulator mode only; ``GATEWAY_DEMO_PAGE=true|false`` forces it. When off, both
paths answer 404, so a production gateway exposes nothing beyond its APIs. The page loads nothing
from elsewhere: a strict Content-Security-Policy allows only this origin (fetch and WebSocket).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from gateway.service import service_of

router = APIRouter(tags=["demo"])

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # module scripts and worklets need a JavaScript type
    ".css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
}


def demo_enabled(request: Request) -> bool:
    gateway = service_of(request)
    configured: bool | None = gateway.settings.demo_page
    return gateway.simulator_mode if configured is None else configured


@cache
def _static_files() -> dict[str, bytes]:
    """Every served file of ``gateway/static/``, read once. A name a client asks for is only looked up
    here: it never reaches the file system and is never kept (a memo keyed by it would grow for ever)."""
    files = resources.files("gateway").joinpath("static").iterdir()
    return {f.name: f.read_bytes() for f in files if f.is_file() and _suffix(f.name) in MEDIA_TYPES}


def _suffix(name: str) -> str:
    return name[name.rfind(".") :] if "." in name else ""


def _serve(request: Request, name: str) -> Response:
    body = _static_files().get(name) if demo_enabled(request) else None
    if body is None:
        raise HTTPException(status_code=404)
    if name == "index.html":
        mode = b"true" if service_of(request).simulator_mode else b"false"
        body = body.replace(b"__SIMULATOR_MODE__", mode)
    return Response(body, media_type=MEDIA_TYPES[_suffix(name)], headers=_HEADERS)


@router.get("/", summary="Demo page (simulator mode, or GATEWAY_DEMO_PAGE=true)", response_class=Response)
async def index(request: Request) -> Response:
    return _serve(request, "index.html")


@router.get("/static/{name}", summary="Demo page files and the JavaScript client", response_class=Response)
async def static_file(request: Request, name: str) -> Response:
    return _serve(request, name)
