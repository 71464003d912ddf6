"""The API documents and their pages: Swagger UI at ``/docs``, ReDoc at ``/redoc``, the AsyncAPI
description of the WebSocket protocols at ``/asyncapi.yaml``.

The pages load nothing from elsewhere (gateways run in closed networks): Swagger UI's and ReDoc's
files come from the ``fastapi-offline`` package and are served here under ``/docs/assets/``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

router = APIRouter(tags=["documentation"])

OPENAPI_URL = "/openapi.json"
_TITLE = "dataflow-gateway"
_ASSETS = "/docs/assets"
# The only files served, with their media types: a closed list, so no name from a URL reaches the disk.
_ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# Assets change only with the package version; a day of caching spares reloads of 2.8 MB.
_ASSET_HEADERS = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
# The pages may load from this origin only (FastAPI's page templates need inline script and style;
# ReDoc's search runs in a blob: worker). This also stops ReDoc's badge image from asking a CDN.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}


@cache
def _asset(name: str) -> bytes:
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()


@router.get("/docs", summary="Swagger UI (works offline)", response_class=HTMLResponse)
async def swagger_ui() -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=f"{_TITLE} — API",
        swagger_js_url=f"{_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{_ASSETS}/favicon.png",
        swagger_ui_parameters={"persistAuthorization": False, "tryItOutEnabled": False},
    )
    page.headers.update(_PAGE_HEADERS)
    return page


@router.get("/redoc", summary="ReDoc (works offline)", response_class=HTMLResponse)
async def redoc() -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=OPENAPI_URL,
        title=f"{_TITLE} — API",
        redoc_js_url=f"{_ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{_ASSETS}/favicon.png",
        with_google_fonts=False,
    )
    page.headers.update(_PAGE_HEADERS)
    return page


@router.get(f"{_ASSETS}/{{name}}", summary="Swagger UI and ReDoc files", response_class=Response)
async def docs_asset(name: str) -> Response:
    media_type = _ASSET_TYPES.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail="no such documentation file")
    return Response(_asset(name), media_type=media_type, headers=_ASSET_HEADERS)


@router.get("/asyncapi.yaml", summary="AsyncAPI document of the WebSocket protocols", response_class=Response)
async def asyncapi() -> Response:
    text = resources.files("gateway").joinpath("asyncapi.yaml").read_text(encoding="utf-8")
    return Response(text, media_type="application/yaml")
