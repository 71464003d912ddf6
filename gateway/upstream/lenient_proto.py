"""Message classes that read a string field holding invalid UTF-8: the configured ones, strings as bytes.

protobuf (upb) refuses invalid UTF-8 in a proto3 ``string`` field while parsing, so one message with a
transcript cut mid-character would be as undecodable as a truncated one. The classes built here come from
a copy of the configured file's descriptors (and its imports) in a pool of their own, with every
``string`` field declared ``bytes``: the same field numbers and wire type, so they parse every message the
real classes parse plus those, and nothing else (truncated bytes or a wrong wire type still fail). Nothing
here knows a field number or name: a swapped proto gets its lenient twin the same way.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.descriptor_pb2 import DescriptorProto, FieldDescriptorProto, FileDescriptorProto
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass


def lenient_classes(messages: list[Descriptor]) -> list[type[Message]]:
    """The lenient twin of each of ``messages`` (all from one pool, built once)."""
    pool = DescriptorPool()
    added: set[str] = set()
    for message in messages:
        _add(pool, message.file, added)
    return [GetMessageClass(pool.FindMessageTypeByName(m.full_name)) for m in messages]


def _add(pool: DescriptorPool, file: FileDescriptor, added: set[str]) -> None:
    if file.name in added:
        return
    for dependency in file.dependencies:
        _add(pool, dependency, added)
    proto = FileDescriptorProto()
    file.CopyToProto(proto)
    for message in proto.message_type:
        _strings_as_bytes(message)
    for extension in proto.extension:
        _field_as_bytes(extension)
    pool.Add(proto)
    added.add(file.name)


def _strings_as_bytes(message: DescriptorProto) -> None:
    for field in [*message.field, *message.extension]:
        _field_as_bytes(field)
    for nested in message.nested_type:
        _strings_as_bytes(nested)
    # A map's entries are repeated messages on the wire; as plain messages their key may be bytes too.
    message.options.ClearField("map_entry")


def _field_as_bytes(field: FieldDescriptorProto) -> None:
    if field.type == FieldDescriptorProto.TYPE_STRING:
        field.type = FieldDescriptorProto.TYPE_BYTES
        field.ClearField("default_value")  # a string default is not written the way a bytes default is
