"""The JavaScript client (``/static/dataflow-gateway.js``) at its edges, in a real headless Chromium: ending
a client while the microphone is being opened or while the socket connects, handshakes the gateway
refuses, audio larger than a WebSocket message may be, a ``WebSocket`` constructor that throws, close
codes a browser refuses, and where a browser token rides.

Same browser and fixtures as ``test_browser.py`` (Debian's chromium through Playwright; skips without
it outside CI). Each test loads the module into a page the gateway serves and drives it directly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.auth import key_digest
from gateway.settings import Settings
from tests.support import browser, signals
from tests.support.browser import Launcher, open_demo, wait_for
from tests.support.harness import RunningGateway, running_gateway
from tests.support.settings import SECRETS, simulator_settings

launch = browser.launch  # the fixtures, under their own names
dtmf_wav = browser.dtmf_wav

pytestmark = [pytest.mark.ws, pytest.mark.needs_binary]

KEY = "dfg_client-edges-key-0123456789abcdefghijkl"
SECRETS.add(KEY)
SIGNING_KEY = "client-edges-signing-key-0123456789abcdef"
PCM16 = {"encoding": "pcm16", "sampleRate": 16000, "channels": 1}
STATIC = Path(__file__).resolve().parents[2] / "gateway" / "static"
# Loads the client into the page as `window.lib`, and `within(promise)`: its value, or "pending" after 5 s,
# so that a client that never settles fails its test at once.
LOAD = """async () => {
  window.lib = await import('/static/dataflow-gateway.js');
  const late = (ms) => new Promise((resolve) => setTimeout(() => resolve("pending"), ms));
  window.within = (promise, ms = 5000) => Promise.race([promise, late(ms)]);
}"""


def auth_settings(**overrides: Any) -> Settings:
    keys = [{"name": "edges", "sha256": key_digest(KEY), "projects": ["demo"]}]
    return simulator_settings(auth="required", api_keys=keys, token_signing_key=SIGNING_KEY, **overrides)


@asynccontextmanager
async def _serving(launch: Launcher, settings: Settings) -> AsyncIterator[tuple[RunningGateway, Any]]:
    """A gateway and a page it served, the client loaded. The page closes first: a session the client
    failed to end would otherwise hold the gateway's shutdown (and the test) until pytest's timeout."""
    page = await launch()
    async with running_gateway(settings) as gw:
        try:
            await open_demo(page, gw)
            await page.evaluate(LOAD)
            yield gw, page
        finally:
            await page.context.close()


async def _mint(gw: RunningGateway, **body: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.post("/v1/tokens", json={"projects": ["demo"], **body}, headers={"X-API-Key": KEY})
    assert response.status_code == 200, response.text
    minted: dict[str, Any] = response.json()
    SECRETS.add(minted["token"])
    return minted


async def _serve_client_elsewhere(route: Any) -> None:
    if route.request.url.endswith(".js"):
        body = (STATIC / route.request.url.rsplit("/", 1)[1]).read_text()
        await route.fulfill(body=body, content_type="text/javascript")
    else:
        await route.fulfill(body="<!doctype html><title>elsewhere</title>", content_type="text/html")


async def test_ending_while_the_microphone_opens_opens_nothing(launch: Launcher) -> None:
    async with _serving(launch, simulator_settings()) as (gw, page):
        result = await page.evaluate(
            """async () => {
              let sockets = 0;
              const Native = window.WebSocket;
              window.WebSocket = class extends Native { constructor(...a) { super(...a); sockets++; } };
              const outcomes = {};
              for (const how of ["stop", "finalize", "close"]) {
                const c = new lib.StreamClient("/v1/stream", {project: "demo"});
                let closedEvents = 0, levels = 0;
                c.on("closed", () => closedEvents++);
                c.on("level", () => levels++);
                const starting = c.startMicrophone().then(() => "started", (e) => "rejected " + e.code);
                const closed = await within(c[how]());  // while the browser grants the microphone
                const started = await within(starting);
                await new Promise((r) => setTimeout(r, 500));
                const again = await within(c.start({encoding: "pcm16", sampleRate: 16000, channels: 1})
                  .then(() => "started", (e) => "rejected " + e.code));
                outcomes[how] = {closed, closedEvents, started, levels, again};
              }
              window.WebSocket = Native;
              return {sockets, outcomes};
            }"""
        )
        assert result["sockets"] == 0, result  # no session was opened behind the closed client
        for how, outcome in result["outcomes"].items():
            assert outcome == {"closed": {"code": 1000, "reason": "not_started", "audioMs": None}, "closedEvents": 1,
                               "started": "rejected closed", "levels": 0, "again": "rejected closed"}, how  # fmt: skip
        assert gw.gateway.registry.active == 0

        # The demo page: Start, then Cancel at once. The page ends idle, able to start again.
        await page.evaluate(
            "() => { document.getElementById('start').click(); document.getElementById('cancel').click(); }"
        )
        await wait_for(page, "document.getElementById('live-status').innerText === 'Cancelled.'", "the cancel", 5000)
        await page.wait_for_timeout(500)
        assert await page.locator("#live-status").inner_text() == "Cancelled."
        assert await page.locator("#start").is_enabled()
        assert not await page.locator("#cancel").is_enabled() and not await page.locator("#finalize").is_enabled()
        assert await page.locator("#errors").inner_text() == ""
        assert await page.locator("#log-count").inner_text() == "0"  # no socket, no message
        assert gw.gateway.registry.active == 0
        assert page.problems == []


async def test_a_refused_handshake_is_told_apart_from_a_lost_connection(launch: Launcher) -> None:
    async with _serving(launch, auth_settings()) as (gw, page):
        good = await _mint(gw, origin=gw.http_url)
        script = """async ([url, options]) => {
          const c = new lib.StreamClient(url, {project: "demo", ...options});
          const errors = [];
          c.on("error", (e) => errors.push([e.code, e.retryable]));
          const start = await within(c.start({encoding: "pcm16", sampleRate: 16000, channels: 1})
            .then(() => { c.stop(); return "started"; }, (e) => "rejected " + e.code));
          return {start, errors, closed: await within(c.closed)};
        }"""
        url = gw.ws_url()
        refused = {"start": "rejected connect_refused", "errors": [["connect_refused", False]],
                   "closed": {"code": 1006, "reason": "connect_refused", "audioMs": None}}  # fmt: skip
        for protocols in (["dataflow-gateway.v1", "bearer.not-a-token"], ["bearer.not-a-token"]):
            assert await page.evaluate(script, [url, {"protocols": protocols}]) == refused, protocols
        assert await page.evaluate(script, [url, {"token": "not-a-token"}]) == refused

        # A valid token given as `bearer.` alone: the client offers dataflow-gateway.v1 beside it.
        alone = await page.evaluate(script, [url, {"protocols": [f"bearer.{good['token']}"]}])
        assert alone["start"] == "started" and alone["errors"] == [], alone

        # A page on an origin the gateway does not allow (served by the browser itself, with the client's
        # copy): its valid token does not help.
        await page.route("http://evil.test/**", _serve_client_elsewhere)
        await page.goto("http://evil.test/")
        await page.evaluate(LOAD)
        assert await page.evaluate(script, [url, {"token": (await _mint(gw, origin=gw.http_url))["token"]}]) == refused
        message = await page.evaluate(
            """async (url) => {
              const c = new lib.StreamClient(url, {project: "demo"});
              let message = null;
              c.on("error", (e) => { message = e.message; });
              await within(c.start({encoding: "pcm16", sampleRate: 16000, channels: 1}).catch(() => {}));
              return message;
            }""",
            url,
        )
        assert "origin" in message and "token" in message, message


async def test_audio_of_any_size_is_sent_in_messages_the_gateway_takes(launch: Launcher) -> None:
    size = 1_100_000  # 34 s of pcm16 at 16 kHz, over the gateway's 1 MiB message limit
    async with _serving(launch, simulator_settings()) as (_gw, page):
        cdp = await page.context.new_cdp_session(page)
        sent: list[int] = []  # the length of each binary message the browser sent
        cdp.on("Network.webSocketFrameSent",
               lambda e: sent.append(len(base64.b64decode(e["response"]["payloadData"])))
               if e["response"]["opcode"] == 2 else None)  # fmt: skip
        await cdp.send("Network.enable")
        result = await page.evaluate(
            """async ([audio, size]) => {
              const c = new lib.StreamClient("/v1/stream", {project: "demo"});
              const errors = [];
              c.on("error", (e) => errors.push(e.code));
              await within(c.start(audio));
              const accepted = c.sendAudio(new Uint8Array(size + 2).subarray(2));  // a view, not at offset 0
              return {accepted, errors, closed: await within(c.finalize(), 20000)};
            }""",
            [PCM16, size],
        )
        assert result["accepted"] is True and result["errors"] == [], result
        assert result["closed"]["code"] == 1000 and result["closed"]["reason"] == "finalized", result
        assert result["closed"]["audioMs"] == pytest.approx(size / 32, abs=1)
        assert sum(sent) == size and max(sent) == 64 * 1024 and all(n % 2 == 0 for n in sent), sent

        # A message over the gateway's limit anyway (an event): told as such, not as a lost connection.
        result = await page.evaluate(
            """async (audio) => {
              const c = new lib.StreamClient("/v1/stream", {project: "demo"});
              const errors = [];
              c.on("error", (e) => errors.push([e.code, e.retryable]));
              await within(c.start(audio));
              c.sendEvent({Name: "Big", Data: "x".repeat(1_200_000)});
              const closed = await within(c.closed);
              return {errors, code: closed.code};
            }""",
            PCM16,
        )
        assert result == {"errors": [["message_too_big", False]], "code": 1009}, result


async def test_a_websocket_constructor_that_throws_fails_the_start_as_a_gateway_error(launch: Launcher) -> None:
    async with _serving(launch, simulator_settings()) as (_gw, page):
        result = await page.evaluate(
            """async () => {
              const c = new lib.StreamClient("/v1/stream", {project: "demo", protocols: ["not a token"]});
              const events = [];
              c.on("error", (e) => events.push("error " + e.code));
              c.on("closed", (i) => events.push("closed " + i.reason));
              let start;
              try {
                start = await within(c.start({encoding: "pcm16", sampleRate: 16000, channels: 1}).then(
                  () => "started", (e) => `rejected ${e.code} ${e instanceof lib.GatewayError}`));
              } catch (e) {
                start = "threw " + e.name;
              }
              const closed = await within(c.closed, 2000);
              const c2 = new lib.StreamClient("/v1/stream", {project: "demo", protocols: ["not a token"]});
              const microphone = await within(c2.startMicrophone().then(() => "started", (e) => "rejected " + e.code));
              const closed2 = await within(c2.closed, 2000);
              return {start, events, closed, microphone, closed2: closed2.reason};
            }"""
        )
    assert result == {
        "start": "rejected connect_failed true",
        "events": ["error connect_failed", "closed connect_failed"],
        "closed": {"code": 1006, "reason": "connect_failed", "audioMs": None},
        "microphone": "rejected connect_failed",
        "closed2": "connect_failed",
    }, result


async def test_finalize_while_connecting_sends_the_audio_already_accepted(launch: Launcher) -> None:
    audio = base64.b64encode(signals.to_pcm16(signals.utterances([browser.DIGITS], 16000))).decode()
    async with _serving(launch, simulator_settings()) as (_gw, page):
        script = """async ([b64, audio, end]) => {
          const pcm = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const c = new lib.StreamClient("/v1/stream", {project: "demo"});
          const finals = [], errors = [];
          c.on("event", (e) => { if (e.final && e.text) finals.push(e.text); });
          c.on("error", (e) => errors.push(e.code));
          const starting = c.start(audio).then(() => "started", (e) => "rejected " + e.code);
          const accepted = c.sendAudio(pcm);  // held until the socket opens
          const closed = await within(c[end]());  // before it opens
          return {accepted, started: await within(starting), finals, errors, closed};
        }"""
        finalized = await page.evaluate(script, [audio, PCM16, "finalize"])
        assert finalized["accepted"] is True and finalized["started"] == "started", finalized
        assert finalized["finals"] == [browser.DIGITS] and finalized["errors"] == [], finalized
        assert finalized["closed"]["code"] == 1000 and finalized["closed"]["reason"] == "finalized", finalized
        assert finalized["closed"]["audioMs"] > 1000, finalized

        stopped = await page.evaluate(script, [audio, PCM16, "stop"])
        assert stopped["started"] == "started" and stopped["errors"] == [], stopped
        assert stopped["closed"]["code"] == 1000 and stopped["closed"]["reason"] == "stopped", stopped

        # close() while connecting: the client's own close, not a lost connection.
        closed = await page.evaluate(
            """async () => {
              const c = new lib.StreamClient("/v1/stream", {project: "demo"});
              const errors = [];
              c.on("error", (e) => errors.push(e.code));
              const starting = c.start({encoding: "pcm16", sampleRate: 16000, channels: 1}).catch((e) => e.code);
              const closed = await within(c.close());
              return {errors, reason: closed.reason, start: await within(starting)};
            }"""
        )
        assert closed == {"errors": [], "reason": "closed", "start": "closed"}, closed


async def test_close_codes_a_browser_refuses_still_close(launch: Launcher) -> None:
    async with _serving(launch, simulator_settings()) as (gw, page):
        script = """async ([code, reason]) => {
          const c = new lib.StreamClient("/v1/stream", {project: "demo"});
          let levels = 0;
          c.on("level", () => levels++);
          await within(c.startMicrophone());
          let threw = null;
          const closing = (() => { try { return c.close(code, reason); } catch (e) { threw = e.name; } })();
          const settled = await within(c.closed, 3000);
          const atClose = levels;
          await new Promise((r) => setTimeout(r, 300));
          return {threw, code: settled.code ?? settled, same: closing === c.closed, levelsAfter: levels - atClose};
        }"""
        for code, reason, expected in [(1001, "page hidden", 1000), (1011, "", 1000), (2999, "", 1000),
                                       (4001, "é" * 100, 4001), (1000, "x" * 500, 1000)]:  # fmt: skip
            result = await page.evaluate(script, [code, reason])
            assert result == {"threw": None, "code": expected, "same": True, "levelsAfter": 0}, (code, result)
        assert gw.gateway.registry.active == 0


async def test_a_token_rides_in_the_handshake_unless_asked_otherwise(launch: Launcher) -> None:
    async with _serving(launch, auth_settings()) as (gw, page):
        cdp = await page.context.new_cdp_session(page)
        offered: list[str] = []
        frames: list[str] = []
        cdp.on("Network.webSocketWillSendHandshakeRequest",
               lambda e: offered.append(e["request"]["headers"].get("Sec-WebSocket-Protocol", "")))  # fmt: skip
        cdp.on("Network.webSocketFrameSent", lambda e: frames.append(e["response"]["payloadData"]))
        await cdp.send("Network.enable")
        script = """async ([token, tokenIn]) => {
          const c = new lib.StreamClient("/v1/stream", {project: "demo", token, tokenIn});
          const start = await within(c.start({encoding: "pcm16", sampleRate: 16000, channels: 1})
            .then(() => "started", (e) => "rejected " + e.code));
          return {start, closed: (await within(c.stop())).reason};
        }"""
        token = (await _mint(gw, origin=gw.http_url))["token"]
        assert await page.evaluate(script, [token, None]) == {"start": "started", "closed": "stopped"}
        assert offered == [f"dataflow-gateway.v1, bearer.{token}"], offered
        starts = [json.loads(f) for f in frames if f.startswith('{"type":"start"')]
        assert len(starts) == 1 and "token" not in starts[0], starts

        # The start message's form, when asked for: nothing in the handshake.
        offered.clear()
        frames.clear()
        token = (await _mint(gw, origin=gw.http_url))["token"]
        assert await page.evaluate(script, [token, "start"]) == {"start": "started", "closed": "stopped"}
        assert offered == [""], offered
        starts = [json.loads(f) for f in frames if f.startswith('{"type":"start"')]
        assert len(starts) == 1 and starts[0]["token"] == token, starts
