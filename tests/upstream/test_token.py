"""Token providers against a real local HTTP token endpoint (uvicorn on a free port)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.errors import UpstreamAuthFailed
from gateway.settings import Settings, SettingsError
from gateway.simulator.server import DataflowSimulator
from gateway.upstream.token import (
    ClientCredentialsTokenProvider,
    StaticTokenProvider,
    TokenProvider,
    token_provider_from_settings,
)
from tests.support.harness import RunningGateway, running_gateway, ws_connect
from tests.support.native_client import start_message
from tests.support.settings import SIM_TOKEN, settings_for

FAILED_FETCH_COOLDOWN_S = 2.0
CLIENT_SECRET = "cs-TOPSECRET-5e0c9a1b7f"
TOKEN_PREFIX = "tok-ISSUED-"
MISSING = object()


@dataclass
class Identity:
    """The token endpoint's behaviour, set by each test; records what it received."""

    url: str = ""
    status: int = 200
    expires_in: object = 3600
    delay_s: float = 0.0
    body: str | None = None  # raw body instead of the JSON answer
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends slow answers at teardown
    statuses: list[int] = field(default_factory=list)  # the first answers' statuses, then ``status``
    access_token: str | None = None  # the token issued every time (Data Flow's, for a gateway's sessions)
    arrived: list[float] = field(default_factory=list)  # time.monotonic() of each request

    async def handle(self, request: Request) -> Response:
        self.requests.append(parse_qs((await request.body()).decode(), keep_blank_values=True))
        self.arrived.append(time.monotonic())
        self.content_types.append(request.headers.get("content-type", ""))
        status = self.statuses.pop(0) if self.statuses else self.status
        if self.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.delay_s)
        if status >= 400:
            # an identity server might echo what it got; the provider must never quote it
            return JSONResponse({"error": "invalid_client", "detail": f"bad {CLIENT_SECRET}"}, status)
        if self.body is not None:
            return PlainTextResponse(self.body, status)
        token = self.access_token or f"{TOKEN_PREFIX}{len(self.issued) + 1}"
        self.issued.append(token)
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "scope": "Wagtail"}
        if self.expires_in is not MISSING:
            answer["expires_in"] = self.expires_in
        return JSONResponse(answer, status)


@pytest.fixture
async def identity() -> AsyncIterator[Identity]:
    stub = Identity()
    app = Starlette(routes=[Route("/connect/token", stub.handle, methods=["POST"])])
    # No logging config: uvicorn's own would stop its loggers propagating for every later test.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_config=None, log_level="warning", ws="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    stub.url = f"http://127.0.0.1:{port}/connect/token"
    yield stub
    stub.release.set()
    server.should_exit = True
    await asyncio.wait_for(task, 10)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


MakeProvider = Callable[..., ClientCredentialsTokenProvider]


async def settled(provider: ClientCredentialsTokenProvider) -> None:
    """Until a refresh under way in the background has ended."""
    async with asyncio.timeout(10):
        while provider._inflight is not None:
            await asyncio.sleep(0.01)


@pytest.fixture
async def make(identity: Identity) -> AsyncIterator[MakeProvider]:
    made: list[ClientCredentialsTokenProvider] = []

    def factory(**overrides: Any) -> ClientCredentialsTokenProvider:
        kwargs: dict[str, Any] = {
            "url": identity.url,
            "client_id": "gateway-client",
            "client_secret": SecretStr(CLIENT_SECRET),
            "scope": "Wagtail",
            "refresh_margin_s": 300.0,
            "fetch_timeout_s": 2.0,
            "attempts": 3,
        }
        kwargs.update(overrides)
        made.append(ClientCredentialsTokenProvider(**kwargs))
        return made[-1]

    yield factory
    for provider in made:
        await provider.aclose()


async def test_form_body_and_token(identity: Identity, make: MakeProvider) -> None:
    provider = make(scope="Wagtail other")
    assert not provider.available
    token = await provider.get()
    assert token.get_secret_value() == f"{TOKEN_PREFIX}1"
    assert provider.available
    assert identity.requests == [
        {
            "grant_type": ["client_credentials"],
            "client_id": ["gateway-client"],
            "client_secret": [CLIENT_SECRET],
            "scope": ["Wagtail other"],
        }
    ]
    assert identity.content_types[0].startswith("application/x-www-form-urlencoded")


