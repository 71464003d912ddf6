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
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from gateway.errors import UpstreamAuthFailed

log = logging.getLogger("gateway.upstream.token")

DEFAULT_EXPIRES_IN_S = 300.0  # no usable expires_in: assume a short life so we refresh early
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.2, 2.0
# After a failed refresh, a still-valid token is served this long before the next try, so an identity
# outage does not make every get() wait through all attempts.
_FAILED_REFRESH_COOLDOWN_S = 10.0
# RFC 6749 error codes are a fixed vocabulary and safe to quote; the rest of a body is not.
_OAUTH_ERRORS = {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "invalid_scope"}


@dataclass(frozen=True, repr=False)
class _Cached:
    token: SecretStr
    expires_at: float
    refresh_at: float


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
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise ValueError("identity URL is not a valid URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("identity URL must be an absolute http(s) URL")
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
        self._inflight: asyncio.Task[SecretStr] | None = None
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
        if cached is not None and now < cached.expires_at and (now < cached.refresh_at or now < self._retry_after):
            return cached.token
        task = self._inflight
        if task is None:  # single flight: callers arriving during a fetch share it and its outcome
            task = self._inflight = asyncio.get_running_loop().create_task(self._refresh())
            task.add_done_callback(_mark_retrieved)
        try:
            return await asyncio.shield(task)  # one caller giving up must not cancel the others' fetch
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and (me is None or not me.cancelling()):  # aclose(), not our caller
                raise UpstreamAuthFailed("token provider closed during the fetch", retryable=True) from None
            raise

    def invalidate(self, token: SecretStr) -> None:
        if self._cached is not None and token == self._cached.token:
            self._cached = None
            log.warning("Data Flow refused the cached token; the next use fetches a new one")

    async def aclose(self) -> None:
        self._closed = True
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
                raise
            self._retry_after = now + _FAILED_REFRESH_COOLDOWN_S
            left = cached.expires_at - now
            log.warning("token refresh failed (%s); serving the cached token, valid %.0fs more", exc.message, left)
            return cached.token
        finally:
            if self._inflight is asyncio.current_task():
                self._inflight = None
        self._cached, self._retry_after = fresh, -math.inf
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
                response = await self._client().post(
                    self._url, data=form, headers={"Accept": "application/json"}, timeout=self._fetch_timeout_s
                )
        except (TimeoutError, httpx.TimeoutException):
            raise _AttemptFailed("timeout", retryable=True) from None
        except httpx.ConnectError as exc:
            refused = _caused_by(exc, ConnectionRefusedError)
            raise _AttemptFailed("connection refused" if refused else "connection failed", retryable=True) from None
        except httpx.HTTPError as exc:
            raise _AttemptFailed(f"transport error ({type(exc).__name__})", retryable=True) from None
        status = response.status_code
        if not response.is_success:
            retryable = status >= 500 or status in (408, 429)
            raise _AttemptFailed(f"HTTP {status}{_oauth_error(response)}", retryable=retryable)
        try:
            body = response.json()
        except ValueError:
            raise _AttemptFailed(f"HTTP {status} with a non-JSON body", retryable=True) from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise _AttemptFailed(f"HTTP {status} without an access_token", retryable=True)
        return SecretStr(token), _lifetime(body.get("expires_in"))

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # no proxies from the environment; redirects stay off (httpx default): the secret goes nowhere else
            self._http = httpx.AsyncClient(trust_env=False, timeout=self._fetch_timeout_s)
        return self._http


def _mark_retrieved(task: asyncio.Task[SecretStr]) -> None:
    if not task.cancelled():
        task.exception()  # no "exception never retrieved" noise when every waiter gave up early


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    for _ in range(8):  # httpx -> httpcore -> OSError; bounded in case of a cycle
        if exc is None or isinstance(exc, kind):
            return exc is not None
        exc = exc.__cause__ or exc.__context__
    return False


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    return f" ({error})" if error in _OAUTH_ERRORS else ""


def _lifetime(raw: object) -> float:
    value = math.nan
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        with contextlib.suppress(ValueError):
            value = float(raw.strip())
    if not math.isfinite(value) or value <= 0:
        if raw is not None:
            log.warning("identity service sent an unusable expires_in; assuming %.0fs", DEFAULT_EXPIRES_IN_S)
        return DEFAULT_EXPIRES_IN_S
    return value
