"""The app factory: routers, middleware, and a lifespan that opens the process's services.

With no upstream target configured the gateway starts the Data Flow simulator in-process on a
loopback port (simulator mode), so ``dataflow-gateway`` alone gives a working service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway import __version__
from gateway.adapters import routes as websockets
from gateway.routes import demo, docs, health, ops, tokens
from gateway.security import CredentialScrubber, HostGuard
from gateway.service import Gateway, check_auth_mode
from gateway.settings import Settings, load_settings
from gateway.upload import route as recognize


def create_app(settings: Settings | None = None) -> FastAPI:
    config = settings or load_settings()
    check_auth_mode(config)  # fail at construction, not at the first request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = await Gateway.open(config)
        app.state.gateway = gateway
        try:
            yield
        finally:
            await gateway.aclose()

    app = FastAPI(
        title="dataflow-gateway",
        version=__version__,
        description="REST/WebSocket gateway in front of Knovvu Data Flow. The WebSocket protocols are "
        "described by the AsyncAPI document at /asyncapi.yaml.",
        lifespan=lifespan,
    )
    for router in (websockets.router, recognize.router, tokens.router,
                   health.router, ops.router, docs.router, demo.router):  # fmt: skip
        app.include_router(router)
    app.add_middleware(HostGuard, public_hosts=config.public_hosts, auth_required=config.auth_required)
    app.add_middleware(CredentialScrubber)  # added last, runs first: no credential reaches anything else
    return app