async def test_cached_then_refreshed_before_expiry(identity: Identity, make: MakeProvider) -> None:
    clock = FakeClock()
    provider = make(clock=clock)  # expires_in 3600, margin 300: refresh from t0 + 3300
    first = await provider.get()
    clock.now += 3299
    assert await provider.get() == first
    assert len(identity.requests) == 1
    clock.now += 2
    assert await provider.get() == first  # still valid: served while the refresh runs behind it
    await settled(provider)
    second = await provider.get()
    assert second.get_secret_value() == f"{TOKEN_PREFIX}2"
    assert len(identity.requests) == 2


async def test_short_lived_token_refreshed_before_it_expires(identity: Identity, make: MakeProvider) -> None:
    identity.expires_in = "10"  # a string number, shorter than the 300 s margin
    clock = FakeClock()
    provider = make(clock=clock)
    first = await provider.get()
    clock.now += 4.9  # margin shrinks to half the lifetime (5 s): still cached
    assert await provider.get() == first
    await settled(provider)  # a refresh started in the background would have reached the service now
    assert len(identity.requests) == 1
    clock.now += 0.2  # past the refresh point, before expiry
    assert await provider.get() == first
    await settled(provider)
    assert (await provider.get()).get_secret_value() == f"{TOKEN_PREFIX}2"
    assert len(identity.requests) == 2


@pytest.mark.parametrize("expires_in", [MISSING, "soon", -5, None])
async def test_unusable_expires_in_assumes_conservative_lifetime(
    identity: Identity, make: MakeProvider, expires_in: object
) -> None:
    identity.expires_in = expires_in
    clock = FakeClock()
    provider = make(clock=clock)
    await provider.get()
    clock.now += 149  # default 300 s lifetime, margin min(300, 150) = 150
    await provider.get()
    assert len(identity.requests) == 1
    clock.now += 2
    await provider.get()
    await settled(provider)
    assert len(identity.requests) == 2


async def test_concurrent_callers_share_one_request(identity: Identity, make: MakeProvider) -> None:
    identity.delay_s = 0.1
    provider = make()
    tokens = await asyncio.gather(*(provider.get() for _ in range(50)))
    assert {t.get_secret_value() for t in tokens} == {f"{TOKEN_PREFIX}1"}
    assert len(identity.requests) == 1


async def test_concurrent_callers_share_one_failure(identity: Identity, make: MakeProvider) -> None:
    identity.status = 503
    provider = make(attempts=2)
    results = await asyncio.gather(*(provider.get() for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, UpstreamAuthFailed) for r in results)
    assert len(identity.requests) == 2


async def test_outage_fails_after_all_attempts(identity: Identity, make: MakeProvider) -> None:
    identity.status = 500
    provider = make(attempts=3)
    started = time.monotonic()
    with pytest.raises(UpstreamAuthFailed) as caught:
        await provider.get()
    assert time.monotonic() - started < 3  # backoff 0.2 + 0.4
    assert len(identity.requests) == 3
    assert caught.value.retryable
    assert "HTTP 500" in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert caught.value.__cause__ is None  # no chained httpx exception (it would hold the request body)
    assert caught.value.__context__ is None


async def test_a_failed_fetch_is_not_repeated_for_every_caller(identity: Identity, make: MakeProvider) -> None:
    """Without a usable token, each session used to start a fetch of its own as soon as the last one had
    failed: the identity service took one request per session (none of them backed off) during an outage."""
    identity.status = 401
    clock = FakeClock()
    provider = make(clock=clock, attempts=3)
    for _ in range(100):  # sessions arriving one after another while the credentials are refused
        with pytest.raises(UpstreamAuthFailed, match=r"HTTP 401 \(invalid_client\)") as caught:
            await provider.get()
        assert caught.value.retryable is False
        assert caught.value.__context__ is None
    assert len(identity.requests) == 1
    clock.now += FAILED_FETCH_COOLDOWN_S
    identity.status = 503
    for _ in range(3):
        with pytest.raises(UpstreamAuthFailed, match="HTTP 503") as caught:
            await provider.get()
        assert caught.value.retryable
    assert len(identity.requests) == 1 + 3  # one more fetch, of three attempts
    clock.now += FAILED_FETCH_COOLDOWN_S
    identity.status = 200
    assert (await provider.get()).get_secret_value() == f"{TOKEN_PREFIX}1"
    assert len(identity.requests) == 5


