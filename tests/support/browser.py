"""The browser tests' headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright for Python,
never a downloaded browser): the ``launch`` fixture, whose pages hear a generated DTMF WAV (the
``dtmf_wav`` fixture) as their microphone, the demo page opened on a gateway, a wait for a condition
in the page that fails with what the page shows, and screenshots in ``artifacts/``.

A test module takes the fixtures under their own names: ``launch = browser.launch``,
``dtmf_wav = browser.dtmf_wav``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import signals
from tests.support.harness import RunningGateway
from tests.support.system import chromium as find_chromium

DIGITS = "147"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]  # fmt: skip


@pytest.fixture
def dtmf_wav(tmp_path: Path) -> Path:
    # Leading silence, the digits, then >= 1 s of silence: the capture file loops, and the simulator's
    # VAD needs 400 ms of silence to end the utterance.
    path = tmp_path / "dtmf-147.wav"
    path.write_bytes(signals.wav_bytes(signals.utterances([DIGITS], 48000, lead_ms=500, tail_ms=1500), 48000))
    return path


Launcher = Callable[..., Awaitable[Any]]


@pytest.fixture
async def launch(dtmf_wav: Path) -> AsyncIterator[Launcher]:
    """Start headless Chromium (the DTMF WAV as its microphone) and return a new page in it."""
    chromium = find_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browsers: list[Any] = []

        async def new_page(*, fake_ui: bool = True, extra_args: tuple[str, ...] = ()) -> Any:
            args = [a for a in CHROMIUM_ARGS if fake_ui or a != "--use-fake-ui-for-media-stream"]
            browser = await playwright.chromium.launch(
                executable_path=chromium,
                headless=True,
                args=[*args, f"--use-file-for-fake-audio-capture={dtmf_wav}", *extra_args],
            )
            browsers.append(browser)
            context = await browser.new_context(viewport={"width": 1100, "height": 900})
            page = await context.new_page()
            page.set_default_timeout(20_000)
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.problems = problems
            return page

        try:
            yield new_page
        finally:
            for browser in browsers:
                await browser.close()


async def wait_for(page: Any, script: str, what: str, timeout_ms: int = 20_000) -> None:
    """Wait for a JavaScript condition; on timeout fail with what the page shows."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.wait_for_function(f"() => {script}", timeout=timeout_ms)  # a function: the page's CSP forbids eval
    except PlaywrightTimeout:
        shot = await screenshot(page, "failure")
        state = await page.evaluate(
            """() => ({errors: document.getElementById('errors').innerText,
                       live: document.getElementById('live-status').innerText,
                       upload: document.getElementById('upload-status').innerText,
                       log: [...document.querySelectorAll('#log li')].slice(-15).map(li => li.textContent)})"""
        )
        pytest.fail(f"timed out waiting for {what}; page state: {state}; problems: {page.problems}; screenshot {shot}")


async def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"browser-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


async def open_demo(page: Any, gw: RunningGateway) -> None:
    await page.goto(f"{gw.http_url}/")
    await page.wait_for_function("() => document.body.dataset.ready === 'true'")
    assert await page.locator("#simulator-note").is_visible()
