"""The demo page and the JavaScript client, driven in a real headless Chromium.

Playwright for Python drives Debian's ``/usr/bin/chromium`` (never a downloaded browser). Chromium's
fake capture device plays a generated DTMF WAV in a loop as the microphone; the gateway runs in
simulator mode on port 0, so the digits the page shows prove the audio went browser -> AudioWorklet
-> WebSocket -> gateway (soxr) -> simulator and back. Without Chromium or Playwright the browser
tests skip, except in CI (``CI=true`` or ``REQUIRE_SYSTEM_BINARIES=1``, set by ``.ci/run``), where
they fail. Screenshots land in ``artifacts/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.simulator.server import DataflowSimulator
from tests.support import browser
from tests.support.browser import DIGITS, Launcher, open_demo, screenshot, wait_for
from tests.support.harness import running_gateway
from tests.support.settings import settings_for, simulator_settings

launch = browser.launch  # the fixtures, under their own names
dtmf_wav = browser.dtmf_wav

RECORD_PARTIALS = """() => {
  window.partialsSeen = [];
  new MutationObserver(() => {
    for (const p of document.querySelectorAll('#live-transcript .partial')) {
      if (p.textContent) window.partialsSeen.push(p.textContent);
    }
  }).observe(document.getElementById('live-transcript'), {subtree: true, childList: true, characterData: true});
}"""


# --- serving (no browser needed) ---------------------------------------------------------------------


async def test_demo_page_and_client_are_served_in_simulator_mode() -> None:
    async with running_gateway(simulator_settings()) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert 'data-simulator-mode="true"' in page.text
        for name, kind in [("dataflow-gateway.js", "text/javascript"), ("capture-worklet.js", "text/javascript"),
                           ("demo.js", "text/javascript"), ("demo.css", "text/css")]:  # fmt: skip
            response = await http.get(f"/static/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"].startswith(kind), name
        for bad in ["missing.js", "..%2Fsettings.py", ".hidden.js", "index.htm", "%2E%2E%2F__init__.py"]:
            assert (await http.get(f"/static/{bad}")).status_code == 404, bad
        # nothing on the page comes from elsewhere
        assert "http://" not in page.text.replace('href="/', "") and "https://" not in page.text
        # a form submitted without its script (say, Enter before demo.js runs) never puts the key in a URL
        forms = re.findall(r"<form\b[^>]*>", page.text)
        assert len(forms) == 2 and all('method="post"' in form for form in forms), forms


async def test_demo_page_is_off_with_a_real_upstream_unless_enabled(simulator: DataflowSimulator) -> None:
    async with running_gateway(settings_for(simulator)) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        assert (await http.get("/")).status_code == 404
        assert (await http.get("/static/dataflow-gateway.js")).status_code == 404
    async with running_gateway(settings_for(simulator, demo_page=True)) as gw, httpx.AsyncClient() as http:
        page = await http.get(f"{gw.http_url}/")
        assert page.status_code == 200
        assert 'data-simulator-mode="false"' in page.text
    async with running_gateway(simulator_settings(demo_page=False)) as gw, httpx.AsyncClient() as http:
        assert (await http.get(f"{gw.http_url}/")).status_code == 404


# --- the real browser ------------------------------------------------------------------------------


@pytest.fixture
async def page(launch: Launcher) -> Any:
    return await launch()


async def _texts(page: Any, selector: str) -> list[str]:
    texts: list[str] = await page.locator(selector).all_text_contents()  # also inside a closed <details>
    return texts


@pytest.mark.ws
@pytest.mark.needs_binary
async def test_microphone_digits_and_speech_activity_appear_live(page: Any) -> None:
    async with running_gateway(simulator_settings()) as gw:
        await open_demo(page, gw)
        await page.evaluate(RECORD_PARTIALS)
        await page.get_by_role("button", name="Start microphone").click()
        await wait_for(
            page,
            f"[...document.querySelectorAll('#live-transcript .finals li')].some(li => li.textContent === '{DIGITS}')",
            f"the digits {DIGITS} in the live transcript",
        )
        await wait_for(page, "document.getElementById('level').value > 30", "the level meter to show the tones")
        await wait_for(page, "document.getElementById('log').textContent.includes('\"type\":\"ack\"')", "an ack")
        # partials were shown in place (one element per channel, its text replaced), then cleared by the final
        assert {"1", "14", "147"} <= set(await page.evaluate("() => window.partialsSeen"))
        assert await page.locator("#live-transcript .partial").count() == 1
        status = await page.locator("#live-status").inner_text()
        assert "Data Flow receives pcm16 at 16000 Hz" in status
        assert status.startswith("Streaming pcm16 at ")  # the AudioContext's own rate, resampled by the gateway
        # speech activity was shown: the indicator counted utterances, the channel and the log saw the events
        assert int(await page.locator("#activity").get_attribute("data-count")) >= 1
        log = "\n".join(await _texts(page, "#log li"))
        assert '"name":"Speech Started"' in log and '"name":"Speech Ended"' in log
        await page.locator("#log-panel summary").click()  # open the raw log for the screenshot
        shot = await screenshot(page, "microphone")
        assert shot.stat().st_size > 10_000

        await page.get_by_role("button", name="Stop").click()
        await wait_for(page, "document.getElementById('live-status').innerText.startsWith('Session closed')", "close")
        assert "Session closed: finalized (code 1000" in await page.locator("#live-status").inner_text()
        assert await page.get_by_role("button", name="Start microphone").is_enabled()

        # The capture file loops from the moment the device opens and Stop cuts it anywhere, so the first
        # utterance may lack its first digits and the last its last ones; all others are intact.
        finals = await _texts(page, "#live-transcript .channel[data-channel='0'] .finals li")
        assert DIGITS in finals
        assert DIGITS.endswith(finals[0]) and DIGITS.startswith(finals[-1]), finals
        assert all(text == DIGITS for text in finals[1:-1]), finals
        assert await page.locator("#errors").inner_text() == ""
        assert page.problems == []


@pytest.mark.needs_binary
async def test_uploaded_file_digits_appear_with_progress(page: Any, dtmf_wav: Path) -> None:
    async with running_gateway(simulator_settings()) as gw:
        await open_demo(page, gw)
        await page.get_by_label("Audio file").set_input_files(str(dtmf_wav))
        await page.get_by_role("button", name="Recognise file").click()
        await wait_for(
            page,
            "document.getElementById('upload-status').innerText.startsWith('Done')"
            " || document.getElementById('errors').innerText !== ''",
            "the upload's result",
        )
        shot = await screenshot(page, "upload")
        errors = await page.locator("#errors").inner_text()
        assert errors == "", f"the upload failed: {errors} (screenshot {shot})"
        assert await _texts(page, "#upload-transcript .channel[data-channel='0'] .finals li") == [DIGITS]
        progress = await page.evaluate("(() => { const p = document.getElementById('upload-progress');"
                                       " return [p.value, p.max]; })()")  # fmt: skip
        assert progress[0] == progress[1] == dtmf_wav.stat().st_size
        assert '"type":"progress"' in "\n".join(await _texts(page, "#log li"))
        assert page.problems == []


async def _closed_state(page: Any) -> tuple[str, str]:
    await wait_for(page, "document.getElementById('live-status').innerText.startsWith('Session closed')", "the close")
    assert await page.get_by_role("button", name="Start microphone").is_enabled()
    return await page.locator("#errors").inner_text(), await page.locator("#live-status").inner_text()


@pytest.mark.ws
@pytest.mark.needs_binary
async def test_upstream_failure_is_shown(page: Any) -> None:
    # Recovery off: the failure reaches the page (with recovery on, the session would go on).
    async with running_gateway(simulator_settings(upstream_replay_ms=0)) as gw:
        await open_demo(page, gw)
        await page.get_by_label("Simulate a Data Flow failure").select_option("abort:3000:UNAVAILABLE")
        await page.get_by_role("button", name="Start microphone").click()
        errors, status = await _closed_state(page)
        await screenshot(page, "upstream-failure")
    assert errors.startswith("upstream unavailable: ") and "You can try again." in errors
    assert "(code 1011" in status


@pytest.mark.needs_binary
async def test_denied_microphone_is_explained(launch: Launcher) -> None:
    page = await launch(fake_ui=False, extra_args=("--deny-permission-prompts",))
    async with running_gateway(simulator_settings()) as gw:
        await open_demo(page, gw)
        await page.get_by_role("button", name="Start microphone").click()
        await wait_for(page, "document.getElementById('errors').innerText !== ''", "an error")
        errors = await page.locator("#errors").inner_text()
        assert errors.startswith("microphone denied: Microphone access was denied"), errors
        assert await page.locator("#live-status").inner_text() == "Could not start."
        assert await page.get_by_role("button", name="Start microphone").is_enabled()
        assert await page.locator("#log-count").inner_text() == "0"  # no session was opened


@pytest.mark.ws
@pytest.mark.needs_binary
async def test_lost_connection_is_shown(page: Any) -> None:
    async with running_gateway(simulator_settings()) as gw:
        await open_demo(page, gw)
        await page.get_by_role("button", name="Start microphone").click()
        await wait_for(page, "document.getElementById('live-status').innerText.startsWith('Streaming')", "streaming")
    errors, status = await _closed_state(page)  # the gateway has shut down under the page
    assert errors, status
    assert "(code 1000" not in status
