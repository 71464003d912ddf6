"""gateway.security: the AccessGate every endpoint passes (credentials, origins, failed-auth throttle,
project and audio-budget admission, slots, session limits, refusals as HTTP answers) and the
CredentialScrubber that lifts credentials out of the URL. Plain scope dicts, no server."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from gateway.auth import ANONYMOUS, ApiKeySpec, Authenticator, Principal, key_digest
from gateway.errors import (
    CapacityExceeded,
    ErrorCode,
    Forbidden,
    GatewayError,
    GoingAway,
    LimitError,
    RateLimited,
    Unauthorized,
)
from gateway.relay import audio_budgets
from gateway.relay.registry import SessionRegistry
from gateway.security import CREDENTIAL_SCOPE_KEYS, AccessGate, CredentialScrubber, credential_of
from tests.support.settings import offline_settings

ALICE_KEY = "dfg_alice-key-for-gate-tests-0123456789"
BOB_KEY = "dfg_bob-key-for-gate-tests-9876543210"
SIGNING_KEY = "gate-tests-signing-key-0123456789abcdef"
APP = "https://app.example"
HOST = "gw.example:8443"


def make_gate(
    *, required: bool = True, specs: list[ApiKeySpec] | None = None, max_sessions: int = 10, **overrides: Any
) -> AccessGate:
    values: dict[str, Any] = {
        "auth": "required" if required else "none",
        "allowed_origins": [APP],
        "token_signing_key": SecretStr(SIGNING_KEY),
    }
    values.update(overrides)
    settings = offline_settings(**values)
    if specs is None:
        specs = [
            ApiKeySpec(name="alice", sha256=key_digest(ALICE_KEY), projects=["demo"], max_sessions=2),
            ApiKeySpec(name="bob", sha256=key_digest(BOB_KEY), audio_seconds_per_minute=2.0),
        ]
    authenticator = Authenticator(specs, SIGNING_KEY, required=required)
    return AccessGate(settings, authenticator, SessionRegistry(max_sessions))


def scope(client: str = "10.0.0.1", scheme: str = "wss", **extra: Any) -> Scope:
    return {"type": "websocket", "scheme": scheme, "path": "/v1/stream", "client": (client, 50000), **extra}


def denials(gate: AccessGate, reason: str) -> float | None:
    return gate.registry.metrics.registry.get_sample_value("dataflow_gateway_denials_total", {"reason": reason})


def alice(gate: AccessGate) -> Principal:
    principal = gate.identify(scope(), {"x-api-key": ALICE_KEY})
    assert principal is not None
    return principal


def browser_token(gate: AccessGate, owner: Principal, *, origin: str | None = APP, single_use: bool = False) -> str:
    token, _ = gate.auth.mint(owner, projects=None, origin=origin, max_session_s=None, ttl_s=60, single_use=single_use)
    return token


# --- identify: where credentials come from ------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "extra"),
    [
        ({"authorization": f"Bearer {ALICE_KEY}"}, {}),
        ({"authorization": f"bearer   {ALICE_KEY}  "}, {}),
        ({"x-api-key": ALICE_KEY}, {}),
        ({"sec-websocket-protocol": f"dataflow-gateway.v1, bearer.{ALICE_KEY}"}, {}),
        ({}, {"gateway.path_credential": ALICE_KEY}),
        ({}, {"gateway.query_credential": ALICE_KEY}),
    ],
    ids=["authorization", "authorization-spacing", "x-api-key", "subprotocol", "path", "query"],
)
def test_identify_reads_every_place_a_credential_may_be(headers: dict[str, str], extra: dict[str, str]) -> None:
    gate = make_gate()
    principal = gate.identify(scope(**extra), headers)
    assert principal == Principal(name="alice", kind="api_key", projects=frozenset({"demo"}), max_sessions=2)


def test_identify_with_starlette_headers_is_case_insensitive() -> None:
    gate = make_gate()
    headers = Headers(headers={"X-Api-Key": BOB_KEY, "Origin": APP})
    principal = gate.identify(scope(), headers)
    assert principal is not None and principal.name == "bob"
    assert principal.audio_seconds_per_minute == 2.0


def test_the_authorization_header_comes_first() -> None:
    headers = {"authorization": f"Bearer {ALICE_KEY}", "x-api-key": BOB_KEY}
    assert credential_of(scope(**{"gateway.path_credential": "p"}), headers) == ALICE_KEY
    assert credential_of(scope(**{"gateway.path_credential": "p"}), {"x-api-key": BOB_KEY}) == BOB_KEY
    both = scope(**{"gateway.path_credential": "p", "gateway.query_credential": "q"})
    assert credential_of(both, {"sec-websocket-protocol": "dataflow-gateway.v1"}) == "p"
    assert credential_of(scope(**{"gateway.query_credential": "q"}), {}) == "q"
    # Basic (jambonz's wsAuth): its password is the key, consulted only when nothing else carries one (a
    # proxy in front may ask for its own); a value not in Basic's form is a wrong key, not no key.
    proxy = {"authorization": "Basic " + base64.b64encode(b"proxy-user:proxy-password").decode()}
    assert credential_of(scope(), proxy) == "proxy-password"
    assert credential_of(scope(), {**proxy, "x-api-key": BOB_KEY}) == BOB_KEY
    assert credential_of(scope(**{"gateway.query_credential": "q"}), proxy) == "q"
    assert credential_of(scope(), {"authorization": "Basic " + base64.b64encode(b"only-user:").decode()}) == "only-user"
    assert credential_of(scope(), {"authorization": "Basic abc"}) == "abc"
    assert credential_of(scope(), {"authorization": "Basic "}) is None


def test_a_missing_credential_is_refused_and_counted() -> None:
    gate = make_gate()
    with pytest.raises(Unauthorized) as raised:
        gate.identify(scope(), {})
    assert raised.value.error_code is ErrorCode.MISSING_CREDENTIAL
    assert (raised.value.http_status, raised.value.ws_close_code) == (401, 1008)
    assert denials(gate, "missing_credential") == 1


def test_an_unknown_key_is_refused_and_counted() -> None:
    gate = make_gate()
    with pytest.raises(Unauthorized) as raised:
        gate.identify(scope(), {"x-api-key": "dfg_not-a-key"})
    assert raised.value.error_code is ErrorCode.INVALID_CREDENTIAL
    assert denials(gate, "invalid_credential") == 1


def test_without_required_auth_anyone_is_anonymous_but_a_key_still_counts() -> None:
    gate = make_gate(required=False)
    assert gate.identify(scope(), {}) is ANONYMOUS
    assert gate.identify(scope(), {"x-api-key": "an old Data Flow token"}) is ANONYMOUS
    assert gate.identify(scope(), {"origin": APP}, in_band=True) is ANONYMOUS  # nothing to wait for
    principal = gate.identify(scope(), {"x-api-key": ALICE_KEY})
    assert principal is not None and principal.name == "alice"
    assert denials(gate, "invalid_credential") is None


# --- origins ------------------------------------------------------------------------------------------


def test_an_allowed_origin_passes() -> None:
    gate = make_gate()
    principal = gate.identify(scope(), {"origin": APP, "x-api-key": ALICE_KEY})
    assert principal is not None and principal.name == "alice"


@pytest.mark.parametrize(
    ("scheme", "origin"), [("wss", f"https://{HOST}"), ("https", f"https://{HOST}"), ("ws", f"http://{HOST}")]
)
def test_the_same_origin_always_passes(scheme: str, origin: str) -> None:
    gate = make_gate(allowed_origins=[])
    headers = {"origin": origin, "host": HOST}
    assert gate.origin_allowed(origin, scope(scheme=scheme), headers)
    principal = gate.identify(scope(scheme=scheme), {**headers, "x-api-key": ALICE_KEY})
    assert principal is not None


@pytest.mark.parametrize(
    ("scheme", "origin", "host"),
    [
        ("ws", f"https://{HOST}", HOST),  # the page's scheme differs
        ("wss", "https://evil.example", HOST),
        ("wss", f"https://{HOST}", ""),  # no Host: nothing to compare with
        ("wss", "null", HOST),
    ],
)
def test_other_origins_are_forbidden(scheme: str, origin: str, host: str) -> None:
    gate = make_gate(allowed_origins=[APP], auth_failures_per_minute=1)
    headers = {"origin": origin, "host": host, "x-api-key": ALICE_KEY}
    with pytest.raises(Forbidden) as raised:
        gate.identify(scope(scheme=scheme), headers)
    assert raised.value.error_code is ErrorCode.ORIGIN_NOT_ALLOWED
    assert raised.value.http_status == 403
    assert denials(gate, "origin_not_allowed") == 1
    # A forbidden origin is not a failed authentication: the throttle (1 per minute) is untouched.
    assert gate.identify(scope(), {"x-api-key": ALICE_KEY}) is not None


# --- in-band credentials (browsers) -------------------------------------------------------------------


def test_a_browser_without_a_credential_may_bring_it_in_band() -> None:
    gate = make_gate()
    assert gate.identify(scope(), {"origin": APP}, in_band=True) is None
    assert denials(gate, "missing_credential") is None
    with pytest.raises(Unauthorized):  # not a browser (no Origin): nothing will come in band
        gate.identify(scope(), {}, in_band=True)
    with pytest.raises(Unauthorized):  # an endpoint without an in-band credential
        gate.identify(scope(), {"origin": APP})


def test_authenticate_in_band_checks_the_token_origin() -> None:
    gate = make_gate()
    token = browser_token(gate, alice(gate))
    principal = gate.authenticate_in_band(token, APP, scope())
    assert (principal.name, principal.kind, principal.origin) == ("alice", "browser_token", APP)
    with pytest.raises(Forbidden) as raised:
        gate.authenticate_in_band(token, "https://other.example", scope())
    assert raised.value.error_code is ErrorCode.ORIGIN_MISMATCH
    assert denials(gate, "origin_mismatch") == 1
    with pytest.raises(Unauthorized) as unauthorized:
        gate.authenticate_in_band("a.b.c", APP, scope())
    assert unauthorized.value.error_code is ErrorCode.INVALID_CREDENTIAL
    assert denials(gate, "invalid_credential") == 1


def test_a_browser_token_in_the_handshake_is_bound_to_its_origin() -> None:
    other = "https://other.example"
    gate = make_gate(allowed_origins=[APP, other])
    token = browser_token(gate, alice(gate))
    principal = gate.identify(scope(), {"origin": APP, "sec-websocket-protocol": f"bearer.{token}"})
    assert principal is not None and principal.kind == "browser_token"
    with pytest.raises(Forbidden) as raised:
        gate.identify(scope(), {"origin": other, "sec-websocket-protocol": f"bearer.{token}"})
    assert raised.value.error_code is ErrorCode.ORIGIN_MISMATCH


# --- the failed-authentication throttle ---------------------------------------------------------------


def test_too_many_failures_throttle_that_client_only() -> None:
    gate = make_gate(auth_failures_per_minute=2)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            gate.identify(scope(client="10.0.0.9"), {"x-api-key": "dfg_wrong"})
    with pytest.raises(RateLimited) as raised:  # the next wrong guess from that address
        gate.identify(scope(client="10.0.0.9"), {"x-api-key": "dfg_wrong_again"})
    assert raised.value.error_code is ErrorCode.AUTH_THROTTLED
    assert raised.value.http_status == 429
    assert 59 <= raised.value.retry_after <= 60
    assert f"retry in {raised.value.retry_after} s" in raised.value.message  # the text and Retry-After agree
    # A valid key is never refused for other clients' failures (one proxy address, many clients).
    assert gate.identify(scope(client="10.0.0.9"), {"x-api-key": ALICE_KEY}) is not None
    assert gate.identify(scope(client="10.0.0.10"), {"x-api-key": ALICE_KEY}) is not None
    assert denials(gate, "invalid_credential") == 2
    assert denials(gate, "auth_throttled") == 1


def test_successes_do_not_count_towards_the_throttle() -> None:
    gate = make_gate(auth_failures_per_minute=1)
    for _ in range(5):
        assert gate.identify(scope(), {"x-api-key": ALICE_KEY}) is not None


def test_a_zero_limit_never_throttles() -> None:
    gate = make_gate(auth_failures_per_minute=0)
    for _ in range(30):
        with pytest.raises(Unauthorized):
            gate.identify(scope(), {"x-api-key": "dfg_wrong"})
    assert denials(gate, "auth_throttled") is None
    assert len(gate.throttle) == 0  # and it keeps nothing: a window would grow with every failure


def test_an_address_keeps_only_as_many_failures_as_the_limit() -> None:
    gate = make_gate(auth_failures_per_minute=2)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            gate.identify(scope(), {"x-api-key": "dfg_wrong"})
    for _ in range(50):
        gate.throttle.failed("10.0.0.1")  # what a caller that ignores the 429 could add
    assert len(gate.throttle) == 1 and gate.throttle.blocked_for("10.0.0.1") > 0
    assert len(gate.throttle._failures["10.0.0.1"]) == 2


# --- admission ----------------------------------------------------------------------------------------


def test_admit_session_checks_the_project() -> None:
    gate = make_gate()
    principal = alice(gate)
    gate.admit_session(principal, "demo")
    with pytest.raises(Forbidden) as raised:
        gate.admit_session(principal, "payroll")
    assert raised.value.error_code is ErrorCode.PROJECT_NOT_ALLOWED
    assert denials(gate, "project_not_allowed") == 1


def test_admit_session_refuses_a_spent_audio_budget() -> None:
    gate = make_gate()
    bob = gate.identify(scope(), {"x-api-key": BOB_KEY})
    assert bob is not None
    gate.admit_session(bob, "any")
    gate.budgets.spend("bob", 2.0)
    with pytest.raises(LimitError) as raised:
        gate.admit_session(bob, "any")
    error = raised.value
    assert error.error_code is ErrorCode.AUDIO_BUDGET_SPENT
    assert (error.http_status, error.retryable) == (429, True)
    assert denials(gate, "audio_budget_spent") == 1
    answer = AccessGate.denial(error)
    assert answer.status_code == 429
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    gate.admit_session(alice(gate), "demo")  # another key's budget is its own


def test_audio_charged_more_than_a_minute_ago_is_back_in_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget is per sliding minute: charges older than 60 s no longer count, and the key's next
    session is admitted (a mutant kept them six minutes). The budgets' clock is moved on, not waited for."""
    now = [1000.0]
    monkeypatch.setattr(audio_budgets, "time", SimpleNamespace(monotonic=lambda: now[0]))
    gate = make_gate()
    bob = gate.identify(scope(), {"x-api-key": BOB_KEY})
    assert bob is not None
    gate.budgets.spend("bob", 2.0)  # bob's whole 2 s a minute
    now[0] += 30
    with pytest.raises(LimitError):
        gate.admit_session(bob, "any")
    assert gate.budgets.retry_after_s("bob", 2.0) == 30  # when the charge leaves the window
    now[0] += 31  # 61 s after the charge
    assert gate.budgets.remaining("bob", 2.0) == pytest.approx(2.0)
    gate.admit_session(bob, "any")


