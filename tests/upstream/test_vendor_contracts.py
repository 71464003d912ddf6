"""Vendor contracts the README's "the wire contract is swappable" promises, over real sockets: a Data Flow
speaking the vendor's proto with its own generated classes (tests/support/vendor_contract.py), the real
gateway in front of it configured through settings alone, and a native /v1/stream client.

Before, each of these ended every session (or sent the client something it cannot use): a keep-alive of a
content type the gateway does not know ended it with ``unknown content type 7``; an output envelope with
its own CONTENT_TYPE numbering had its StartResponse read as audio; a Health.Watch RPC declared before
Dataflow.Stream was used instead of it; a flat StreamOutput was refused at startup; a ``bytes content``
crashed every session with a TypeError; an empty heartbeat reached the client as a 0-byte audio frame."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import Settings
from tests.support.harness import Transcript, read_all, running_gateway, ws_connect
from tests.support.native_client import start_message
from tests.support.settings import SIM_TOKEN
from tests.support.vendor_contract import VendorDataflow, generate, importable

pytestmark = pytest.mark.ws

TTS = b"\x01\x02" * 160  # audio the vendor sends the client
NOTE = json.dumps({"Name": "Note", "Channel": 0, "Data": {"Text": "café"}})


@pytest.fixture(scope="module")
def vendor_modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("vendor_protos")
    generate(out)
    with importable(out):
        yield out


def settings(vendor: VendorDataflow) -> Settings:
    return Settings(
        upstream_target=vendor.target,
        upstream_token=SIM_TOKEN,
        upstream_proto_module=vendor.module.__name__,
        upstream_method_path=vendor.method_path,
        default_project="demo",
        auth="none",
        allow_insecure_no_auth=True,
        _env_file=None,  # type: ignore[call-arg]
    )


async def session(vendor: VendorDataflow) -> tuple[dict[str, Any], Transcript]:
    """Start, 100 ms of audio, finalize: the first message and the rest."""
    async with vendor, running_gateway(settings(vendor)) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        first: dict[str, Any] = json.loads(await ws.recv())
        if first["type"] == "started":
            await ws.send(bytes(3200))
            await ws.send(json.dumps({"type": "finalize"}))
        return first, await read_all(ws, timeout=10)


def assert_whole(first: dict[str, Any], transcript: Transcript, vendor: VendorDataflow) -> None:
    assert first["type"] == "started", first
    assert transcript.errors() == [], transcript.messages
    assert transcript.milestones() == ["vendor"], transcript.messages
    assert [m["name"] for m in transcript.of_type("event")][-1] == "FinalResult"
    assert transcript.close_code == 1000
    assert vendor.audio_bytes == 3200
    assert vendor.requests == ["REQUEST:Start", "REQUEST:Finalize"]


async def test_messages_of_an_unknown_content_type_are_skipped_and_logged_a_burst_at_a_time(
    vendor_modules: Path, caplog: pytest.LogCaptureFixture
) -> None:
    numbers = {"EVENT": 0, "AUDIO": 1, "RESPONSE": 2, "REQUEST": 3}  # and KEEPALIVE = 7, not the gateway's
    vendor = VendorDataflow(
        "vendor_a_pb2", "/sestek.dataflow.v2.DataFlowService/Stream", numbers_in=numbers, numbers_out=numbers,
        after_start=lambda v: [v.message(7, '{"MessageName":"KeepAlive"}') for _ in range(5)],
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="gateway.upstream.contract"):
        first, transcript = await session(vendor)
    assert_whole(first, transcript, vendor)  # before: upstream_protocol_error "unknown content type 7"
    lines = [r.getMessage() for r in caplog.records if "content type" in r.getMessage()]
    assert len(lines) == 2, lines  # the first at once, the other four in one line (when the client closed)
    assert "content type 7" in lines[0]
    assert lines[1].startswith("4 more upstream messages of content types") and "7: 4" in lines[1], lines


async def test_an_output_envelope_with_its_own_numbering_is_read_by_it(vendor_modules: Path) -> None:
    vendor = VendorDataflow(
        "vendor_f_pb2", "/sestek.dataflow.v7.Dataflow/Stream", numbers_out={"RESPONSE": 0, "EVENT": 1, "AUDIO": 2},
        after_start=lambda v: [v.message("AUDIO", binary=TTS)],
    )  # fmt: skip
    first, transcript = await session(vendor)
    assert_whole(first, transcript, vendor)  # before: the StartResponse (0) was read as audio; start timed out
    assert transcript.audio == [TTS]


async def test_the_rpc_the_method_path_names_is_used_not_the_first_in_the_file(vendor_modules: Path) -> None:
    vendor = VendorDataflow("vendor_b_pb2", "/sestek.dataflow.v3.Dataflow/Stream")  # Health.Watch comes first
    first, transcript = await session(vendor)
    assert_whole(first, transcript, vendor)  # before: refused at startup (Ping has no envelope)


async def test_a_flat_stream_output_is_its_own_envelope(vendor_modules: Path) -> None:
    vendor = VendorDataflow(
        "vendor_h_pb2", "/sestek.dataflow.v9.dataflow/Stream", out_field=None,
        after_start=lambda v: [v.message("AUDIO", binary=TTS)],
    )  # fmt: skip
    first, transcript = await session(vendor)
    assert_whole(first, transcript, vendor)  # before: refused at startup
    assert transcript.audio == [TTS]


async def test_a_bytes_content_field_carries_utf8_text(vendor_modules: Path) -> None:
    vendor = VendorDataflow(
        "vendor_c_pb2", "/sestek.dataflow.v4.Dataflow/Stream",
        after_start=lambda v: [v.message("EVENT", NOTE)],
    )  # fmt: skip
    first, transcript = await session(vendor)
    assert_whole(first, transcript, vendor)  # before: a TypeError traceback from every session
    assert [m["data"]["Text"] for m in transcript.events("Note")] == ["café"]


async def test_empty_heartbeats_are_not_relayed_as_empty_audio(vendor_modules: Path) -> None:
    vendor = VendorDataflow(
        "vendor_b_pb2", "/sestek.dataflow.v3.Dataflow/Stream",
        after_start=lambda v: [v.output().SerializeToString()] * 3 + [v.message("AUDIO", binary=TTS)],
    )  # fmt: skip
    first, transcript = await session(vendor)
    assert_whole(first, transcript, vendor)
    assert transcript.audio == [TTS]  # before: three 0-byte binary frames first
