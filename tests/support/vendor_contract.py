"""Vendor-like wire contracts (tests/support/vendor_protos/*.proto, the reviewer's) generated at test time,
and a Data Flow that speaks one with the vendor's own generated classes: a grpc.aio server on
127.0.0.1, port 0, that never goes through the gateway's WireContract.

It answers Start with a StartResponse, sends one SR Milestone once 3200 bytes of audio arrived, and on
Finalize a FinalizeResponse and a FinalResult, then ends the stream. ``after_start`` adds messages of the
test's own (keep-alives of an unknown type, empty heartbeats) right after the StartResponse.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from tests.support.stream_server import serve_stream

PROTOS = Path(__file__).resolve().parent / "vendor_protos"
DOCUMENTED = {"AUDIO": 0, "EVENT": 1, "REQUEST": 2, "RESPONSE": 3}
START_OK = {"MessageName": "StartResponse", "operation-result": "success", "SessionId": "vendor-1"}


def generate(out: Path, extra: dict[str, str] | None = None) -> None:
    """Every vendor proto (and ``extra``: file name -> text) as *_pb2 modules in ``out``."""
    from grpc_tools import protoc

    for name, text in (extra or {}).items():
        (out / name).write_text(text)
    protos = [str(p) for p in sorted(PROTOS.glob("*.proto"))] + [str(out / name) for name in extra or {}]
    well_known = resources.files("grpc_tools") / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{out}", f"-I{well_known}", f"--python_out={out}", *protos]
    assert protoc.main(args) == 0


@contextmanager
def importable(out: Path) -> Iterator[Path]:
    """``out``'s modules importable by their top-level names; forgotten again afterwards."""
    before = set(sys.modules)
    sys.path.insert(0, str(out))
    try:
        yield out
    finally:
        sys.path.remove(str(out))
        for name in set(sys.modules) - before:
            if name.endswith("_pb2"):
                del sys.modules[name]


class VendorDataflow:
    """Data Flow behind ``method_path`` of ``module``, with ``numbers`` (kind -> number) per direction."""

    def __init__(
        self,
        module: str,
        method_path: str,
        *,
        numbers_in: dict[str, int] = DOCUMENTED,
        numbers_out: dict[str, int] = DOCUMENTED,
        out_field: str | None = "message",
        after_start: Callable[[VendorDataflow], list[bytes]] = lambda _: [],
    ) -> None:
        self.module: ModuleType = importlib.import_module(module)
        self.method_path = method_path
        service_name, method_name = method_path.rsplit("/", 1)
        service = self.module.DESCRIPTOR.pool.FindServiceByName(service_name.lstrip("/"))
        method = service.methods_by_name[method_name]
        self.input: type[Message] = GetMessageClass(method.input_type)
        self.output: type[Message] = GetMessageClass(method.output_type)
        self.kinds_in = {number: kind for kind, number in numbers_in.items()}
        self.numbers_out = numbers_out
        self.out_field = out_field
        self.after_start = after_start
        self.audio_bytes = 0
        self.requests: list[str] = []
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def message(self, kind: str | int, text: str = "", binary: bytes = b"") -> bytes:
        outer = self.output()
        envelope: Any = outer if self.out_field is None else getattr(outer, self.out_field)
        envelope.content_type = kind if isinstance(kind, int) else self.numbers_out[kind]
        if text:
            is_bytes = envelope.DESCRIPTOR.fields_by_name["content"].type == FieldDescriptor.TYPE_BYTES
            envelope.content = text.encode() if is_bytes else text
        if binary:
            envelope.binary_content = binary
        return outer.SerializeToString()

    def event(self, name: str, **data: Any) -> bytes:
        return self.message("EVENT", json.dumps({"Name": name, "Channel": 0, "StartMsec": 0, "EndMsec": 500,
                                                 "GroupId": "1", "Data": data}))  # fmt: skip

    async def __aenter__(self) -> VendorDataflow:
        self._server, self.port = await serve_stream(self._handle, self.method_path)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            await self._server.stop(None)

    async def _handle(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        milestone_sent = False
        async for data in requests:
            envelope: Any = self.input.FromString(data).message
            kind = self.kinds_in.get(envelope.content_type, f"?{envelope.content_type}")
            if kind == "AUDIO":
                self.audio_bytes += len(envelope.binary_content)
                if self.audio_bytes >= 3200 and not milestone_sent:
                    milestone_sent = True
                    yield self.event("SR Milestone", Text="vendor")
                continue
            content = envelope.content.decode() if isinstance(envelope.content, bytes) else envelope.content
            name = json.loads(content).get("MessageName", "")
            self.requests.append(f"{kind}:{name}")
            if name == "Start":
                yield self.message("RESPONSE", json.dumps(START_OK))
                for message in self.after_start(self):
                    yield message
            elif name in ("Finalize", "Stop"):
                yield self.message(
                    "RESPONSE", json.dumps({"MessageName": f"{name}Response", "operation-result": "success"})
                )
                yield self.event("FinalResult")
                return
