"""The app factory: routers, middleware, and a lifespan that opens the process's services.

With no upstream target configured the gateway starts the Data Flow simulator in-process on a
loopback port (simulator mode), so ``dataflow-gateway`` alone gives a working service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from gateway import __version__
from gateway.adapters import routes as websockets
from gateway.connections.cap import close_refusal_logs
from gateway.routes import demo, docs, health, ops, tokens
from gateway.routes.body_limit import BodyLimit
from gateway.routes.error_handlers import RefusalCounter, install_error_handlers
from gateway.routes.hosts import HostGuard
from gateway.routes.http_conventions import HttpConventions
from gateway.routes.openapi import install_openapi, operation_id
from gateway.security import CredentialScrubber
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
            close_refusal_logs(app)  # what the last minute of connection refusals counted

    app = FastAPI(
        title="dataflow-gateway",
        version=__version__,
        description="REST/WebSocket gateway in front of Knovvu Data Flow. The WebSocket protocols are "
        "described by the AsyncAPI document at /asyncapi.yaml. Every error is answered as "
        '`{"error": {"code", "message", "retryable"}}`.',
        lifespan=lifespan,
        docs_url=None,  # gateway.routes.docs serves both pages with their files: no CDN, works offline
        redoc_url=None,
        generate_unique_id_function=operation_id,
        # No trailing-slash redirect: Starlette's builds an absolute Location from the client's Host header
        # (an open redirect wherever any host is accepted), and it would drop a /t/<secret> path credential
        # and a ?token= (lifted out of the URL before routing). Paths are exact; "/docs/" is a 404.
        redirect_slashes=False,
    )
    install_openapi(app, auth_required=config.auth_required, admin_token=config.admin_token is not None)
    install_error_handlers(app)
    for router in (websockets.router, recognize.router, tokens.router,
                   health.router, ops.router, docs.router, demo.router):  # fmt: skip
        app.include_router(router)
    app.add_middleware(HostGuard, public_hosts=config.public_hosts, auth_required=config.auth_required)
    # Inside the scrubber (paths as rewritten) and the refusal counter (its 413/408 are counted).
    # Every route of the upload router streams its body under its own limits: those are exempt.
    uploads = frozenset(route.path for route in recognize.router.routes if isinstance(route, APIRoute))
    app.add_middleware(BodyLimit, max_bytes=config.max_control_message_bytes, timeout_s=config.start_timeout_s,
                       unbounded_paths=uploads)  # fmt: skip
    app.add_middleware(RefusalCounter)  # outside HostGuard: its refusals count too
    app.add_middleware(HttpConventions)  # HEAD as GET, nosniff and a default policy on every answer
    app.add_middleware(CredentialScrubber)  # added last, runs first: no credential reaches anything else
    return app
