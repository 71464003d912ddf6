"""/v1/audiohook's signed upgrade over real sockets: a correctly signed upgrade is accepted; a bad,
missing, expired or replayed signature, an unknown key, or a signature over another authority is
refused with 401 before ``accept()``; failed signatures feed the failed-credential throttle."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from pydantic import SecretStr
from websockets.exceptions import InvalidStatus

from gateway.auth import ApiKeySpec, key_digest
from gateway.errors import RateLimited, Unauthorized
from gateway.signatures.audiohook import CLOCK_SKEW_S, AudioHookSignatures, client_secret
from gateway.signatures.nonces import NonceMemory
from tests.support.audiohook_client import AudioHookClient, connect, sign, upgrade_headers
from tests.support.harness import RunningGateway
from tests.support.settings import SECRETS

API_KEY = "dfg_genesys-audiohook-key"
OPEN_KEY = "dfg_genesys-unsigned-key"
CLIENT_SECRET = base64.b64encode(b"audiohook-client-secret-0123456789").decode()
PUBLIC_HOST = "audiohook.example.test"
SECRETS.update({API_KEY, OPEN_KEY, CLIENT_SECRET})


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    return {
        "auth": "required",
        "api_keys": [
            ApiKeySpec(name="genesys", sha256=key_digest(API_KEY), audiohook_client_secret=SecretStr(CLIENT_SECRET)),
            ApiKeySpec(name="unsigned", sha256=key_digest(OPEN_KEY)),
        ],
        "public_hosts": [PUBLIC_HOST],
    }


def signed(api_key: str = API_KEY, **options: Any) -> dict[str, str]:
    options.setdefault("secret_b64", CLIENT_SECRET)
    options.setdefault("authority", PUBLIC_HOST)
    return sign(upgrade_headers(api_key), **options)


async def opens(gw: RunningGateway, headers: dict[str, str]) -> str:
    """The first server message after open on an accepted upgrade."""
    async with connect(gw.ws_url("/v1/audiohook"), headers) as ws:
        client = AudioHookClient(ws, headers["Audiohook-Session-Id"], headers["Audiohook-Organization-Id"])
        await client.open()
        first = str((await client.recv())["type"])
        await client.send("close", {"reason": "end"})
        await client.until("closed")
        return first


async def refused(gw: RunningGateway, headers: dict[str, str]) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as info:
        async with connect(gw.ws_url("/v1/audiohook"), headers):
            pass
    response = info.value.response
    return response.status_code, json.loads(response.body or b"{}")["error"]["code"]


@pytest.mark.ws
async def test_correctly_signed_upgrade_opens(gw: RunningGateway) -> None:
    assert await opens(gw, signed()) == "opened"


@pytest.mark.ws
async def test_key_without_secret_opens_unsigned(gw: RunningGateway) -> None:
    assert await opens(gw, upgrade_headers(OPEN_KEY)) == "opened"


@pytest.mark.ws
async def test_bad_signature_is_refused(gw: RunningGateway) -> None:
    wrong = base64.b64encode(b"some-other-secret").decode()
    assert await refused(gw, signed(secret_b64=wrong)) == (401, "invalid_signature")


@pytest.mark.ws
async def test_tampered_header_is_refused(gw: RunningGateway) -> None:
    headers = signed()
    headers["Audiohook-Session-Id"] = "00000000-0000-4000-8000-000000000000"  # signed over another session
    assert await refused(gw, headers) == (401, "invalid_signature")


@pytest.mark.ws
async def test_unknown_key_is_refused(gw: RunningGateway) -> None:
    assert await refused(gw, signed("dfg_not-a-key")) == (401, "invalid_credential")


@pytest.mark.ws
async def test_unsigned_upgrade_is_refused_when_the_key_has_a_secret(gw: RunningGateway) -> None:
    assert await refused(gw, upgrade_headers(API_KEY)) == (401, "invalid_signature")


@pytest.mark.ws
async def test_expired_signature_is_refused(gw: RunningGateway) -> None:
    stale = signed(created=int(time.time()) - 120, expires_in=60)  # expired a minute ago
    assert await refused(gw, stale) == (401, "invalid_signature")
    too_old = signed(created=int(time.time()) - 90, expires_in=3600)  # older than the 30 s maximum age
    assert await refused(gw, too_old) == (401, "invalid_signature")


@pytest.mark.ws
async def test_replayed_signature_is_refused(gw: RunningGateway) -> None:
    headers = signed()
    assert await opens(gw, headers) == "opened"
    assert await refused(gw, headers) == (401, "invalid_signature")


@pytest.mark.ws
async def test_a_nonce_is_16_to_256_characters(gw: RunningGateway) -> None:
    # Each nonce is remembered for its signature's life: one of any length would let a secret holder
    # fill the memory with a few large handshakes.
    assert await refused(gw, signed(nonce="n" * 15)) == (401, "invalid_signature")
    assert await refused(gw, signed(nonce="n" * 257)) == (401, "invalid_signature")
    assert await opens(gw, signed(nonce="n" * 256)) == "opened"
    assert len(gw.gateway.gate.audiohook.nonces) == 1


@pytest.mark.ws
async def test_authority_is_the_public_host_not_the_callers_host(gw: RunningGateway) -> None:
    # Signed over the Host the test connects to (loopback, which the host guard lets through), not the
    # configured public host: a signature made for another server must not verify here.
    assert await refused(gw, signed(authority=f"127.0.0.1:{gw.port}")) == (401, "invalid_signature")


@pytest.mark.ws
async def test_signature_must_cover_the_audiohook_headers(gw: RunningGateway) -> None:
    partial = signed(components=("@request-target", "@authority", "x-api-key"))
    assert await refused(gw, partial) == (401, "invalid_signature")


@pytest.mark.ws
async def test_keyid_must_be_the_key_sent(gw: RunningGateway) -> None:
    assert await refused(gw, signed(keyid=OPEN_KEY)) == (401, "invalid_signature")


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"auth_failures_per_minute": 2}], indirect=True)
async def test_failed_signatures_feed_the_auth_throttle(gw: RunningGateway) -> None:
    wrong = base64.b64encode(b"guessing").decode()
    statuses = [(await refused(gw, signed(secret_b64=wrong)))[0] for _ in range(3)]
    assert statuses == [401, 401, 429]
    assert await opens(gw, signed()) == "opened"  # a valid signature still passes from that address


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"public_hosts": []}], indirect=True)
async def test_without_public_hosts_the_authority_is_the_host_reached(gw: RunningGateway) -> None:
    assert await opens(gw, signed(authority=f"127.0.0.1:{gw.port}")) == "opened"
    assert await refused(gw, signed(authority="elsewhere.example.test")) == (401, "invalid_signature")


@pytest.mark.ws
async def test_open_for_another_organization_is_unauthorized(gw: RunningGateway) -> None:
    headers = signed()
    async with connect(gw.ws_url("/v1/audiohook"), headers) as ws:
        client = AudioHookClient(ws, headers["Audiohook-Session-Id"], "11111111-2222-4333-8444-555555555555")
        await client.open()
        disconnect = await client.recv()
    assert disconnect["type"] == "disconnect" and disconnect["parameters"]["reason"] == "unauthorized"


# --- the pure pieces ---------------------------------------------------------------------------------


def verifier(**options: Any) -> AudioHookSignatures:
    values: dict[str, Any] = {
        "default_secret": None, "key_secrets": {"genesys": base64.b64decode(CLIENT_SECRET)},
        "public_hosts": [PUBLIC_HOST], "max_age_s": 30.0, **options,
    }  # fmt: skip
    return AudioHookSignatures(**values)


def check(signatures: AudioHookSignatures, headers: dict[str, str], key_name: str | None = "genesys") -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    signatures.verify(key_name=key_name, api_key=lowered["x-api-key"], headers=lowered, target="/v1/audiohook",
                      host="127.0.0.1:1")  # fmt: skip


def test_nonce_memory_is_bounded_and_refuses_when_full() -> None:
    signatures = verifier(max_nonces=2)
    check(signatures, signed())
    check(signatures, signed())
    with pytest.raises(RateLimited):  # full of unexpired nonces: forgetting one would allow its replay
        check(signatures, signed())
    assert len(signatures.nonces) == 2


def test_nonces_are_forgotten_once_their_signature_expired() -> None:
    memory = NonceMemory(10)
    assert memory.add("a", until=100.0, now=50.0, mono=0.0) and not memory.add("a", until=100.0, now=60.0, mono=10.0)
    assert memory.add("a", until=200.0, now=101.0, mono=51.0)  # expired at 100: no longer needed to refuse a replay
    assert len(memory) == 1


def test_a_nonce_is_kept_no_longer_than_the_maximum_age_however_late_its_signature_expires() -> None:
    """A signature saying it expires in an hour still verifies only GATEWAY_AUDIOHOOK_SIGNATURE_MAX_AGE_S
    (30 s) after its ``created``: its nonce is forgotten then, and the memory has room again (a mutant kept
    it to the later ``expires``: long-lived signatures stayed in the memory for an hour, and once it was
    full every signed upgrade got 429)."""
    signatures = verifier(max_nonces=1)
    check(signatures, signed(expires_in=3600))
    assert signatures.nonces.full()
    later = 30 + CLOCK_SKEW_S + 1
    assert not signatures.nonces.full(now=time.time() + later, mono=time.monotonic() + later)
    assert len(signatures.nonces) == 0


def test_a_step_of_the_wall_clock_forgets_no_nonce_early() -> None:
    """A nonce is forgotten once its signature expired by the wall clock and that much time really passed:
    a step forward then back would otherwise let its upgrade be replayed."""
    memory = NonceMemory(10)
    assert memory.add("a", until=1060.0, now=1000.0, mono=0.0)
    assert not memory.add("a", until=1060.0, now=1200.0, mono=0.1)  # 200 s ahead by the wall clock only
    assert not memory.add("a", until=1060.0, now=1000.2, mono=0.2)  # and back
    assert memory.add("a", until=1160.0, now=1100.0, mono=61.0)  # both clocks past its expiry


def test_the_default_secret_applies_to_keys_without_their_own() -> None:
    other = base64.b64encode(b"the-default-secret").decode()
    signatures = verifier(default_secret=base64.b64decode(other))
    check(signatures, signed(OPEN_KEY, secret_b64=other), key_name="unsigned")
    with pytest.raises(Unauthorized):  # the key's own secret wins over the default
        check(signatures, signed(secret_b64=other))


def test_a_client_secret_that_is_not_base64_fails_at_startup() -> None:
    with pytest.raises(ValueError, match="not base64"):
        client_secret(SecretStr("not base64!"), "GATEWAY_AUDIOHOOK_CLIENT_SECRET")
    assert client_secret(SecretStr(""), "x") is None


@pytest.mark.ws
@pytest.mark.parametrize(
    "target",
    ["/v1/audiohook?project=demo&label=a%20b&xtoken=1", f"/t/{API_KEY}/v1/audiohook", f"/v1/audiohook?token={API_KEY}"],
    ids=["xtoken-parameter", "key-in-the-path", "key-in-the-query"],
)
async def test_the_signature_covers_the_url_as_genesys_was_given_it(gw: RunningGateway, target: str) -> None:
    """The signature was checked over the URL left after the gateway lifted the key out of it (and any
    query holding ``token=`` re-encoded): a correctly signed upgrade to such a URL got 401, counted as a
    failed credential."""
    headers = signed(target=target)
    async with connect(gw.ws_url(target), headers) as ws:
        client = AudioHookClient(ws, headers["Audiohook-Session-Id"], headers["Audiohook-Organization-Id"])
        await client.open()
        assert (await client.recv())["type"] == "opened"
        await client.send("close", {"reason": "end"})
        await client.until("closed")