async def test_a_refresh_does_not_hold_up_callers_while_the_token_is_valid(
    identity: Identity, make: MakeProvider
) -> None:
    """Callers used to wait for every refresh, through all its attempts (up to 3 x 10 s by default) when the
    identity service hung, although the cached token was valid for minutes more."""
    clock = FakeClock()
    provider = make(clock=clock, fetch_timeout_s=0.5, attempts=3)
    first = await provider.get()
    identity.delay_s = 5.0  # the identity service hangs
    clock.now += 3400  # in the refresh window, 200 s before expiry
    started = time.monotonic()
    assert await asyncio.gather(*(provider.get() for _ in range(20))) == [first] * 20
    assert time.monotonic() - started < 0.2
    await settled(provider)  # one refresh ran behind them: three attempts, all timed out
    assert len(identity.requests) == 1 + 3
    identity.delay_s = 0.0
    assert await provider.get() == first  # the failed refresh's cooldown: no new attempt yet
    await settled(provider)
    assert len(identity.requests) == 4
    clock.now += 11
    assert await provider.get() == first  # starts the next refresh, without waiting for it
    await settled(provider)
    assert (await provider.get()).get_secret_value() == f"{TOKEN_PREFIX}2"
    assert len(identity.requests) == 5


async def test_timeouts_are_bounded(identity: Identity, make: MakeProvider) -> None:
    identity.delay_s = 1.0
    provider = make(attempts=2, fetch_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(UpstreamAuthFailed, match="timeout") as caught:
        await provider.get()
    assert time.monotonic() - started < 1.5
    assert len(identity.requests) == 2
    assert caught.value.retryable


async def test_rejected_credentials_are_not_retried(identity: Identity, make: MakeProvider) -> None:
    identity.status = 401
    provider = make(attempts=3)
    with pytest.raises(UpstreamAuthFailed) as caught:
        await provider.get()
    assert len(identity.requests) == 1
    assert caught.value.retryable is False
    assert "HTTP 401 (invalid_client)" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "reason"),
    [("<html>oops</html>", "non-JSON"), ('{"token": "x"}', "without an access_token"), ("[1]", "without an")],
)
async def test_bad_success_answers_are_failed_attempts(
    identity: Identity, make: MakeProvider, body: str, reason: str
) -> None:
    identity.body = body
    provider = make(attempts=2)
    with pytest.raises(UpstreamAuthFailed) as caught:
        await provider.get()
    assert len(identity.requests) == 2
    assert reason in str(caught.value)
    assert caught.value.retryable


async def test_unreachable_endpoint(make: MakeProvider) -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = make(url=f"http://127.0.0.1:{port}/connect/token", attempts=2)
    started = time.monotonic()
    with pytest.raises(UpstreamAuthFailed, match="connection") as caught:
        await provider.get()
    assert time.monotonic() - started < 3
    assert caught.value.retryable


async def test_stale_but_valid_token_served_when_refresh_fails(identity: Identity, make: MakeProvider) -> None:
    clock = FakeClock()
    provider = make(clock=clock, attempts=2)
    first = await provider.get()
    identity.status = 500
    clock.now += 3400  # in the refresh window, 200 s before expiry
    assert await provider.get() == first
    await settled(provider)
    assert len(identity.requests) == 3
    assert await provider.get() == first  # cooldown: no new attempt right away
    assert len(identity.requests) == 3
    assert provider.available
    clock.now += 201  # now really expired
    assert not provider.available
    with pytest.raises(UpstreamAuthFailed):
        await provider.get()
    identity.status = 200
    clock.now += FAILED_FETCH_COOLDOWN_S  # the failure is remembered this long
    assert (await provider.get()).get_secret_value() == f"{TOKEN_PREFIX}2"


