"""Data Flow access tokens from OAuth2 client credentials: fetched, cached, refreshed before expiry.

Secrets (client secret, tokens) live only in ``SecretStr`` values and the request body: no log line,
exception text or repr contains them. Messages name the identity host, never the full URL (it could
carry userinfo) and never the identity service's response body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from gateway.config.bounds import http_url_problem
from gateway.errors import UpstreamAuthFailed
from gateway.logs.filters import outbound_origins_only
from gateway.logs.redact import proxy_environment
from gateway.upstream.oauth_replies import lifetime, oauth_error, parse_json

log = logging.getLogger("gateway.upstream.token")

#: Largest token answer read (after decompression); a JWT with many claims is a few kilobytes.
MAX_ANSWER_BYTES = 64 * 1024
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.2, 2.0
# A still-valid token is served at once while it is refreshed in the background; after a failed refresh,
# the next (background) try waits this long, so an identity outage is not asked again on every get().
_FAILED_REFRESH_COOLDOWN_S = 10.0
# Without a usable token, a failed fetch is the answer for this long: sessions arriving during an identity
# outage (or with refused credentials) fail at once instead of each starting a fetch of its own.
_FAILED_FETCH_COOLDOWN_S = 2.0
#: How often :meth:`ClientCredentialsTokenProvider.keep_fresh` looks (a cached token is a dict lookup;
#: within the refresh margin a look starts the refresh): at most this, at most half the margin.
KEEP_FRESH_PERIOD_S = 30.0


@dataclass(frozen=True, repr=False)
class _Cached:
    token: SecretStr
    expires_at: float
    refresh_at: float


@dataclass(frozen=True)
class _Failure:
    message: str  # names the host and the cause, never a secret or the response body
    retryable: bool
    until: float


class _AttemptFailed(Exception):
    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason, self.retryable = reason, retryable


class ClientCredentialsTokenProvider:
    """Fetches and caches a token from the identity service (OAuth2 client credentials grant)."""

    def __init__(
        self,
        *,
        url: str,
        client_id: str,
        client_secret: SecretStr,
        scope: str,
        refresh_margin_s: float,
        fetch_timeout_s: float,
        attempts: int,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # urlsplit first: httpx took a port past 65535 (every fetch failed after ready), and a bad bracketed
        # host raised a bare "Invalid IPv6 URL".
        if problem := http_url_problem(url):
            raise ValueError(problem)
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise ValueError("identity URL is not a valid URL") from None
        if attempts < 1 or fetch_timeout_s <= 0 or refresh_margin_s < 0:
            raise ValueError("need attempts >= 1, fetch timeout > 0 and refresh margin >= 0")
        if not client_secret.get_secret_value():
            raise ValueError("client secret is empty")
        if parsed.scheme == "http" and parsed.host not in ("localhost", "127.0.0.1", "::1"):
            log.warning("identity URL for %s is plain http: the client secret travels unencrypted", parsed.host)
        self._url, self._host, self._client_id, self._scope = url, parsed.host, client_id, scope
        self._client_secret = client_secret
        self._margin, self._fetch_timeout_s, self._attempts = refresh_margin_s, fetch_timeout_s, attempts
        self._http, self._owns_http, self._clock = http, http is None, clock
        self._cached: _Cached | None = None
        self._retry_after = -math.inf
        self._failed: _Failure | None = None  # the last fetch, if it failed with no usable token
        self._inflight: asyncio.Task[SecretStr] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"ClientCredentialsTokenProvider(host={self._host!r}, client_id={self._client_id!r}, "
            f"scope={self._scope!r}, cached={self._cached is not None})"
        )

    @property
    def available(self) -> bool:
        return self._cached is not None and self._clock() < self._cached.expires_at

    async def get(self) -> SecretStr:
        if self._closed:
            raise UpstreamAuthFailed("token provider is closed", retryable=True)
        now, cached = self._clock(), self._cached
        if cached is not None and now < cached.expires_at:
            if now >= cached.refresh_at and now >= self._retry_after:
                self._refreshing()  # in the background: the token is still good, nobody waits for the fetch
            return cached.token
        failed = self._failed
        if failed is not None and now < failed.until:
            raise UpstreamAuthFailed(failed.message, retryable=failed.retryable)
        task = self._refreshing()
        try:
            return await asyncio.shield(task)  # one caller giving up must not cancel the others' fetch
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and (me is None or not me.cancelling()):  # aclose(), not our caller
                raise UpstreamAuthFailed("token provider closed during the fetch", retryable=True) from None
            raise

    def _refreshing(self) -> asyncio.Task[SecretStr]:
        """The fetch under way, started if none is: single flight, callers share it and its outcome."""
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_task(self._refresh(), name="upstream-token")
            self._inflight.add_done_callback(_mark_retrieved)
        return self._inflight

    def keep_fresh(self) -> None:
        if self._keeper is None and not self._closed:
            self._keeper = asyncio.get_running_loop().create_task(self._keep_fresh(), name="upstream-token-keeper")

    async def _keep_fresh(self) -> None:
        period = max(1.0, min(KEEP_FRESH_PERIOD_S, self._margin / 2))
        while not self._closed:
            # Logged where it failed (_refresh, _mark_retrieved); the next look retries. Anything else
            # escaping here would end the keeper for the process's life, unseen.
            with contextlib.suppress(Exception):
                await self.get()
            await asyncio.sleep(period)

    def invalidate(self, token: SecretStr) -> None:
        if self._cached is not None and token == self._cached.token:
            self._cached = None
            log.warning("Data Flow refused the cached token; the next use fetches a new one")

    async def aclose(self) -> None:
        self._closed = True
        if (keeper := self._keeper) is not None:
            keeper.cancel()
            await asyncio.wait([keeper])
        task, self._inflight, self._cached = self._inflight, None, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        if self._owns_http and self._http is not None:
            await self._http.aclose()
        self._http = None

    async def _refresh(self) -> SecretStr:
        try:
            fresh = await self._fetch()
        except UpstreamAuthFailed as exc:
            cached, now = self._cached, self._clock()
            if cached is None or now >= cached.expires_at:
                self._failed = _Failure(exc.message, exc.retryable, now + _FAILED_FETCH_COOLDOWN_S)
                raise
            self._retry_after = now + _FAILED_REFRESH_COOLDOWN_S
            left = cached.expires_at - now
            log.warning("token refresh failed (%s); serving the cached token, valid %.0fs more", exc.message, left)
            return cached.token
        finally:
            if self._inflight is asyncio.current_task():
                self._inflight = None
        self._cached, self._retry_after, self._failed = fresh, -math.inf, None
        return fresh.token

    async def _fetch(self) -> _Cached:
        failure = _AttemptFailed("no attempt made", retryable=True)
        for attempt in range(1, self._attempts + 1):
            if attempt > 1:
                await asyncio.sleep(min(_BACKOFF_FIRST_S * 2 ** (attempt - 2), _BACKOFF_MAX_S))
            started = self._clock()  # lifetime counts from the request, not the answer: errs early
            try:
                token, lifetime = await self._attempt()
            except _AttemptFailed as exc:
                failure = exc
                log.warning("token fetch from %s failed (%d/%d): %s", self._host, attempt, self._attempts, exc)
                if not exc.retryable:  # 4xx: the credentials are wrong, retrying cannot help
                    break
                continue
            log.info("obtained a Data Flow token from %s, valid %.0fs", self._host, lifetime)
            margin = min(self._margin, lifetime / 2)  # short-lived tokens still refresh before expiry
            return _Cached(token, started + lifetime, started + lifetime - margin)
        # raised outside any except block so no httpx exception (holding the request) gets chained
        message = f"could not obtain a Data Flow token from {self._host}: {failure.reason}"
        raise UpstreamAuthFailed(message, retryable=failure.retryable)

    async def _attempt(self) -> tuple[SecretStr, float]:
        secret = self._client_secret.get_secret_value()
        form = {"grant_type": "client_credentials", "client_id": self._client_id, "client_secret": secret}
        form["scope"] = self._scope
        try:
            async with asyncio.timeout(self._fetch_timeout_s):  # bounds the whole exchange, body included
                status, raw = await self._post(form)
        except (TimeoutError, httpx.TimeoutException):
            raise _AttemptFailed("timeout", retryable=True) from None
        except httpx.ConnectError as exc:
            refused = _caused_by(exc, ConnectionRefusedError)
            raise _AttemptFailed("connection refused" if refused else "connection failed", retryable=True) from None
        except httpx.HTTPError as exc:
            raise _AttemptFailed(f"transport error ({type(exc).__name__})", retryable=True) from None
        if not 200 <= status < 300:
            retryable = status >= 500 or status in (408, 429)
            raise _AttemptFailed(f"HTTP {status}{oauth_error(raw)}", retryable=retryable)
        try:
            parsed = parse_json(raw)
        except ValueError:
            raise _AttemptFailed(f"HTTP {status} with a non-JSON body", retryable=True) from None
        body: dict[str, object] = parsed if isinstance(parsed, dict) else {}
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise _AttemptFailed(f"HTTP {status} without an access_token", retryable=True)
        return SecretStr(token), lifetime(body.get("expires_in"))

    async def _post(self, form: dict[str, str]) -> tuple[int, bytes]:
        """The answer's status and body, read only up to MAX_ANSWER_BYTES (decompressed): a token answer is
        a few kilobytes, and the identity service's size (or a compressed bomb) must not become ours."""
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        client = self._client()
        async with client.stream("POST", self._url, data=form, headers=headers, timeout=self._fetch_timeout_s) as got:
            status, encoding = got.status_code, got.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
                raise _AttemptFailed(f"HTTP {status} in an unsupported content encoding", retryable=True)
            # zlib or gzip framing, detected: what servers send for "deflate" and "gzip"
            inflate = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding != "identity" else None
            body = bytearray()
            async for chunk in got.aiter_raw():
                try:  # at most one byte past the limit is inflated: enough to know it is too large
                    body += inflate.decompress(chunk, MAX_ANSWER_BYTES + 1 - len(body)) if inflate else chunk
                except zlib.error:
                    raise _AttemptFailed(f"HTTP {status} with a corrupt compressed body", retryable=True) from None
                if len(body) > MAX_ANSWER_BYTES:
                    raise _AttemptFailed(f"HTTP {status} with an answer too large", retryable=True)
        return status, bytes(body)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            outbound_origins_only()  # an identity URL may carry a key in its query: httpx's line keeps the origin
            # An https endpoint follows the proxy environment (HTTPS_PROXY, ALL_PROXY, NO_PROXY) and
            # SSL_CERT_FILE / SSL_CERT_DIR, as gRPC and the webhooks do: a CONNECT tunnel carries TLS end to
            # end, the proxy sees the host only. A plain http one never does: a forwarding proxy would read the
            # secret. Redirects stay off (httpx default): the secret goes nowhere else.
            tunnelled = httpx.URL(self._url).scheme == "https"
            if tunnelled and (proxies := proxy_environment()):
                log.info("token requests follow the proxy environment: %s", proxies)
            self._http = httpx.AsyncClient(trust_env=tunnelled, timeout=self._fetch_timeout_s)
        return self._http


def _mark_retrieved(task: asyncio.Task[SecretStr]) -> None:
    # no "exception never retrieved" noise when every waiter gave up early, or none waited (a background refresh)
    exc = None if task.cancelled() else task.exception()
    if exc is not None and not isinstance(exc, UpstreamAuthFailed):  # (those are logged where they happen)
        log.error("token refresh failed unexpectedly (%s)", type(exc).__name__)


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    for _ in range(8):  # httpx -> httpcore -> OSError; bounded in case of a cycle
        if exc is None or isinstance(exc, kind):
            return exc is not None
        exc = exc.__cause__ or exc.__context__
    return False
