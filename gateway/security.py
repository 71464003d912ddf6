"""The gate every endpoint passes: credentials, origin allowlist, failed-auth throttling.

Credentials are read, in order, from ``Authorization: Bearer``, ``X-API-Key``, a
``Sec-WebSocket-Protocol`` entry ``bearer.<credential>`` (browsers cannot set headers), a shared
secret in the path (``/t/<secret>/…``, for telephony systems that can only be given a URL),
``?token=`` and, last, the password of ``Authorization: Basic`` (jambonz listen's ``wsAuth``; read last
so a proxy's Basic never hides a key sent otherwise). :class:`CredentialScrubber` moves the path secret
and the query token out of the request's path and query before anything (uvicorn's access log
included) sees them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import Authenticator, FailedAuthThrottle, Principal, key_of
from gateway.errors import ErrorCode, Forbidden, GatewayError, RateLimited, Unauthorized
from gateway.errors.http import error_response
from gateway.logs.client_addresses import address_group
from gateway.relay.audio_budgets import AudioBudgets, KeyBudget
from gateway.relay.limits import SessionLimits
from gateway.relay.registry import Drainable, Lease, SessionRegistry
from gateway.relay.start_rates import StartRates
from gateway.routes.hosts import LOOPBACK_HOSTS, OPERATOR_PATHS, host_name
from gateway.settings import Settings
from gateway.signatures.audiohook import AudioHookSignatures
from gateway.signatures.single_use import TokenHold
from gateway.signatures.twilio import TwilioSignatures

log = logging.getLogger(__name__)

SUBPROTOCOL = "dataflow-gateway.v1"
_BEARER_PROTOCOL = "bearer."
# Scope keys (names, not secrets) under which the scrubber keeps credentials lifted from the URL.
_PATH_SECRET = "gateway.path_credential"  # noqa: S105
_QUERY_TOKEN = "gateway.query_credential"  # noqa: S105
_SENT_TARGET = "gateway.sent_target_credential"  # the path and query as sent, credentials included
#: The scope keys that may hold a credential (nothing else in the scope does once the scrubber ran).
CREDENTIAL_SCOPE_KEYS = (_PATH_SECRET, _QUERY_TOKEN, _SENT_TARGET)


class CredentialScrubber:
    """ASGI middleware: lifts ``/t/<secret>`` and ``?token=`` out of the URL into the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            query: bytes = scope.get("query_string", b"")
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
            scope[_SENT_TARGET] = (raw_path + (b"?" + query if query else b"")).decode("latin-1")
            path: str = scope["path"]
            if path.startswith("/t/"):
                secret, _, rest = path[3:].partition("/")
                scope[_PATH_SECRET] = secret
                # A credential in the path is for the client APIs: operator endpoints under it are not found.
                scope["path"] = ("/t/" if rest.startswith(OPERATOR_PATHS) else "/") + rest
                scope["raw_path"] = scope["path"].encode()
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True) if b"token=" in query else []
            if any(name == "token" for name, _ in pairs):  # not ``xtoken=``: the rest of the query stays as sent
                # Given twice, the last counts, as for every other parameter (Starlette's query_params).
                scope[_QUERY_TOKEN] = [value for name, value in pairs if name == "token"][-1]
                scope["query_string"] = urlencode([(k, v) for k, v in pairs if k != "token"]).encode("latin-1")
        await self.app(scope, receive, send)


def credential_of(scope: Scope, headers: Any) -> str | None:
    authorization: str = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    if key := headers.get("x-api-key"):
        return str(key).strip() or None
    for offered in offered_subprotocols(headers):
        if offered.startswith(_BEARER_PROTOCOL):
            return offered[len(_BEARER_PROTOCOL) :] or None
    secret = scope.get(_PATH_SECRET)
    if secret:
        return str(secret)
    token = scope.get(_QUERY_TOKEN)
    if token:
        return str(token)
    # Last: a proxy in front that asks for Basic and passes it on must not hide the key sent otherwise.
    return basic_password(authorization[6:]) if authorization.lower().startswith("basic ") else None


def basic_password(encoded: str) -> str | None:
    """HTTP Basic's password as the key (its user name if the password is empty): jambonz's listen verb
    sends its ``wsAuth`` so. A value not in Basic's form is kept as is: a wrong key, refused and counted."""
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return encoded.strip() or None
    return password or user or None


def client_address(scope: Scope) -> str:
    """Who a per-address limit counts (the failed-credential throttle, the waiting places): the client's
    address as the logs show it (uvicorn takes it from ``X-Forwarded-For`` only when the connection comes
    from ``GATEWAY_TRUSTED_PROXIES``), an IPv6 address as its /64: one host holds a whole /64 (one
    client had the throttle and the waiting places afresh for each of its 2^64 addresses)."""
    return address_group(str(scope["client"][0]) if scope.get("client") else "unknown")


