"""The wire contract: which protobuf messages carry Data Flow's JSON and audio.

Everything is discovered from the generated module named by ``upstream_proto_module``: the RPC whose
path is ``upstream_method_path`` (else the first bidirectional one) gives the input/output message
types; in each, the envelope is the sub-message with the documented ``content`` / ``binary_content`` /
``content_type`` fields, or the message itself when it has them; the numbers of each envelope's own
``CONTENT_TYPE`` enum are read by name (a common prefix such as ``CONTENT_TYPE_`` is ignored).
Replacing the proto (other field numbers, a package, other message names) therefore needs no code
change. A contract the codec cannot use (a repeated envelope, a required field it cannot fill, audio
in a string) is refused here, at startup, not by every session; ``content`` may be ``bytes`` (UTF-8).

A message of a content type the gateway does not know (a keep-alive, a newer server's) decodes to a
Frame without a kind: the session skips it. A message whose string field holds invalid UTF-8 (a
transcript cut mid-character), which protobuf refuses to parse, is parsed again with the lenient twin
of its class (lenient_proto.py) and its text decoded with U+FFFD in place of the bad bytes: one bad
byte costs one character, not the session. Only that rare message pays for the second parse.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, EncodeError, Message
from google.protobuf.message_factory import GetMessageClass

from gateway.errors import UpstreamProtocolError
from gateway.upstream.lenient_proto import lenient_classes
from gateway.upstream.repair_log import RepairLog

log = logging.getLogger(__name__)

_ENVELOPE_FIELDS = {"content", "binary_content", "content_type"}
_ESCAPED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of each byte that is not UTF-8
# What a codec of an unusable contract raises at run time (a shape __init__'s checks did not foresee).
_CODEC_ERRORS = (EncodeError, TypeError, AttributeError, ValueError, KeyError)


class ContentType(Enum):
    AUDIO = "AUDIO"
    EVENT = "EVENT"
    REQUEST = "REQUEST"
    RESPONSE = "RESPONSE"


# The kinds each direction's enum must name: the gateway sends audio, events and requests, and reads
# audio, events and responses (the simulator the other way round).
_INPUT_KINDS = (ContentType.AUDIO, ContentType.EVENT, ContentType.REQUEST)
_OUTPUT_KINDS = (ContentType.AUDIO, ContentType.EVENT, ContentType.RESPONSE)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded upstream message; ``content_type`` None for a ``number`` the contract does not name."""

    content_type: ContentType | None
    text: str
    binary: bytes
    number: int = 0


class _Direction:
    """The codec of one message type of the RPC (StreamInput or StreamOutput)."""

    def __init__(self, message: Descriptor, lenient: type[Message], needed: tuple[ContentType, ...]) -> None:
        self.cls: type[Message] = GetMessageClass(message)
        self.lenient = lenient
        self.field, envelope = _envelope(message)
        self.text_is_bytes = envelope.fields_by_name["content"].type == FieldDescriptor.TYPE_BYTES
        self.number = _numbers(envelope, needed)
        self.kind = {number: kind for kind, number in self.number.items()}
        self.odd: RepairLog | None = None

    def encode(self, kind: ContentType, text: str, binary: bytes) -> bytes:
        try:
            outer = self.cls()
            envelope: Any = outer if self.field is None else getattr(outer, self.field)
            # AUDIO is 0, so the type is always set explicitly (proto3 would omit it anyway).
            envelope.content_type = self.number[kind]
            if text:
                envelope.content = text.encode() if self.text_is_bytes else text
            if binary:
                envelope.binary_content = binary
            return outer.SerializeToString()
        except _CODEC_ERRORS as exc:
            raise UpstreamProtocolError(f"cannot encode the {kind.value} message: {_said(exc)}") from exc

    def decode(self, data: bytes) -> Frame:
        try:
            try:
                outer = self.cls.FromString(data)
            except DecodeError as exc:
                return self._decode_lenient(data, exc)
            envelope: Any = outer if self.field is None else getattr(outer, self.field)
            number: int = envelope.content_type
            text = envelope.content
            if self.text_is_bytes:
                text = self._text(text, number, len(data))
            return Frame(self.kind.get(number), text, envelope.binary_content, number)
        except _CODEC_ERRORS as exc:
            raise UpstreamProtocolError(f"cannot decode a message: {_said(exc)}") from exc

    def _decode_lenient(self, data: bytes, error: DecodeError) -> Frame:
        """``data`` that failed to parse: read if only its text was not UTF-8, else the error it is."""
        try:
            outer = self.lenient.FromString(data)
        except DecodeError:
            raise UpstreamProtocolError("undecodable protobuf message") from error
        envelope: Any = outer if self.field is None else getattr(outer, self.field)
        number: int = envelope.content_type
        return Frame(
            self.kind.get(number), self._text(envelope.content, number, len(data)), envelope.binary_content, number
        )

    def _text(self, raw: bytes, number: int, size: int) -> str:
        invalid = 0 if raw.isascii() else len(_ESCAPED.findall(raw.decode("utf-8", "surrogateescape")))
        kind = self.kind.get(number)
        name = kind.value if kind is not None else f"content type {number}"
        if invalid and self.odd is not None:
            self.odd.repaired(name, size, invalid)
        elif not invalid and not self.text_is_bytes:  # another string field held it: nothing the gateway reads
            log.debug("an upstream %s message had invalid UTF-8 outside its text", name)
        return raw.decode("utf-8", "replace")


