from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CONTENT_TYPE(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO: _ClassVar[CONTENT_TYPE]
    EVENT: _ClassVar[CONTENT_TYPE]
    REQUEST: _ClassVar[CONTENT_TYPE]
    RESPONSE: _ClassVar[CONTENT_TYPE]
AUDIO: CONTENT_TYPE
EVENT: CONTENT_TYPE
REQUEST: CONTENT_TYPE
RESPONSE: CONTENT_TYPE

class Message(_message.Message):
    __slots__ = ("content", "binary_content", "content_type")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    BINARY_CONTENT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    content: str
    binary_content: bytes
    content_type: CONTENT_TYPE
    def __init__(self, content: _Optional[str] = ..., binary_content: _Optional[bytes] = ..., content_type: _Optional[_Union[CONTENT_TYPE, str]] = ...) -> None: ...

class StreamInput(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: Message
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class StreamOutput(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: Message
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...
