"""/v1/audiohook against what Genesys Cloud's client really sends and checks.

Sources: Genesys's reference implementation and its server test suite
(purecloudlabs/audiohook-reference-implementation: app/audiohook/src/protocol/message.ts,
app/audiohook/src/server/serversessionimpl.ts, test/audiohook-api-messages.test.ts).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters import audiohook, commands
from gateway.adapters.audiohook_media import MAX_LANGUAGES, supported_languages
from gateway.simulator.server import DataflowSimulator
from tests.support.audiohook_client import opened_client
from tests.support.cli_process import run_cli
from tests.support.harness import RunningGateway

# The reference's languageCodeRegex (app/audiohook/src/protocol/validators.ts), which its test suite
# applies to every entry of ``supportedLanguages``.
GENESYS_LANGUAGE = re.compile(r"^[a-z]{2,3}-[A-Za-z]{2,3}$")


@pytest.mark.ws
@pytest.mark.parametrize(
    ("conversation", "config", "listed"),
    [
        (None, {"supportedLanguages": ["en-US", "de-DE", "en-US", "not a tag", 7]}, ["en-US", "de-DE"]),
        (audiohook.PROBE_CONVERSATION, {}, []),  # the integration's probe, nothing configured
    ],
)
async def test_opened_lists_supported_languages_when_the_open_asks(
    gw: RunningGateway,
    simulator: DataflowSimulator,
    conversation: str | None,
    config: dict[str, Any],
    listed: list[str],
) -> None:
    # A Transcription Connector open carries supportedLanguages: true (OpenParameters in message.ts);
    # the reference server then always puts the list in opened, [] when it has none
    # (serversessionimpl.ts), and Genesys's test "Transcript Connector - Supported Languages" fails
    # an opened without an array there.
    extra: dict[str, Any] = {"conversationId": conversation} if conversation else {}
    ws, client = await opened_client(gw, supportedLanguages=True, customConfig=config, **extra)
    try:
        opened = await client.recv()
        await client.send("close", {"reason": "end"})
        rest = await client.until("closed")
    finally:
        await ws.close()
    assert opened["type"] == "opened" and opened["parameters"]["supportedLanguages"] == listed
    assert all(GENESYS_LANGUAGE.match(code) for code in listed)
    assert rest[-1]["type"] == "closed"


def test_supported_languages_are_bounded_and_absent_unless_asked() -> None:
    many = [f"e{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}-US" for i in range(3 * MAX_LANGUAGES)]
    assert len(supported_languages({"supportedLanguages": many})) == MAX_LANGUAGES
    assert supported_languages({"supportedLanguages": "en-US"}) == [] and supported_languages(None) == []
    dialect = audiohook.AudioHookDialect("demo")
    open_message = (
        '{"version": "2", "id": "00000000-0000-4000-8000-000000000001", "type": "open", "seq": 1,'
        ' "serverseq": 0, "position": "PT0S", "parameters": {"organizationId": "o", "conversationId": "c",'
        ' "media": [{"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}]}}'
    )
    command = dialect.waiting(open_message)
    assert isinstance(command, commands.Begin) and isinstance(opened := command.reply[0], dict)
    assert opened["type"] == "opened" and "supportedLanguages" not in opened["parameters"]


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"audiohook_supported_languages": ["en-US", "tr-TR"]}], indirect=True)
@pytest.mark.parametrize(
    ("config", "listed"),
    [
        ({}, ["en-US", "tr-TR"]),  # the integration names none: the gateway's list
        ({"supportedLanguages": ["de-DE"]}, ["de-DE"]),  # the integration's own list wins
        ({"supportedLanguages": []}, []),  # even when it is empty: the integration said so
    ],
)
async def test_the_gateway_wide_languages_are_listed_when_the_integration_names_none(
    gw: RunningGateway, simulator: DataflowSimulator, config: dict[str, Any], listed: list[str]
) -> None:
    ws, client = await opened_client(gw, supportedLanguages=True, customConfig=config)
    try:
        opened = await client.recv()
        await client.send("close", {"reason": "end"})
        await client.until("closed")
    finally:
        await ws.close()
    assert opened["type"] == "opened" and opened["parameters"]["supportedLanguages"] == listed


def test_a_language_the_genesys_client_would_refuse_stops_startup(tmp_path: Path) -> None:
    """Genesys's client checks every listed code against its pattern and fails the session on one that
    does not match: a code written "en_US" or "english" would have broken every Transcription Connector."""
    codes = ["en-US", "en_US", "english", "tr-TR", "EN-us"]
    done = run_cli(["settings"], {"GATEWAY_AUDIOHOOK_SUPPORTED_LANGUAGES": json.dumps(codes)}, tmp_path)
    assert done.returncode == 2, done.stdout
    assert [line.split(":")[0] for line in done.stderr.splitlines()] == [
        "GATEWAY_AUDIOHOOK_SUPPORTED_LANGUAGES[1]", "GATEWAY_AUDIOHOOK_SUPPORTED_LANGUAGES[2]",
        "GATEWAY_AUDIOHOOK_SUPPORTED_LANGUAGES[4]"]  # fmt: skip
    assert "english" not in done.stderr and "en_US" not in done.stderr