class WireContract:
    """Encodes requests to and decodes responses from the Stream RPC."""

    def __init__(self, module_name: str, method_path: str) -> None:
        module = importlib.import_module(module_name)
        file: FileDescriptor = module.DESCRIPTOR
        method = _method(file, module_name, method_path)
        self.proto_method_path = _path(method)
        self.method_path = method_path
        if self.proto_method_path != method_path:
            log.warning("upstream method path %s differs from the proto's %s", method_path, self.proto_method_path)
        lenient = lenient_classes([method.input_type, method.output_type])
        self._input = _Direction(method.input_type, lenient[0], _INPUT_KINDS)
        self._output = _Direction(method.output_type, lenient[1], _OUTPUT_KINDS)
        self.odd_messages = RepairLog(log)  # text not UTF-8, types not known (here), not JSON (items): bursts
        self._input.odd = self._output.odd = self.odd_messages
        for direction, kinds in ((self._input, _INPUT_KINDS), (self._output, _OUTPUT_KINDS)):
            _try(direction, kinds)

    # --- client side: StreamInput out, StreamOutput in ---------------------------------------------

    def encode_request(self, content_type: ContentType, *, text: str = "", binary: bytes = b"") -> bytes:
        return self._input.encode(content_type, text, binary)

    def decode_response(self, data: bytes) -> Frame:
        return self._output.decode(data)

    # --- server side (the simulator): StreamInput in, StreamOutput out ------------------------------

    def decode_request(self, data: bytes) -> Frame:
        return self._input.decode(data)

    def encode_response(self, content_type: ContentType, *, text: str = "", binary: bytes = b"") -> bytes:
        return self._output.encode(content_type, text, binary)


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _method(file: FileDescriptor, module_name: str, method_path: str) -> MethodDescriptor:
    """The RPC ``method_path`` names, else (with the caller's WARNING) the first bidirectional one."""
    methods = [m for service in file.services_by_name.values() for m in service.methods]
    bidirectional = [m for m in methods if m.client_streaming and m.server_streaming]
    named = [m for m in bidirectional if _path(m) == method_path]
    if named:
        return named[0]
    if not bidirectional:
        raise ValueError(f"{module_name} defines no bidirectional streaming RPC")
    return bidirectional[0]


def _envelope(message: Descriptor) -> tuple[str | None, Descriptor]:
    """The field holding the envelope (None: the message is its own) and the envelope's type, checked."""
    if set(message.fields_by_name) >= _ENVELOPE_FIELDS:
        envelope, name = message, None
    else:
        found = [
            (f, sub) for f in message.fields if (sub := f.message_type) and set(sub.fields_by_name) >= _ENVELOPE_FIELDS
        ]
        if not found:
            raise ValueError(
                f"{message.full_name} neither has nor holds a sub-message with fields {sorted(_ENVELOPE_FIELDS)}"
            )
        field, envelope = found[0]
        if field.is_repeated:
            raise ValueError(f"{field.full_name} is repeated: the gateway reads one envelope per message")
        name = field.name
    fields = envelope.fields_by_name
    string, octets, enum = FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_ENUM
    shapes = {"content": ((string, octets), "string"), "binary_content": ((octets,), "bytes"),
              "content_type": ((enum,), "enum")}  # fmt: skip
    for key, (types, want) in shapes.items():
        if fields[key].type not in types or fields[key].is_repeated:
            raise ValueError(f"{fields[key].full_name} is not a single {want} field")
    return name, envelope


def _numbers(envelope: Descriptor, needed: tuple[ContentType, ...]) -> dict[ContentType, int]:
    """The numbers of ``envelope``'s content_type enum by kind (those it names; ``needed`` at least)."""
    enum = envelope.fields_by_name["content_type"].enum_type
    assert enum is not None  # _envelope checked the type
    numbers = {value.name: value.number for value in enum.values}
    if not all(kind.value in numbers for kind in needed):  # CONTENT_TYPE_AUDIO, ...: one prefix for all
        prefix = os.path.commonprefix(list(numbers))  # noqa: RUF071 - names, not paths
        prefix = prefix[: prefix.rfind("_") + 1]
        numbers = {name.removeprefix(prefix): number for name, number in numbers.items()} if prefix else {}
    missing = [kind.value for kind in needed if kind.value not in numbers]
    if missing:
        raise ValueError(
            f"{enum.full_name} (of {envelope.full_name}.content_type) has values"
            f" {', '.join(value.name for value in enum.values)}; it needs {', '.join(k.value for k in needed)}"
            f" (missing {', '.join(missing)})"
        )
    return {kind: numbers[kind.value] for kind in ContentType if kind.value in numbers}


def _try(direction: _Direction, kinds: tuple[ContentType, ...]) -> None:
    """One message of each kind encoded and decoded back, as every session would (required fields the
    gateway cannot fill, a oneof it cannot live with): refused now, at startup."""
    for kind in kinds:
        text, binary = ("", b"\x01\x02") if kind is ContentType.AUDIO else ('{"a":1}', b"")
        try:
            frame = direction.decode(direction.encode(kind, text, binary))
        except UpstreamProtocolError as exc:
            raise ValueError(f"{direction.cls.DESCRIPTOR.full_name} {exc.message}") from None
        if (frame.content_type, frame.text, frame.binary) != (kind, text, binary):
            raise ValueError(f"{direction.cls.DESCRIPTOR.full_name} does not carry a {kind.value} message intact")


def _said(exc: Exception) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