async def test_invalidate(identity: Identity, make: MakeProvider) -> None:
    provider = make()
    first = await provider.get()
    provider.invalidate(first)
    assert not provider.available
    second = await provider.get()
    assert second != first
    assert len(identity.requests) == 2
    provider.invalidate(first)  # a late report about the old token keeps the new one
    assert await provider.get() == second
    assert len(identity.requests) == 2


async def test_injected_client_is_used_and_left_open(identity: Identity) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        provider = ClientCredentialsTokenProvider(
            url=identity.url,
            client_id="gateway-client",
            client_secret=SecretStr(CLIENT_SECRET),
            scope="Wagtail",
            refresh_margin_s=300,
            fetch_timeout_s=2,
            attempts=1,
            http=http,
        )
        await provider.get()
        await provider.aclose()
        assert not http.is_closed
        with pytest.raises(UpstreamAuthFailed, match="closed"):
            await provider.get()


async def test_aclose_during_fetch_fails_waiters(identity: Identity, make: MakeProvider) -> None:
    identity.delay_s = 0.5
    provider = make()
    waiter = asyncio.create_task(provider.get())
    while not identity.requests:
        await asyncio.sleep(0.01)
    await provider.aclose()
    with pytest.raises(UpstreamAuthFailed, match="closed"):
        await waiter


async def test_secrets_never_leak(identity: Identity, make: MakeProvider, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    clock = FakeClock()

    async def failing(call: Callable[[], Awaitable[SecretStr]]) -> None:
        with pytest.raises(UpstreamAuthFailed) as caught:
            await call()
        texts.extend([str(caught.value), repr(caught.value), caught.value.message, repr(caught.value.to_json())])

    provider = make(clock=clock, attempts=2, fetch_timeout_s=0.2)
    texts.append(repr(await provider.get()))
    texts.append(repr(provider))
    clock.now += 3400
    for status in (500, 401):  # failed refreshes: stale token served, warnings logged
        identity.status = status
        texts.append(repr(await provider.get()))
        clock.now += 11
    clock.now += 1000
    await failing(provider.get)  # expired and the refresh fails
    identity.status, identity.delay_s = 200, 0.5
    await failing(make(attempts=2, fetch_timeout_s=0.1).get)
    identity.delay_s, identity.body = 0.0, "not json"
    await failing(make(attempts=1).get)
    identity.body = None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    await failing(make(url=f"http://127.0.0.1:{closed_port}/t", attempts=1).get)
    texts.append(repr(provider))
    provider.invalidate(SecretStr(f"{TOKEN_PREFIX}1"))
    static = StaticTokenProvider(SecretStr(f"{TOKEN_PREFIX}static"))
    static.invalidate(await static.get())
    texts.append(repr(static))

    texts.extend(caplog.text.splitlines())
    texts.extend(record.getMessage() for record in caplog.records)
    assert any("failed" in line for line in caplog.text.splitlines())  # the logs were captured
    secrets = [CLIENT_SECRET, TOKEN_PREFIX, *identity.issued]
    leaks = [text for text in texts for secret in secrets if secret in text]
    assert leaks == []


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOKEN", "IDENTITY_URL", "CLIENT_ID", "CLIENT_SECRET"):
        monkeypatch.delenv(f"GATEWAY_UPSTREAM_{name}", raising=False)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.usefixtures("clean_env")
async def test_from_settings_static() -> None:
    provider = token_provider_from_settings(
        settings(upstream_token="static-tok", upstream_identity_url="https://id.example/connect/token")
    )
    assert isinstance(provider, StaticTokenProvider)
    assert isinstance(provider, TokenProvider)
    assert (await provider.get()).get_secret_value() == "static-tok"
    assert provider.available
    assert "static-tok" not in repr(provider)
    await provider.aclose()


@pytest.mark.usefixtures("clean_env")
async def test_from_settings_client_credentials() -> None:
    provider = token_provider_from_settings(
        settings(
            upstream_identity_url="https://core-identity.eu.knovvu.com/connect/token",
            upstream_client_id="gw",
            upstream_client_secret=CLIENT_SECRET,
            upstream_token_fetch_attempts=2,
        )
    )
    assert isinstance(provider, ClientCredentialsTokenProvider)
    assert "core-identity.eu.knovvu.com" in repr(provider)
    assert CLIENT_SECRET not in repr(provider)
    await provider.aclose()


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("values", "missing"),
    [
        ({}, ["upstream_token", "upstream_identity_url", "upstream_client_id", "upstream_client_secret"]),
        ({"upstream_client_id": "gw-id-value", "upstream_client_secret": CLIENT_SECRET}, ["upstream_identity_url"]),
        ({"upstream_identity_url": "https://id.example/t", "upstream_client_id": "gw-id-value"}, ["client_secret"]),
        ({"upstream_identity_url": "https://id.example/t", "upstream_client_secret": ""}, ["upstream_client_id"]),
    ],
)
def test_from_settings_missing_config(values: dict[str, Any], missing: list[str]) -> None:
    with pytest.raises(SettingsError) as caught:
        token_provider_from_settings(settings(**values))
    message = str(caught.value)
    assert all(name.upper() in message for name in missing)  # as the variables: GATEWAY_UPSTREAM_TOKEN
    assert CLIENT_SECRET not in message
    assert "gw-id-value" not in message
    assert "id.example" not in message


