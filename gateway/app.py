"""App factory and lifespan: one upstream channel, token provider and session registry per process.

With no upstream target configured the gateway starts the Data Flow simulator in-process on a
loopback port (simulator mode), so ``dataflow-gateway`` alone gives a working service.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from pydantic import SecretStr

from gateway import __version__
from gateway.adapters import audiocodes, dataflow_ws, native
from gateway.registry import SessionRegistry
from gateway.routes import demo, docs, health, recognize
from gateway.settings import Settings, load_settings
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.upstream.client import UpstreamClient
from gateway.upstream.token import StaticTokenProvider, TokenProvider, token_provider_from_settings

log = logging.getLogger(__name__)

SIMULATOR_PROJECT = "demo"


@dataclass
class Gateway:
    """Process-wide state shared by every request."""

    settings: Settings
    upstream: UpstreamClient
    tokens: TokenProvider
    registry: SessionRegistry
    simulator: DataflowSimulator | None = None

    @property
    def simulator_mode(self) -> bool:
        return self.simulator is not None

    @classmethod
    async def open(cls, settings: Settings) -> Gateway:
        simulator: DataflowSimulator | None = None
        tokens: TokenProvider
        if settings.simulator_mode:
            token = secrets.token_urlsafe(24)
            simulator = DataflowSimulator(SimulatorConfig(token=token, tenant=settings.upstream_tenant))
            await simulator.start("127.0.0.1", settings.simulator_port)
            log.warning(
                "SIMULATOR MODE: no GATEWAY_UPSTREAM_TARGET configured; serving the embedded Data Flow "
                "simulator on %s (DTMF digits are 'recognised'). Set GATEWAY_UPSTREAM_TARGET for production.",
                simulator.target,
            )
            if not settings.default_project:
                settings = settings.model_copy(update={"default_project": SIMULATOR_PROJECT})
            tokens = StaticTokenProvider(SecretStr(token))
            upstream = UpstreamClient(settings, tokens, target=simulator.target)
        else:
            tokens = token_provider_from_settings(settings)
            upstream = UpstreamClient(settings, tokens)
        return cls(settings, upstream, tokens, SessionRegistry(settings.max_sessions), simulator)

    async def aclose(self) -> None:
        for session in list(self.registry.sessions):
            session.abort("shutdown")
        await self.upstream.aclose()
        await self.tokens.aclose()
        if self.simulator is not None:
            await self.simulator.stop(None)


def create_app(settings: Settings | None = None) -> FastAPI:
    config = settings or load_settings()

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
    for router in (native.router, dataflow_ws.router, audiocodes.router, recognize.router, health.router,
                   docs.router, demo.router):  # fmt: skip
        app.include_router(router)
    return app
