"""The process's services: the upstream client, token provider, session registry, access gate and
(in simulator mode) the embedded simulator, opened once per process and shared by every request.

Endpoints reach them through :func:`service_of`, never through the app module.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.requests import HTTPConnection

from gateway.auth import Authenticator
from gateway.config.startup import placeholder_problems
from gateway.errors import ErrorCode, GoingAway
from gateway.observability import GatewayMetrics
from gateway.relay import failures
from gateway.relay.limits import SessionLimits
from gateway.relay.outbox_budget import OutboxBudget
from gateway.relay.registry import SessionRegistry
from gateway.relay.session import Session
from gateway.security import AccessGate
from gateway.settings import Settings, SettingsError
from gateway.simulator.records import SimulatorConfig
from gateway.simulator.server import DataflowSimulator
from gateway.upload.spool import SpoolBudget
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.pool_metrics import PoolCollector
from gateway.upstream.token import StaticTokenProvider, TokenProvider, token_provider_from_settings
from gateway.webhooks.delivery import RetryPolicy, WebhookDeliverer
from gateway.webhooks.targets import WebhookTargets

log = logging.getLogger(__name__)

SIMULATOR_PROJECT = "demo"


@dataclass
class Gateway:
    """Process-wide state shared by every request."""

    settings: Settings
    upstream: UpstreamClient
    tokens: TokenProvider
    registry: SessionRegistry
    gate: AccessGate
    webhooks: WebhookDeliverer
    webhook_targets: WebhookTargets
    outbox_budget: OutboxBudget  # what all sessions hold for their clients, together
    upload_spool: SpoolBudget  # what all uploads hold of Audio sent before its Parameters
    simulator: DataflowSimulator | None = None
    _drain_task: asyncio.Task[None] | None = None
    _drain_ends: float | None = None  # monotonic time the drain's budget runs out

    @property
    def metrics(self) -> GatewayMetrics:
        return self.registry.metrics

    @property
    def simulator_mode(self) -> bool:
        return self.simulator is not None

    @classmethod
    async def open(cls, settings: Settings) -> Gateway:
        simulator: DataflowSimulator | None = None
        tokens: TokenProvider
        if settings.simulator_mode:
            token = secrets.token_urlsafe(24)
            simulator = DataflowSimulator(
                SimulatorConfig(
                    token=token,
                    tenant=settings.upstream_tenant,
                    proto_module=settings.upstream_proto_module,
                    method_path=settings.upstream_method_path,
                )
            )
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
        await upstream.start()
        tokens.keep_fresh()
        metrics = GatewayMetrics()
        metrics.upstream_write_interval.set_function(upstream.audio_write_interval_s)
        metrics.registry.register(PoolCollector(upstream.pool))
        registry = SessionRegistry(settings.max_sessions, metrics)
        gate = AccessGate(settings, _authenticator(settings), registry)
        policy = RetryPolicy(settings.webhook_attempts, settings.webhook_retry_window_s, settings.webhook_timeout_s,
                             settings.webhook_backoff_s)  # fmt: skip
        targets = WebhookTargets.from_settings(settings)
        webhooks = WebhookDeliverer(policy, settings.webhook_concurrency, metrics.registry, receivers=targets.receivers)
        budget = OutboxBudget(settings.client_outbox_total_bytes)
        spool = SpoolBudget(settings.upload_spool_bytes)
        return cls(settings, upstream, tokens, registry, gate, webhooks, targets, budget, spool, simulator)

    def drain(self, budget_s: float | None = None) -> asyncio.Task[None]:
        """Start draining (idempotent): readiness fails and new sessions are refused at once; live
        sessions are told, get ``budget_s`` to finish, then are closed with 1001."""
        if self._drain_task is None:
            budget = self.settings.drain_budget_s if budget_s is None else budget_s
            self.registry.draining = True
            self.metrics.drain_state.set(budget)
            log.warning("draining: refusing new sessions; %d live sessions get %g s", self.registry.active, budget)
            self._drain_ends = time.monotonic() + budget
            self._drain_task = asyncio.get_running_loop().create_task(self._drain(budget), name="gateway-drain")
        return self._drain_task

    def new_session(self, limits: SessionLimits, dialect: str, key: str | None, flow_reports: bool = True) -> Session:
        """A session of ``dialect`` under ``limits``, counted for ``key``, on this process's upstream."""
        return Session(self.upstream, self.settings, limits, metrics=self.metrics, dialect=dialect, key=key,
                       flow_reports=flow_reports, budget=self.outbox_budget)  # fmt: skip

    def tell_drain(self, session: Session) -> None:
        """A session that started while a drain was under way is told of it at once."""
        if (notice := self.drain_notice()) is not None:
            session.notify(notice)

    def drain_notice(self) -> GoingAway | None:
        """What a session is told of a drain under way (live ones when it begins, later ones as they
        start): the time left of its budget. None while not draining."""
        if self._drain_ends is None:
            return None
        left = round(max(0.0, self._drain_ends - time.monotonic()), 1)
        return GoingAway(f"this replica is draining; finish within {left:g} s or reconnect", code=ErrorCode.DRAINING)

    async def _drain(self, budget_s: float) -> None:
        notice = self.drain_notice()
        assert notice is not None
        for connection in self.registry.drainables():
            connection.notify(notice)
        deadline = time.monotonic() + budget_s
        while self.registry.occupied and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.registry.send_away()  # sessions, and connections and uploads whose session has not started
        # Let the adapters deliver their goodbyes (error, closed, close 1001) before uvicorn closes sockets.
        goodbye_deadline = time.monotonic() + self.settings.client_send_timeout_s
        while self.registry.occupied and time.monotonic() < goodbye_deadline:
            await asyncio.sleep(0.02)
        # Result webhooks (the summaries of calls just ended too) get the same time: the budget, or the goodbyes'.
        if await self.webhooks.drain(max(deadline, goodbye_deadline) - time.monotonic()):
            log.warning("drained: %d result webhooks were still pending", self.webhooks.pending)
        told = self.registry.sent_away  # also those a second signal sent away before the budget's end
        by_dialect = ", ".join(f"{dialect} {n}" for dialect, n in sorted(told.items()))
        held = self.registry.active  # a slot held after the goodbyes: its holder had no drain hook or did not end
        log.warning("drained: %d connections were sent away with going_away%s; %d slots still held",
                    told.total(), f" ({by_dialect})" if told else "", held)  # fmt: skip

    async def aclose(self) -> None:
        for connection in self.registry.drainables():
            connection.go_away()
        await self.upstream.aclose()
        await self.tokens.aclose()
        await self.webhooks.aclose()
        failures.close()  # what the last window of upstream stream failures counted
        if self.simulator is not None:
            await self.simulator.stop(None)