def test_a_single_use_token_is_admitted_once() -> None:
    gate = make_gate()
    token = browser_token(gate, alice(gate), single_use=True)
    principal = gate.authenticate_in_band(token, APP, scope())
    gate.admit_session(principal, "demo")
    with pytest.raises(Unauthorized) as raised:
        gate.admit_session(gate.authenticate_in_band(token, APP, scope()), "demo")
    assert raised.value.error_code is ErrorCode.TOKEN_REUSED
    assert denials(gate, "token_reused") == 1


# --- slots --------------------------------------------------------------------------------------------


def test_reserve_counts_keys_but_not_anonymous_callers() -> None:
    gate = make_gate()
    principal = alice(gate)
    anonymous = gate.reserve("native", ANONYMOUS)
    nobody = gate.reserve("native", None)
    assert (anonymous.key, nobody.key) == (None, None)
    first, second = gate.reserve("native", principal), gate.reserve("dataflow_ws", principal)
    assert (first.key, second.key) == ("alice", "alice")
    with pytest.raises(RateLimited):  # alice may run 2
        gate.reserve("native", principal)
    assert gate.registry.by_key["alice"] == 2
    assert denials(gate, "rate_limited") == 1
    with pytest.raises(RateLimited):
        gate.reserve("native", principal, count_denial=False)
    assert denials(gate, "rate_limited") == 1
    first.release()
    assert gate.reserve("native", principal).key == "alice"


