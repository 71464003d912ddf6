"""The demo page and the JavaScript client against hostile strings, in a real headless Chromium: a string a
client chose that comes back in the gateway's error is shown as text (never markup), the page's
Content-Security-Policy stops what an injection would run, the API key never leaves the page but in the
start message and the upload's Authorization header, and a refusal is reported once, as what it is.

Same browser as ``test_browser.py`` (Debian's chromium through Playwright; skips without it outside CI).
"""

from __future__ import annotations

import pytest

from gateway.auth import key_digest
from tests.support import browser
from tests.support.browser import Launcher, open_demo, wait_for
from tests.support.harness import running_gateway
from tests.support.settings import SECRETS, simulator_settings

launch = browser.launch  # the fixtures, under their own names
dtmf_wav = browser.dtmf_wav

KEY = "dfg_hostile-page-key-0123456789abcdefghijkl"
SECRETS.add(KEY)
# A project name that would run script if the page ever rendered the gateway's error as markup.
HOSTILE = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
INJECT = """() => {
  document.body.insertAdjacentHTML('beforeend',
    '<img src=x onerror="window.__csp=1"><a id=js-link href="javascript:window.__csp=3">x</a>');
  const script = document.createElement('script');
  script.textContent = 'window.__csp = 2';
  document.body.append(script);
}"""


@pytest.mark.ws
@pytest.mark.needs_binary
async def test_a_refusal_echoing_markup_is_shown_once_as_text_and_the_key_stays_in_the_page(
    launch: Launcher,
) -> None:
    settings = simulator_settings(auth="required", api_keys=[{"name": "k", "sha256": key_digest(KEY),
                                                              "projects": ["demo"]}])  # fmt: skip
    page = await launch()
    requests: list[tuple[str, str]] = []
    console: list[str] = []
    page.on("request", lambda r: requests.append((r.url, r.headers.get("referer", ""))))
    page.on("console", lambda m: console.append(m.text))
    async with running_gateway(settings) as gw:
        await open_demo(page, gw)
        await page.get_by_label("Project").fill(HOSTILE)
        await page.get_by_label("Access token").fill(KEY)
        await page.get_by_role("button", name="Start microphone").click()
        await wait_for(page, "document.getElementById('live-status').innerText.startsWith('Session closed')", "close")
        await page.wait_for_timeout(300)  # anything the close itself would add

        # One error, the gateway's own: not followed by a made-up "connection lost, you can try again".
        codes = await page.locator("#errors p").evaluate_all("items => items.map(p => p.dataset.code)")
        assert codes == ["project_not_allowed"], await page.locator("#errors").inner_text()
        errors = await page.locator("#errors").inner_text()
        assert HOSTILE in errors and "try again" not in errors
        assert await page.locator("#errors img, #errors script, #log img, #log script").count() == 0
        assert await page.evaluate("() => window.__xss") is None

        # Were markup injected anyway, the Content-Security-Policy runs none of it.
        await page.evaluate(INJECT)
        await page.locator("#js-link").click()
        await page.wait_for_timeout(300)
        assert await page.evaluate("() => window.__csp") is None
        assert sum("Content Security Policy" in line for line in console) >= 2

        assert await page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie]") == [0, 0, ""]
    assert requests and not [r for r in requests if KEY in r[0] or KEY in r[1]]
    assert not [line for line in console if KEY in line]
