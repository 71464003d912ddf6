"""The wire contract is one proto file plus one method-path setting."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import MILESTONE, DataflowEvent, StartRequest
from gateway.errors import UpstreamError, UpstreamProtocolError
from gateway.server import _upstream_preflight
from gateway.service import Gateway
from gateway.settings import SettingsError
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.contract import ContentType, WireContract
from gateway.upstream.token import StaticTokenProvider
from tests.support import signals
from tests.support.settings import SIM_TOKEN, offline_settings, settings_for, simulator_settings
from tests.support.vendor_contract import generate, importable

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


# --- vendor contracts at startup: accepted, or refused in one line naming the variable ---------------------

BAD_PROTOS = {
    "vendor_audio_text.proto": """syntax = "proto3"; package t.audiotext;
enum CONTENT_TYPE { AUDIO = 0; EVENT = 1; REQUEST = 2; RESPONSE = 3; }
message M { string content = 1; string binary_content = 2; CONTENT_TYPE content_type = 3; }
message I { M message = 1; } message O { M message = 1; }
service S { rpc Stream(stream I) returns (stream O) {} }""",
    "vendor_other_names.proto": """syntax = "proto3"; package t.names;
enum Kind { KIND_UNSPECIFIED = 0; KIND_VOICE = 1; KIND_EVENT = 2; KIND_REQUEST = 3; KIND_RESPONSE = 4; }
message M { string content = 1; bytes binary_content = 2; Kind content_type = 3; }
message I { M message = 1; } message O { M message = 1; }
service S { rpc Stream(stream I) returns (stream O) {} }""",
}


@pytest.fixture(scope="module")
def vendor_modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("vendor_protos")
    generate(out, BAD_PROTOS)
    generated = (out / "vendor_b_pb2.py").read_text()  # as a newer protoc than the runtime writes it
    newer = re.sub(r"(Domain\.PUBLIC,\s*)\d+", r"\g<1>99", generated).replace("v3", "v3newer")
    (out / "vendor_newer_pb2.py").write_text(newer)
    with importable(out):
        yield out


def refusal(module: str, method_path: str) -> str:
    settings = offline_settings(upstream_proto_module=module, upstream_method_path=method_path)
    with pytest.raises(SettingsError) as info:
        _upstream_preflight(settings)
    [line] = str(info.value).splitlines()
    assert line.startswith(f"GATEWAY_UPSTREAM_PROTO_MODULE: {module} is not a usable generated protobuf module"), line
    return line


@pytest.mark.parametrize(
    ("module", "path", "said"),
    [
        # proto2 `required string session_key`: before, an EncodeError traceback from every session
        ("vendor_e_pb2", "/sestek.dataflow.v6.Dataflow/Stream", "missing required fields: message.session_key"),
        # a repeated envelope (a batching server): before, an AttributeError traceback from every session
        ("vendor_g_pb2", "/sestek.dataflow.v8.Dataflow/Stream", "StreamOutput.message is repeated"),
        ("vendor_audio_text_pb2", "/t.audiotext.S/Stream", "t.audiotext.M.binary_content is not a single bytes field"),
        # before: only "KeyError: 'AUDIO'"
        ("vendor_other_names_pb2", "/t.names.S/Stream", "t.names.Kind (of t.names.M.content_type) has values"
         " KIND_UNSPECIFIED, KIND_VOICE, KIND_EVENT, KIND_REQUEST, KIND_RESPONSE; it needs AUDIO, EVENT, REQUEST"
         " (missing AUDIO)"),
        # generated by a newer protoc than the runtime: before, a VersionError traceback at startup
        ("vendor_newer_pb2", "/sestek.dataflow.v3newer.Dataflow/Stream", "VersionError: Detected"),
    ],
)  # fmt: skip
def test_a_contract_the_gateway_cannot_use_is_refused_in_one_line(
    vendor_modules: Path, module: str, path: str, said: str
) -> None:
    assert said in refusal(module, path)


def test_a_prefixed_enum_and_the_named_rpc_are_accepted(vendor_modules: Path, caplog: pytest.LogCaptureFixture) -> None:
    prefixed = WireContract("vendor_d_pb2", "/sestek.dataflow.v5.Dataflow/Stream")  # CONTENT_TYPE_AUDIO, ...
    frame = prefixed.decode_response(prefixed.encode_response(ContentType.RESPONSE, text="{}"))
    assert (frame.content_type, frame.number) == (ContentType.RESPONSE, 3)
    named = WireContract("vendor_b_pb2", "/sestek.dataflow.v3.Dataflow/Stream")  # Health.Watch comes first
    assert named.proto_method_path == "/sestek.dataflow.v3.Dataflow/Stream"
    with caplog.at_level(logging.WARNING, logger="gateway.upstream.contract"):  # none named: the first, told
        fallback = WireContract("vendor_a_pb2", "/sestek.dataflow.v2.DataFlowService/Talk")
    assert fallback.proto_method_path == "/sestek.dataflow.v2.DataFlowService/Stream"
    assert "differs from the proto's /sestek.dataflow.v2.DataFlowService/Stream" in caplog.text


def test_a_message_the_codec_cannot_take_is_a_protocol_error_not_a_traceback() -> None:
    contract = WireContract("gateway.upstream._proto.dataflow_pb2", "/dataflow/Stream")
    with pytest.raises(UpstreamProtocolError, match="cannot encode the EVENT message"):
        contract.encode_request(ContentType.EVENT, text='{"Text": "\ud800"}')  # a lone surrogate: before, a ValueError


async def test_simulator_mode_serves_the_configured_contract(vendor_modules: Path) -> None:
    """Before, the embedded simulator spoke our own proto at /dataflow/Stream whatever the settings named."""
    settings = simulator_settings(
        auth="none", allow_insecure_no_auth=True, default_project="demo",
        upstream_proto_module="vendor_b_pb2", upstream_method_path="/sestek.dataflow.v3.Dataflow/Stream",
    )  # fmt: skip
    gateway = await Gateway.open(settings)
    try:
        assert gateway.simulator is not None
        assert gateway.simulator.contract.proto_method_path == "/sestek.dataflow.v3.Dataflow/Stream"
        stream = gateway.upstream.stream(AudioFormat("pcm16", 8000, 1), deadline_s=10)
        await stream.start(StartRequest(project="demo", audio=AudioFormat("pcm16", 8000, 1)))
        await stream.aclose()
    finally:
        await gateway.aclose()


@pytest.mark.parametrize("wkt", [True, False], ids=["well-known-type", "split-over-files"])
def test_gen_proto_takes_well_known_types_and_a_proto_split_over_files(tmp_path: Path, wkt: bool) -> None:
    """README's swap, in a copy of the repository's layout: before, protoc could not find
    google/protobuf/timestamp.proto, and a second file's module was imported top-level (ModuleNotFoundError)."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "gen_proto.py").write_text((ROOT / "scripts" / "gen_proto.py").read_text())
    for package in ("gateway", "gateway/upstream"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "proto").mkdir()
    stamp = (
        ('import "google/protobuf/timestamp.proto";', " google.protobuf.Timestamp sent_at = 9;") if wkt else ("", "")
    )
    (tmp_path / "proto" / "dataflow_common.proto").write_text(
        f'syntax = "proto3"; package split.v1; {stamp[0]}\n'
        "enum CONTENT_TYPE { AUDIO = 0; EVENT = 1; REQUEST = 2; RESPONSE = 3; }\n"
        "message DataMessage { CONTENT_TYPE content_type = 5; string content = 6; bytes binary_content = 7;"
        f"{stamp[1]} }}\n"
    )
    (tmp_path / "proto" / "dataflow.proto").write_text(
        'syntax = "proto3"; package split.v1; import "dataflow_common.proto";\n'
        "message StreamInput { DataMessage message = 2; } message StreamOutput { DataMessage message = 3; }\n"
        "service Dataflow { rpc Stream(stream StreamInput) returns (stream StreamOutput) {} }\n"
    )
    gen = [sys.executable, "scripts/gen_proto.py"]
    for args in ([], ["--proto", "proto/dataflow_common.proto"]):  # (README's step; the old script took one file)
        done = subprocess.run([*gen, *args], cwd=tmp_path, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    check = subprocess.run([*gen, "--check"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    probe = (
        "import gateway.upstream._proto.dataflow_pb2 as m; print(m.StreamInput.DESCRIPTOR.fields[0].message_type.name)"
    )
    imported = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert (imported.returncode, imported.stdout.strip()) == (0, "DataMessage"), imported.stderr