def test_reserve_refuses_at_capacity() -> None:
    gate = make_gate(max_sessions=1)
    gate.reserve("native", None)
    with pytest.raises(CapacityExceeded):
        gate.reserve("native", alice(gate))
    assert denials(gate, "capacity_exceeded") == 1


def test_bind_counts_an_early_slot_against_the_key() -> None:
    gate = make_gate()
    principal = alice(gate)
    gate.reserve("native", principal)
    early = gate.reserve("native", None)  # taken before the in-band token was read
    gate.bind(early, principal)
    assert early.key == "alice" and gate.registry.by_key["alice"] == 2
    late = gate.reserve("native", None)
    with pytest.raises(RateLimited):
        gate.bind(late, principal)
    assert late.key is None
    gate.bind(late, ANONYMOUS)  # nothing to count
    assert late.key is None and gate.registry.by_key["alice"] == 2


# --- session limits -----------------------------------------------------------------------------------


def test_session_limits_for_live_streams_and_uploads() -> None:
    gate = make_gate(max_session_s=600.0, max_audio_rate_x=2.5, audio_rate_burst_ms=4000)
    live = gate.session_limits(None, live=True)
    assert (live.max_session_s, live.max_rate_x, live.rate_burst_ms) == (600.0, 2.5, 4000)
    upload = gate.session_limits(None, live=False)
    assert (upload.max_session_s, upload.max_rate_x) == (600.0, None)  # an upload may come as fast as it can


