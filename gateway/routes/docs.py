"""Serves the AsyncAPI description of the WebSocket protocols beside FastAPI's OpenAPI."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter(tags=["documentation"])


@router.get("/asyncapi.yaml", summary="AsyncAPI document of the WebSocket protocols", response_class=Response)
async def asyncapi() -> Response:
    text = resources.files("gateway").joinpath("asyncapi.yaml").read_text(encoding="utf-8")
    return Response(text, media_type="application/yaml")