@pytest.mark.usefixtures("clean_env")
def test_from_settings_rejects_bad_url_without_echoing_it() -> None:
    values = {"upstream_client_id": "gw", "upstream_client_secret": "s"}
    with pytest.raises(SettingsError, match="GATEWAY_UPSTREAM_IDENTITY_URL") as caught:
        token_provider_from_settings(settings(upstream_identity_url="ftp://user:pw-value@id.example", **values))
    assert "pw-value" not in str(caught.value)


async def test_httpx_request_lines_name_the_identity_origin_only(
    identity: Identity, make: MakeProvider, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An identity URL may carry a key in its query or path, and httpx logs each request's whole URL at INFO:
    the line names scheme, host and port only, even when no webhook client (which used to put the filter
    on httpx's logger) was ever made in the process."""
    monkeypatch.setattr(logging.getLogger("httpx"), "filters", [])  # as in a process that made none yet
    caplog.set_level(logging.DEBUG)  # every logger, httpx's included
    url_key = "k-URLKEY-77d1"
    provider = make(url=f"{identity.url}?tenant_key={url_key}")
    await provider.get()
    origin = identity.url.split("/connect/")[0]
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines == [f'HTTP Request: POST {origin}/… "HTTP/1.1 200 OK"'], lines
    leaked = [r.getMessage() for r in caplog.records if url_key in f"{r.getMessage()} {r.__dict__}"]
    assert not leaked, leaked


async def test_keep_fresh_fetches_without_a_session_and_stops_with_the_provider(
    identity: Identity, make: MakeProvider
) -> None:
    """Nothing fetched a token before a session needed one: a fresh replica's /healthz said the upstream
    was unavailable (token false) until the first session, which waited for the fetch."""
    provider = make()
    assert not provider.available
    provider.keep_fresh()
    provider.keep_fresh()  # once: a second call starts nothing more
    async with asyncio.timeout(5):
        while not provider.available:
            await asyncio.sleep(0.01)
    assert len(identity.requests) == 1
    await provider.aclose()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "upstream-token-keeper"]


async def test_a_fresh_gateway_reports_its_token_before_any_session(
    identity: Identity, simulator: DataflowSimulator
) -> None:
    overrides = {
        "upstream_token": None,
        "upstream_identity_url": identity.url,
        "upstream_client_id": "gateway-client",
        "upstream_client_secret": SecretStr(CLIENT_SECRET),
    }
    async with running_gateway(settings_for(simulator, **overrides)) as gw, httpx.AsyncClient() as http:
        async with asyncio.timeout(5):
            while not (health := (await http.get(f"{gw.http_url}/healthz")).json())["upstream"]["token"]:
                await asyncio.sleep(0.05)
        assert health["upstream"]["status"] == "ok"
        assert len(identity.requests) == 1


# --- a gateway's sessions on tokens from the identity service ----------------------------------------------


def identity_settings(identity: Identity, simulator: DataflowSimulator, **overrides: Any) -> Settings:
    """A gateway that gets Data Flow's token from ``identity`` (which issues the simulator's token)."""
    identity.access_token = SIM_TOKEN
    return settings_for(
        simulator,
        upstream_token=None,
        upstream_identity_url=identity.url,
        upstream_client_id="gateway-client",
        upstream_client_secret=SecretStr(CLIENT_SECRET),
        **overrides,
    )


async def session_starts(gw: RunningGateway) -> bool:
    """Open a native session: True if it started, False if the gateway answered an error instead."""
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        async with asyncio.timeout(10):
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] in ("started", "error"):
                    return bool(frame["type"] == "started")


