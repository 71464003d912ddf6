"""Who may spend the gateway's Data Flow credential: API keys, browser tokens, per-key budgets.

API keys are configured as SHA-256 digests (keys are long random strings, so a fast hash is
enough and nothing in the configuration can be replayed). Browser tokens are short-lived HS256
JWTs minted with an API key and bound to that key (its name and its digest: a key replaced under the
same name revokes its tokens), projects, an origin and a session length. A token never carries more
than its key as configured now: projects are narrowed to the key's, and limits are the key's.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gateway.errors import BadRequest, ErrorCode, Forbidden, RateLimited, Unauthorized
from gateway.logs.redact import clip
from gateway.signatures.single_use import NO_HOLD, SingleUseTokens, TokenHold

_ISSUER = "dataflow-gateway"
_AUDIENCE = "dataflow-gateway/session"
_LEEWAY_S = 5
MAX_SPENT_TOKENS = 100_000  # single-use tokens remembered at once (~20 MB); each only until it expires
#: Longest project name a session may name (Data Flow's names are short; a client's string is bounded).
MAX_PROJECT_CHARS = 256
_CREDENTIAL_REQUIRED = "a credential is required (API key or browser token)"


class ApiKeySpec(BaseModel):
    """One entry of GATEWAY_API_KEYS (a JSON list). A field it does not know is refused: a misspelt
    ``projets`` or ``max_sesions`` silently ignored would leave the key without the limit it was meant to have."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")
    projects: list[str] | None = Field(None, description="projects this key may run (default: any)")
    max_sessions: int | None = Field(None, ge=1, description="concurrent sessions for this key (per replica)")
    audio_seconds_per_minute: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="audio budget per minute (per replica)"
    )
    session_start_rate: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="session starts a second, burst max_sessions (per replica)"
    )
    audiohook_client_secret: SecretStr | None = Field(
        None, description="base64 AudioHook client secret of this key (default: GATEWAY_AUDIOHOOK_CLIENT_SECRET)"
    )
    webhook_url: str | None = Field(None, description="result webhook of this key (default: GATEWAY_WEBHOOK_URL)")
    webhook_secret: SecretStr | None = Field(None, description="whsec_ secret of this key (default: webhook_secret)")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return "dfg_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller, with everything the session limits need."""

    name: str
    kind: Literal["anonymous", "api_key", "browser_token"]
    projects: frozenset[str] | None = None
    max_sessions: int | None = None
    audio_seconds_per_minute: float | None = None
    origin: str | None = None
    max_session_s: float | None = None
    token_id: str | None = None
    single_use: bool = False
    expires_at: float | None = None  # a browser token's exp (epoch seconds)

    def check_unexpired(self, now: float) -> None:
        """A token starts sessions until it expires: on a socket that runs one after another too."""
        if self.expires_at is not None and now > self.expires_at + _LEEWAY_S:
            raise Unauthorized("the browser token has expired", code=ErrorCode.TOKEN_EXPIRED)

    @property
    def key(self) -> str | None:
        """The key its sessions are counted, charged and routed by; None for the anonymous caller."""
        return None if self.kind == "anonymous" else self.name

    def check_project(self, project: str) -> None:
        if len(project) > MAX_PROJECT_CHARS:  # a client's string: it goes upstream and into log lines
            raise BadRequest(f"a project name is at most {MAX_PROJECT_CHARS} characters", code=ErrorCode.INVALID_START)
        if self.projects is not None and project not in self.projects:
            named = clip(project, 128)  # a name the client chose, quoted back to it: bounded
            raise Forbidden(f"this credential may not run project {named!r}", code=ErrorCode.PROJECT_NOT_ALLOWED)


ANONYMOUS = Principal(name="anonymous", kind="anonymous")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def key_binding(signing_key: str, spec: ApiKeySpec) -> str:
    """What ties a token to the API key that minted it (a key replaced under the same name revokes its
    tokens); not that key's digest, which a browser would read in its token."""
    return hmac.new(signing_key.encode(), spec.sha256.encode(), hashlib.sha256).hexdigest()[:32]


def key_of(principal: Principal | None) -> str | None:
    """:attr:`Principal.key`, None when there is no caller either."""
    return None if principal is None else principal.key