def check_auth_mode(settings: Settings) -> None:
    """What an app refuses to be built with, from ``Settings`` however made: ``load_settings`` checks these
    (and more) from the environment; an embedding app that builds ``Settings`` itself gets the checks that
    keep it safe: authentication off only where allowed, no placeholder secret from our examples (a
    signing key anyone can read in this repository verifies tokens anyone can forge)."""
    if problems := placeholder_problems(settings):
        raise SettingsError(*problems)
    if not settings.auth_required and not settings.simulator_mode and not settings.allow_insecure_no_auth:
        raise SettingsError(
            "GATEWAY_AUTH=none is only allowed in simulator mode or with GATEWAY_ALLOW_INSECURE_NO_AUTH=true"
        )


def _authenticator(settings: Settings) -> Authenticator:
    check_auth_mode(settings)
    if not settings.auth_required:
        log.warning("AUTHENTICATION IS OFF: anyone who can reach this gateway can spend its Data Flow credential")
    elif not settings.api_keys:
        log.warning("authentication is required but GATEWAY_API_KEYS is empty: every session will be refused")
    elif len(settings.api_keys) > 1 and (open_keys := [k.name for k in settings.api_keys if k.max_sessions is None]):
        log.warning(  # tenants share the replica: one without a cap can take every slot from the others
            "API keys without max_sessions may each take all GATEWAY_MAX_SESSIONS (%d) slots from the other "
            "keys: %s", settings.max_sessions, ", ".join(open_keys[:8]) + (" …" if len(open_keys) > 8 else ""),
        )  # fmt: skip
    key = settings.token_signing_key.get_secret_value() if settings.token_signing_key else ""
    if not key and settings.simulator_mode:
        key = secrets.token_urlsafe(32)  # browser tokens work on this one process only
    earlier = tuple(k.get_secret_value() for k in settings.token_verify_keys)
    return Authenticator(settings.api_keys, key, required=settings.auth_required,
                         max_token_life_s=settings.token_max_ttl_s, earlier_signing_keys=earlier)  # fmt: skip


def service_of(connection: HTTPConnection) -> Gateway:
    """The process's services, for a request or a WebSocket (set by the app's lifespan)."""
    gateway: Gateway = connection.app.state.gateway
    return gateway
