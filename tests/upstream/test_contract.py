"""The wire contract is one proto file plus one method-path setting."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import MILESTONE, DataflowEvent, StartRequest
from gateway.errors import UpstreamError, UpstreamProtocolError
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.contract import ContentType, WireContract
from gateway.upstream.token import StaticTokenProvider
from tests.support import signals
from tests.support.settings import SIM_TOKEN, settings_for

ROOT = Path(__file__).resolve().parents[2]

# A contract unlike ours in every swappable way: a package, other message and service names,
# other field numbers, and enum values in another order.
VENDOR_LIKE_PROTO = """
syntax = "proto3";
package sestek.wagtail.v9;
enum CONTENT_TYPE { EVENT = 0; AUDIO = 4; RESPONSE = 6; REQUEST = 9; }
message Payload { CONTENT_TYPE content_type = 11; bytes binary_content = 7; string content = 3; }
message DataFlowRequest { string trace = 1; Payload message = 4; }
message DataFlowResponse { Payload message = 2; int64 sequence = 8; }
service DataFlowService { rpc Stream(stream DataFlowRequest) returns (stream DataFlowResponse); }
"""
VENDOR_MODULE = "vendorlike_dataflow_pb2"
VENDOR_PATH = "/sestek.wagtail.v9.DataFlowService/Stream"


def test_checked_in_code_is_not_stale() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_default_contract_matches_the_documented_shape() -> None:
    contract = WireContract("gateway.upstream._proto.dataflow_pb2", "/dataflow/Stream")
    assert contract.proto_method_path == "/dataflow/Stream"
    frame = contract.decode_request(contract.encode_request(ContentType.REQUEST, text='{"a":1}'))
    assert (frame.content_type, frame.text) == (ContentType.REQUEST, '{"a":1}')


@pytest.fixture(scope="module")
def vendor_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    out = tmp_path_factory.mktemp("vendor")
    proto = out / "vendorlike_dataflow.proto"
    proto.write_text(VENDOR_LIKE_PROTO)
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--proto", str(proto), "--out", str(out)], check=True
    )
    sys.path.insert(0, str(out))
    yield VENDOR_MODULE
    sys.path.remove(str(out))


class TestSwappedContract:
    @pytest.fixture
    def sim_config(self, vendor_module: str) -> SimulatorConfig:
        return SimulatorConfig(token=SIM_TOKEN, proto_module=vendor_module, method_path=VENDOR_PATH)

    async def test_round_trip_through_settings_only(self, simulator: DataflowSimulator, vendor_module: str) -> None:
        settings = settings_for(simulator, upstream_proto_module=vendor_module, upstream_method_path=VENDOR_PATH)
        client = UpstreamClient(settings, StaticTokenProvider(SecretStr(SIM_TOKEN)))
        fmt = AudioFormat("pcm16", 8000, 1)
        stream = client.stream(fmt, deadline_s=30)
        await stream.start(StartRequest(project="demo", audio=fmt))
        pcm = signals.to_pcm16(signals.utterances(["2580"], 8000))
        for offset in range(0, len(pcm), 320):
            await stream.send_audio(pcm[offset : offset + 320])
        await stream.finalize()
        events = [i async for i in stream.items() if isinstance(i, DataflowEvent)]
        await stream.aclose()
        await client.aclose()
        assert [e.text for e in events if e.name == MILESTONE] == ["2580"]
        assert simulator.records[-1].audio_bytes == len(pcm)

    async def test_the_old_contract_cannot_talk_to_it(self, simulator: DataflowSimulator) -> None:
        client = UpstreamClient(settings_for(simulator, upstream_proto_module="gateway.upstream._proto.dataflow_pb2",
                                             upstream_method_path="/dataflow/Stream"),
                                StaticTokenProvider(SecretStr(SIM_TOKEN)))  # fmt: skip
        fmt = AudioFormat("pcm16", 8000, 1)
        failures: list[UpstreamError] = []
        for _ in range(5):
            with pytest.raises(UpstreamError) as info:
                await client.stream(fmt, deadline_s=5).start(StartRequest(project="demo", audio=fmt))
            failures.append(info.value)
        await client.aclose()
        assert all(isinstance(f, UpstreamProtocolError) for f in failures), failures  # never a session