def sent_target(scope: Scope) -> str:
    """The path and query as the caller sent them, ``/t/<secret>`` and ``?token=`` included: what a
    platform's signature covers (it signed the URL it was given)."""
    return str(scope.get(_SENT_TARGET) or scope.get("raw_path", scope["path"].encode()).decode("latin-1"))


def offered_subprotocols(headers: Any) -> list[str]:
    value: str = headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in value.split(",") if p.strip()]


class AccessGate:
    def __init__(self, settings: Settings, authenticator: Authenticator, registry: SessionRegistry) -> None:
        self.settings = settings
        self.auth = authenticator
        self.registry = registry
        self.throttle = FailedAuthThrottle(settings.auth_failures_per_minute)
        self.budgets = AudioBudgets()
        self.start_rates = StartRates({
            k.name: (k.session_start_rate, k.max_sessions or settings.max_sessions)
            for k in settings.api_keys if k.session_start_rate is not None
        })  # fmt: skip
        self._origins = set(settings.allowed_origins)
        self._public_hosts = {h.lower() for h in settings.public_hosts}
        self.audiohook = AudioHookSignatures.from_settings(settings)
        self.twilio = TwilioSignatures.from_settings(settings)

    # --- checks --------------------------------------------------------------------------------------

    def origin_allowed(self, origin: str, scope: Scope, headers: Any) -> bool:
        if origin in self._origins:
            return True
        # Same-origin pages (the built-in demo page) may connect: same as a configured public host, or,
        # with none configured, a loopback origin (with auth on, also the Host the caller names).
        scheme, _, host = origin.partition("://")
        if scheme not in ("http", "https") or not host:
            return False
        if self._public_hosts:
            return host.lower() in self._public_hosts or host_name(host.lower()) in self._public_hosts
        if host_name(host.lower()) in LOOPBACK_HOSTS:
            return True
        sent_host = headers.get("host", "")
        page_scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        # Plain ==: hmac.compare_digest raises TypeError for non-ASCII text (a 500 for any caller), and an
        # Origin is no secret.
        return self.auth.required and bool(sent_host) and origin == f"{page_scheme}://{sent_host}"

    def identify(self, scope: Scope, headers: Any, *, in_band: bool = False) -> Principal | None:
        """The caller of a request or handshake. None means "not yet": an in-band credential (the
        native start message) may still come. Raises the denial as a GatewayError."""
        origin = headers.get("origin")
        credential = credential_of(scope, headers)
        if origin is not None and not self.origin_allowed(origin, scope, headers):
            raise self._refused(Forbidden(f"origin {origin!r} is not allowed", code=ErrorCode.ORIGIN_NOT_ALLOWED))
        if credential is None and in_band and self.auth.required and origin is not None:
            return None  # a browser: its token may come in the start message
        return self._authenticate(credential, origin, scope)

    def authenticate_in_band(self, credential: str | None, origin: str | None, scope: Scope) -> Principal:
        """A credential from the start message (browsers that cannot use the handshake)."""
        return self._authenticate(credential, origin, scope)

    def _refused(self, error: GatewayError) -> GatewayError:
        self.registry.deny(error.error_code)  # every refusal is counted, by its code
        return error

    def _authenticate(self, credential: str | None, origin: str | None, scope: Scope) -> Principal:
        """Every path's credential check: a wrong one feeds the throttle, a throttled address gets 429."""
        try:
            principal = self.auth.authenticate(credential)
        except Unauthorized as exc:
            raise self._failed_credential(exc, scope) if credential is not None else self._refused(exc) from None
        if principal.origin is not None and principal.origin != origin:
            raise self._refused(
                Forbidden("the browser token is bound to another origin", code=ErrorCode.ORIGIN_MISMATCH)
            )
        return principal

    def _failed_credential(self, error: Unauthorized, scope: Scope) -> GatewayError:
        """A wrong credential feeds the throttle; a throttled address gets 429 instead."""
        return self._refused(self.failed_attempt(scope) or error)

    def failed_attempt(self, scope: Scope) -> RateLimited | None:
        """Count a wrong credential (any kind, the admin token too) against the caller's address; past the
        limit, the 429 to answer instead."""
        if (refused := self.throttled(scope)) is None:
            self.throttle.failed(client_address(scope))
        return refused

    def throttled(self, scope: Scope) -> RateLimited | None:
        """The 429 for an address past the failed-credential limit; None while it is not."""
        wait_s = self.throttle.blocked_for(client_address(scope))
        if not wait_s:
            return None
        return RateLimited(f"too many failed credentials from this address; retry in {wait_s} s",
                           code=ErrorCode.AUTH_THROTTLED, retry_after_s=wait_s)  # fmt: skip

    def verify_audiohook(self, principal: Principal, scope: Scope, headers: Any) -> None:
        """AudioHook's signed upgrade (:mod:`gateway.signatures.audiohook`): a missing, wrong, expired or
        replayed signature is a failed credential like any other. Genesys signed the URL it was given: the
        target is checked as sent (``/t/<key>/`` or ``?token=`` in it once made every signature wrong)."""
        try:
            self.audiohook.verify(key_name=principal.key, api_key=credential_of(scope, headers), headers=headers,
                                  target=sent_target(scope), host=headers.get("host", ""))  # fmt: skip
        except Unauthorized as exc:
            raise self._failed_credential(exc, scope) from None
        except GatewayError as exc:
            raise self._refused(exc) from None

    def verify_twilio(self, scope: Scope, headers: Any) -> None:
        """Twilio's ``X-Twilio-Signature`` (:mod:`gateway.signatures.twilio`) over the path and query as sent
        (Twilio's stream URLs carry no query: one added to a signed URL is not signed): a missing or wrong
        one is a failed credential like any other."""
        try:
            self.twilio.verify(headers, sent_target(scope))
        except Unauthorized as exc:
            raise self._failed_credential(exc, scope) from None

    def admit_session(self, principal: Principal, project: str) -> TokenHold:
        """Project allowed, audio budget left, single-use token unspent (now reserved: commit the hold once
        the session started, release it if it did not) — or raise. (The key's start rate: :meth:`start_turn`.)"""
        try:
            principal.check_unexpired(time.time())  # a socket running session after session (AudioCodes)
            principal.check_project(project)
            per_minute = principal.audio_seconds_per_minute
            if per_minute is not None and self.budgets.remaining(principal.name, per_minute) <= 0:
                retry = self.budgets.retry_after_s(principal.name, per_minute)
                raise RateLimited(f"this key's audio budget for the last minute is spent; retry in {retry} s",
                                  code=ErrorCode.AUDIO_BUDGET_SPENT, retry_after_s=retry)  # fmt: skip
            return self.auth.reserve_use(principal)
        except GatewayError as exc:
            self.registry.deny(exc.error_code)
            raise

    def start_turn(self, principal: Principal | None) -> float:
        """The caller's key's next start turn (:mod:`gateway.relay.start_rates`), taken: seconds to wait for it
        (0: now). Raises (and counts) RateLimited when it is too far off."""
        try:
            return self.start_rates.turn_in(key_of(principal), time.monotonic())
        except GatewayError as exc:
            self.registry.deny(exc.error_code)
            raise

    async def admit_after_turn(self, principal: Principal, project: str) -> TokenHold:
        """:meth:`admit_session` once the key's start turn came (an upload's request waits for it)."""
        await asyncio.sleep(self.start_turn(principal))
        return self.admit_session(principal, project)

    def reserve(
        self, dialect: str, principal: Principal | None, *, count_denial: bool = True, waiting_at: Scope | None = None
    ) -> Lease:
        """A session slot, counted against the caller's key as well as the process. ``waiting_at`` (the
        request of a caller whose credential comes after the handshake): no slot yet, a waiting place,
        counted against the caller's client address (:meth:`SessionRegistry.wait`)."""
        if waiting_at is not None:
            return self.registry.wait(dialect, address=client_address(waiting_at), count_denial=count_denial)
        limit = principal.max_sessions if principal is not None else None
        return self.registry.reserve(dialect, key=key_of(principal), key_limit=limit, count_denial=count_denial)

    def defer(self, dialect: str, scope: Scope, drainable: Drainable) -> Lease:
        """A place without a slot for a connection accepted while full (:meth:`SessionRegistry.defer`)."""
        return self.registry.defer(dialect, drainable, address=client_address(scope))

    def session_limits(self, principal: Principal | None, *, live: bool) -> SessionLimits:
        s = self.settings
        max_s = s.max_session_s
        if principal is not None and principal.max_session_s is not None:
            max_s = min(max_s, principal.max_session_s)
        budget = None
        if principal is not None and principal.audio_seconds_per_minute is not None:
            budget = KeyBudget(self.budgets, principal.name, principal.audio_seconds_per_minute)
        # Live audio is paced against real time; an upload's length is its audio, however fast it comes.
        if live:
            return SessionLimits(max_s, s.max_audio_rate_x, s.audio_rate_burst_ms, budget)
        return SessionLimits(max_s, None, s.audio_rate_burst_ms, budget, max_audio_s=max_s)

    def bind(self, lease: Lease, principal: Principal) -> None:
        """The caller of a lease taken before it was known (a browser's in-band token): a waiting lease
        takes its slot now, and the slot counts against the caller's key. Raises the refusal."""
        lease.bind_key(principal.key, principal.max_sessions)

    @staticmethod
    def denial(error: GatewayError) -> Response:
        """A refused WebSocket handshake: a real HTTP status before ``accept()`` (CORS does not cover
        WebSockets, so this is the answer a browser's page can see in its network panel)."""
        return error_response(error)