class Authenticator:
    def __init__(
        self, keys: list[ApiKeySpec], signing_key: str, *, required: bool, max_token_life_s: float = 900.0,
        earlier_signing_keys: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        self.required = required
        self._keys = {spec.sha256: spec for spec in keys}
        self._by_name = {spec.name: spec for spec in keys}
        self._max_token_life_s = max_token_life_s  # GATEWAY_TOKEN_MAX_TTL_S: what this gateway ever mints
        self._signing_key = signing_key
        # Tokens verify with the signing key or an earlier one (GATEWAY_TOKEN_VERIFY_KEYS): a rotation across
        # replicas, where a token minted on a replica with the new key meets one still on the old.
        self._verify_keys = tuple(k for k in (signing_key, *earlier_signing_keys) if k)
        self._used_tokens = SingleUseTokens(MAX_SPENT_TOKENS)  # jti of single-use tokens in use or spent

    @property
    def can_mint(self) -> bool:
        return bool(self._signing_key)

    def authenticate(self, credential: str | None) -> Principal:
        """The caller behind ``credential`` (an API key or a browser token)."""
        if not self.required:
            # Auth is off: a valid credential still brings its limits, anything else (e.g. a legacy
            # client's old Data Flow bearer token) is simply not looked at.
            try:
                return self._identify(credential)
            except Unauthorized:
                return ANONYMOUS
        return self._identify(credential)

    def _identify(self, credential: str | None) -> Principal:
        if not credential:
            if self.required:
                raise Unauthorized(_CREDENTIAL_REQUIRED, code=ErrorCode.MISSING_CREDENTIAL)
            return ANONYMOUS
        if credential.count(".") == 2:
            if not self._verify_keys:
                raise Unauthorized("browser tokens are not enabled on this gateway", code=ErrorCode.INVALID_CREDENTIAL)
            return self._verify_token(credential)
        spec = self._keys.get(key_digest(credential))
        if spec is None:
            raise Unauthorized("unknown API key", code=ErrorCode.INVALID_CREDENTIAL)
        return Principal(
            name=spec.name,
            kind="api_key",
            projects=frozenset(spec.projects) if spec.projects is not None else None,
            max_sessions=spec.max_sessions,
            audio_seconds_per_minute=spec.audio_seconds_per_minute,
        )

    def mint(
        self, owner: Principal, *, projects: list[str] | None, origin: str | None, max_session_s: float | None,
        ttl_s: float, single_use: bool,
    ) -> tuple[str, int]:  # fmt: skip
        """A browser token for ``owner`` (narrower, never wider); returns (token, expiry epoch: its ``exp``)."""
        if owner.kind != "api_key":
            raise Forbidden("browser tokens are minted with an API key", code=ErrorCode.API_KEY_REQUIRED)
        if projects is not None and owner.projects is not None and not set(projects) <= owner.projects:
            raise Forbidden("the token asks for projects the key may not run", code=ErrorCode.PROJECT_NOT_ALLOWED)
        now = time.time()
        if projects is None and owner.projects is not None:
            projects = sorted(owner.projects)  # a key that may run no project ([]) mints tokens for none, not all
        claims: dict[str, Any] = {
            "iss": _ISSUER, "aud": _AUDIENCE, "sub": owner.name, "iat": int(now), "nbf": int(now),
            "exp": int(now + ttl_s), "jti": uuid.uuid4().hex, "su": single_use, "prj": projects,
            "org": origin, "mss": max_session_s, "kb": key_binding(self._signing_key, self._by_name[owner.name]),
            # Read by replicas of earlier versions only (a rolling upgrade): these take the key's own.
            "ms": owner.max_sessions, "apm": owner.audio_seconds_per_minute,
        }  # fmt: skip
        return jwt.encode(claims, self._signing_key, algorithm="HS256"), claims["exp"]

    def _verify_token(self, token: str) -> Principal:
        claims, key = self._decoded(token)
        # Signed with our key, yet not one this gateway would mint: its key is gone (revoked: so are its
        # tokens), or it lives longer than any token minted here (made with a leaked or example key).
        life_s = _number(claims["exp"]) - _number(claims["iat"])
        # Or its key was replaced under the same name (the binding differs): revoked too.
        spec = self._by_name.get(claims["sub"]) if isinstance(claims["sub"], str) else None
        # A token without a binding was minted by an earlier version (a rolling upgrade; it lives at most
        # GATEWAY_TOKEN_MAX_TTL_S): taken, with the key's projects and limits as below.
        sent = claims.get("kb")
        bound = spec is not None and (sent is None or hmac.compare_digest(str(sent), key_binding(key, spec)))
        if spec is None or not bound or not life_s <= self._max_token_life_s + _LEEWAY_S:
            raise Unauthorized("the browser token is not valid", code=ErrorCode.INVALID_CREDENTIAL)
        listed = claims.get("prj")
        projects = frozenset(str(p) for p in listed) if isinstance(listed, list) else None
        if spec.projects is not None:  # never wider than the key as configured now
            projects = frozenset(spec.projects) if projects is None else projects & frozenset(spec.projects)
        return Principal(
            name=spec.name,
            kind="browser_token",
            projects=projects,
            max_sessions=spec.max_sessions,
            audio_seconds_per_minute=spec.audio_seconds_per_minute,
            origin=claims.get("org"),
            max_session_s=claims.get("mss"),
            token_id=str(claims["jti"]),
            single_use=bool(claims.get("su")),
            expires_at=float(claims["exp"]),
        )

    def _decoded(self, token: str) -> tuple[dict[str, Any], str]:
        """The claims of ``token`` and the key whose signature it carries: the signing key or an earlier one."""
        for key in self._verify_keys:
            try:
                claims = jwt.decode(
                    token, key, algorithms=["HS256"], audience=_AUDIENCE, issuer=_ISSUER,
                    leeway=_LEEWAY_S, options={"require": ["exp", "iat", "jti", "sub"]},
                )  # fmt: skip
            except jwt.InvalidSignatureError:
                continue  # perhaps the next key's
            except jwt.ExpiredSignatureError:
                raise Unauthorized("the browser token has expired", code=ErrorCode.TOKEN_EXPIRED) from None
            except jwt.PyJWTError:
                break
            return claims, key
        raise Unauthorized("the browser token is not valid", code=ErrorCode.INVALID_CREDENTIAL)

    def reserve_use(self, principal: Principal) -> TokenHold:
        """Reserve the use of a single-use token (per replica): a second use, concurrent or after the
        first session started, is refused. Commit the hold once the session started; release it when the
        start failed, and the token may be tried again until it expires."""
        if not principal.single_use or principal.token_id is None:
            return NO_HOLD
        now = time.time()
        # Remembered for as long as the token verifies (a fixed hour let a longer-lived one be used again),
        # and forgotten in expiry order, not by a scan of every token spent on each session start.
        until = (principal.expires_at if principal.expires_at is not None else now) + _LEEWAY_S + 1
        if self._used_tokens.full(now) and self._used_tokens.state(principal.token_id) is None:
            raise RateLimited("too many single-use tokens in use on this replica; retry later")
        if not self._used_tokens.reserve(principal.token_id, until, now):
            raise Unauthorized("this single-use browser token was already used", code=ErrorCode.TOKEN_REUSED)
        return TokenHold(self._used_tokens, principal.token_id)


class FailedAuthThrottle:
    """Slows credential guessing from one client address: past ``limit_per_minute`` failed credentials,
    its next wrong ones get 429. A valid API key or browser token still passes (behind one proxy address,
    other clients' mistakes must not lock a key out; keys are too long to guess); the admin token, which an
    operator chooses, is not compared at all from a throttled address (``routes.ops``). The table of
    addresses is bounded: an attacker who varies addresses cannot grow it without limit."""

    WINDOW_S = 60.0
    MAX_ADDRESSES = 10_000

    def __init__(self, limit_per_minute: int) -> None:
        self.limit = limit_per_minute
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked_for(self, client: str) -> int:
        """Seconds until ``client`` may fail again without a 429 (0: not throttled)."""
        window = self._window(client, time.monotonic())
        if not self.limit or window is None or len(window) < self.limit:
            return 0
        ages_out = window[len(window) - self.limit] + self.WINDOW_S  # then fewer than ``limit`` remain
        return max(1, math.ceil(ages_out - time.monotonic()))

    def __len__(self) -> int:
        """Addresses with failures in the window."""
        return len(self._failures)

    def failed(self, client: str) -> None:
        if not self.limit:  # off: keep nothing (a window would grow with every failure)
            return
        now = time.monotonic()
        window = self._window(client, now)
        if window is None:
            window = self._failures[client] = deque(maxlen=self.limit)  # the last ``limit`` decide
            while len(self._failures) > self.MAX_ADDRESSES:
                self._failures.popitem(last=False)
        window.append(now)
        self._failures.move_to_end(client)

    def _window(self, client: str, now: float) -> deque[float] | None:
        window = self._failures.get(client)
        while window and window[0] < now - self.WINDOW_S:
            window.popleft()
        if window is not None and not window:
            del self._failures[client]
            return None
        return window