def test_a_credential_may_shorten_the_session_but_not_lengthen_it() -> None:
    gate = make_gate(max_session_s=600.0)
    shorter = Principal(name="a", kind="browser_token", max_session_s=60)
    longer = Principal(name="a", kind="browser_token", max_session_s=6000)
    assert gate.session_limits(shorter, live=True).max_session_s == 60
    assert gate.session_limits(longer, live=False).max_session_s == 600


def test_session_limits_charge_the_keys_audio_budget() -> None:
    gate = make_gate()
    bob = gate.identify(scope(), {"x-api-key": BOB_KEY})
    assert bob is not None
    assert gate.session_limits(alice(gate), live=True).budget is None  # alice has no budget
    budget = gate.session_limits(bob, live=True).budget
    assert budget is not None
    assert budget.spend(1.5)
    assert gate.budgets.remaining("bob", 2.0) == pytest.approx(0.5)
    assert not budget.spend(0.5)  # spent
    assert 1 <= budget.retry_after_s() <= 60
    with pytest.raises(LimitError):
        gate.admit_session(bob, "any")  # the next session is refused up front


# --- refusals as HTTP answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (RateLimited("slow down"), 429, "60"),
        (CapacityExceeded("full"), 503, "1"),
        (GoingAway("draining"), 503, "1"),
        (Unauthorized("who are you"), 401, None),
        (Forbidden("no", code=ErrorCode.ORIGIN_NOT_ALLOWED), 403, None),
    ],
)
def test_denial_is_an_http_answer(error: GatewayError, status: int, retry_after: str | None) -> None:
    answer = AccessGate.denial(error)
    assert answer.status_code == status
    assert answer.headers.get("retry-after") == retry_after
    body = json.loads(bytes(answer.body))
    assert body == {"error": {"code": error.error_code.value, "message": error.message, "retryable": error.retryable}}


