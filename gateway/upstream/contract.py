"""The wire contract: which protobuf messages carry Data Flow's JSON and audio.

Everything is discovered from the generated module named by ``upstream_proto_module``: the
service's bidirectional RPC gives the input/output message types, the sub-message with the
documented ``content`` / ``binary_content`` / ``content_type`` fields is the envelope, and the
``CONTENT_TYPE`` enum values are read by name. Replacing the proto (other field numbers, a
package, other message names) therefore needs no code change.

A message whose string field holds invalid UTF-8 (a transcript cut mid-character), which protobuf refuses
to parse, is parsed again with the lenient twin of its class (lenient_proto.py) and its text decoded with
U+FFFD in place of the bad bytes: one bad byte costs one character, not the session. Only that rare
message pays for the second parse.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from gateway.errors import UpstreamProtocolError
from gateway.upstream.lenient_proto import lenient_classes
from gateway.upstream.repair_log import RepairLog

log = logging.getLogger(__name__)

_ENVELOPE_FIELDS = {"content", "binary_content", "content_type"}
_ESCAPED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of each byte that is not UTF-8


class ContentType(Enum):
    AUDIO = "AUDIO"
    EVENT = "EVENT"
    REQUEST = "REQUEST"
    RESPONSE = "RESPONSE"


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded upstream message."""

    content_type: ContentType
    text: str
    binary: bytes


def _envelope_field(message: Descriptor) -> FieldDescriptor:
    for field in message.fields:
        sub = field.message_type
        if sub is not None and set(sub.fields_by_name) >= _ENVELOPE_FIELDS:
            return field
    raise ValueError(f"{message.full_name} has no sub-message with fields {sorted(_ENVELOPE_FIELDS)}")


class WireContract:
    """Encodes requests to and decodes responses from the Stream RPC."""

    def __init__(self, module_name: str, method_path: str) -> None:
        module = importlib.import_module(module_name)
        file: FileDescriptor = module.DESCRIPTOR
        method = next(
            (
                m
                for service in file.services_by_name.values()
                for m in service.methods
                if m.client_streaming and m.server_streaming
            ),
            None,
        )
        if method is None:
            raise ValueError(f"{module_name} defines no bidirectional streaming RPC")
        self.proto_method_path = f"/{method.containing_service.full_name}/{method.name}"
        self.method_path = method_path
        if self.proto_method_path != method_path:
            log.warning("upstream method path %s differs from the proto's %s", method_path, self.proto_method_path)
        self._input_cls: type[Message] = GetMessageClass(method.input_type)
        self._output_cls: type[Message] = GetMessageClass(method.output_type)
        lenient = lenient_classes([method.input_type, method.output_type])
        self._lenient = {self._input_cls: lenient[0], self._output_cls: lenient[1]}
        self.odd_messages = RepairLog(log)  # text not UTF-8 (here), not JSON (the stream): bursts, not floods
        self._input_field = _envelope_field(method.input_type).name
        self._output_field = _envelope_field(method.output_type).name
        envelope = _envelope_field(method.input_type).message_type
        assert envelope is not None  # _envelope_field only returns message-typed fields
        enum = envelope.fields_by_name["content_type"].enum_type
        if enum is None:
            raise ValueError(f"{envelope.full_name}.content_type is not an enum")
        self._number = {kind: enum.values_by_name[kind.value].number for kind in ContentType}
        self._kind = {number: kind for kind, number in self._number.items()}

    # --- client side: StreamInput out, StreamOutput in ---------------------------------------------

    def encode_request(self, content_type: ContentType, *, text: str = "", binary: bytes = b"") -> bytes:
        return self._encode(self._input_cls, self._input_field, content_type, text, binary)

    def decode_response(self, data: bytes) -> Frame:
        return self._decode(self._output_cls, self._output_field, data)

    # --- server side (the simulator): StreamInput in, StreamOutput out ------------------------------

    def decode_request(self, data: bytes) -> Frame:
        return self._decode(self._input_cls, self._input_field, data)

    def encode_response(self, content_type: ContentType, *, text: str = "", binary: bytes = b"") -> bytes:
        return self._encode(self._output_cls, self._output_field, content_type, text, binary)

    def _encode(self, cls: type[Message], field: str, kind: ContentType, text: str, binary: bytes) -> bytes:
        outer = cls()
        envelope: Any = getattr(outer, field)
        # AUDIO is 0, so the type is always set explicitly (proto3 would omit it anyway).
        envelope.content_type = self._number[kind]
        if text:
            envelope.content = text
        if binary:
            envelope.binary_content = binary
        return outer.SerializeToString()

    def _decode(self, cls: type[Message], field: str, data: bytes) -> Frame:
        try:
            outer = cls.FromString(data)
        except DecodeError as exc:
            return self._decode_lenient(self._lenient[cls], field, data, exc)
        envelope: Any = getattr(outer, field)
        kind = self._kind.get(envelope.content_type)  # (inline: this is every message's path)
        if kind is None:
            raise UpstreamProtocolError(f"unknown content type {envelope.content_type}")
        return Frame(kind, envelope.content, envelope.binary_content)

    def _decode_lenient(self, cls: type[Message], field: str, data: bytes, error: DecodeError) -> Frame:
        """``data`` that failed to parse: read if only its text was not UTF-8, else the error it is."""
        try:
            outer = cls.FromString(data)
        except DecodeError:
            raise UpstreamProtocolError("undecodable protobuf message") from error
        envelope: Any = getattr(outer, field)
        kind = self._kind.get(envelope.content_type)
        if kind is None:
            raise UpstreamProtocolError(f"unknown content type {envelope.content_type}")
        raw: bytes = envelope.content
        invalid = len(_ESCAPED.findall(raw.decode("utf-8", "surrogateescape")))
        if invalid:
            self.odd_messages.repaired(kind.value, len(data), invalid)
        else:  # another string field held it: nothing the gateway reads
            log.debug("an upstream %s message had invalid UTF-8 outside its text", kind.value)
        return Frame(kind, raw.decode("utf-8", "replace"), envelope.binary_content)