async def health_token(gw: RunningGateway) -> bool:
    async with httpx.AsyncClient() as http:
        return bool((await http.get(f"{gw.http_url}/healthz")).json()["upstream"]["token"])


@pytest.mark.ws
@pytest.mark.parametrize("status", [429, 408])
async def test_a_busy_identity_service_is_asked_again_and_the_session_starts(
    identity: Identity, simulator: DataflowSimulator, status: int
) -> None:
    """429 Too Many Requests and 408 Request Timeout are worth another attempt, unlike a refused credential:
    after one of them the next attempt gets the token and the session starts (a mutant gave up on them,
    and the gateway refused sessions with the identity service's passing busy answer)."""
    identity.statuses = [status]
    async with running_gateway(identity_settings(identity, simulator)) as gw:
        assert await session_starts(gw)
        assert len(identity.requests) == 2  # the busy answer, then the token


@pytest.mark.ws
@pytest.mark.parametrize("expires_in", [10, 0], ids=["short-lived", "zero"])
async def test_short_lived_or_zero_lifetime_tokens_are_fetched_once_not_once_per_session(
    identity: Identity, simulator: DataflowSimulator, expires_in: int
) -> None:
    """A 10 s token with the default 300 s refresh margin: the margin shrinks to half the lifetime, so the
    token is refreshed 5 s in, and the sessions of the first seconds all use the one fetch (a mutant kept
    the 300 s margin: every session started one more token request). ``expires_in: 0`` is no usable
    lifetime: the gateway assumes 300 s, reports its token on /healthz and serves sessions from the one
    fetch (a mutant took 0 literally: a token expired on arrival, /healthz said no token and every session
    waited for a fetch of its own)."""
    identity.expires_in = expires_in
    async with running_gateway(identity_settings(identity, simulator)) as gw:
        for _ in range(4):
            assert await session_starts(gw)
        await asyncio.sleep(0.3)  # a refresh the sessions would have started in the background
        assert len(identity.requests) == 1
        assert await health_token(gw)


@pytest.mark.ws
async def test_after_a_failed_refresh_sessions_do_not_ask_again_for_a_while(
    identity: Identity, simulator: DataflowSimulator
) -> None:
    """A 4 s token is refreshed 2 s in; the identity service fails that refresh. The sessions that start in
    the next second (the cached token still valid) are served the cached token, and the identity service is
    not asked again within 10 s (a mutant dropped the cooldown: each session started one more request to a
    service that was failing)."""
    identity.expires_in = 4
    identity.statuses, identity.status = [200], 500
    settings = identity_settings(identity, simulator, upstream_token_fetch_attempts=1)
    async with running_gateway(settings) as gw:
        async with asyncio.timeout(5):
            while not identity.arrived:
                await asyncio.sleep(0.01)
        await asyncio.sleep(identity.arrived[0] + 2.2 - time.monotonic())  # past the refresh point (2 s)
        for _ in range(4):
            assert await session_starts(gw)
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        assert time.monotonic() < identity.arrived[0] + 4, "too slow: the cached token expired meanwhile"
        assert len(identity.requests) == 2  # the token, then the one failed refresh