# --- the credential scrubber --------------------------------------------------------------------------


async def scrubbed(path: str, query: bytes = b"", kind: str = "http") -> Scope:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        return None

    original: Scope = {"type": kind, "path": path, "raw_path": path.encode(), "query_string": query}
    await CredentialScrubber(app)(original, receive, send)
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_a_path_secret_is_lifted_out_of_the_path(kind: str) -> None:
    scope = await scrubbed("/t/s3cret-key/v1/stream", b"project=demo", kind)
    assert (scope["path"], scope["raw_path"]) == ("/v1/stream", b"/v1/stream")
    assert scope["query_string"] == b"project=demo"
    assert credential_of(scope, {}) == "s3cret-key"
    rest = {k: v for k, v in scope.items() if k not in CREDENTIAL_SCOPE_KEYS}
    assert "s3cret-key" not in repr(rest)


async def test_a_bare_path_secret_leaves_the_root() -> None:
    scope = await scrubbed("/t/s3cret-key")
    assert scope["path"] == "/"
    assert credential_of(scope, {}) == "s3cret-key"


@pytest.mark.parametrize("endpoint", ["metrics", "internal/drain", "healthz", "readyz"])
async def test_operator_endpoints_are_not_reachable_under_a_path_secret(endpoint: str) -> None:
    scope = await scrubbed(f"/t/s3cret-key/{endpoint}")
    assert scope["path"] == f"/t/{endpoint}"  # not found, rather than the operator endpoint
    assert "s3cret-key" not in scope["path"]


async def test_a_query_token_is_lifted_out_of_the_query() -> None:
    scope = await scrubbed("/v1/stream", b"project=demo&token=q-secret&lang=tr")
    assert scope["query_string"] == b"project=demo&lang=tr"
    assert scope["path"] == "/v1/stream"
    assert credential_of(scope, {}) == "q-secret"


async def test_every_token_parameter_goes_and_the_last_counts() -> None:
    """The last, as for every other parameter (Starlette's query_params): the first was taken, so
    ``?project=a&project=b`` and ``?token=a&token=b`` read different ends of one query."""
    scope = await scrubbed("/v1/stream", b"token=first&token=second")
    assert scope["query_string"] == b""
    assert credential_of(scope, {}) == "second"


async def test_a_parameter_that_only_ends_in_token_stays() -> None:
    scope = await scrubbed("/v1/stream", b"mytoken=1&x=2")
    assert scope["query_string"] == b"mytoken=1&x=2"
    assert credential_of(scope, {}) is None


async def test_urls_without_credentials_are_untouched() -> None:
    scope = await scrubbed("/v1/stream", b"project=demo")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/v1/stream", b"/v1/stream", b"project=demo")
    assert credential_of(scope, {}) is None
    lifespan = await scrubbed("/t/not-a-request", kind="lifespan")
    assert lifespan["path"] == "/t/not-a-request"
