"""``/v1/jambonz/listen``: jambonz's ``listen`` verb (a call's audio forked to a WebSocket), as a pure dialect.

jambonz opens the socket offering the subprotocol ``audio.jambonz.org`` (with Basic authorization when
the verb sets ``wsAuth``) and sends one text frame: the call's attributes (``callSid``, ``callId``,
``accountSid``, ``applicationSid``, ``direction``, ``from``, ``to``, …), ``sampleRate`` (8000 unless the
verb says 16000, 24000, 48000 or 64000), ``mixType`` (``mono``: the caller; ``mixed``: both parties in
one channel; ``stereo``: the caller left, the other party right) and the keys of the verb's
``metadata`` at the top level. Then only binary frames: 16-bit little-endian PCM. With ``passDtmf`` it
also sends ``{"event": "dtmf", …}`` text frames; the tones are in the audio, so they are not used.

The socket closing is the hang-up (or the verb's ``maxLength`` or ``finishOnKey``): the session is
finalized, not cancelled, and its results delivered. Nothing goes back on the socket: jambonz reads a
text frame as a command (``playAudio``, ``killAudio``, ``disconnect``), so results go to the result
webhook, as for Twilio and Vonage, and audio Data Flow sends back is not played.

The project is the URL's ``?project=``, else the metadata's ``project``, else the default project; the
metadata's ``language`` is the language. Only the call's ids are kept for its life (cut to 256
characters), for the webhook.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from gateway.adapters import commands
from gateway.adapters.call_results import identity_text, scalar_text
from gateway.adapters.dialect import ClientMessage, Command, SessionCommand
from gateway.adapters.messages import quote
from gateway.adapters.socket import Frame
from gateway.audio.format import AudioFormat
from gateway.dataflow.lenient import declared_int, loads_object
from gateway.dataflow.messages import StartRequest
from gateway.errors import AudioFormatError, BadRequest, ErrorCode, GatewayError
from gateway.relay.items import Closed, OutItem

log = logging.getLogger(__name__)

SUBPROTOCOL = "audio.jambonz.org"
#: What ``mixType`` names, as channels: both parties mixed are one channel, stereo keeps them apart.
CHANNELS = {"mono": 1, "mixed": 1, "stereo": 2}
#: The call's ids kept for the webhook (its numbers and the rest of its attributes are not kept).
IDENTITY = ("callSid", "callId", "accountSid", "applicationSid")


def parse_metadata(obj: dict[str, Any], *, project: str, project_from_url: bool) -> StartRequest:
    """jambonz's first frame as a StartRequest."""
    mix = obj.get("mixType", "mono")
    channels = CHANNELS.get(mix) if isinstance(mix, str) else None
    if channels is None:
        raise AudioFormatError(f"mixType must be mono, mixed or stereo, not {quote(mix)}")
    rate = declared_int(obj.get("sampleRate"), 8000, name="sampleRate")
    audio = AudioFormat("pcm16", rate, channels).validate()  # 64000 Hz is past what the gateway takes
    if not project_from_url:
        project = scalar_text(obj.get("project")) or project
    if not project:
        raise BadRequest(
            "no project: add ?project=<name> to the listen verb's url, or metadata.project",
            code=ErrorCode.INVALID_START,
        )
    call_sid = identity_text(obj.get("callSid"))
    return StartRequest(
        project=project,
        audio=audio,
        language=scalar_text(obj.get("language")) or None,
        call_properties={"ExternalId": call_sid} if call_sid else None,
    )


class JambonzListenDialect:
    name: ClassVar[str] = "jambonz_listen"
    sequential: ClassVar[bool] = False
    credentials_in_band: ClassVar[bool] = False  # wsAuth (Basic), or /t/<key>/ in the verb's url
    refuse_full_at_once: ClassVar[bool] = True
    reports_flow: ClassVar[bool] = False

    def __init__(self, project: str = "", *, project_from_url: bool = False) -> None:
        self.project = project
        self.project_from_url = project_from_url
        self.ids: dict[str, str] = {}

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    def call_identity(self) -> dict[str, str]:
        """Who the results belong to, for the webhook."""
        return {name: self.ids.get(name, "") for name in IDENTITY}

    # --- client messages -----------------------------------------------------------------------------

    def waiting(self, message: ClientMessage) -> Command:
        try:
            if isinstance(message, bytes):
                raise BadRequest(
                    "audio before the call's metadata: jambonz sends its text frame first",
                    code=ErrorCode.INVALID_START,
                )
            obj = loads_object(message)
            request = parse_metadata(obj, project=self.project, project_from_url=self.project_from_url)
        except GatewayError as exc:
            return commands.Refuse(exc)
        self.ids = {name: text for name in IDENTITY if (text := identity_text(obj.get(name)))}
        return commands.Begin(request)

    def streaming(self, message: ClientMessage) -> Command:
        if isinstance(message, bytes):
            return commands.Audio(message)
        return None  # passDtmf's notices: the tones are in the audio

    def fast_audio(self, message: ClientMessage) -> bytes | None:
        return message if isinstance(message, bytes) else None

    def failed(self, command: SessionCommand, error: GatewayError) -> Command:
        return None  # jambonz would read any text as a command

    # --- session items -------------------------------------------------------------------------------

    def render(self, item: OutItem) -> Sequence[Frame]:
        return ()  # results go to the webhook

    def goodbye(self, closed: Closed) -> commands.Goodbye:
        return commands.Goodbye(())

    def refusal(self, error: GatewayError, *, start_failed: bool) -> Sequence[Frame]:
        log.info("refused a jambonz listen call: %s", error.error_code)
        return ()
