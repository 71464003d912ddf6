"""Run the gateway under uvicorn with the settings' pinned WebSocket options."""

from __future__ import annotations

import logging

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings, load_settings


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws=settings.ws_implementation,
        ws_max_size=settings.max_ws_message_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,  # compression costs CPU per frame and audio does not compress
        lifespan="on",
        log_level=settings.log_level,
        server_header=False,
    )


def serve() -> int:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.Server(uvicorn_config(settings)).run()
    return 0
